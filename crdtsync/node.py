"""Moved to :mod:`crdtsync.cli.node`; this name re-exports it (kept for one release)."""

from __future__ import annotations

from .cli.node import *  # noqa: F403
from .cli.node import __all__ as __all__
