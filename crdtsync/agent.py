"""The asyncio agent: opens the store, serves shards, and drives the gossip core.

The agent owns no protocol decisions. It executes what the pure gossip core
(:mod:`crdtsync.gossip`) asks for against the store and the transport, and feeds the core
the events it sees: deltas made here, frames from peers, durable commits and clock ticks.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from . import updates
from .durability import GroupCommitter
from .errors import ClosedError, InvalidUpdate, ReplicationTimeout, UsageError
from .gossip import GossipConfig, GossipCore, PeerStatus
from .names import validate_shard_name
from .reads import Quorum, Reader
from .shard import Shard, load_doc
from .store import Store

__all__ = ["Agent", "Transport", "default_data_dir"]


class Transport(Protocol):
    """What the agent needs of a gossip driver (see :mod:`crdtsync.transports.websocket`)."""

    address: str | None

    async def start(self) -> None: ...
    def kick(self) -> None: ...
    async def close(self) -> None: ...


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
        listen: ``ws://127.0.0.1:PORT`` to accept peers on (port 0 picks a free one; see
            :attr:`address`), or None to only dial out.
        peers: seed addresses (``ws://host:port``) to dial; more peers are learnt from them.
        mesh: agents only replicate with agents of the same mesh name.
        gossip: protocol knobs (intervals, fanout, limits); default ``GossipConfig.lan()``:
            send at once on an idle link, batch what piles up meanwhile (see its docs).
        seed: seed of the protocol's random choices (peer selection, jitter); random if None.
        map_size: initial LMDB map size in bytes; the map grows by doubling when full.
        max_map_size: the map never grows beyond this; writes then fail with ``StoreFull``.
        replication_factor: with R, each shard is held by R agents chosen by rendezvous
            hashing over the live members (plus the agents that open it), and shards move
            between agents as members come and go (see :mod:`crdtsync.placement`). None (the
            default): every agent replicates every shard it learns of.
        http: ``"127.0.0.1:8080"`` (or a :class:`crdtsync.http.HttpOptions`) to serve the HTTP
            API, metrics and dashboard there (see :mod:`crdtsync.http`); None: no HTTP.
    """

    def __init__(
        self,
        name: str,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        durability_interval: float = 0.05,
        listen: str | None = None,
        peers: Iterable[str] = (),
        mesh: str = "default",
        gossip: GossipConfig | None = None,
        seed: int | None = None,
        map_size: int = 64 << 20,
        max_map_size: int = 1 << 40,
        replication_factor: int | None = None,
        http: Any = None,
    ) -> None:
        self.name = validate_shard_name(name)
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
        self._durability_interval = durability_interval
        self._map_size = map_size
        self._max_map_size = max_map_size
        self._listen = listen
        self._seeds = tuple(peers)
        self._mesh = mesh
        self._gossip_config = gossip or GossipConfig.lan()
        if replication_factor is not None:
            cfg = self._gossip_config
            self._gossip_config = replace(cfg, sharding=replace(cfg.sharding, replication_factor=replication_factor))
        self._reader = Reader(self)
        self._rng = random.Random(seed)
        self._store: Store | None = None
        self._committer: GroupCommitter | None = None  # type: ignore[assignment]
        self._shards: dict[str, Shard] = {}
        self._core: GossipCore | None = None
        self._transport: Transport | None = None
        self._activity = asyncio.Event()
        self._applying = False  # inside a ReplicaSet.apply called by the core
        self._outgoing: list[tuple[str, bytes]] = []  # local deltas for the core, this turn
        self._closed = False
        self._closing = False
        self._http_options = http
        self._http: Any = None  # crdtsync.http.HttpServer once started

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
        if self._listen is not None or self._seeds:
            await self._start_gossip()
        if self._http_options is not None:
            from .http import HttpServer

            server = HttpServer(self, self._http_options)
            try:
                await server.start()
            except BaseException:
                await self.close()  # do not leave the store and peers open behind a failed start
                raise
            self._http = server

    async def _start_gossip(self) -> None:
        from .transports.websocket import WebsocketTransport  # the default driver

        self._core = GossipCore(
            self.name,
            _AgentReplicas(self),
            rng=self._rng,
            config=self._gossip_config,
            mesh=self._mesh,
            address=self._listen,
            seeds=self._seeds,
        )
        self._transport = WebsocketTransport(
            self._core,
            listen=self._listen,
            max_frame=self._gossip_config.max_frame,
            on_activity=self._activity.set,
        )
        await self._transport.start()

    @property
    def address(self) -> str | None:
        """The ``ws://`` address this agent accepts peers on (port resolved), if it listens."""
        return self._transport.address if self._transport is not None else None

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of this agent's HTTP API (port resolved), if it serves one."""
        return self._http.url if self._http is not None else None

    def metrics(self) -> dict[str, Any]:
        """This agent's operational figures now (the same as its Prometheus ``/metrics``)."""
        from .metrics import sample

        return sample(self)

    @property
    def peers(self) -> tuple[PeerStatus, ...]:
        """Every agent known here: address, connection state, and the durable state each has
        acknowledged per shard (compare with :meth:`Shard.replicated`). Empty without gossip."""
        return self._core.peers() if self._core is not None else ()

    async def close(self) -> None:
        """Flush everything to disk, close peer connections and the store. Idempotent."""
        if self._closed or self._closing:
            return
        self._closing = True  # refuse new API calls; frames still arriving are served
        try:
            # HTTP first, then peers, so nothing arrives after the final commit; then the commit.
            if self._http is not None:
                await self._http.close()
            if self._transport is not None:
                await self._transport.close()
            if self._committer is not None:
                await self._committer.close()
        finally:
            self._closed = True
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
        if self._closing:
            raise ClosedError(f"agent {self.name!r} is closed")
        shard = self._open_shard(name)
        if self._core is not None and self._core.sharding.partial:
            # An opened shard is held here whatever placement says (a subscription).
            self._core.sharding.subscribe(name, time.monotonic())
            if self._transport is not None:
                self._transport.kick()
        return shard

    async def read(self, name: str, *, quorum: Quorum = None, timeout: float = 5.0) -> dict[str, Any]:
        """The shard's converged state as a plain dict, from here or from its holders.

        A shard held here is read locally. Otherwise its holders are asked and their answers
        merged by CRDT join (a burst of reads within a quarter second asks once).

        Args:
            quorum: holders whose state the answer must include: 1 (default), an int,
                ``"majority"`` (floor(R/2)+1) or ``"all"``; this agent counts if it holds it.
            timeout: seconds to wait for the answers.

        Raises:
            ShardNotFound: no agent holds the shard.
            ReplicationTimeout: fewer than ``quorum`` holders answered in time; ``lagging``
                names those that did not.
        """
        return await self._reader.read(name, quorum=quorum, timeout=timeout)

    async def read_many(self, *, prefix: str = "", quorum: Quorum = None, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """Every shard named ``prefix...`` that any live agent holds: {name: plain dict}.

        Asks every other live agent (each answers with its matching shards) and merges by
        CRDT join, like :meth:`read`.

        Raises:
            ReplicationTimeout: some agent did not answer in time, or a shard has fewer
                holders than ``quorum``.
        """
        return await self._reader.read_many(prefix, quorum=quorum, timeout=timeout)

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
        """A shard changed (already applied and appended to the store): gossip it, unless
        the core itself applied it (then the core already forwards it)."""
        if self._core is None or self._applying:
            return
        # We are inside the Doc's transaction observer: hand the delta to the core once the
        # transaction is over (the core may read the Doc), batching every delta of this turn.
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send_outgoing)
        self._outgoing.append((shard.name, delta))

    def _send_outgoing(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._core is None or self._closed:
            return
        now = time.monotonic()
        for name, delta in outgoing:
            self._core.local_update(name, delta, now)
        if self._transport is not None:
            self._transport.kick()

    def _before_commit(self) -> Any:
        """Record, per changed shard, the state the coming commit makes durable."""
        captured = {name: state for name, shard in self._shards.items()
                    if (state := shard.capture()) is not None}

        def done(ok: bool) -> None:
            for name, state in captured.items():
                shard = self._shards.get(name)
                if shard is None:  # dropped meanwhile (handed off to its placement holders)
                    continue
                if ok:
                    shard.mark_durable(state)
                else:
                    shard.mark_dirty()

        return done if captured else None

    def _on_durable(self, shards: set[str]) -> None:
        """A group commit finished: these shards' captured states are on disk; ack them."""
        if self._core is None or self._closed:  # (closing: the store is going, acks are moot)
            return
        # (not those dropped since: asking the core about them would recreate them empty)
        self._core.durable({s for s in shards if s in self._shards}, time.monotonic())
        if self._transport is not None:
            self._transport.kick()

    async def _replicated(self, shard: Shard, peers: int, timeout: float) -> None:
        core = self._core
        if core is None:
            raise UsageError("replicated() needs peers: create the Agent with listen= or peers=")
        if peers < 1:
            return
        target = (updates.state_vector(shard.doc), updates.delete_set(shard.doc))
        await shard.flush()
        deadline = time.monotonic() + timeout
        while True:
            holders = core.replicated(shard.name, *target)
            if len(holders) >= peers:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                lagging = tuple(p.name for p in core.peers() if p.name not in holders)
                raise ReplicationTimeout(
                    f"shard {shard.name!r}: {len(holders)} of {peers} peers acknowledged within "
                    f"{timeout}s (have: {', '.join(holders) or 'none'}; lagging: "
                    f"{', '.join(lagging) or 'no other agent known'})",
                    lagging,
                )
            self._activity.clear()
            try:
                await asyncio.wait_for(self._activity.wait(), min(remaining, 0.1))
            except TimeoutError:
                pass

    def _drop_shard(self, name: str) -> None:
        """Forget a shard handed off to its placement holders (never one opened by the user)."""
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        self._require_store().delete_shard(name)

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} data_dir={str(self.data_dir)!r}>"


