"""Placement of :class:`~crdtsync.sharding.Sharding`: executing the plan of who holds what.

The view of the members placement plans over (listening agents only), the shards whose
changes our peers acknowledged as durable (safe to drop here), one reconciliation (offers,
drops, fetches of adopted or subscribed shards, syncs with the other holders, our Holdings
announced, the next re-plan scheduled while a hand-off is under way), and the extra
neighbours the core stays connected to (co-holders and read targets). Which agents should
hold what is :class:`crdtsync.placement.PlacementState`; this executes its plan.

A mixin of :class:`~crdtsync.sharding.Sharding` (:class:`_ShardingPlacement`), split from
:mod:`crdtsync.sharding` as :mod:`crdtsync._sharding_reads` is; the state is the
``Sharding`` instance's (set in its ``__init__``). Sending our Holdings in pieces
(``_send_holdings``, with ``HOLDINGS_PIECE``) stays in :mod:`crdtsync.sharding`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .messages import Message, Offer, SyncRequest
from .placement import HOLDER, PlacementState
from .query import QueryTable
from .yjs.state import EMPTY_STATE_VECTOR, decode_state_vector

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .gossip.policy import CoreView

__all__: list[str] = []


class _Intervals(Protocol):
    """What placement reads of :class:`~crdtsync.sharding.ShardingConfig` (named through
    this Protocol: importing :mod:`crdtsync.sharding` here, even for the type checker, would
    close an import circle)."""

    @property
    def offer_interval(self) -> float: ...

    @property
    def reconcile_interval(self) -> float: ...


class _ShardingPlacement:
    """Mixin of :class:`~crdtsync.sharding.Sharding`: placement (module docstring).

    The attributes and methods declared below belong to :class:`~crdtsync.sharding.Sharding`.
    """

    config: _Intervals
    placement: PlacementState | None
    queries: QueryTable
    drops: list[tuple[float, str]]
    _peer_holds: dict[str, frozenset[str]]
    _members: tuple[str, ...] | None
    _listening: bool
    _dirty: bool
    _next_reconcile: float | None
    _fetch_asked: dict[str, tuple[float, str]]
    _announced: frozenset[str]
    _version: int
    _wanted: frozenset[str]
    _extra: frozenset[str]

    if TYPE_CHECKING:

        @property
        def core(self) -> CoreView: ...

        def _send(self, peer: str, msg: Message) -> None: ...

        def _have(self) -> set[str]: ...

        def _send_holdings(self, peers: Iterable[str], shards: list[str]) -> None: ...

    def _sync_view(self) -> None:
        # Agents that do not listen hold no placed shards: they are clients (they may still
        # subscribe to shards they open), and nobody could hand them a shard while away.
        members = self.core.members(listening=True)
        me = self.core.address is not None
        if members != self._members or me != self._listening:
            self._members, self._listening = members, me
            assert self.placement is not None
            if self.placement.set_members(members, include_self=me):
                self._dirty = True

    def _covered(self, shard: str) -> list[str]:
        replicas = self.core.replicas
        sv, ds = replicas.durable_state(shard)
        if decode_state_vector(sv) != decode_state_vector(replicas.state_vector(shard)):
            return []  # changes not on our disk yet: wait until they are, then for acks
        return list(self.core.replicated(shard, sv, ds))

    def _reconcile(self, now: float) -> None:
        p = self.placement
        assert p is not None
        self._dirty = False
        connected = self.core.connected()
        plan = p.plan(self._have(), self._peer_holds, connected, self._covered, now)
        for peer, shards in plan.offers.items():
            self._send(peer, Offer(shards))
        for shard in plan.drops:
            self.core.replicas.drop(shard)
            p.dropped(shard)
            self.drops.append((now, shard))
        have = self._have()
        # Adopted or subscribed shards we have no data of yet: ask a peer that holds them.
        for shard in sorted((p.adopting.keys() | p.subscribed) - have):
            last = self._fetch_asked.get(shard)
            if last is None or now - last[0] >= self.config.offer_interval:
                source = next(
                    (q for q in connected if shard in self._peer_holds.get(q, frozenset())), None
                )
                if source is not None:
                    self._fetch(shard, source, now)
        for shard in [s for s in self._fetch_asked if s in have]:
            # Fetched from one holder: sync with the others too, who may have had writes the
            # first one had not (a subscriber's write made before anyone announced the shard
            # reached nobody). SyncRequest with our state vector: both sides get what they lack.
            _, source = self._fetch_asked.pop(shard)
            sv = self.core.replicas.state_vector(shard)
            for q in connected:
                if q != source and shard in self._peer_holds.get(q, frozenset()):
                    self._send(q, SyncRequest(((shard, sv),)))
        self._announce(have)
        self._wanted = plan.wanted
        pending = (
            bool(plan.offers)
            or bool(p.adopting)
            or any(p.role(s) != HOLDER and s not in p.subscribed for s in have)
        )
        # a connected placement holder that does not announce a shard we have: offer again
        pending = pending or any(
            s not in self._peer_holds[q]
            for s in have
            for q in p.holders(s)
            if q in self._peer_holds
        )
        self._next_reconcile = now + self.config.reconcile_interval if pending else None
        self._update_extra()

    def _announce(self, have: set[str]) -> None:
        """Tell every connected peer what we hold, if that changed since we last did."""
        p = self.placement
        assert p is not None
        holdings = frozenset(have | p.adopting.keys() | p.subscribed)
        if holdings != self._announced:
            self._announced = holdings
            self._version += 1
            self._send_holdings(self.core.connected(), sorted(holdings))

    def _fetch(self, shard: str, source: str, now: float) -> None:
        self._fetch_asked[shard] = (now, source)
        self._send(source, SyncRequest(((shard, EMPTY_STATE_VECTOR),)))

    def _update_extra(self) -> None:
        extra = (self._wanted | self.queries.targets_waiting()) - {self.core.name}
        if extra != self._extra:
            self._extra = extra
            self.core.overlay_changed()
