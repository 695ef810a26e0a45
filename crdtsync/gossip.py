"""The pure gossip core: who to talk to, what to send, what to apply. No I/O.

:class:`GossipCore` is a sans-I/O state machine in the style of ``websockets.protocol`` and
``h11``. It never touches sockets, asyncio, LMDB, pycrdt documents, the clock or the global
random generator: time comes in as ``now`` arguments, randomness from the ``random.Random`` it
is given, documents are reached only through a :class:`~crdtsync.replica.ReplicaSet`, and
everything it wants done comes back out as effects. The asyncio agent (over websockets) and the
simulator (:mod:`crdtsync.transports.memory`, virtual clock) drive the same core, so a failing
simulation seed replays exactly.

Driver contract
---------------
Call, in this order::

    core = GossipCore(name, replicas, rng=random.Random(seed), config=..., mesh=..., address=..., seeds=...)
    # on every new connection, inbound or outbound: send core.hello() as the first frame;
    # when the peer's first frame arrives:
    peer = core.connection_made(hello, now)    # ProtocolError -> close with err.code; do NOT
                                               # call connection_lost for that connection.
                                               # If another connection already carries `peer`,
                                               # close that older one (it is replaced; do not
                                               # report it lost either)
    core.receive(peer, msg, now)               # each later frame (after wire.decode)
    core.local_update(shard, delta, now)       # each delta this agent made
    core.durable(shards, now)                  # after each group commit
    core.connection_lost(peer, now)            # a connection that connection_made accepted closed
    core.dial_failed(address, now)             # a connection attempt from dials() failed
    core.pause_writing(peer) / core.resume_writing(peer, now)   # transport flow control
    core.tick(now)                             # at next_deadline(), or any time
    # after EVERY call above, execute the effects:
    for peer, msg in core.data_to_send(): send wire.encode(msg) to peer; if msg is a Close,
                                          close that connection with msg.code afterwards
    for address in core.dials(): open a connection to address
    deadline = core.next_deadline()            # call tick(deadline) then (None: nothing timed)

``receive`` raises :class:`~crdtsync.errors.ProtocolError` for a misbehaving peer (the driver
closes that connection with ``err.code``); nothing of a refused message has been applied. It
raises :class:`~crdtsync.errors.UsageError` for a driver bug (a peer that is not connected).

Protocol
--------
*Push.* Every delta made here is queued for every connected peer, and every remote delta that
changed our state (``ReplicaSet.apply`` returned it) is queued for every connected peer but
the one it came from when the mesh is large; ``apply`` returning None means "nothing new", so a
duplicate is never forwarded and floods die out. Queues are flushed once per batching window
(:attr:`GossipConfig.push_interval`) as one :class:`~crdtsync.messages.Push` per peer and
shard, so the number of messages grows with the number of busy links, not with the write rate.
Windows are aligned to multiples of the interval so that, with synchronised clocks and a link
latency below the window, a relay forwards a batch at the very next boundary: each hop then
costs one window instead of latency plus a random wait.

*Lost pushes.* Pushes carry a sequence number per connection and shard. A gap means one was
lost, and Yjs cannot integrate a client's later structs without it (they stay pending, and so
nothing is forwarded to the agents behind us): the receiver asks the sender for a repair at
once (``SyncRequest``), again every :attr:`GossipConfig.repair_timeout` until the ``Diff``
comes. Over TCP there are no gaps; this is for lossy transports and for the simulator.

*Overlay.* With at most :attr:`GossipConfig.full_mesh_max` live agents everyone connects to
everyone and pushes its own deltas directly (no forwarding needed). Beyond that the agents form
one spanning tree, computed by every agent from the same membership view: agents ordered by a
hash of (mesh, name), the first :attr:`GossipConfig.tree_core` forming a clique at the top and
each agent having :attr:`GossipConfig.fanout` children (heap layout). A tree carries every
delta exactly once per link and direction, the least possible; anti-entropy is what makes it
safe when the tree is broken (crash, partition, disagreeing views).

*Pull (anti-entropy).* Every :attr:`GossipConfig.anti_entropy_interval` (with jitter), and on
every new connection (by the side with the smaller name), a round with one peer:

1. A -> B ``Summary(root)``: a hash over A's sorted (shard, digest) pairs. Equal roots: done,
   one message whatever the number of shards.
2. B -> A ``Digests``: B's per-shard digests.
3. A compares. Shards only A has: ``Diff(diff(empty))`` straight away. Shards whose digests
   differ (even with equal state vectors: a lost delete changes the digest, not the state
   vector) or that only B has: A -> B ``SyncRequest`` with A's state vectors.
4. B -> A ``Diff(diff(sv_A), sv_B)``: what A lacks plus B's whole delete set.
5. A applies it; if A's digest still differs from B's, A -> B ``Diff(diff(sv_B))``.

In a tree, a periodic round with a neighbour whose pushes flow both ways without a sequence
gap is skipped: such a link already carries everything a round would find, so under load the
pushes are the anti-entropy (at most :attr:`GossipConfig.anti_entropy_skip_max` rounds in a row
are skipped). Rounds are bounded to :attr:`GossipConfig.max_sync_shards` shards.

*Membership.* Seeds are dialled while we have no connection; every connection starts with a
full :class:`~crdtsync.messages.PeerList`, and changes (joins, deaths, refutations) are flooded
in later windows; one random peer gets a full list every
:attr:`GossipConfig.peer_exchange_interval`. A peer whose connection was lost (or cannot be
dialled) is *suspect*; after :attr:`GossipConfig.suspect_timeout` without a connection it is
declared *dead* and leaves the overlay. SWIM incarnations settle conflicting reports: a higher
incarnation wins, at equal incarnations "dead" wins, and an agent told it is dead raises its own
incarnation (refutes). Dials back off exponentially with jitter per address; dead agents that
would be our overlay neighbours if alive keep being redialled (with backoff), so a healed
partition is bridged by a few agents, not by everyone at once. Of two agents that want an
edge, the smaller name dials; if both connections happen anyway, the newest one replaces the
older. Connections the overlay does not need are closed after
:attr:`GossipConfig.prune_grace` with ``Close(NORMAL)``.

*Back-pressure.* Pushes queued for a peer beyond :attr:`GossipConfig.max_queue_bytes` (a slow
link, or paused by the driver) are dropped and replaced by an anti-entropy round once the
link drains: memory stays bounded and the peer still converges.

*Acks.* After :meth:`GossipCore.durable`, peers that sent us a shard (or said they hold it) are
owed our on-disk (state vector, delete set): piggybacked on a Push to them within
:attr:`GossipConfig.ack_delay`, or else sent as an :class:`~crdtsync.messages.Ack` (at most
once per :attr:`GossipConfig.ack_interval`).
:meth:`GossipCore.replicated` says which peers' acks cover a given state (``updates.covers``).
Acks come from directly connected peers only.

*Flooding.* Each connection has a token bucket (:attr:`GossipConfig.flood_rate` messages per
second, bursts of :attr:`GossipConfig.flood_burst`); a peer that exceeds it is refused with
``FLOODING``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import updates
from .errors import CloseCode, InvalidShardName, InvalidUpdate, ProtocolError, UsageError
from .messages import (
    PROTOCOL_VERSION,
    Ack,
    Close,
    Diff,
    Digests,
    Hello,
    Message,
    PeerEntry,
    PeerList,
    Push,
    ShardState,
    Summary,
    SyncRequest,
)
from .names import validate_shard_name
from .replica import ReplicaSet

__all__ = [
    "GossipConfig",
    "GossipCore",
    "PeerStatus",
    "EMPTY_STATE_VECTOR",
    "CONNECTED",
    "ALIVE",
    "SUSPECT",
    "DEAD",
]

#: The encoded empty Yjs state vector (a varuint 0: no clients): ``diff`` of it is everything.
EMPTY_STATE_VECTOR = b"\x00"

#: Peer states reported by :meth:`GossipCore.peers`.
CONNECTED = "connected"
ALIVE = "alive"  # known alive, not connected to us
SUSPECT = "suspect"  # connection lost or undialable, not yet declared dead
DEAD = "dead"


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Every knob of the gossip protocol, with the reason for its default.

    Times are in seconds, sizes in bytes.
    """

    #: Batching window: deltas for one peer+shard wait at most this long and leave as one Push.
    #: 0.11 s is just above a 100 ms WAN hop, so an aligned relay forwards at the next boundary.
    push_interval: float = 0.11
    #: Flush on multiples of push_interval (needs roughly synchronised clocks to pay off;
    #: harmless without): a relay hop then costs one window, not latency + a random wait.
    align_windows: bool = True
    #: A link that carried no Push in the current window sends a delta at once instead of
    #: waiting for the boundary. Off: under load it moves the wait to the first relay (aligned
    #: windows) and costs extra messages; it only pays at light load.
    send_when_idle: bool = False
    #: Up to this many live agents, everyone connects to everyone: one hop, no forwarding.
    full_mesh_max: int = 8
    #: Children per agent in the spanning tree of larger meshes: degree fanout+1, depth log_b n.
    #: 5 keeps 25 agents within 4 hops of each other with no agent above a quarter of the
    #: traffic (benchmarks/gossip_sim.py).
    fanout: int = 5
    #: Agents forming a clique at the top of the tree: more than one spreads the root's load.
    tree_core: int = 1
    #: Mean time between anti-entropy rounds: long enough to be cheap (one message per idle
    #: round), short enough that a lost push is repaired within seconds.
    anti_entropy_interval: float = 5.0
    #: Relative jitter of that interval, so that agents do not all start rounds together.
    anti_entropy_jitter: float = 0.25
    #: In a tree, a periodic round with a neighbour whose pushes flow both ways without a
    #: sequence gap is skipped (the pushes are the anti-entropy), but not for longer than
    #: this many intervals in a row.
    anti_entropy_skip_max: int = 6
    #: Shards repaired per anti-entropy round at most; the rest wait for the next round, so a
    #: round's burst of Diff messages stays bounded.
    max_sync_shards: int = 256
    #: Largest Push built from a queue; a bigger batch is split (a single bigger delta is
    #: sent alone).
    max_batch_bytes: int = 256 << 10
    #: Pushes queued for one peer beyond this are dropped and replaced by anti-entropy, so a
    #: slow peer cannot grow our memory.
    max_queue_bytes: int = 4 << 20
    #: Standalone Ack messages go to a peer at most this often; acks ride on Pushes for free.
    ack_interval: float = 1.0
    #: An owed ack waits this long for a Push to the peer to ride on before it goes alone:
    #: a couple of windows, short next to the time a caller of replicated() waits anyway.
    ack_delay: float = 0.25
    #: A repair asked for after a gap in Push sequence numbers is asked again after this long
    #: while its Diff has not come (the request or the reply may be lost too).
    repair_timeout: float = 0.5
    #: A peer without a connection for this long is declared dead and leaves the overlay:
    #: long enough to ride out a reconnect, short enough to re-route the tree quickly.
    suspect_timeout: float = 5.0
    #: Dead agents are remembered this long (so stale "alive" reports cannot resurrect them).
    forget_timeout: float = 3600.0
    #: A dial with neither connection_made nor dial_failed after this long counts as failed.
    connect_timeout: float = 10.0
    #: First reconnect delay; doubles per failure up to backoff_max; each delay is jittered
    #: down to half, so agents that lost the same peer do not redial in lockstep.
    backoff_base: float = 0.5
    #: Longest reconnect delay: a healed partition is noticed within this.
    backoff_max: float = 30.0
    #: Of two agents that both want a connection, the one with the smaller name dials; the
    #: other dials too after this grace (in case their views disagree).
    dial_grace: float = 1.0
    #: Connections the overlay does not need are kept this long before being closed, so that
    #: converging views do not make connections flap.
    prune_grace: float = 5.0
    #: A full PeerList goes to one random peer this often: membership anti-entropy.
    peer_exchange_interval: float = 30.0
    #: Messages per second a peer may send us on average before it is refused as flooding.
    flood_rate: float = 2000.0
    #: Burst allowance of that token bucket (an anti-entropy round after a partition sends
    #: one Diff per shard).
    flood_burst: float = 10000.0
    #: Largest frame the driver should accept (wire.decode max_size).
    max_frame: int = 16 << 20

    def __post_init__(self) -> None:
        if self.push_interval < 0 or self.anti_entropy_interval <= 0:
            raise UsageError("push_interval must be >= 0 and anti_entropy_interval > 0")
        if self.fanout < 1 or self.tree_core < 1 or self.full_mesh_max < 1:
            raise UsageError("fanout, tree_core and full_mesh_max must be >= 1")
        if not 0 <= self.anti_entropy_jitter < 1:
            raise UsageError("anti_entropy_jitter must be in [0, 1)")
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise UsageError("need 0 < backoff_base <= backoff_max")
        if self.flood_rate <= 0 or self.flood_burst < 1:
            raise UsageError("flood_rate must be > 0 and flood_burst >= 1")


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What this agent knows about one other agent (see :meth:`GossipCore.peers`).

    Attributes:
        name: agent name.
        address: its listen address, if known.
        state: :data:`CONNECTED`, :data:`ALIVE`, :data:`SUSPECT` or :data:`DEAD`.
        incarnation: its membership incarnation as known here.
        neighbour: whether the overlay wants a connection to it.
        queued_bytes: pushes waiting for it.
        dropped: pushes dropped for it because its queue was full.
        acked: the latest durable state it acked, per shard (replication lag).
    """

    name: str
    address: str | None
    state: str
    incarnation: int
    neighbour: bool
    queued_bytes: int = 0
    dropped: int = 0
    acked: tuple[ShardState, ...] = ()


@dataclass(slots=True)
class _Member:
    name: str
    address: str | None
    incarnation: int
    status: str  # ALIVE, SUSPECT or DEAD (CONNECTED is derived from _conns)
    since: float  # when status last changed


@dataclass(slots=True)
class _Conn:
    name: str
    since: float
    tokens: float
    refilled: float
    queue: dict[str, list[bytes]] = field(default_factory=dict)
    queued_bytes: int = 0
    dropped: int = 0
    writable: bool = True
    last_push_at: float = -math.inf
    resync: bool = False  # pushes were dropped: run anti-entropy once the link drains
    closing: bool = False  # a Close(NORMAL/GOING_AWAY) went either way: losing it is no failure
    pending_acks: dict[str, ShardState] = field(default_factory=dict)
    acks_since: float = math.inf  # when the oldest pending ack became owed
    last_ack_at: float = -math.inf
    last_push_in: float = -math.inf  # when a Push last came from it
    last_round_at: float = -math.inf  # when we last started an anti-entropy round with it
    acked_out: dict[str, ShardState] = field(default_factory=dict)  # last state acked to it
    interest: set[str] = field(default_factory=set)  # shards it holds or sent us
    digests: dict[str, bytes] = field(default_factory=dict)  # from its last Digests
    seq_out: dict[str, int] = field(default_factory=dict)  # last Push seq sent, per shard
    seq_in: dict[str, int] = field(default_factory=dict)  # last Push seq received, per shard
    repairs: dict[str, float] = field(default_factory=dict)  # shard -> when repair was asked


class GossipCore:
    """The gossip protocol of one agent, as a pure state machine (see the module docstring).

    Args:
        name: this agent's name, unique in the mesh.
        replicas: the shards this agent holds; the only way the core reads or changes them.
        rng: the only source of randomness (AE peer choice, jitter); seed it to replay.
        config: protocol knobs.
        mesh: agents only talk to agents of the same mesh.
        address: where this agent accepts connections, or None if it does not listen.
        seeds: addresses to dial while this agent has no connection.
    """

    def __init__(
        self,
        name: str,
        replicas: ReplicaSet,
        *,
        rng: random.Random,
        config: GossipConfig = GossipConfig(),
        mesh: str = "default",
        address: str | None = None,
        seeds: Iterable[str] = (),
    ) -> None:
        self.name = validate_shard_name(name)
        self.mesh = validate_shard_name(mesh)
        self.replicas = replicas
        self.config = config
        self._address = address
        self._rng = rng
        self._seeds = [s for s in dict.fromkeys(seeds) if s != address]
        self._incarnation = 0
        self._now = -math.inf
        self._conns: dict[str, _Conn] = {}
        self._members: dict[str, _Member] = {}
        self._outbox: list[tuple[str, Message]] = []
        # membership changes to flood at the next flush: name -> (entry, peer it came from)
        self._changes: dict[str, tuple[PeerEntry, str | None]] = {}
        self._acked: dict[str, dict[str, ShardState]] = {}  # peer -> shard -> durable state
        self._dialing: dict[str, float] = {}  # address -> when the dial was handed out
        self._backoff: dict[str, tuple[int, float]] = {}  # address -> (failures, retry at)
        self._self_addresses: set[str] = set() if address is None else {address}
        self._want_since: dict[str, float] = {}
        self._flush_at: float | None = None
        self._next_ae: float | None = None
        self._next_px: float | None = None
        # (neighbours, tree mode, dead agents to keep redialling): recomputed only when the
        # membership view changes (set to None there), not on every event.
        self._overlay: tuple[frozenset[str], bool, frozenset[str]] | None = None
        self._ranks: dict[str, bytes] = {}

    @property
    def address(self) -> str | None:
        """Where this agent accepts connections (sent in Hello and PeerList), or None."""
        return self._address

    @address.setter
    def address(self, value: str | None) -> None:
        # A driver may learn its real address only once it listens (port 0).
        self._address = value
        if value is not None:
            self._self_addresses.add(value)
            self._seeds = [s for s in self._seeds if s != value]

    # ------------------------------------------------------------------------------------------
    # handshake and connections

    def hello(self) -> Hello:
        """The first message to send on every new connection, inbound or outbound."""
        return Hello(
            version=PROTOCOL_VERSION,
            mesh=self.mesh,
            name=self.name,
            address=self.address,
            shards=tuple(self._shard_names()),
            incarnation=self._incarnation,
        )

    def connection_made(self, hello: Message, now: float) -> str:
        """Accept a peer's handshake; return its name, the key for every later call.

        Raises:
            ProtocolError: ``BAD_HANDSHAKE`` (not a Hello), ``PROTOCOL_VERSION``,
                ``WRONG_MESH``, or ``DUPLICATE_NAME`` (it is ourselves). The driver closes
                that connection and does not report it lost.

        A second connection from an agent already connected replaces the first: the driver
        then closes the older connection and does not report it lost.
        """
        self._advance(now)
        if not isinstance(hello, Hello):
            raise ProtocolError(f"expected Hello, got {type(hello).__name__}", CloseCode.BAD_HANDSHAKE)
        if hello.version != PROTOCOL_VERSION:
            raise ProtocolError(f"protocol version {hello.version} != {PROTOCOL_VERSION}", CloseCode.PROTOCOL_VERSION)
        if hello.mesh != self.mesh:
            raise ProtocolError(f"mesh {hello.mesh!r} is not {self.mesh!r}", CloseCode.WRONG_MESH)
        if hello.name == self.name:
            if hello.address is not None:
                self._self_addresses.add(hello.address)  # never dial ourselves again
            raise ProtocolError("connected to ourselves", CloseCode.DUPLICATE_NAME)
        peer = hello.name
        old = self._conns.pop(peer, None)
        if old is not None:
            # The newest connection for a name wins: the old one is most likely left over
            # from before the peer restarted (a dead TCP connection can linger until a
            # keepalive times out), and both sides of a simultaneous dial see the two
            # handshakes in the same order, so they keep the same connection.
            old.closing = True
        cfg = self.config
        conn = _Conn(peer, since=now, tokens=cfg.flood_burst, refilled=now)
        conn.interest.update(hello.shards)
        self._conns[peer] = conn
        for address in (hello.address,):
            if address is not None:
                self._dialing.pop(address, None)
                self._backoff.pop(address, None)
        self._want_since.pop(peer, None)

        m = self._members.get(peer)
        if m is None or hello.incarnation > m.incarnation:
            self._set_member(peer, hello.address, hello.incarnation, ALIVE, now, source=peer)
        else:
            if m.status == DEAD:
                # It is alive (we are talking to it) but reported dead at an incarnation it
                # has not outgrown: tell it, so it refutes with a higher incarnation that
                # every other agent will accept.
                self._send(peer, PeerList((PeerEntry(peer, m.address, m.incarnation, False),)))
                self._overlay = None
            if hello.address is not None and m.address != hello.address:
                m.address = hello.address
                self._overlay = None
            if m.status != ALIVE:
                m.status, m.since = ALIVE, now
        self._send(peer, PeerList(self._full_table(), full=True))
        if self.name < peer:  # one side starts the on-connect round; its Diffs go both ways
            conn.last_round_at = now
            self._send(peer, self._summary())
        self._ensure_timers(now)
        return peer

    def connection_lost(self, peer: str, now: float) -> None:
        """A connection that :meth:`connection_made` accepted is gone (idempotent)."""
        self._advance(now)
        conn = self._conns.pop(peer, None)
        if conn is None:
            return
        self._want_since.pop(peer, None)
        m = self._members.get(peer)
        if m is None:
            return
        if not conn.closing and m.status == ALIVE:
            m.status, m.since = SUSPECT, now
        if m.address is not None and not conn.closing:
            self._backoff.setdefault(m.address, (0, now + self._jitter(self.config.backoff_base)))

    def dial_failed(self, address: str, now: float) -> None:
        """A connection attempt to ``address`` (from :meth:`dials`) failed."""
        self._advance(now)
        self._dialing.pop(address, None)
        failures = self._backoff.get(address, (0, 0.0))[0] + 1
        delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** (failures - 1))
        self._backoff[address] = (failures, now + self._jitter(delay))
        for m in self._members.values():
            if m.address == address and m.status == ALIVE and m.name not in self._conns:
                m.status, m.since = SUSPECT, now

    def pause_writing(self, peer: str) -> None:
        """The transport's buffer for ``peer`` is full: hold pushes (up to max_queue_bytes)."""
        conn = self._conns.get(peer)
        if conn is not None:
            conn.writable = False

    def resume_writing(self, peer: str, now: float) -> None:
        """The transport's buffer for ``peer`` drained: pushes flow again."""
        self._advance(now)
        conn = self._conns.get(peer)
        if conn is not None:
            conn.writable = True
            if conn.queue or conn.resync:
                self._schedule_flush(now)

    # ------------------------------------------------------------------------------------------
    # incoming messages

    def receive(self, peer: str, msg: Message, now: float) -> None:
        """Handle one message from connected ``peer``.

        Raises:
            ProtocolError: the peer misbehaved; close its connection with ``err.code``.
                Nothing of the message was applied.
            UsageError: ``peer`` is not connected (a driver bug).
        """
        self._advance(now)
        conn = self._conns.get(peer)
        if conn is None:
            raise UsageError(f"receive() from {peer!r}, which is not connected")
        cfg = self.config
        conn.tokens = min(cfg.flood_burst, conn.tokens + (now - conn.refilled) * cfg.flood_rate)
        conn.refilled = now
        if conn.tokens < 1:
            raise ProtocolError(f"{peer} exceeded {cfg.flood_rate:g} messages/s", CloseCode.FLOODING)
        conn.tokens -= 1
        if isinstance(msg, Push):
            self._on_push(conn, msg, now)
        elif isinstance(msg, Summary):
            if msg.root != self._root_hash():
                self._send(peer, Digests(tuple((s, self._digest(s)) for s in self._shard_names())))
        elif isinstance(msg, Digests):
            self._on_digests(conn, msg)
        elif isinstance(msg, SyncRequest):
            self._on_sync_request(conn, msg)
        elif isinstance(msg, Diff):
            self._on_diff(conn, msg, now)
        elif isinstance(msg, Ack):
            for st in msg.states:
                _check_state(st.state_vector, st.delete_set)
            for st in msg.states:
                self._record_ack(peer, st)
                conn.interest.add(st.shard)
        elif isinstance(msg, PeerList):
            for entry in msg.peers:
                self._merge(entry, peer, now)
        elif isinstance(msg, Close):
            if msg.code in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
                conn.closing = True
            if msg.code == CloseCode.GOING_AWAY:  # it is stopping: leave the overlay now
                m = self._members.get(peer)
                if m is not None:
                    self._set_member(peer, m.address, m.incarnation, DEAD, now, source=peer)
            elif msg.code == CloseCode.NORMAL:  # pruned: do not redial right away
                m = self._members.get(peer)
                if m is not None and m.address is not None:
                    failures = self._backoff.get(m.address, (0, 0.0))[0] + 1
                    delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** (failures - 1))
                    self._backoff[m.address] = (failures, now + self._jitter(delay))
        elif isinstance(msg, Hello):
            raise ProtocolError("second Hello on one connection", CloseCode.BAD_HANDSHAKE)
        else:  # pragma: no cover - wire.decode only produces the types above
            raise ProtocolError(f"unexpected message {type(msg).__name__}", CloseCode.UNKNOWN_MESSAGE)

    def _on_push(self, conn: _Conn, msg: Push, now: float) -> None:
        # Check everything before applying anything: the ack, and every update of a batch
        # (a single update is validated by ReplicaSet.apply itself, atomically).
        if msg.durable is not None:
            _check_state(*msg.durable)
        if len(msg.updates) > 1:
            for u in msg.updates:
                try:
                    updates.validate_update(u)
                except InvalidUpdate as exc:
                    raise ProtocolError(f"invalid update in Push: {exc}", CloseCode.INVALID_UPDATE) from exc
        for u in msg.updates:
            self._apply(conn, msg.shard, u)
        if msg.durable is not None:
            self._record_ack(conn.name, ShardState(msg.shard, *msg.durable))
        conn.last_push_in = now
        if msg.seq:
            last = conn.seq_in.get(msg.shard, 0)
            if msg.seq > last + 1 and msg.shard not in conn.repairs:
                # A Push of this shard was lost on the way: the deltas above may now wait for
                # it (Yjs integrates a client's structs in clock order), and so would every
                # agent behind us. Ask the sender for what we lack right away.
                self._ask_repair(conn, msg.shard, now)
            conn.seq_in[msg.shard] = max(last, msg.seq)

    def _ask_repair(self, conn: _Conn, shard: str, now: float) -> None:
        conn.repairs[shard] = now
        sv = self.replicas.state_vector(shard) if shard in self._shard_names() else EMPTY_STATE_VECTOR
        self._send(conn.name, SyncRequest(((shard, sv),)))

    def _on_digests(self, conn: _Conn, msg: Digests) -> None:
        theirs = dict(msg.digests)
        conn.digests = theirs
        conn.interest.update(theirs)
        mine = set(self._shard_names())
        budget = self.config.max_sync_shards
        requests: list[tuple[str, bytes]] = []
        for shard in sorted(mine | set(theirs)):
            if budget <= 0:
                break
            have = shard in mine
            if have and shard not in theirs:
                self._send(conn.name, Diff(shard, self.replicas.diff(shard, EMPTY_STATE_VECTOR)))
                budget -= 1
            elif not have:
                requests.append((shard, EMPTY_STATE_VECTOR))
                budget -= 1
            elif self._digest(shard) != theirs[shard]:
                requests.append((shard, self.replicas.state_vector(shard)))
                budget -= 1
        if requests:
            self._send(conn.name, SyncRequest(tuple(requests)))

    def _on_sync_request(self, conn: _Conn, msg: SyncRequest) -> None:
        for _, sv in msg.state_vectors:
            _check_state(sv, None)
        held = set(self._shard_names())
        for shard, sv in msg.state_vectors:
            conn.interest.add(shard)
            if shard in held:
                self._send(conn.name, Diff(shard, self.replicas.diff(shard, sv), self.replicas.state_vector(shard)))

    def _on_diff(self, conn: _Conn, msg: Diff, now: float) -> None:
        if msg.state_vector is not None:
            _check_state(msg.state_vector, None)
        self._apply(conn, msg.shard, msg.update)
        conn.repairs.pop(msg.shard, None)
        if msg.state_vector is not None and conn.digests.get(msg.shard) != self._digest(msg.shard):
            self._send(conn.name, Diff(msg.shard, self.replicas.diff(msg.shard, msg.state_vector)))

    def _apply(self, conn: _Conn, shard: str, update: bytes) -> None:
        try:
            delta = self.replicas.apply(shard, update, conn.name)
        except InvalidUpdate as exc:
            raise ProtocolError(f"invalid update for {shard!r}: {exc}", CloseCode.INVALID_UPDATE) from exc
        except InvalidShardName as exc:
            raise ProtocolError(str(exc), CloseCode.INVALID_SHARD) from exc
        conn.interest.add(shard)
        if delta is None:
            return
        # Forward what changed our state. In a full mesh the origin reached everyone itself;
        # in a tree we are a relay. Never back to where it came from.
        if self._overlay_view()[1]:
            for other in self._conns.values():
                if other is not conn and not other.closing:
                    self._enqueue(other, shard, delta)

    # ------------------------------------------------------------------------------------------
    # local events

    def local_update(self, shard: str, delta: bytes, now: float) -> None:
        """A delta this agent made to ``shard`` (already applied locally): push it to peers.

        Raises:
            InvalidShardName: ``shard`` is not a valid name.
        """
        self._advance(now)
        validate_shard_name(shard)
        for conn in self._conns.values():
            if not conn.closing:
                self._enqueue(conn, shard, delta)

    def durable(self, shards: Iterable[str], now: float) -> None:
        """These shards' latest changes are on disk: owe acks to the peers that want them."""
        self._advance(now)
        for shard in sorted(set(shards)):
            sv, ds = self.replicas.durable_state(shard)
            state = ShardState(shard, sv, ds)
            for conn in self._conns.values():
                if shard in conn.interest and conn.acked_out.get(shard) != state:
                    conn.pending_acks[shard] = state
                    conn.acks_since = min(conn.acks_since, now)
                    self._schedule_flush(now)

    # ------------------------------------------------------------------------------------------
    # timers

    def tick(self, now: float) -> None:
        """Run whatever timers are due at ``now``: flush, acks, anti-entropy, membership."""
        self._advance(now)
        cfg = self.config
        self._ensure_timers(now)
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_at = None
            self._flush(now)
        self._send_due_acks(now)
        if self._next_ae is not None and now >= self._next_ae:
            self._next_ae = now + self._ae_delay()
            peers = [c for c in self._conns.values() if not c.closing]
            if peers:
                conn = self._rng.choice(peers)
                if not self._pushes_suffice(conn, now):
                    conn.last_round_at = now
                    self._send(conn.name, self._summary())
        if self._next_px is not None and now >= self._next_px:
            self._next_px = now + cfg.peer_exchange_interval
            peers = [c.name for c in self._conns.values() if not c.closing]
            if peers:
                self._send(self._rng.choice(peers), PeerList(self._full_table(), full=True))
        for m in list(self._members.values()):
            if m.status == SUSPECT and m.name not in self._conns and now >= m.since + cfg.suspect_timeout:
                self._set_member(m.name, m.address, m.incarnation, DEAD, now, source=None)
            elif m.status == DEAD and now >= m.since + cfg.forget_timeout:
                del self._members[m.name]
                self._acked.pop(m.name, None)
                self._overlay = None
        for address, started in list(self._dialing.items()):
            if now >= started + cfg.connect_timeout:
                self.dial_failed(address, now)
        for conn in self._conns.values():
            for shard, asked in list(conn.repairs.items()):
                if now >= asked + cfg.repair_timeout:
                    self._ask_repair(conn, shard, now)
        self._prune(now)

    def _flush(self, now: float) -> None:
        for conn in self._conns.values():
            changes = [e for e, src in self._changes.values() if src != conn.name]
            if changes:
                self._send(conn.name, PeerList(tuple(sorted(changes, key=lambda e: e.name))))
            if conn.writable:
                for shard, queued in conn.queue.items():
                    self._push(conn, shard, queued, now=now)
                conn.queue.clear()
                conn.queued_bytes = 0
                if conn.resync:
                    conn.resync = False
                    self._send(conn.name, self._summary())
        self._changes.clear()

    def _ack_due(self, conn: _Conn) -> float:
        cfg = self.config
        return max(conn.acks_since + cfg.ack_delay, conn.last_ack_at + cfg.ack_interval)

    def _send_due_acks(self, now: float) -> None:
        # Acks wait for the next window flush and then up to ack_delay for a Push to ride on;
        # standalone Ack messages go to one peer at most once per ack_interval.
        if self._flush_at is not None:
            return
        for conn in self._conns.values():
            if conn.pending_acks and now >= self._ack_due(conn):
                conn.acks_since = math.inf
                states = tuple(conn.pending_acks[s] for s in sorted(conn.pending_acks))
                conn.pending_acks.clear()
                conn.last_ack_at = now
                for st in states:
                    conn.acked_out[st.shard] = st
                self._send(conn.name, Ack(states))

    def _pushes_suffice(self, conn: _Conn, now: float) -> bool:
        """Whether a periodic round with ``conn`` can be skipped.

        In a tree every change reaching a neighbour is pushed on to us (apply() returns it,
        we are not its source), and sequence numbers reveal a lost Push at the next one. A
        link busy both ways with no repair outstanding therefore carries everything a round
        would find. A full mesh does not forward, so there rounds always run; and a forced
        round comes every anti_entropy_skip_max intervals whatever the traffic.
        """
        cfg = self.config
        window = cfg.anti_entropy_interval
        return (
            self._overlay_view()[1]
            and not conn.repairs
            and now - conn.last_push_in < window
            and now - conn.last_push_at < window
            and now - conn.last_round_at < window * cfg.anti_entropy_skip_max
            and conn.last_round_at > -math.inf
        )

    def _prune_candidates(self) -> list[tuple[_Conn, float]]:
        """(connection, when it may be pruned) for connections the overlay does not need."""
        desired, _ = self._overlay_view()
        out = []
        for conn in self._conns.values():
            if conn.closing or conn.name in desired:
                continue
            m = self._members.get(conn.name)
            if m is None or m.address is None:
                continue  # it cannot be dialled back: keep the edge it made
            out.append((conn, conn.since + self.config.prune_grace))
        return out

    def _prune(self, now: float) -> None:
        live = sum(1 for c in self._conns.values() if not c.closing)
        for conn, at in self._prune_candidates():
            if live <= 1:  # never cut our last connection: it is how we hear about the mesh
                break
            if now >= at:
                conn.closing = True
                live -= 1
                self._send(conn.name, Close(CloseCode.NORMAL, "pruned: not an overlay neighbour"))

    def _ensure_timers(self, now: float) -> None:
        if self._conns:
            if self._next_ae is None:
                self._next_ae = now + self._ae_delay()
            if self._next_px is None:
                self._next_px = now + self.config.peer_exchange_interval

    # ------------------------------------------------------------------------------------------
    # effects

    def data_to_send(self) -> list[tuple[str, Message]]:
        """Messages to send, as (peer, message), in order; the outbox is emptied.

        After sending a :class:`~crdtsync.messages.Close`, close that connection.
        """
        out, self._outbox = self._outbox, []
        return out

    def dials(self) -> list[str]:
        """Addresses to open connections to now (each handed out once until it succeeds,
        fails via :meth:`dial_failed`, or times out)."""
        now = self._now
        out = [a for a, ready in self._dial_candidates() if ready <= now]
        for a in out:
            self._dialing[a] = now
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (None: no timer pending).

        Lets an event loop sleep, and the simulator jump its virtual clock, until then.
        """
        cfg = self.config
        times: list[float] = []
        if self._flush_at is not None:
            times.append(self._flush_at)
        for t in (self._next_ae, self._next_px):
            if t is not None and self._conns:
                times.append(t)
        if self._flush_at is None:
            for conn in self._conns.values():
                if conn.pending_acks:
                    times.append(self._ack_due(conn))
        for m in self._members.values():
            if m.status == SUSPECT and m.name not in self._conns:
                times.append(m.since + cfg.suspect_timeout)
            elif m.status == DEAD:
                times.append(m.since + cfg.forget_timeout)
        for started in self._dialing.values():
            times.append(started + cfg.connect_timeout)
        for conn in self._conns.values():
            times.extend(asked + cfg.repair_timeout for asked in conn.repairs.values())
        for _, ready in self._dial_candidates():
            times.append(ready)
        if sum(1 for c in self._conns.values() if not c.closing) > 1:
            times.extend(at for _, at in self._prune_candidates())
        if not times:
            return None
        # A deadline in the past means "now": tick() handles it (dials are handed out by
        # dials(), which the driver calls after tick, so those never linger).
        return max(min(times), self._now)

    # ------------------------------------------------------------------------------------------
    # queries

    def replicated(self, shard: str, state_vector: bytes, delete_set: bytes) -> tuple[str, ...]:
        """Peers whose latest durable ack of ``shard`` covers (state_vector, delete_set).

        The agent passes what it wants replicated (e.g. its own state right after a write) and
        waits until at least k peers are returned. Only directly connected peers ack.
        """
        out = []
        for peer in sorted(self._acked):
            st = self._acked[peer].get(shard)
            if st is not None and updates.covers(st.state_vector, st.delete_set, state_vector, delete_set):
                out.append(peer)
        return tuple(out)

    def peers(self) -> tuple[PeerStatus, ...]:
        """Every agent known here, sorted by name, with connection state and replication lag."""
        desired, _ = self._overlay_view()
        out = []
        for name in sorted(self._members):
            m = self._members[name]
            conn = self._conns.get(name)
            acked = self._acked.get(name, {})
            out.append(
                PeerStatus(
                    name=name,
                    address=m.address,
                    state=CONNECTED if conn is not None else m.status,
                    incarnation=m.incarnation,
                    neighbour=name in desired,
                    queued_bytes=conn.queued_bytes if conn else 0,
                    dropped=conn.dropped if conn else 0,
                    acked=tuple(acked[s] for s in sorted(acked)),
                )
            )
        return tuple(out)

    @property
    def incarnation(self) -> int:
        """This agent's current membership incarnation."""
        return self._incarnation

    def connected(self) -> tuple[str, ...]:
        """Names of the peers currently connected, sorted."""
        return tuple(sorted(self._conns))

    def neighbours(self) -> frozenset[str]:
        """Agents the overlay wants this agent connected to."""
        return self._overlay_view()[0]

    # ------------------------------------------------------------------------------------------
    # internals: queues, digests, overlay, membership

    def _advance(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _send(self, peer: str, msg: Message) -> None:
        self._outbox.append((peer, msg))

    def _enqueue(self, conn: _Conn, shard: str, update: bytes) -> None:
        if conn.queued_bytes + len(update) > self.config.max_queue_bytes:
            # Back-pressure: the peer is not keeping up. Drop what is queued for it and let
            # anti-entropy bring it up to date once it drains, instead of growing memory.
            conn.dropped += sum(len(q) for q in conn.queue.values()) + 1
            conn.queue.clear()
            conn.queued_bytes = 0
            conn.resync = True
            self._schedule_flush(self._now)
            return
        queue = conn.queue.setdefault(shard, [])
        queue.append(update)
        conn.queued_bytes += len(update)
        cfg = self.config
        if (
            cfg.send_when_idle
            and conn.writable
            and conn.queued_bytes == len(update)
            and conn.last_push_at < self._window_start(self._now)
        ):
            # Idle link: nothing to batch with, so waiting for the boundary only adds latency.
            del conn.queue[shard]
            conn.queued_bytes = 0
            self._push(conn, shard, [update], now=self._now)
            return
        self._schedule_flush(self._now)

    def _window_start(self, now: float) -> float:
        w = self.config.push_interval
        if w <= 0:
            return now
        return math.floor(now / w) * w if self.config.align_windows else now - w

    def _push(self, conn: _Conn, shard: str, queued: list[bytes], *, now: float) -> None:
        """Send ``queued`` deltas of ``shard`` to ``conn`` as Pushes of at most max_batch_bytes,
        with our pending ack of the shard riding on the last one."""
        batch: list[bytes] = []
        size = 0
        for u in queued:
            if batch and size + len(u) > self.config.max_batch_bytes:
                self._send(conn.name, Push(shard, tuple(batch), None, self._next_seq(conn, shard)))
                batch, size = [], 0
            batch.append(u)
            size += len(u)
        ack = conn.pending_acks.pop(shard, None)
        if ack is not None:
            conn.acked_out[shard] = ack
            if not conn.pending_acks:
                conn.acks_since = math.inf
        durable = None if ack is None else (ack.state_vector, ack.delete_set)
        self._send(conn.name, Push(shard, tuple(batch), durable, self._next_seq(conn, shard)))
        conn.last_push_at = now

    @staticmethod
    def _next_seq(conn: _Conn, shard: str) -> int:
        seq = conn.seq_out[shard] = conn.seq_out.get(shard, 0) + 1
        return seq

    def _schedule_flush(self, now: float) -> None:
        if self._flush_at is not None:
            return
        w = self.config.push_interval
        if w <= 0:
            self._flush_at = now
        elif self.config.align_windows:
            self._flush_at = (math.floor(now / w) + 1) * w
        else:
            self._flush_at = now + w

    def _jitter(self, delay: float) -> float:
        return delay * (0.5 + 0.5 * self._rng.random())

    def _ae_delay(self) -> float:
        j = self.config.anti_entropy_jitter
        return self.config.anti_entropy_interval * (1 + j * (2 * self._rng.random() - 1))

    # No caches here: the core would go stale if anything changed a replica behind its back
    # (and anti-entropy would then wrongly see "equal"). A ReplicaSet caches its digests,
    # invalidated by its own document observers, which see every change.

    def _shard_names(self) -> list[str]:
        return sorted(set(self.replicas.shard_names()))

    def _digest(self, shard: str) -> bytes:
        return self.replicas.digest(shard)

    def _root_hash(self) -> bytes:
        h = hashlib.blake2b(digest_size=16, person=b"crdtsync.root1")
        for shard in self._shard_names():
            name = shard.encode()
            d = self.replicas.digest(shard)
            h.update(len(name).to_bytes(2, "big") + name + len(d).to_bytes(1, "big") + d)
        return h.digest()

    def _summary(self) -> Summary:
        return Summary(self._root_hash(), len(self._shard_names()))

    def _record_ack(self, peer: str, state: ShardState) -> None:
        self._acked.setdefault(peer, {})[state.shard] = state

    def _rank(self, name: str) -> bytes:
        r = self._ranks.get(name)
        if r is None:
            # hash first (spreads tree positions), the name after it (breaks any tie)
            digest = hashlib.blake2b(self.mesh.encode() + b"\0" + name.encode(), digest_size=8).digest()
            r = self._ranks[name] = digest + name.encode()
        return r

    def _overlay_view(self) -> tuple[frozenset[str], bool]:
        """(agents we want connections to, whether we relay pushes), from the live view.

        Every agent computes the same tree from the same view; views differ only briefly
        (while membership news spreads), and any edge one side wants is kept by both.
        """
        return self._views()[:2]  # type: ignore[return-value]

    def _views(self) -> tuple[frozenset[str], bool, frozenset[str]]:
        if self._overlay is None:
            live = [n for n, m in self._members.items() if m.status != DEAD]
            # Dead agents we keep redialling (with backoff): those that would be our
            # neighbours if they were alive. Each dead agent is so retried by a few agents,
            # not by all, and a healed partition is bridged as soon as one retry gets through.
            known = [n for n, m in self._members.items() if m.status != DEAD or m.address is not None]
            dead = {n for n, m in self._members.items() if m.status == DEAD}
            retry = frozenset(n for n in self._neighbours_among(known) if n in dead)
            self._overlay = (self._neighbours_among(live), len(live) + 1 > self.config.full_mesh_max, retry)
        return self._overlay

    def _neighbours_among(self, members: list[str]) -> frozenset[str]:
        """Our neighbours in the overlay over ``members`` (plus us)."""
        cfg = self.config
        if len(members) + 1 <= cfg.full_mesh_max:
            return frozenset(members)
        order = sorted([*members, self.name], key=self._rank)
        n, c, b = len(order), min(cfg.tree_core, len(order)), cfg.fanout
        i = order.index(self.name)
        want: set[int] = set()
        if i < c:
            want.update(j for j in range(c) if j != i)
        else:
            want.add((i - c) // b)
        want.update(range(c + i * b, min(n, c + (i + 1) * b)))
        return frozenset(order[j] for j in want)

    def _dial_candidates(self) -> list[tuple[str, float]]:
        """(address, time it may be dialled) for every connection we want and lack."""
        now = self._now
        desired, _, retry = self._views()
        addresses: dict[str, float] = {}
        for name in sorted(desired | retry):
            if name in self._conns:
                continue
            m = self._members[name]
            if m.address is None or m.address in self._self_addresses:
                continue
            since = self._want_since.setdefault(name, now)
            if m.status == DEAD and m.address not in self._backoff:
                # First retry of an agent declared dead: not at once, it just failed.
                self._backoff[m.address] = (1, now + self._jitter(self.config.backoff_base))
            # Both sides want the edge: the smaller name dials, the other only after a grace.
            addresses[m.address] = now if self.name < name else since + self.config.dial_grace
        if not self._conns:
            for a in self._seeds:
                addresses.setdefault(a, now)
        out = []
        for a, ready in addresses.items():
            if a in self._dialing or a in self._self_addresses:
                continue
            backoff = self._backoff.get(a)
            out.append((a, ready if backoff is None else max(ready, backoff[1])))
        return out

    def _full_table(self) -> tuple[PeerEntry, ...]:
        entries = [PeerEntry(self.name, self.address, self._incarnation, True)]
        entries += [PeerEntry(m.name, m.address, m.incarnation, m.status != DEAD) for m in self._members.values()]
        return tuple(sorted(entries, key=lambda e: e.name))

    def _set_member(self, name: str, address: str | None, incarnation: int, status: str, now: float, *, source: str | None) -> None:
        m = self._members.get(name)
        if m is None:
            m = self._members[name] = _Member(name, address, incarnation, status, now)
        else:
            if (m.status == DEAD) != (status == DEAD) or m.status != status:
                m.since = now
            m.address = address if address is not None else m.address
            m.incarnation, m.status = incarnation, status
        self._overlay = None
        self._changes[name] = (PeerEntry(name, m.address, m.incarnation, status != DEAD), source)
        if self._conns:
            self._schedule_flush(now)

    def _merge(self, e: PeerEntry, source: str, now: float) -> None:
        """Fold one membership report into our view (SWIM incarnation rules)."""
        if e.name == self.name:
            if e.incarnation > self._incarnation or (not e.alive and e.incarnation >= self._incarnation):
                self._incarnation = e.incarnation + 1  # refute: we are alive, and newer
                self._changes[self.name] = (PeerEntry(self.name, self.address, self._incarnation, True), None)
                self._schedule_flush(now)
            return
        m = self._members.get(e.name)
        connected = e.name in self._conns
        if m is None:
            if e.alive or not connected:
                self._set_member(e.name, e.address, e.incarnation, ALIVE if e.alive else DEAD, now, source=source)
            return
        if e.incarnation > m.incarnation:
            if not e.alive and connected:
                # We are talking to it: pass the report on so that it refutes it.
                self._send(e.name, PeerList((e,)))
                m.incarnation = e.incarnation
                return
            self._set_member(e.name, e.address, e.incarnation, ALIVE if e.alive else DEAD, now, source=source)
        elif e.incarnation == m.incarnation:
            if not e.alive and m.status != DEAD:
                if connected:
                    self._send(e.name, PeerList((e,)))
                else:
                    self._set_member(e.name, e.address, e.incarnation, DEAD, now, source=source)
            elif e.address is not None and m.address is None:
                m.address = e.address
                self._overlay = None


def _check_state(sv: bytes, ds: bytes | None) -> None:
    """Validate a state vector (and delete set) from a peer before anything uses it."""
    try:
        updates.decode_state_vector(sv)
        if ds is not None:
            updates.decode_delete_set(ds)
    except InvalidUpdate as exc:
        raise ProtocolError(str(exc), CloseCode.INVALID_UPDATE) from exc