class _AgentReplicas:
    """The agent's shards as the gossip core sees them (:class:`crdtsync.replica.ReplicaSet`)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def shard_names(self) -> Iterable[str]:
        if self._agent._closed:  # the transport still runs while the agent closes
            return ()
        return self._agent.shard_names()

    def state_vector(self, shard: str) -> bytes:
        return updates.state_vector(self._agent._open_shard(shard).doc)

    def digest(self, shard: str) -> bytes:
        return self._agent._open_shard(shard).digest()

    def diff(self, shard: str, state_vector: bytes) -> bytes:
        updates.decode_state_vector(state_vector)  # InvalidUpdate on garbage from a peer
        doc = self._agent._open_shard(shard).doc
        try:
            return doc.get_update(state_vector)
        except Exception as exc:
            raise InvalidUpdate(f"cannot diff against state vector: {exc}") from exc

    def apply(self, shard: str, update: bytes, origin: str) -> bytes | None:
        agent = self._agent
        agent._applying = True
        try:
            return agent._open_shard(shard).apply_remote(update, origin)
        finally:
            agent._applying = False

    def durable_state(self, shard: str) -> tuple[bytes, bytes]:
        return self._agent._open_shard(shard).durable_state

    def drop(self, shard: str) -> None:
        self._agent._drop_shard(shard)
