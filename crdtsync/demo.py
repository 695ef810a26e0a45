"""Moved to :mod:`crdtsync.cli.demo`; this name re-exports it (kept for one release)."""

from __future__ import annotations

from .cli.demo import *  # noqa: F403
from .cli.demo import __all__ as __all__
