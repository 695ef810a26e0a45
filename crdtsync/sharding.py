"""Partial replication and remote reads inside the gossip core. Pure: no I/O, no clock.

:class:`Sharding` is a plug-in of :class:`~crdtsync.gossip.GossipCore`: it implements the
core's :class:`~crdtsync.gossip.policy.ReplicationPolicy` and sees the core only through a
:class:`~crdtsync.gossip.policy.CoreView`. The driver constructs it and passes it as
``GossipCore(..., policy=Sharding(config))``; the core asks it whom a shard's deltas go to
and which shards a peer shares, hands it the messages it owns (:class:`~crdtsync.messages.Holdings`,
:class:`~crdtsync.messages.Offer`, :class:`~crdtsync.messages.ReadRequest`,
:class:`~crdtsync.messages.ReadReply`), and ticks it. It has two parts:

*Placement* (only with :attr:`ShardingConfig.replication_factor`; without it every agent
replicates every shard it sees, exactly as the core always did). Every agent announces the
shards it holds (its Hello, then a :class:`~crdtsync.messages.Holdings` on each change) and
the core filters by them: pushes, forwarding and anti-entropy rounds of a shard only go to
peers that hold it, and a delta of a shard this agent does not hold is ignored, so agents never
receive deltas of shards they do not hold. Which agents should hold what, and the hand-off
when that changes, is :class:`crdtsync.placement.PlacementState`; this class executes its plan
(offers, adoptions, drops) and keeps the core connected to the co-holders of its shards (the
overlay's *extra neighbours*), so that a shard's holders form a clique and need no relay.
The one relay left: a delta a subscriber (a non-placement holder) sends to the placement
holders is forwarded by them to the other subscribers.

*Reads* of shards held elsewhere: :class:`crdtsync.query.QueryTable` scatters
:class:`~crdtsync.messages.ReadRequest` to the holders and gathers their replies; this class
answers the requests of others from the local replicas, and dials the holders it must ask.
Merging the answers (CRDT join) is the driver's job: :class:`crdtsync.readcache.ReadCache`.

Driver API (besides what the core calls): :meth:`Sharding.subscribe`, :meth:`Sharding.read`,
:meth:`Sharding.scan`, :meth:`Sharding.result`, :meth:`Sharding.cancel`,
:meth:`Sharding.quorum_size`, :meth:`Sharding.holders`. After calling one of them, execute the
core's effects as after any core call.

Split into mixins of :class:`Sharding`: :mod:`crdtsync._sharding_reads` (remote reads) and
:mod:`crdtsync._sharding_placement` (executing placement's plan).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._sharding_placement import _ShardingPlacement
from ._sharding_reads import _ReadJob, _RemoteReads
from .errors import CloseCode, InvalidUpdate, ProtocolError, UsageError, map_exceptions
from .messages import (
    Ack,
    Hello,
    Holdings,
    Message,
    Offer,
    ReadReply,
    ReadRequest,
    ShardState,
    SyncRequest,
)
from .placement import PlacementState
from .query import QueryTable
from .quotas import name_pieces
from .yjs.parse import validate_update
from .yjs.state import EMPTY_STATE_VECTOR

if TYPE_CHECKING:
    from .gossip.policy import CoreView

__all__ = ["ShardingConfig", "Sharding", "MESSAGES", "EMPTY_STATE_VECTOR"]


_INVALID_UPDATE: dict[type[Exception], CloseCode] = {InvalidUpdate: CloseCode.INVALID_UPDATE}

#: Bytes of shard names per Holdings message at most (a long list goes in pieces).
HOLDINGS_PIECE = 64 << 10

#: Shard names one peer's Holdings (all pieces of one version) may name at most: the shard
#: limit of an agent's store by default (:attr:`crdtsync.quotas.ShardQuota.max_shards`), so an
#: honest peer with default quotas never holds more. The pieces of a version are gathered until
#: the last one; without a bound a peer that never sent it made us keep any number (h-wire's
#: scan: 500,000 names from 5 frames). A peer past it is refused: ProtocolError, OVERSIZE.
MAX_HOLDINGS = 100_000

#: The message types this component handles for the core.
MESSAGES = (Holdings, Offer, ReadRequest, ReadReply)


@dataclass(frozen=True, slots=True)
class ShardingConfig:
    """Knobs of placement and remote reads. Times in seconds.

    Attributes:
        replication_factor: R placement holders per shard; None (the default) keeps full
            replication: every agent replicates every shard it learns of.
        offer_interval: an unanswered offer of a shard to a peer is repeated this often.
        adopt_timeout: an adopted shard for which no data came is forgotten after this.
        reconcile_interval: how often placement is re-planned while a hand-off is under way
            (acks awaited, offers outstanding); otherwise only when something changed.
        holdings_refresh: every peer gets our full Holdings this often (repairs a lost one
            on lossy links; TCP does not lose them).
        hedge_delay: a read not answered after this long also asks the remaining holders.
    """

    replication_factor: int | None = None
    offer_interval: float = 1.0
    adopt_timeout: float = 30.0
    reconcile_interval: float = 0.25
    holdings_refresh: float = 30.0
    hedge_delay: float = 0.25

    def __post_init__(self) -> None:
        if self.replication_factor is not None and self.replication_factor < 1:
            raise UsageError("replication_factor must be >= 1 (or None for full replication)")
        if (
            min(
                self.offer_interval,
                self.adopt_timeout,
                self.reconcile_interval,
                self.holdings_refresh,
            )
            <= 0
        ):
            raise UsageError("sharding intervals must be > 0")
        if self.hedge_delay < 0:
            raise UsageError("hedge_delay must be >= 0")


class Sharding(_RemoteReads, _ShardingPlacement):
    """Placement and reads of one agent: the :class:`~crdtsync.gossip.policy.ReplicationPolicy`
    (and service) the driver hands to its :class:`~crdtsync.gossip.GossipCore`.

    Args:
        config: the knobs; without a replication factor every agent holds every shard and
            only remote reads are served.
    """

    #: The message types this plug-in handles for the core.
    messages: tuple[type[Message], ...] = MESSAGES

    def __init__(self, config: ShardingConfig | None = None) -> None:
        self.config = config = config if config is not None else ShardingConfig()
        self._core: CoreView | None = None
        self._replication_factor = config.replication_factor
        self.placement: PlacementState | None = None
        self.queries = QueryTable(hedge_delay=config.hedge_delay)
        self._peer_holds: dict[str, frozenset[str]] = {}
        self._peer_version: dict[str, int] = {}
        self._holds_parts: dict[str, tuple[int, set[str]]] = {}  # Holdings pieces so far
        self._reads_out: dict[str, deque[_ReadJob]] = {}
        self._now = -math.inf
        self._announced: frozenset[str] = frozenset()
        self._version = 0
        self._extra: frozenset[str] = frozenset()
        self._wanted: frozenset[str] = frozenset()
        self._members: tuple[str, ...] | None = None
        self._listening = True
        self._dirty = True
        self._next_reconcile: float | None = None
        self._next_refresh = -math.inf
        self._fetch_asked: dict[str, tuple[float, str]] = {}  # shard we lack -> (when, whom) asked
        #: Replicas dropped after a completed hand-off, in order (for tests and inspection).
        self.drops: list[tuple[float, str]] = []

    @property
    def partial(self) -> bool:
        """Whether a placement policy decides who holds what (else: full replication)."""
        return self._replication_factor is not None

    def bind(self, core: CoreView) -> None:
        """Called once by the core's constructor: the view of the core this plug-in uses."""
        if self._core is not None:
            raise UsageError("a Sharding belongs to one GossipCore")
        self._core = core
        cfg, r = self.config, self._replication_factor
        if r is not None:
            self.placement = PlacementState(
                core.name,
                r,
                mesh=core.mesh,
                offer_interval=cfg.offer_interval,
                adopt_timeout=cfg.adopt_timeout,
            )

    @property
    def core(self) -> CoreView:
        """The view of the core this plug-in is bound to."""
        if self._core is None:
            raise UsageError("Sharding is not bound to a GossipCore yet")
        return self._core

    def _send(self, peer: str, msg: Message) -> None:
        self.core.send(peer, msg)

    # ------------------------------------------------------------------------------------------
    # what the core asks

    def _have(self) -> set[str]:
        return set(self.core.replicas.shard_names())

    def holdings(self) -> frozenset[str]:
        """Shards this agent holds: replicas, plus (partial) adoptions and subscriptions."""
        have = frozenset(self._have())
        if self.placement is None:
            return have
        return have | frozenset(self.placement.adopting) | self.placement.subscribed

    def sends_to(self, peer: str, shard: str) -> bool:
        """Whether deltas of ``shard`` go to ``peer`` (it holds the shard)."""
        return self.placement is None or shard in self._peer_holds.get(peer, frozenset())

    def accepts(self, shard: str) -> bool:
        """Whether a delta of ``shard`` from a peer is applied here (we hold the shard)."""
        if self.placement is None:
            return True
        p = self.placement
        return shard in p.adopting or shard in p.subscribed or shard in self._have()  # cheap first

    def shares(self, peer: str) -> bool:
        """Whether an anti-entropy round with ``peer`` can find anything (a common shard)."""
        if self.placement is None:
            return True
        return not self._peer_holds.get(peer, frozenset()).isdisjoint(self.holdings())

    def sync_shards(self, peer: str, shards: list[str]) -> list[str]:
        """Of our ``shards`` (sorted), those an anti-entropy round with ``peer`` covers."""
        if self.placement is None:
            return shards
        theirs = self._peer_holds.get(peer, frozenset())
        return [s for s in shards if s in theirs]

    def forward_to(self, source: str, shard: str) -> list[str] | None:
        """Peers to forward a delta of ``shard`` that came from ``source`` to.

        None: full replication, the core's own rule applies. With placement, a shard's
        placement holders are connected to each other and to its subscribers, and everyone
        pushes its own deltas to every holder it is connected to; only a subscriber's delta
        needs a relay to the other subscribers, which the placement holders provide.
        """
        p = self.placement
        if p is None:
            return None
        if not p.is_holder(shard) or p.is_holder(shard, source):
            return []
        return [
            peer
            for peer in self.core.connected()
            if peer != source
            and shard in self._peer_holds.get(peer, frozenset())
            and not p.is_holder(shard, peer)
        ]

    def local_update(self, shard: str) -> None:
        """A local delta of ``shard``: a shard new here must be announced and placed."""
        if self.placement is not None and shard not in self._announced:
            self._dirty = True

    def extra_neighbours(self) -> frozenset[str]:
        """Agents to stay connected to besides the overlay: co-holders and read targets."""
        return self._extra

    def urgent(self, peer: str) -> bool:
        """Whether ``peer`` should be dialled at once (a read is waiting for it)."""
        return peer in self.queries.targets_waiting()

    # ------------------------------------------------------------------------------------------
    # events from the core

    def connection_made(self, peer: str, hello: Hello, now: float) -> None:
        self._peer_holds[peer] = frozenset(hello.shards)
        self._peer_version[peer] = -1
        if self.placement is not None:
            # Our Hello may predate a change; this one is current (same connection, in order).
            self._send_holdings([peer], sorted(self.holdings()))
        self._dirty = True
        self._send_queries()

    def connection_lost(self, peer: str, now: float) -> None:
        self._peer_holds.pop(peer, None)
        self._peer_version.pop(peer, None)
        self._holds_parts.pop(peer, None)
        self._reads_out.pop(peer, None)
        self.queries.connection_lost(peer)
        self._dirty = True

    def receive(self, peer: str, msg: Message, now: float) -> None:
        """Handle one of :data:`MESSAGES` from connected ``peer``.

        Raises:
            ProtocolError: a state vector or update in it is malformed; a Holdings version
                names more than :data:`MAX_HOLDINGS` shards (``OVERSIZE``).
        """
        self._now = max(self._now, now)
        if isinstance(msg, Holdings):
            if msg.version > self._peer_version.get(peer, -1):
                # Pieces of one version come in order; the set applies with the last one.
                version, parts = self._holds_parts.get(peer, (msg.version, set()))
                if version != msg.version:
                    parts = set()
                parts.update(msg.shards)
                if len(parts) > MAX_HOLDINGS:
                    self._holds_parts.pop(peer, None)
                    raise ProtocolError(
                        f"Holdings of version {msg.version} name more than {MAX_HOLDINGS} "
                        "shards (sharding.MAX_HOLDINGS)",
                        CloseCode.OVERSIZE,
                    )
                if msg.more:
                    self._holds_parts[peer] = (msg.version, parts)
                    return
                self._holds_parts.pop(peer, None)
                self._peer_version[peer] = msg.version
                self._peer_holds[peer] = frozenset(parts)
                self._dirty = True
        elif isinstance(msg, Offer):
            self._on_offer(peer, msg, now)
        elif isinstance(msg, ReadRequest):
            self._on_read_request(peer, msg)
        elif isinstance(msg, ReadReply):
            for _, u in msg.shards:
                if u is not None:
                    with map_exceptions(_INVALID_UPDATE, "invalid update in ReadReply: "):
                        validate_update(u)
            self.queries.receive(peer, msg, now)
            self._send_queries()
            self._update_extra()

    def _on_offer(self, peer: str, msg: Offer, now: float) -> None:
        p = self.placement
        if p is None:
            return  # full replication takes every shard anyway
        self._sync_view()
        have = self._have()
        acks = []
        adopted = []
        for shard in msg.shards:
            if shard in have:  # the offerer is handing it off: tell it what we have on disk
                acks.append(ShardState(shard, *self.core.replicas.durable_state(shard)))
            elif p.accept_offer(shard, False, now):
                adopted.append(shard)
        if adopted:
            # Announce first, so that the other holders push new deltas to us from now on,
            # then fetch what there is: nothing falls between the two.
            self._announce(have)
            for shard in adopted:
                self._fetch(shard, peer, now)
            self._dirty = True
        if acks:
            self._send(peer, Ack(tuple(acks)))

    def tick(self, now: float) -> None:
        """Time out and hedge reads; re-plan placement when the view changed or a hand-off
        is under way."""
        self._now = now
        for peer in list(self._reads_out):
            self._serve_reads(peer)
        self.queries.tick(now)
        self._send_queries()
        if self.placement is not None:
            self._sync_view()
            due = self._next_reconcile is not None and now >= self._next_reconcile
            if self._dirty or due:
                self._reconcile(now)
            if now >= self._next_refresh:
                self._next_refresh = now + self.config.holdings_refresh
                self._send_holdings(self.core.connected(), sorted(self._announced))
        self._update_extra()

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work."""
        if self.placement is None and self._next_reconcile is None and not self._reads_out:
            # Only queries can have a timer (the core asks after every received Push: issue
            # 17/18, h-recv3); the same value as below without building the list.
            return self.queries.next_deadline()
        times = [t for t in (self.queries.next_deadline(), self._next_reconcile) if t is not None]
        if self._reads_out:  # read answers wait for the reply budget: try again next window
            times.append(self._now + max(self.core.config.push_interval, 0.01))
        if self.placement is not None and self.core.connected():
            times.append(self._next_refresh)
        if self._dirty and self.placement is not None:
            times.append(-math.inf)
        return min(times) if times else None

    # ------------------------------------------------------------------------------------------
    # placement (the rest is the mixin _sharding_placement._ShardingPlacement)

    def _send_holdings(self, peers: Iterable[str], shards: list[str]) -> None:
        """Our holdings (``shards``, sorted) to ``peers``, in pieces of at most
        :data:`HOLDINGS_PIECE` bytes (so no frame grows with the number of shards)."""
        pieces = list(name_pieces(shards, HOLDINGS_PIECE)) or [()]
        msgs = [
            Holdings(self._version, piece, more=i < len(pieces) - 1)
            for i, piece in enumerate(pieces)
        ]
        for peer in peers:
            for msg in msgs:
                self._send(peer, msg)

    # ------------------------------------------------------------------------------------------
    # driver API

    def subscribe(self, shard: str, now: float) -> None:
        """This agent's user opened ``shard``: hold it whatever placement says."""
        if self.placement is not None and shard not in self.placement.subscribed:
            self.placement.subscribed.add(shard)
            self._dirty = True
            self._sync_view()
            self._reconcile(now)  # announces it: new deltas come to us from now on
            # and what exists already: sync with every connected holder (agents not connected
            # yet are dialled, and a new connection starts an anti-entropy round)
            have = shard in self._have()
            sv = self.core.replicas.state_vector(shard) if have else EMPTY_STATE_VECTOR
            for q in self.core.connected():
                if shard in self._peer_holds.get(q, frozenset()):
                    self._send(q, SyncRequest(((shard, sv),)))

    def peer_holdings(self) -> dict[str, frozenset[str]]:
        """What each connected peer announced it holds."""
        return dict(self._peer_holds)
