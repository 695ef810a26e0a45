"""The asyncio agent: opens the store, serves shards, and drives the gossip core.

The agent owns no protocol decisions. It executes what the pure gossip core
(:mod:`crdtsync.gossip`) asks for against the store and the transport, and feeds the core
the events it sees: deltas made here, frames from peers, durable commits and clock ticks.

It is also where the parts meet: the store and its group committer, the shard registry (which
is the core's :class:`~crdtsync.replica.ReplicaSet`), the core, the reader and a transport.
The transport comes from a :class:`~crdtsync.transport.TransportFactory` (``transport=``, or
the default wired in by :mod:`crdtsync._compose`); this module imports none.

Split by concern into mixins of :class:`Agent`: :mod:`crdtsync._agent_wiring` (the start of
gossip, hooks, the ShardHost), :mod:`crdtsync._agent_figures` (read-only figures: counters,
peers, metrics, stats, lag), :mod:`crdtsync._agent_reads` (``read``, ``read_many``) and
:mod:`crdtsync._agent_shards` (``shard``, ``shard_names``, ``registry``, ``reclaim_disk``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import _extensions, updates
from ._activity import Activity
from ._agent_figures import DurableHistory, ReplicationLag, StoreSize, _AgentFigures
from ._agent_reads import ReadMany, _AgentReads
from ._agent_shards import _AgentShards
from ._agent_wiring import _AgentShardHost, _AgentWiring
from ._registry import ShardRegistry
from ._switchboard import combine
from .durability import CommitPacing, GroupCommitter
from .errors import (
    ClosedError,
    InvalidAddress,
    ListenFailed,
    UsageError,
)
from .gossip import GossipConfig, GossipCore, QuotaSet
from .names import validate_agent_name
from .reads import Reader
from .sharding import ShardingConfig
from .store import Store
from .transport import Transport, TransportFactory, broker_factory, default_factory
from .yjs.replay import replay_trusted

if TYPE_CHECKING:
    from .security.credentials import Credentials

__all__ = [
    "RECEIVED_DURABILITY_INTERVAL",
    "REMOTE_DURABILITY_CAP",
    "Agent",
    "ReadMany",
    "ReplicationLag",
    "StoreSize",
    "Transport",
    "TransportFactory",
    "check_address",
    "default_data_dir",
]

#: Seconds, at most, before an agent on a broker alone has committed an update it received
#: (its bound grows with the agents sharing its event loop; see ``durability_interval``).
REMOTE_DURABILITY_CAP = 1.0

#: Seconds, by default, before an agent has committed an update it received from a peer
#: (``received_durability_interval``; never less than ``durability_interval``). Longer than
#: a local write's bound: each group commit of a receiver costs a worker-thread hand-over,
#: ``on_durable``, an ack and timer ticks, and at 20 commits a second that was 11-18 % of a
#: receiver's CPU per update (benchmarks/history/fanout-receive.md, h-recv fifth pass). Nothing waits on it:
#: a writer's ``replicated()`` asks for acks at once (a WANT_ACK, which makes the receiver
#: commit now), and its writer still holds an update not committed here yet.
RECEIVED_DURABILITY_INTERVAL = 0.2


def default_data_dir(name: str) -> Path:
    """Where an agent keeps its store when no ``data_dir`` is given:
    ``$CRDTSYNC_HOME/<name>``, or ``~/.crdtsync/<name>``."""
    home = os.environ.get("CRDTSYNC_HOME") or os.path.join(os.path.expanduser("~"), ".crdtsync")
    return Path(home) / name


class Agent(_AgentWiring, _AgentFigures, _AgentReads, _AgentShards):
    """One participant in a crdtsync mesh: a data directory of durable shards, shared with peers.

    Use it as an async context manager::

        async with Agent("planner", data_dir="data/planner") as agent:
            board = await agent.shard("board")

    Args:
        name: this agent's name, unique in its mesh (same alphabet as shard names).
        data_dir: directory of the agent's LMDB store; one agent process per directory.
        durability_interval: upper bound, in seconds, before a change made here and nobody
            flushes is on disk. ``flush()`` and ``replicated()`` are not delayed by it.
        received_durability_interval: upper bound, in seconds, before an update *received*
            from a peer is on disk; None: :data:`RECEIVED_DURABILITY_INTERVAL` (0.2 s), or
            ``durability_interval`` if that is longer. An agent on a broker alone commits
            what it received within this times the agents running in its event loop, at most
            :data:`REMOTE_DURABILITY_CAP` (see :mod:`crdtsync.durability` and
            ``commit_pacing``). An agent acks only what is on disk; a peer waiting in
            ``replicated()`` asks for acks (a WANT_ACK), which makes this agent commit at
            once, and within ``durability_interval`` what it receives in the second after,
            so ``replicated()`` does not wait for this bound.
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
        transport: builds the driver that carries gossip (a
            :class:`~crdtsync.transport.TransportFactory`); None: the default, websockets.
        credentials: authenticate every peer connection with these
            (:meth:`Credentials.from_dir <crdtsync.security.credentials.Credentials.from_dir>`):
            mutual TLS on ``wss://`` or the mesh-secret handshake. The mesh name comes from
            them unless ``mesh`` is given (it must then match).
        insecure: allow listening beyond loopback without credentials. Without it, such a
            ``listen`` raises :class:`~crdtsync.errors.InsecureListen` before anything is bound.
            Also allows a broker beyond loopback without TLS and a login.
        broker: ``mqtt://[user[:password]@]host:port[/prefix]`` (or ``mqtts://``): gossip
            through this MQTT 5 broker (:mod:`crdtsync.transports.mqtt`; needs ``aiomqtt``).
            Agents find each other by their presence on the broker, so ``listen`` and
            ``peers`` are not needed; with them the agent also gossips over websockets with
            near peers and bridges both sides (:mod:`crdtsync._switchboard`). A
            non-loopback broker without TLS and a login raises
            :class:`~crdtsync.errors.InsecureBroker` unless ``insecure``; a broker refusing
            our login raises :class:`~crdtsync.errors.BrokerRefused` from :meth:`start`.
        http: ``"127.0.0.1:8080"`` (or a :class:`crdtsync.http.HttpOptions`) to serve the HTTP
            API, metrics and dashboard there (see :mod:`crdtsync.http`); None: no HTTP.
        quotas: the quotas that hold across all connections (shards a peer may cause to be
            created, bytes and CPU per peer, transfers, replies, the global message budget; see
            :class:`crdtsync.gossip.QuotaSet`); None: its defaults. Refusals are counted in
            :attr:`counters` (``quota.<name>``) and in the metric ``crdtsync_quota_refusals``.
        commit_pacing: the :class:`~crdtsync.durability.CommitPacing` this agent shares
            with the others of its event loop: each commits what it received within
            ``received_durability_interval`` times the running agents sharing it, at most
            :data:`REMOTE_DURABILITY_CAP`. None: an agent on a broker alone takes its loop's
            (``CommitPacing.of_loop()``); any other agent keeps
            ``received_durability_interval``.
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
        transport: TransportFactory | None = None,
        credentials: Credentials | None = None,
        insecure: bool = False,
        http: Any = None,
        broker: str | None = None,
        quotas: QuotaSet | None = None,
        commit_pacing: CommitPacing | None = None,
        received_durability_interval: float | None = None,
    ) -> None:
        self.name = validate_agent_name(name)
        if isinstance(peers, str):
            raise InvalidAddress(
                f"peers must be a list of addresses, not one str: peers=[{peers!r}]"
            )
        peers = tuple(peers)
        for address in peers:
            check_address(address, "peer", listen=False, custom=transport is not None)
        if listen is not None:
            check_address(listen, "listen", listen=True, custom=transport is not None)
        if broker is not None:
            if transport is not None:
                raise UsageError("broker= and transport= together: pass one of them")
            transport = broker_factory(broker, insecure=insecure)  # checks the URL now
            if listen is not None or peers:
                # websockets to near peers, the broker for the rest (crdtsync._switchboard)
                near = default_factory()
                if near is None:
                    raise UsageError("listen=/peers= with broker= need the websocket transport")
                transport = combine(near, transport)
        if listen is not None and credentials is None and not insecure:
            # (lazily: the credentials module loads cryptography, ~0.2 s that an agent which
            # listens nowhere, e.g. reopening its store, need not pay)
            from .security.credentials import check_listen

            check_listen(listen, credentials, insecure)  # before anything is bound
        if credentials is not None:
            if credentials.name != self.name:
                raise UsageError(f"credentials are for {credentials.name!r}, not {self.name!r}")
            if mesh not in ("default", credentials.mesh):
                raise UsageError(
                    f"mesh {mesh!r} but the credentials are for mesh {credentials.mesh!r}"
                )
            mesh = credentials.mesh
        self._credentials = credentials
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
        self._durability_interval = durability_interval
        self._received_interval = (
            max(durability_interval, RECEIVED_DURABILITY_INTERVAL)
            if received_durability_interval is None
            else received_durability_interval
        )
        self._commit_pacing = commit_pacing
        self._map_size = map_size
        self._max_map_size = max_map_size
        self._listen = listen
        self._seeds = peers
        self._mesh = mesh
        if gossip is None and broker is not None and listen is None and not peers:
            # On a broker alone a write is one publish whatever the overlay, which then only
            # carries anti-entropy, repairs and membership: a ring beyond 8 agents (a join moves
            # only the edges around the joiner; a tree moved most of them). (Acks go
            # by broadcast, and only while an agent waits in replicated(): see gossip/acks.py.)
            # Failures are the broker's to see (an agent's Last Will clears its presence, and
            # the core is told at once), so a link that is slow to answer (a starved event
            # loop among many agents) is not declared dead after 5 s: each such death, and its
            # refutation, was flooded to every agent and reshaped the tree (link churn).
            gossip = GossipConfig.lan(
                full_mesh_max=8, suspect_timeout=60.0, connect_timeout=15.0, overlay_shape="ring"
            )
        self._gossip_config = gossip or GossipConfig.lan()
        self._quotas = quotas
        self._sharding_config = ShardingConfig(replication_factor=replication_factor)
        self._transport_factory = transport
        self._broker = broker
        self._rng = random.Random(seed)
        self._store: Store | None = None
        self._committer: GroupCommitter | None = None
        self._registry: ShardRegistry | None = None
        self._reader: Reader | None = None
        self._core: GossipCore | None = None
        self._transport: Transport | None = None
        self._early_dials: Any = None  # the seeds' connects while start() opens the store
        self._activity = Activity()
        self._history = DurableHistory()  # (given the metrics as its next observer at start)
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
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the store (raising ``DataDirLocked`` if another process has it) and start serving."""
        if self._store is not None or self._early_dials is not None:
            raise UsageError("agent already started")
        if self._closed:
            raise ClosedError("agent was closed; create a new Agent")
        factory: TransportFactory | None = None
        if self._listen is not None or self._seeds or self._broker is not None:
            factory = self._transport_factory or default_factory()
            if factory is None:  # (checked before the store is opened and locked)
                raise UsageError("no transport: pass Agent(..., transport=...) (none is wired in)")
        if factory is not None:
            await self._dial_seeds_early(factory)  # (they complete while the store opens)
        try:
            self._store = Store(
                self.data_dir, map_size=self._map_size, max_map_size=self._max_map_size
            )
        except BaseException:
            await self._abort_start()  # (closes the early dials)
            raise
        await self._early_dials_progress()  # (their upgrades go out while the rest starts)
        self._history = DurableHistory(_extensions.observer_for(self))
        broker_alone = self._broker is not None and self._listen is None and not self._seeds
        pacing = self._commit_pacing
        if pacing is None and broker_alone:
            # Over a broker alone acks are owed only when asked (a peer's WANT_ACK, which
            # hurries the commit): what a peer sent may wait, the longer the more agents
            # share this event loop (issue 14, many agents a process).
            pacing = CommitPacing.of_loop()
        self._committer = GroupCommitter(
            self._store,
            interval=self._durability_interval,
            received_interval=self._received_interval,
            remote_interval_cap=REMOTE_DURABILITY_CAP if pacing is not None else None,
            pacing=pacing,
            on_durable=self._on_durable,
            compact_merge=updates.replay,
            trusted_merge=replay_trusted,
            before_commit=self._before_commit,
            observer=self._history,
        )
        host = _AgentShardHost(self._committer, self._activity)
        self._registry = ShardRegistry(
            self.name,
            self._store,
            # every append, local or not; a local write also calls notify() (_on_delta)
            notify=self._committer.notify_remote,
            on_delta=self._on_delta,
            host=host,
        )
        try:
            await self._committer.start()
            # Issue #11: a store holding updates from before the work limits is checked once
            # (every later open is as fast as before); a poisoned shard is quarantined, not
            # loaded, and never listed to peers.
            self._registry.check_all()
            if factory is not None:
                await self._start_gossip(self._registry, factory)
                host.core = self._core
                host.kick = self._kick_transport
        except BaseException as exc:
            # Leave nothing behind: a retry (this Agent or a new one) must find the data
            # directory unlocked, not DataDirLocked.
            await self._abort_start()
            if isinstance(exc, OSError):
                raise ListenFailed(
                    f"agent {self.name!r} cannot listen on {self._listen}: {exc}"
                ) from exc
            raise
        self._reader = Reader(
            self._registry, self._core.sharding if self._core is not None else None, self._activity
        )
        if self._http_options is not None:
            server = _extensions.http_server(self, self._http_options)
            try:
                await server.start()
            except BaseException:
                await self.close()  # do not leave the store and peers open behind a failed start
                raise
            self._http = server
        await self._hellos_progress()  # (the early-dialled seeds have our Hello when it returns)

    @property
    def seeds(self) -> dict[str, str]:
        """Per seed address given in ``peers``: ``"connected"``, ``"dialling"`` or
        ``"unreachable: <error>"`` (its last dial; dials are retried with backoff). The first
        failure of each seed is also logged as a WARNING on ``crdtsync.transports.websocket``."""
        status = getattr(self._transport, "seed_status", None)
        known = status() if status is not None else {}
        return {
            a: known.get(a, "dialling" if self._transport is not None else "not started")
            for a in self._seeds
        }

    @property
    def address(self) -> str | None:
        """The ``ws://`` address this agent accepts peers on (port resolved), if it listens."""
        return self._transport.address if self._transport is not None else None

    @property
    def core(self) -> GossipCore | None:
        """Low-level: this agent's sans-I/O gossip core, for inspection tools and drivers;
        None until started with ``listen=`` or ``peers=``. Changing it voids every guarantee."""
        return self._core

    @property
    def reader(self) -> Reader:
        """Low-level: this agent's remote-read driver (raw scans for inspection tools)."""
        if self._reader is None:
            self._require_store()
            raise UsageError("agent not started")  # pragma: no cover (_require_store raised)
        return self._reader

    @property
    def credentials(self) -> Credentials | None:
        """The mesh credentials this agent authenticates with (None: an open, loopback mesh).
        Every door the agent opens (gossip, HTTP, ...) is guarded by them."""
        return self._credentials

    def reload_revocations(self) -> int:
        """Re-read the revocation list now and close every open connection of a peer whose
        certificate (or Yjs client whose token) it revokes, with ``CERT_REVOKED`` (4016);
        returns how many were closed, the HTTP event streams it ends included. A running
        agent also looks by itself every second. 0 without TLS credentials (the mesh secret
        cannot be revoked: rotate it)."""
        check = getattr(self._transport, "check_revocations", None)
        closed = int(check(reload=True)) if check is not None else 0
        if self._http is not None:
            if check is None and self._credentials is not None:
                self._credentials.reload_revocations()
            closed += self._http.end_revoked()
        return closed

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of this agent's HTTP API (port resolved), if it serves one."""
        return self._http.url if self._http is not None else None

    async def close(self) -> None:
        """Flush everything to disk, close peer connections and the store. Idempotent."""
        if self._closed or self._closing:
            return
        self._closing = True  # refuse new API calls; frames still arriving are served
        try:
            # HTTP first, then peers, so nothing arrives after the final commit; then the commit.
            if self._http is not None:
                await self._http.close()
            self._send_outgoing(closing=True)  # the last (coalesced) deltas go to the peers
            if self._transport is not None:
                await self._transport.close()
            if self._committer is not None:
                if self._registry is not None:
                    self._registry.store_digests()  # committed by the final commit
                await self._committer.close()
        finally:
            self._closed = True
            if self._registry is not None:
                self._registry.close()
            if self._store is not None:
                self._store.close()

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} data_dir={str(self.data_dir)!r}>"


def check_address(address: object, what: str, *, listen: bool, custom: bool) -> str:
    """Refuse an address that is not a URL the transport can use, before anything starts.

    ``ws://HOST:PORT`` / ``wss://HOST:PORT`` (port 0 only to listen), or ``hub://NAME``; with
    a custom transport any ``scheme://...`` passes (that transport decides).

    Raises:
        InvalidAddress: with what is wrong and an example.
    """
    example = "ws://127.0.0.1:8765"
    if not isinstance(address, str) or "://" not in address:
        raise InvalidAddress(f"{what} address {address!r} is not a URL: write it like {example!r}")
    parts = urlsplit(address)
    if custom or parts.scheme == "hub":
        return address
    if parts.scheme not in ("ws", "wss"):
        raise InvalidAddress(
            f"{what} address {address!r}: the scheme must be ws:// or wss://, e.g. {example!r}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidAddress(f"{what} address {address!r}: {exc}") from exc
    if not parts.hostname or port is None or (port == 0 and not listen):
        raise InvalidAddress(
            f"{what} address {address!r} needs a host and a port, e.g. {example!r}"
        )
    return address
