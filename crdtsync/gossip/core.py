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
must do. The facade's methods live in this module (construction, local writes, acks) and in
its mixins, one concern each: :mod:`._connections` (handshake, connections, ``receive``),
:mod:`._timers` (``tick``, ``next_deadline``, ``dials``, the effects), :mod:`._queries`
(read-only answers) and :mod:`._fanout` (broadcast links).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..messages import (
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
from ._connections import _Connections
from ._context import Context
from ._fanout import _Fanout
from ._queries import _Queries
from ._timers import _Timers
from ._view import _View
from ._yjs import EMPTY_STATE_VECTOR
from .components import build
from .config import GossipConfig
from .effects import Effects, PeerStatus
from .gate import Gate
from .guard import QuotaSet
from .links import Link
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


class GossipCore(_Queries, _Fanout, _Connections, _Timers):
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
        on_ack_wanted: called with a shard's name, inside the call that received it, when a
            peer asks for our ack of that shard (it waits in ``replicated()``; a WANT_ACK on
            a link or broadcast). Acks cover only what is durable, so the agent commits now
            instead of at its group commit's bound. The same for every driver: drivers never
            inspect what they carry.
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
        on_ack_wanted: Callable[[str], None] | None = None,
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
        ctx.grid = lambda: self._views().grid
        ctx.shortcuts = self._shortcuts
        ctx.on_ack_wanted = on_ack_wanted
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
        #: (generation, the earliest timer a received Push cannot move: membership, dials,
        #: pruning, anti-entropy rounds)
        self._deadlines: tuple[int, float] = (-1, math.inf)
        #: Bumped instead of ``_gen`` by a received Push (no credentials): it may move only
        #: the relay's, the repairs' and the acks' timers (see next_deadline).
        self._light = 0
        #: ((generation, light generation), the relay's and repairs' earliest, acks' earliest)
        self._light_deadlines: tuple[tuple[int, int], float, float] = ((-1, -1), math.inf, math.inf)
        #: (generation, first time a dial may be due) after a dials() that handed out none:
        #: until then, at the same generation, dials() has nothing to compute (a kick per
        #: local write asks it every time).
        self._no_dials: tuple[int, float] = (-1, math.inf)
        #: ((generation, time), dial candidates): computed once per call into the core.
        self._dials_at: tuple[tuple[int, float], list[tuple[str, float]]] = ((-1, math.nan), [])
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
        if (held.due is None and not held.aligned) or shard not in self._local_names:
            return False
        if self._holdable[0] != self._gen:  # what _moves_timers reads changes only at a bump
            self._holdable = (self._gen, not self._moves_timers())
        if not self._holdable[1]:
            return False
        # (False too for the write that lets the window end at a pause: the driver reads
        # next_deadline after the hand-over, and arms its timer at the pause's deadline.)
        if not held.add(shard, delta, now):
            return False
        self._ctx.now = max(self._ctx.now, now)
        self.policy.local_update(shard)
        return True

    def _moves_timers(self) -> bool:
        """Whether a local write may move a timer (see local_updates): one that may send at
        once, carrying pending acks, or goes through the rotating relay or a fanout medium."""
        return (
            self._mode() != FULL
            or self._p.pushes.any_fanout
            or any(c.acks.pending_acks or c.acks.relay_acks for c in self._conns.values())
        )

    @property
    def holding_local(self) -> bool:
        """Whether local writes wait in the coalescing window (it ends at its deadline, or
        earlier when the writer's stream pauses: both in :meth:`next_deadline`)."""
        return self._p.pushes.coalescer.holding

    def flush_local(self, now: float) -> None:
        """Send the local writes held in the coalescing window now, not at its end (a driver
        that is closing calls it, then executes the effects). Aligned windows: queued for
        the window's flush, as every write was before they were held."""
        self._advance(now)
        if self._p.pushes.coalescer.holding:
            self._p.pushes.flush_local(now)

    # ------------------------------------------------------------------------------------------
    # acks, and the timers every connection needs
    # (handshake, connections, receive: _connections.py; tick, deadlines, effects: _timers.py)

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

    def _ensure_timers(self, now: float) -> None:
        if self._conns:
            self._p.ae.ensure_timer(now)
            self._p.members.ensure_exchange(now)

    def overlay_changed(self) -> None:
        """The extra neighbours (``policy.extra_neighbours()``) changed: recompute the overlay."""
        self._gen += 1
        self._p.overlay.extra_changed()

    def _advance(self, now: float) -> None:
        self._ctx.now = max(self._ctx.now, now)
        self._gen += 1  # an entry point: timers may move (see next_deadline)


def _route(service: Service) -> Callable[[Link, Any, float], None]:
    """The dispatch-table entry of a plug-in's message type."""

    def handle(conn: Link, msg: Any, now: float) -> None:
        service.receive(conn.name, msg, now)

    return handle
