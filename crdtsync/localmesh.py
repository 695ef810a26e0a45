"""Moved to :mod:`crdtsync.cli.localmesh`; this name re-exports it (kept for one release)."""

from __future__ import annotations

from .cli.localmesh import *  # noqa: F403
from .cli.localmesh import __all__ as __all__
