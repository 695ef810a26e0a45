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
    core.set_address(address)                  # once the listen address is known (port 0)
    # on every new connection, a Handshake (gossip/handshake.py) decides when our Hello
    # goes: at once if we dialled it, else only once the dialler's Hello was accepted (a
    # stranger learns nothing). hs = Handshake(core, outbound=..., identity=...); send
    # hs.data_to_send(); when the peer's first frame arrives:
    peer = hs.receive(hello, now)              # = core.connection_made(hello, now, outbound=...)
                                               # then send hs.data_to_send() (our Hello if we
                                               # were dialled), also when it raised.
                                               # ProtocolError -> close with err.code; do NOT
                                               # call connection_lost for that connection
                                               # (DUPLICATE_NAME from an agent we are connected
                                               # to: the core keeps that other connection).
                                               # If another connection already carries `peer`,
                                               # close that older one (it is replaced; do not
                                               # report it lost either)
    core.receive(peer, msg, now)               # each later frame (after wire.decode)
    core.local_update(shard, delta, now)       # each delta this agent made (or several
                                               # made together: core.local_updates)
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

A driver whose medium fans out (an MQTT broker) also marks its links ``broadcast_link(peer)``
and publishes ``broadcasts_to_send()`` once each (see :mod:`crdtsync.gossip._fanout`).

``receive`` raises :class:`~crdtsync.errors.ProtocolError` for a misbehaving peer (the driver
closes that connection with ``err.code``); nothing of a refused message has been applied. It
raises :class:`~crdtsync.errors.UsageError` for a driver bug (a peer that is not connected).

The protocol itself is described in the package docstring (:mod:`crdtsync.gossip`); each
concern lives in its own module there, and this facade only routes calls to them: ``receive``
is a table from message type to handler (plug-ins register theirs), ``tick`` runs the
components' timers in a fixed order, and :meth:`GossipCore.effects` collects what the driver
must do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import (
    CloseCode,
    ProtocolError,
    UsageError,
)
from ..messages import (
    PROTOCOL_VERSION,
    Ack,
    Certificates,
    Close,
    Diff,
    DiffBatch,
    DiffChunk,
    Digests,
    Hello,
    Message,
    PeerList,
    Push,
    Summary,
    SyncRequest,
)
from ..names import validate_shard_name
from ..replica import ReplicaSet
from ._context import Context
from ._fanout import _Fanout
from ._queries import _Queries
from ._view import _View
from ._yjs import EMPTY_STATE_VECTOR
from .components import build
from .config import GossipConfig
from .effects import Effects, PeerStatus
from .gate import Gate
from .guard import QuotaSet
from .links import Link, accept, check_hello, closing_cleanly, prune, prune_candidates
from .membership import PeerState
from .overlay import FULL, RELAY, TREE
from .policy import FullReplication, ReplicationPolicy, Service
from .security import Security

if TYPE_CHECKING:
    import random  # the type of the generator a driver hands in; never the module's own

__all__ = [
    "ALIVE",
    "CONNECTED",
    "DEAD",
    "EMPTY_STATE_VECTOR",
    "FULL",
    "RELAY",
    "SUSPECT",
    "TREE",
    "Effects",
    "GossipConfig",
    "GossipCore",
    "PeerStatus",
]

#: Peer states reported by :meth:`GossipCore.peers` (see :class:`PeerState`).
CONNECTED = PeerState.CONNECTED
ALIVE = PeerState.ALIVE
SUSPECT = PeerState.SUSPECT
DEAD = PeerState.DEAD


