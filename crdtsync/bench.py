"""Moved to :mod:`crdtsync.cli.bench`; this name re-exports it (kept for one release)."""

from __future__ import annotations

from .cli.bench import *  # noqa: F403
from .cli.bench import __all__ as __all__
