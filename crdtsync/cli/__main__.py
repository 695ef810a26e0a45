"""``python -m crdtsync.cli``: the ``crdtsync`` command (used to start agent processes)."""

from __future__ import annotations

from .commands import main

main()