class GossipCore(_Queries, _Fanout):
    """The gossip protocol of one agent, as a pure state machine (see the module docstring).

    Args:
        name: this agent's name, unique in the mesh.
        replicas: the shards this agent holds; the only way the core reads or changes them.
        rng: the only source of randomness (AE peer choice, jitter); seed it to replay.
        config: protocol knobs.
        mesh: agents only talk to agents of the same mesh.
        address: where this agent accepts connections, or None if it does not listen.
        seeds: addresses to dial while this agent has no connection.
        policy: who holds which shard (:class:`~crdtsync.gossip.policy.ReplicationPolicy`);
            default :class:`~crdtsync.gossip.policy.FullReplication`. The driver constructs
            it (e.g. :class:`crdtsync.sharding.Sharding` for placement and remote reads).
        services: further plug-ins, each owning some message types.
        quotas: the quotas that hold across connections (:class:`~crdtsync.gossip.guard.
            QuotaSet`, default: its defaults); refusals are in :attr:`quota_counters`.
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
        policy: ReplicationPolicy | None = None,
        services: Iterable[Service] = (),
        quotas: QuotaSet | None = None,
    ) -> None:
        self.name = validate_shard_name(name)
        self.mesh = validate_shard_name(mesh)
        self.replicas = replicas
        self.config = config
        self._rng = rng
        #: Who holds which shard; every push, forward, ack and round asks it.
        self.policy: ReplicationPolicy = policy if policy is not None else FullReplication()
        self._ctx = ctx = Context(self.name, config, rng, replicas, self.policy, quotas)
        ctx.mode = self._mode
        self._instance = rng.getrandbits(63)  # this run of the agent (Hello.instance)
        self._conns = ctx.links
        self._p = build(ctx, self.mesh, address, seeds)  # every component, wired (components.py)
        self._sec = Security(ctx, self._p.members, self._p.acks)  # with credentials only
        #: The same object under its older name (``core.sharding.read(...)`` and the like when
        #: the driver passed a :class:`crdtsync.sharding.Sharding`).
        self.sharding: Any = self.policy
        self._services: tuple[Service, ...] = (self.policy, *services)
        #: Bumped by every call that may change a timer (see next_deadline's cache).
        self._gen = 0
        #: (generation, the earliest timer but the flush, services' and acks', acks' earliest)
        self._deadlines: tuple[int, float, float] = (-1, math.inf, math.inf)
        #: (generation, first time a dial may be due) after a dials() that handed out none:
        #: until then, at the same generation, dials() has nothing to compute (a kick per
        #: local write asks it every time).
        self._no_dials: tuple[int, float] = (-1, math.inf)
        #: Shard names a local write was made to (validated once).
        self._local_names: set[str] = set()
        #: (generation, whether a local write moves no timer then): hold_local's test, kept
        #: per generation (a stream of held writes costs no look at every link).
        self._holdable: tuple[int, bool] = (-1, False)
        # receive(): one handler per message type (y-crdt's protocol.rs), plug-ins included.
        self._dispatch: dict[type[Message], Callable[[Link, Any, float], None]] = {
            Push: self._p.pushes.on_push,
            Summary: self._p.ae.on_summary,
            Digests: self._p.ae.on_digests,
            SyncRequest: self._p.ae.on_sync_request,
            Diff: self._p.ae.on_diff,
            DiffChunk: self._p.ae.on_chunk,
            DiffBatch: self._p.ae.on_diff_batch,
            Ack: self._p.acks.on_ack,
            PeerList: self._on_peer_list,
            Close: self._on_close,
            Hello: self._on_hello_again,
            Certificates: self._sec.on_certificates,
        }
        view = _View(self)
        for service in self._services:
            for kind in service.messages:
                if kind in self._dispatch:
                    raise UsageError(f"two handlers for {kind.__name__}")
                self._dispatch[kind] = _route(service)
            service.bind(view)

    def secure(self, gate: Gate) -> None:
        """Enforce permissions and signed records through ``gate`` (see
        :mod:`crdtsync.gossip.gate`); call once, before the first connection. Drivers with
        credentials do; without it the core trusts every peer, as in an unauthenticated mesh."""
        self._gen += 1
        self._sec.secure(gate)

    @property
    def address(self) -> str | None:
        """Where this agent accepts connections (sent in Hello and PeerList), or None."""
        return self._p.members.address

    @address.setter
    def address(self, value: str | None) -> None:
        if value is None:
            self._p.members.address = None
        else:
            self.set_address(value)

    def set_address(self, address: str) -> None:
        """Set where this agent accepts connections, once the driver knows it (port 0).

        Peers learn it from every later Hello and, if we are connected already, from a
        membership update flooded at the next window. The address (like any earlier one) is
        remembered as ours, so it is never dialled, even when a peer reports it.
        """
        self._gen += 1
        changed = address != self._p.members.address
        self._p.members.address = address
        self._p.dialer.own_address(address)
        if changed and self._conns:
            self._p.members.announce(self._ctx.now)

    # ------------------------------------------------------------------------------------------
    # handshake and connections

    @property
    def secured(self) -> bool:
        """Whether :meth:`secure` was called: every connection is then authenticated by the
        driver before its handshake (:class:`~crdtsync.gossip.handshake.Handshake`)."""
        return self._ctx.gate is not None

    def hello(self, identity: object = None) -> Hello:
        """The first message to send on every new connection, inbound or outbound (when:
        :class:`~crdtsync.gossip.handshake.Handshake`); with credentials, cut to what the
        peer ``identity`` may read.

        It lists no shards (issue #11): its size must not grow with the number of shards (an
        agent with 132,000 shards had a Hello over every peer's frame limit, and was cut off
        for good). A peer learns what we hold after the handshake, in messages that stay
        small: the on-connect anti-entropy round (equal Summary roots, or Digests), pushes and
        acks, and with partial replication :class:`~crdtsync.messages.Holdings` in pieces.
        """
        hello = Hello(
            version=PROTOCOL_VERSION,
            mesh=self.mesh,
            name=self.name,
            address=self.address,
            shards=(),
            incarnation=self._p.members.incarnation,
            instance=self._instance,
        )
        gate = self._ctx.gate
        if gate is not None and identity is not None:
            cut = gate.outgoing(identity, hello)
            assert isinstance(cut, Hello)  # a Hello is always sent, only its shards are cut
            return cut
        return hello

    def connection_made(
        self, hello: Message, now: float, *, outbound: bool, identity: object = None
    ) -> str:
        """Accept a peer's handshake; return its name, the key for every later call.

        Args:
            hello: the first message received on the connection.
            now: the driver's clock.
            outbound: whether this agent dialled the connection (it came from :meth:`dials`).
            identity: the peer as the driver authenticated it (with credentials; the driver
                has checked that ``hello.name`` is its name). Every message it sends then goes
                through the security gate (:meth:`secure`). None: no credentials.

        Raises:
            ProtocolError: ``BAD_HANDSHAKE`` (not a Hello), ``PROTOCOL_VERSION``,
                ``WRONG_MESH``, or ``DUPLICATE_NAME``: it is ourselves, or the agent is
                already connected and the other connection is kept (see below). The driver
                closes that connection and does not report it lost.

        A second connection with an agent already connected either replaces the old one (the
        driver closes the old one and does not report it lost) or is refused: the rule, alike
        on both sides, is :func:`~crdtsync.gossip.links.replaces`.
        """
        self._advance(now)
        hello = check_hello(hello, self.mesh)
        if hello.name == self.name:
            if hello.address is not None:
                self._p.dialer.self_addresses.add(hello.address)  # never dial ourselves again
            raise ProtocolError("connected to ourselves", CloseCode.DUPLICATE_NAME)
        peer = hello.name
        try:
            conn = accept(self._conns, self.name, hello, now, outbound, self.config)
        except ProtocolError:
            self._p.dialer.refused(hello.address)
            raise
        self._sec.connected(conn, identity)
        self._p.dialer.connected(peer, hello.address)

        self._p.members.hello(peer, hello.address, hello.incarnation, now)
        self._ctx.send(peer, PeerList(self._p.members.full_table(), full=True))
        for service in self._services:
            service.connection_made(peer, hello, now)
        if self.name < peer:  # one side starts the on-connect round; its Diffs go both ways
            self._p.ae.start_round(conn, now)
        self._ensure_timers(now)
        return peer

    def connection_lost(self, peer: str, now: float) -> None:
        """A connection that :meth:`connection_made` accepted is gone (idempotent)."""
        self._advance(now)
        conn = self._conns.pop(peer, None)
        if conn is None:
            return
        self._ctx.guard.peer_gone(peer)
        for service in self._services:
            service.connection_lost(peer, now)
        self._p.dialer.lost(peer)
        m = self._p.members.lost(peer, conn.closing, now)
        if m is None:
            return
        if m.address is not None and not conn.closing:
            self._p.dialer.backoff.lost(m.address, now)

    def dial_failed(self, address: str, now: float) -> None:
        """A connection attempt to ``address`` (from :meth:`dials`) failed."""
        self._advance(now)
        self._p.dialer.failed(address, now)
        self._p.members.unreachable(address, now)

    def pause_writing(self, peer: str) -> None:
        """The transport's buffer for ``peer`` is full: hold pushes (up to max_queue_bytes)."""
        self._gen += 1
        conn = self._conns.get(peer)
        if conn is not None:
            conn.writable = False

    def resume_writing(self, peer: str, now: float) -> None:
        """The transport's buffer for ``peer`` drained: pushes flow again."""
        self._advance(now)
        conn = self._conns.get(peer)
        if conn is not None:
            conn.writable = True
            if conn.has_pending() or (conn.fanout and self._p.pushes.fanout.queue):
                self._ctx.schedule_flush(now)

    # ------------------------------------------------------------------------------------------
    # incoming messages

    def read_delay(self, peer: str, now: float) -> float:
        """Seconds a driver should wait before it reads the next frame of ``peer`` (fair
        reading between peers, :meth:`Guard.read_delay <crdtsync.gossip.guard.Guard.
        read_delay>`); 0.0: read it now. The cheapest check there is: a frame that waits is
        not even decoded. Drivers that cannot hold a peer back (the simulator) do not ask."""
        return self._ctx.guard.read_delay(peer, now)

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
        # Flood limit per peer name (a reconnect does not reset it) and the fair share of
        # the budget of all peers together: ProtocolError FLOODING.
        self._ctx.guard.admit_message(peer, now)
        handler = self._dispatch.get(type(msg))
        if handler is None:  # pragma: no cover - wire.decode only produces known types
            raise ProtocolError(
                f"unexpected message {type(msg).__name__}", CloseCode.UNKNOWN_MESSAGE
            )
        admitted = self._sec.admit(conn, msg)  # the receive boundary (credentials only)
        if admitted is not None:
            handler(conn, admitted, now)

    def _on_peer_list(self, conn: Link, msg: PeerList, now: float) -> None:
        for entry in msg.peers:
            self._p.members.merge(entry, conn.name, now)

    def _on_close(self, conn: Link, msg: Close, now: float) -> None:
        """The peer is closing the connection (the driver reports it lost afterwards)."""
        if closing_cleanly(conn, msg):
            if msg.code == CloseCode.GOING_AWAY:  # it is stopping: leave the overlay now
                self._p.members.left(conn.name, now)
            else:  # do not redial right away
                m = self._p.members.get(conn.name)
                if m is not None and m.address is not None:
                    self._p.dialer.backoff.failed(m.address, now)

    def _on_hello_again(self, conn: Link, msg: Hello, now: float) -> None:
        raise ProtocolError("second Hello on one connection", CloseCode.BAD_HANDSHAKE)

    # ------------------------------------------------------------------------------------------
    # local events

    def local_update(self, shard: str, delta: bytes, now: float) -> None:
        """A delta this agent made to ``shard`` (already applied locally): push it to peers
        (see :meth:`local_updates`).

        Raises:
            InvalidShardName: ``shard`` is not a valid name.
        """
        self.local_updates(shard, (delta,), now)

    def local_updates(self, shard: str, deltas: Sequence[bytes], now: float) -> None:
        """Deltas this agent made to ``shard`` together (already applied locally; e.g. every
        delta of one event-loop turn): push them to peers, merged into one update.

        With a LAN config a stream of writes is coalesced (:mod:`~crdtsync.gossip.coalesce`):
        a write after a quiet window goes at once, later ones at the end of their window
        (:meth:`next_deadline`), one merged update per shard and window.

        Raises:
            InvalidShardName: ``shard`` is not a valid name.
        """
        if not deltas:
            return
        self._ctx.now = max(self._ctx.now, now)
        if shard not in self._local_names:
            validate_shard_name(shard)
            self._local_names.add(shard)
        self._ctx.guard.known.add(shard)
        self.policy.local_update(shard)
        # Queueing a delta moves no timer but the flush and the coalescing window (both read
        # afresh by next_deadline); a write that may send at once, carrying pending acks, or
        # goes through the rotating relay or a fanout medium may (a stream of local writes
        # then costs next_deadline nothing per write: issue 17).
        if self._moves_timers():
            self._gen += 1
        if (
            self._mode() == RELAY
            and self._conns
            and not self._p.pushes.any_fanout  # a broker fans out: no relay in between
        ):
            for delta in self._p.pushes.merged(shard, deltas):
                if len(delta) <= self._ctx.chunk:
                    # Where it goes is decided at the boundary, once the window's relay is known.
                    self._p.relay.local(shard, delta, now)
                else:
                    self._p.pushes.local(shard, (delta,), now)
            return
        self._p.pushes.local(shard, deltas, now)

    def hold_local(self, shard: str, delta: bytes, now: float) -> bool:
        """Add ``delta``, a local write of ``shard``, to the coalescing window if one is open
        and holding it is all there is to do: True, and the driver has nothing to execute (no
        frame, no timer moved; it may call this from within the document's transaction
        observer, as nothing here reads a document). False: nothing done, hand it over with
        :meth:`local_updates` (no window open, a shard not written here before, or a write
        that may move a timer).

        A stream of writes then costs the driver one call per write, not a hand-over and the
        execution of effects each (issue 17's stream row).
        """
        held = self._p.pushes.coalescer
        if held.due is None or shard not in self._local_names:
            return False
        if self._holdable[0] != self._gen:  # what _moves_timers reads changes only at a bump
            self._holdable = (self._gen, not self._moves_timers())
        if not self._holdable[1]:
            return False
        self._ctx.now = max(self._ctx.now, now)
        self.policy.local_update(shard)
        held.held.setdefault(shard, []).append(delta)
        return True

    def _moves_timers(self) -> bool:
        """Whether a local write may move a timer (see local_updates): one that may send at
        once, carrying pending acks, or goes through the rotating relay or a fanout medium."""
        return (
            self._mode() != FULL
            or self._p.pushes.any_fanout
            or any(c.acks.pending_acks or c.acks.relay_acks for c in self._conns.values())
        )

    def flush_local(self, now: float) -> None:
        """Send the local writes held in the coalescing window now, not at its end (a driver
        that is closing calls it, then executes the effects)."""
        self._advance(now)
        if self._p.pushes.coalescer.due is not None:
            self._p.pushes.flush_local(now)

    # ------------------------------------------------------------------------------------------
    # timers

    def durable(self, shards: Iterable[str], now: float) -> None:
        """These shards' latest changes are on disk: owe acks to the peers that want them."""
        self._advance(now)
        self._p.acks.durable(shards, now)

    def want_acks(self, shard: str, now: float) -> None:
        """We wait (in ``replicated()``) for acks of ``shard`` covering changes other agents
        made: ask every peer holding it (in a full mesh, acks go only to the peers that sent
        the shard, see :mod:`crdtsync.gossip.acks`). Cheap to repeat: a peer that has acked
        its current state does not ack it again."""
        self._advance(now)
        validate_shard_name(shard)
        if self._mode() != RELAY:  # the rotating relay spreads every ack to everyone
            self._p.pushes.want_acks(shard, now)

    def tick(self, now: float) -> None:
        """Run whatever timers are due at ``now``: flush, acks, anti-entropy, membership."""
        self._advance(now)
        self._ensure_timers(now)
        if self._p.relay.unconfirmed:
            self._p.relay.retry_unconfirmed(now)
        if self._p.relay.heard:
            self._p.relay.watch(now)
        if self._p.repairs.lags:
            self._p.repairs.check_lags(now)
        paced = self._p.replies.take_due(now)  # paced Digests due: flush now
        if paced is not None and (self._ctx.flush_at is None or self._ctx.flush_at > paced):
            self._ctx.flush_at = paced
        local_due = self._p.pushes.coalescer.due
        if local_due is not None and now >= local_due:
            self._p.pushes.flush_local(now)
        flushed = self._ctx.flush_at is not None and now >= self._ctx.flush_at
        if flushed:
            self._ctx.flush_at = None
            self._p.window.flush(now)
        self._p.acks.send_due(now, flushed=flushed)
        self._p.ae.tick(now)
        self._p.members.exchange(
            now, [c.name for c in self._conns.values() if not c.closing], self._rng
        )
        for name in self._p.members.tick(now):
            self._p.acks.forget(name)
        for address in self._p.dialer.timed_out(now):
            self.dial_failed(address, now)
        self._p.repairs.retry(now)
        self._expire_transfers(now)
        for service in self._services:
            service.tick(now)
        prune(now, self._conns, self._prune_candidates(), self._ctx.send)

    def _expire_transfers(self, now: float) -> None:
        """Drop unfinished DiffChunk transfers past the quota's timeout (checked on every
        tick, which comes at least once an anti-entropy interval while linked)."""
        for peer, transfer in self._ctx.guard.expired_transfers(now):
            conn = self._conns.get(peer)
            if conn is not None and conn.replies.receiving is not None:
                if conn.replies.receiving.transfer == transfer:
                    conn.replies.receiving = None

    def _ensure_timers(self, now: float) -> None:
        if self._conns:
            self._p.ae.ensure_timer(now)
            self._p.members.ensure_exchange(now)

    # ------------------------------------------------------------------------------------------
    # effects

    def effects(self) -> Effects:
        """Everything the driver must do now, in one value: the same as calling
        :meth:`data_to_send`, :meth:`dials` and :meth:`next_deadline` in that order."""
        return Effects(
            self.data_to_send(), self.dials(), self.next_deadline(), self.broadcasts_to_send()
        )

    def data_to_send(self) -> list[tuple[str, Message]]:
        """Messages to send, as (peer, message), in order; the outbox is emptied.

        After sending a :class:`~crdtsync.messages.Close`, close that connection.
        """
        out, self._ctx.outbox = self._ctx.outbox, []
        return self._sec.outbox(self.name, out)  # signed and cut with credentials

    def dials(self) -> list[str]:
        """Addresses to open connections to now (each handed out once until it succeeds,
        fails via :meth:`dial_failed`, or times out)."""
        now = self._ctx.now
        gen, first = self._no_dials
        if gen == self._gen and now < first:
            return []  # nothing moved since the last call, and no candidate is due yet
        candidates = self._dial_candidates()
        out = self._p.dialer.hand_out(now, candidates)
        if out:
            self._gen += 1  # (dials under way time out: a timer)
        else:
            self._no_dials = (self._gen, min((at for _, at in candidates), default=math.inf))
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (None: no timer pending).

        Lets an event loop sleep, and the simulator jump its virtual clock, until then.

        The timers of the components are computed again only after a call that may have
        moved one (a generation counter, bumped by every entry point but a plain local
        write); the flush, the coalescing window and the services' timers are read on every call.
        """
        gen, fixed, acks_at = self._deadlines
        if gen != self._gen:
            fixed = min(self._component_deadlines(), default=math.inf)
            acks_at = min(self._p.acks.deadlines(), default=math.inf)
            self._deadlines = (self._gen, fixed, acks_at)
        times = [fixed]
        flush_at = self._ctx.flush_at
        times.append(acks_at if flush_at is None else flush_at)
        paced = self._p.replies.paced_deadline()
        if paced is not None:
            times.append(paced)
        local_due = self._p.pushes.coalescer.due
        if local_due is not None:
            times.append(local_due)
        for service in self._services:
            at = service.next_deadline()
            if at is not None:
                times.append(at)
        first = min(times)
        if first == math.inf:
            return None
        # A deadline in the past means "now": tick() handles it (dials are handed out by
        # dials(), which the driver calls after tick, so those never linger).
        return max(first, self._ctx.now)

    def _component_deadlines(self) -> list[float]:
        """The components' timers but the flush's and the acks' (see next_deadline)."""
        times: list[float] = []
        for t in (self._p.ae.next_round, self._p.members.next_exchange):
            if t is not None and self._conns:
                times.append(t)
        relay_at = self._p.relay.deadline()
        if relay_at is not None:
            times.append(relay_at)
        times.extend(self._p.members.deadlines())
        times.extend(self._p.dialer.deadlines())
        times.extend(self._p.repairs.deadlines())
        for _, ready in self._dial_candidates():
            times.append(ready)
        if sum(1 for c in self._conns.values() if not c.closing) > 1:
            times.extend(at for _, at in self._prune_candidates())
        return times

    def overlay_changed(self) -> None:
        """The extra neighbours (``policy.extra_neighbours()``) changed: recompute the overlay."""
        self._gen += 1
        self._p.overlay.extra_changed()

    # ------------------------------------------------------------------------------------------
    # internals: queues, digests, overlay, membership

    def _advance(self, now: float) -> None:
        self._ctx.now = max(self._ctx.now, now)
        self._gen += 1  # an entry point: timers may move (see next_deadline)

    def _prune_candidates(self) -> list[tuple[Link, float]]:
        desired = self._views().desired
        return prune_candidates(self._conns, desired, self._p.members, self.config.prune_grace)

    def _dial_candidates(self) -> list[tuple[str, float]]:
        """(address, time it may be dialled) for every connection we want and lack."""
        conns = self._conns
        return self._p.dialer.candidates(
            self._ctx.now,
            self._views(),
            self._p.members,
            conns.__contains__,
            bool(conns),
            self.policy.urgent,
        )


def _route(service: Service) -> Callable[[Link, Any, float], None]:
    """The dispatch-table entry of a plug-in's message type."""

    def handle(conn: Link, msg: Any, now: float) -> None:
        service.receive(conn.name, msg, now)

    return handle
