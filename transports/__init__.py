"""Drivers that carry the gossip protocol between agents (installed as ``crdtsync.transports``).

Each transport runs the same pure core (:mod:`crdtsync.gossip`); only the I/O differs:
:mod:`crdtsync.transports.websocket` for real networks, :mod:`crdtsync.transports.memory` for a
deterministic simulated network with a virtual clock.
"""

from __future__ import annotations

__all__: list[str] = []
