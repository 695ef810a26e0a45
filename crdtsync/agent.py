"""The asyncio agent: opens the store, serves shards, and drives the gossip core.

The agent owns no protocol decisions. It executes what the pure gossip core
(:mod:`crdtsync.gossip`) asks for against the store and the transport, and feeds the core
the events it sees: deltas made here, frames from peers, durable commits and clock ticks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from . import updates
from .durability import GroupCommitter
from .errors import ClosedError, UsageError
from .names import validate_shard_name
from .shard import Shard, load_doc
from .store import Store

__all__ = ["Agent", "default_data_dir"]


def default_data_dir(name: str) -> Path:
    """Where an agent keeps its store when no ``data_dir`` is given:
    ``$CRDTSYNC_HOME/<name>``, or ``~/.crdtsync/<name>``."""
    home = os.environ.get("CRDTSYNC_HOME") or os.path.join(os.path.expanduser("~"), ".crdtsync")
    return Path(home) / name


class Agent:
    """One participant in a crdtsync mesh: a data directory of durable shards, shared with peers.

    Use it as an async context manager::

        async with Agent("planner", data_dir="data/planner") as agent:
            board = await agent.shard("board")

    Args:
        name: this agent's name, unique in its mesh (same alphabet as shard names).
        data_dir: directory of the agent's LMDB store; one agent process per directory.
        durability_interval: upper bound, in seconds, before a change nobody flushes is on disk.
        map_size: initial LMDB map size in bytes; the map grows by doubling when full.
        max_map_size: the map never grows beyond this; writes then fail with ``StoreFull``.
    """

    def __init__(
        self,
        name: str,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        durability_interval: float = 0.05,
        map_size: int = 64 << 20,
        max_map_size: int = 1 << 40,
        **gossip_options: Any,
    ) -> None:
        self.name = validate_shard_name(name)
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
        self._durability_interval = durability_interval
        self._map_size = map_size
        self._max_map_size = max_map_size
        self._gossip_options = gossip_options
        self._store: Store | None = None
        self._committer: GroupCommitter | None = None  # type: ignore[assignment]
        self._shards: dict[str, Shard] = {}
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the store (raising ``DataDirLocked`` if another process has it) and start serving."""
        if self._store is not None:
            raise UsageError("agent already started")
        if self._closed:
            raise ClosedError("agent was closed; create a new Agent")
        self._store = Store(self.data_dir, map_size=self._map_size, max_map_size=self._max_map_size)
        self._committer = GroupCommitter(
            self._store,
            interval=self._durability_interval,
            on_durable=self._on_durable,
            compact_merge=updates.replay,
            before_commit=self._before_commit,
        )
        await self._committer.start()

    async def close(self) -> None:
        """Flush everything to disk, close peer connections and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._committer is not None:
                await self._committer.close()
        finally:
            for shard in self._shards.values():
                shard.close()
            if self._store is not None:
                self._store.close()

    # -- shards ------------------------------------------------------------------------------

    async def shard(self, name: str) -> Shard:
        """Open the shard ``name``, creating it if this agent has never held it.

        Raises:
            InvalidShardName: ``name`` is outside the documented alphabet or length.
            StoreError: the stored shard could not be read.
        """
        return self._open_shard(name)

    def shard_names(self) -> list[str]:
        """Names of every shard in this agent's store or open now."""
        store = self._require_store()
        return sorted(set(store.shard_names()) | set(self._shards))

    def _open_shard(self, name: str) -> Shard:
        validate_shard_name(name)
        store = self._require_store()
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        loaded = store.load(name)
        doc = load_doc(loaded.snapshot, loaded.log, name) if loaded else load_doc(None, [], name)
        shard = Shard(name, doc, store, notify=self._committer.notify, on_delta=self._on_delta, agent=self)
        self._shards[name] = shard
        return shard

    def _require_store(self) -> Store:
        if self._closed:
            raise ClosedError(f"agent {self.name!r} is closed")
        if self._store is None:
            raise UsageError("agent not started: use 'async with Agent(...)' or 'await agent.start()'")
        return self._store

    # -- hooks from shards and the committer ------------------------------------------------

    def _on_delta(self, shard: Shard, delta: bytes, origin: str | None) -> None:
        """A shard changed (already applied and appended to the store)."""

    def _before_commit(self) -> Any:
        """Record, per changed shard, the state the coming commit makes durable."""
        captured = {name: state for name, shard in self._shards.items()
                    if (state := shard.capture()) is not None}

        def done(ok: bool) -> None:
            for name, state in captured.items():
                shard = self._shards[name]
                if ok:
                    shard.mark_durable(state)
                else:
                    shard.mark_dirty()

        return done if captured else None

    def _on_durable(self, shards: set[str]) -> None:
        """A group commit finished: these shards' captured states are on disk."""

    async def _replicated(self, shard: Shard, peers: int, timeout: float) -> None:
        raise UsageError("this agent has no peers configured")

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} data_dir={str(self.data_dir)!r}>"
