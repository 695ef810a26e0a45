"""crdtsync: durable, peer-to-peer replicated CRDT shards for agents.

Each shard is a pycrdt (Yjs) document kept in the agent's LMDB store and gossiped to peers over
websockets. Every replica that has seen the same updates has the same state.
"""

from __future__ import annotations

from .agent import Agent, default_data_dir
from .changes import Change
from .errors import (
    ClosedError,
    CloseCode,
    CrdtSyncError,
    DataDirLocked,
    IntOutOfRange,
    InvalidShardName,
    InvalidUpdate,
    ProtocolError,
    ReplicationTimeout,
    ShardNotFound,
    StoreError,
    StoreFull,
    CorruptEntry,
    UnsupportedValue,
    UsageError,
)
from .shard import Shard
from .views import ListView, MapView

__all__ = [
    "Agent",
    "Shard",
    "MapView",
    "ListView",
    "Change",
    "default_data_dir",
    "CrdtSyncError",
    "UsageError",
    "InvalidShardName",
    "UnsupportedValue",
    "IntOutOfRange",
    "ClosedError",
    "StoreError",
    "DataDirLocked",
    "StoreFull",
    "CorruptEntry",
    "InvalidUpdate",
    "ProtocolError",
    "CloseCode",
    "ReplicationTimeout",
    "ShardNotFound",
]

__version__ = "0.1.0"
