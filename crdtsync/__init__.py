"""crdtsync: durable, peer-to-peer replicated CRDT shards for agents.

Each shard is a pycrdt (Yjs) document kept in the agent's LMDB store and gossiped to peers over
websockets. Every replica that has seen the same updates has the same state.

What is where:

* ``crdtsync``: the user API, everything :class:`Agent` and :class:`Shard` take and return,
  and the error tree (every name in ``__all__``; ``tests/test_shard_api.py`` checks them).
* ``crdtsync.testing``: the simulator and helpers to test code built on crdtsync.
* ``crdtsync.gossip``: the low-level sans-I/O core, for people writing drivers.
* ``crdtsync.cli``: the ``crdtsync`` command and dev tools. Other modules are internals.
"""

from __future__ import annotations

from pathlib import Path as _Path

from ._layout import bind_transports as _bind_transports

# Before anything imports crdtsync.transports: take it from this checkout (see _layout).
if (_transports := _bind_transports(_Path(__file__).resolve().parent)) is not None:
    transports = _transports
from ._compose import install_defaults
from .agent import Agent, ReplicationLag, StoreSize, default_data_dir
from .changes import Change, Subscription
from .claims import ClaimResult, Claims, JobQueue
from .containers import Counter
from .errors import (
    BrokerRefused,
    CloseCode,
    ClosedError,
    CorruptEntry,
    CrdtSyncError,
    CredentialsError,
    DataDirLocked,
    InsecureBroker,
    InsecureListen,
    IntOutOfRange,
    InvalidAddress,
    InvalidShardName,
    InvalidUpdate,
    ListenFailed,
    LostUpdate,
    ProtocolError,
    ReplicationTimeout,
    ShardNotFound,
    ShardQuarantined,
    StoreError,
    StoreFull,
    UnsupportedValue,
    UpdateOverLimit,
    UsageError,
)
from .gossip import GossipConfig, PeerStatus
from .lifecycle import run_until_signal, stop_event, tune_for_serving
from .reads import Quorum
from .shard import Shard
from .sharding import ShardingConfig
from .store import ShardStats
from .transport import Transport, TransportFactory
from .views import ListView, MapView

__all__ = [
    "Agent",
    "Shard",
    "MapView",
    "ListView",
    "Change",
    "Subscription",
    "Counter",
    "Claims",
    "ClaimResult",
    "JobQueue",
    "stop_event",
    "run_until_signal",
    "tune_for_serving",
    "default_data_dir",
    # what the API takes and returns
    "GossipConfig",  # Agent(gossip=...)
    "ShardingConfig",  # GossipConfig(sharding=...)
    "PeerStatus",  # Agent.peers
    "Quorum",  # Agent.read(quorum=...)
    "ShardStats",  # Shard.stats(), Shard.compact(), Agent.shard_stats()
    "ReplicationLag",  # Agent.replication_lag()
    "StoreSize",  # Agent.store_size()
    "Transport",  # Agent(transport=...) builds one
    "TransportFactory",
    # errors
    "CrdtSyncError",
    "UsageError",
    "InvalidShardName",
    "UnsupportedValue",
    "IntOutOfRange",
    "LostUpdate",
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
    "ShardQuarantined",
    "UpdateOverLimit",
    "InvalidAddress",
    "InsecureListen",
    "InsecureBroker",
    "CredentialsError",
    "ListenFailed",
    "BrokerRefused",
]

__version__ = "0.1.0"

install_defaults()  # the composition root: websockets as the default transport
