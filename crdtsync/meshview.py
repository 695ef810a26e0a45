"""Moved to :mod:`crdtsync.cli.meshview`; this name re-exports it (kept for one release)."""

from __future__ import annotations

from .cli.meshview import *  # noqa: F403
from .cli.meshview import __all__ as __all__
