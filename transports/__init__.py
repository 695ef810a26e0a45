"""Drivers that carry the gossip protocol between agents (installed as ``crdtsync.transports``).

Each transport runs the same pure core (:mod:`crdtsync.gossip`); only the I/O differs:
:mod:`crdtsync.transports.websocket` for real networks, :mod:`crdtsync.transports.memory` for a
deterministic simulated network with a virtual clock.

This folder sits beside the ``crdtsync`` package in the source tree; loading it next to a
``crdtsync`` of another checkout fails loudly (see :mod:`crdtsync._layout`).
"""

from __future__ import annotations

from pathlib import Path

from crdtsync._layout import check_same_tree

check_same_tree(Path(__file__).parent)

__all__: list[str] = []
