"""The sans-I/O gossip core of crdtsync, as a package (see :mod:`crdtsync.gossip.core`).

Only re-exports: :class:`GossipCore` (the facade a driver calls), :class:`GossipConfig`,
:class:`PeerStatus` and the constants the drivers and tests name.
"""

from __future__ import annotations

from .config import GossipConfig
from .core import (
    ALIVE,
    CONNECTED,
    DEAD,
    EMPTY_STATE_VECTOR,
    SUSPECT,
    GossipCore,
    PeerStatus,
)
from .membership import PeerState
from .overlay import FULL, RELAY, TREE, Mode, OverlayView
from .policy import CoreView, FullReplication, ReplicationPolicy, Service

__all__ = [
    "GossipConfig",
    "GossipCore",
    "PeerStatus",
    "EMPTY_STATE_VECTOR",
    "CONNECTED",
    "ALIVE",
    "SUSPECT",
    "DEAD",
    "FULL",
    "RELAY",
    "TREE",
    "Mode",
    "PeerState",
    "OverlayView",
    "CoreView",
    "Service",
    "ReplicationPolicy",
    "FullReplication",
]
