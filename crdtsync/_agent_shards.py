"""The agent's shards: open one, list them, reach the registry, give disk space back.

:meth:`_AgentShards.shard` opens a shard (creating it if this agent never held it; under
partial replication an opened shard is subscribed to, whatever placement says),
:meth:`_AgentShards.shard_names` and :attr:`_AgentShards.registry` list and reach what the
store holds, :meth:`_AgentShards.reclaim_disk` gives the pages freed by compaction back to the
file system, and ``_require_registry`` / ``_require_store`` are the guards every API call of a
running agent goes through (closed, or not started).

A mixin of :class:`~crdtsync.agent.Agent` (:class:`_AgentShards`), split from
:mod:`crdtsync.agent` as :mod:`crdtsync._agent_figures` and :mod:`crdtsync._agent_reads` are;
the state is the agent's (set in its ``__init__`` and ``start``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .errors import ClosedError, UsageError

if TYPE_CHECKING:
    from ._registry import ShardRegistry
    from .durability import GroupCommitter
    from .gossip import GossipCore
    from .shard import Shard
    from .store import SpaceStats, Store
    from .transport import Transport

__all__: list[str] = []


class _AgentShards:
    """Mixin of :class:`~crdtsync.agent.Agent`: its shards (module docstring).

    The attributes declared below belong to the agent.
    """

    name: str
    _closed: bool
    _closing: bool
    _store: Store | None
    _committer: GroupCommitter | None
    _registry: ShardRegistry | None
    _core: GossipCore | None
    _transport: Transport | None

    async def reclaim_disk(self) -> SpaceStats:
        """Give the disk space of pages freed by compaction and deletion back to the file
        system now, and return the data file's size and live bytes afterwards.

        LMDB keeps its file at its high-water mark; compaction (``shard.compact()``, or the
        automatic one) already does this by itself once the file is more than twice its live
        bytes (and 4 MiB would come back). A compacted copy is swapped in atomically: a crash
        at any point leaves a valid store (see :mod:`crdtsync._store_space`). Writes wait
        meanwhile (about the time to copy the live data).
        """
        if self._closing or self._committer is None:
            raise ClosedError(f"agent {self.name!r} is not running")
        return await self._committer.reclaim()

    async def shard(self, name: str) -> Shard:
        """Open the shard ``name``, creating it if this agent has never held it.

        Raises:
            InvalidShardName: ``name`` is outside the documented alphabet or length.
            StoreError: the stored shard could not be read.
            ShardQuarantined: the store holds an update of it beyond the work limits (see
                :attr:`quarantined`).
        """
        if self._closing:
            raise ClosedError(f"agent {self.name!r} is closed")
        shard = self._require_registry().open(name)
        if self._core is not None and self._core.sharding.partial:
            # An opened shard is held here whatever placement says (a subscription).
            self._core.sharding.subscribe(name, time.monotonic())
            if self._transport is not None:
                self._transport.kick()
        return shard

    def shard_names(self) -> list[str]:
        """Names of every shard in this agent's store or open now."""
        return self._require_registry().names()

    @property
    def registry(self) -> ShardRegistry:
        """Low-level: this agent's shard registry (open shards without subscribing to them,
        as reads and inspection tools need); raises like :meth:`shard_names` when not running."""
        return self._require_registry()

    def _require_registry(self) -> ShardRegistry:
        self._require_store()
        assert self._registry is not None
        return self._registry

    def _require_store(self) -> Store:
        if self._closed:
            raise ClosedError(f"agent {self.name!r} is closed")
        if self._store is None:
            raise UsageError(
                "agent not started: use 'async with Agent(...)' or 'await agent.start()'"
            )
        return self._store
