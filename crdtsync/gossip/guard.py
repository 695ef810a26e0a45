"""Quotas that hold across connections (issue #11), as the core applies them.

One :class:`Guard` per core owns the pure policies of :mod:`crdtsync.quotas` and is asked at
each place where a peer makes us work. Everything is keyed by the peer's *name*, never by its
connection, so reconnecting resets nothing:

* **messages** (:meth:`Guard.admit_message`, every received message): the per-peer flood
  bucket (``GossipConfig.flood_rate``/``flood_burst``; over it the connection is closed with
  ``FLOODING``), and one global bucket for all peers together (``QuotaSet.messages_rate``;
  when it runs out, a peer over its fair share of it is closed with ``FLOODING``; a peer
  within its share is never refused).
* **remote updates** (:meth:`Guard.admit_update`, before each Push or Diff update reaches
  the replicas): bytes per peer and in all (:class:`~crdtsync.quotas.ByteBudget`),
  integration work per peer and per shard in deterministic units
  (:class:`~crdtsync.quotas.WorkBudget`, charged with what the replica set reports in
  ``last_apply_work``, if it does), and the shards a peer may cause to be
  created (:class:`~crdtsync.quotas.ShardQuota`; a shard is charged only after its first
  update validated, and a Diff we asked for in our own round or repair is not charged: those
  are bounded by ``max_sync_shards`` per round we start). A refused update is dropped and
  counted, not applied: anti-entropy brings it again once the peer is in credit.
* **chunked transfers** (:meth:`Guard.add_piece`): bytes held by unfinished DiffChunk
  transfers per peer and in all, and their age (:class:`~crdtsync.quotas.TransferCap`,
  expired on :meth:`Guard.tick`). Over a cap the connection is closed with ``OVERSIZE``.
* **replies** (:meth:`Guard.reply_room`/:meth:`Guard.replied`): the Digests, Diffs and chunks
  sent to all peers together, on top of the per-link, per-window ``reply_budget``; what does
  not fit waits for a later window (back-pressure), so a few small requests cannot make us
  send without bound.

:attr:`Guard.counters` counts each refusal (``quota.<name>``). The defaults
(:class:`QuotaSet`) are far above what the simulator's meshes use, so seeded traces do not
change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import CloseCode, ProtocolError
from ..quotas import (
    ByteBudget,
    MessageBudget,
    QuotaExceeded,
    ReadPacer,
    RefusalLimit,
    ShardQuota,
    TransferCap,
    WorkBudget,
)

__all__ = ["Guard", "QuotaSet"]


def _shards() -> ShardQuota:
    # Creating a shard costs an agent ~2.4 ms (open, document, store, first commit): 64 at
    # once is 0.15 s of CPU, 20 a second 5 % of a core (benchmarks/hostile.py).
    return ShardQuota(per_peer_burst=64, per_peer_rate=20.0)


def _replies() -> ByteBudget:
    return ByteBudget(per_peer_rate=16 << 20, per_peer_burst=64 << 20, total_rate=64 << 20)


@dataclass
class QuotaSet:
    """The quota policies of one agent, with their defaults (see :mod:`crdtsync.quotas`).

    Attributes:
        shards: shards a peer may cause to be created: a burst of 64, then 20 a second per
            peer; 100,000 in the store.
        update_bytes: bytes of remote updates applied per peer and in all (4 MiB/s per peer,
            32 MiB burst; 32 MiB/s in all).
        work: integration work of remote updates, in deterministic units, per peer and per
            shard (:class:`~crdtsync.quotas.WorkBudget`: 200,000 a second, 2,000,000 burst).
        transfers: unfinished chunked transfers: 64 MiB per peer, 256 MiB in all, 60 s.
        replies: reply bytes per peer (16 MiB/s) and in all (64 MiB/s).
        messages_rate, messages_burst: messages a second from all peers together (4,000,
            bursts of 8,000).
        refused: refused updates a peer may send before it is closed (16, then 1 a second,
            :class:`~crdtsync.quotas.RefusalLimit`).
        reads: fair reading between peers (:class:`~crdtsync.quotas.ReadPacer`): beyond
            2,000 frames a second in all, a peer over a quarter of that waits before its
            next frame is read (the websocket transport asks, :meth:`Guard.read_delay`).
    """

    shards: ShardQuota = field(default_factory=_shards)
    update_bytes: ByteBudget = field(default_factory=ByteBudget)
    work: WorkBudget = field(default_factory=WorkBudget)
    transfers: TransferCap = field(default_factory=TransferCap)
    replies: ByteBudget = field(default_factory=_replies)
    reads: ReadPacer = field(default_factory=ReadPacer)
    refused: RefusalLimit = field(default_factory=RefusalLimit)
    #: Messages a second from all peers together (the per-peer rate is the config's).
    messages_rate: float = 4000.0
    messages_burst: float = 8000.0
    #: A peer over this fraction of the total is closed when the total runs out.
    messages_share: float = 0.25


class Guard:
    """The quotas of one core (see the module docstring).

    Args:
        quotas: the policies (default :class:`QuotaSet`).
        flood_rate, flood_burst: the per-peer message bucket (``GossipConfig``).
    """

    def __init__(self, quotas: QuotaSet | None, flood_rate: float, flood_burst: float) -> None:
        self.quotas = q = quotas if quotas is not None else QuotaSet()
        self._messages = MessageBudget(
            flood_rate, flood_burst, q.messages_rate, q.messages_burst, share=q.messages_share
        )
        #: Refusals per quota (``quota.<name>``), ever.
        self.counters: dict[str, int] = {}
        #: Shards known to exist here (refreshed from the replicas when one is not in it).
        self.known: set[str] = set()
        self._known_at = -math.inf

    def count(self, quota: str) -> None:
        key = f"quota.{quota}"
        self.counters[key] = self.counters.get(key, 0) + 1

    def admit_message(self, peer: str, now: float) -> None:
        """Count a message from ``peer``.

        Raises:
            ProtocolError: FLOODING, ``peer`` exceeded its own rate, or its share of the
                total while all peers together exceed it (close its connection).
        """
        try:
            self._messages.take(peer, now)
        except QuotaExceeded as exc:
            self.count(exc.quota)
            raise ProtocolError(str(exc), CloseCode.FLOODING) from exc

    def read_delay(self, peer: str, now: float) -> float:
        """Seconds a transport should wait before reading ``peer``'s next frame (fair reading
        between peers, :class:`~crdtsync.quotas.ReadPacer`); 0.0: read it now. A wait is
        counted (``quota.read-paced``)."""
        delay = self.quotas.reads.delay(peer, now)
        if delay > 0.0:
            self.count("read-paced")
        return delay

    def wasted(self, peer: str, frames: float = 1.0) -> None:
        """``peer`` made us work for nothing (a Summary while Digests are owed already, an
        update a quota refused, ``frames`` frames' worth of an abandoned transfer): reading
        it is slowed accordingly (:meth:`ReadPacer.wasted
        <crdtsync.quotas.ReadPacer.wasted>`). Nothing is refused or closed for it."""
        self.quotas.reads.wasted(peer, frames)

    def refused_update(self, peer: str, now: float, *, solicited: bool = False) -> None:
        """``peer`` sent an update beyond the work limits: dropped, counted
        (``quota.update-limits``); the link stays up. ``solicited``: a Diff we asked for (an
        honest peer passing on a shard another peer built past the limits): never closed.

        Raises:
            ProtocolError: INVALID_UPDATE, ``peer`` keeps sending them unasked
                (:class:`~crdtsync.quotas.RefusalLimit`; counted ``quota.refused-updates``).
        """
        self.count("update-limits")
        if solicited:
            return
        self.wasted(peer)
        try:
            self.quotas.refused.take(peer, now)
        except QuotaExceeded as exc:
            self.count(exc.quota)
            raise ProtocolError(str(exc), exc.code) from exc

    def admit_update(self, peer: str, size: int, now: float, shard: str = "") -> bool:
        """Whether ``peer``'s update of ``size`` bytes to ``shard`` may be applied now (bytes,
        and the peer's and the shard's work, in credit); False: dropped, counted."""
        q = self.quotas
        short_work = q.work.short(peer, shard, now)
        if short_work is not None:
            self.count(short_work)
            self.wasted(peer)
            return False
        short = q.update_bytes.admit(peer, size, now)
        if short is not None:
            self.count(short)
            self.wasted(peer)
            return False
        return True

    def is_new(self, shard: str, names: Callable[[], Iterable[str]], now: float) -> bool:
        """Whether ``shard`` does not exist here. ``names`` lists the replicas' shards; it is
        called at most once a second (shards made or applied here in between are noted in
        :attr:`known` as they come), so names a flood invents cost no listing each."""
        if shard in self.known:
            return False
        if now - self._known_at >= 1.0:
            self._known_at = now
            self.known = set(names())
        return shard not in self.known

    def may_create(self, peer: str, now: float) -> bool:
        """Whether ``peer`` has credit for a new shard (checked before validating its first
        update, so that a flood of new names costs no parse each); False: counted."""
        if self.quotas.shards.allows(peer, now):
            return True
        self.count("shards-per-peer")
        self.wasted(peer)
        return False

    def admit_new_shard(self, peer: str, shard: str, now: float) -> bool:
        """Charge ``peer`` for creating ``shard`` here (its update validated); False:
        refused, counted."""
        try:
            self.quotas.shards.charge(peer, len(self.known), now)
        except QuotaExceeded as exc:
            self.count(exc.quota)
            return False
        self.known.add(shard)
        return True

    def applied(self, peer: str, shard: str, work: int, now: float) -> None:
        """``peer``'s update of ``shard`` was applied and cost ``work`` units (what the
        replica set reports in ``last_apply_work``, deterministic)."""
        self.known.add(shard)
        if work > 0:
            self.quotas.work.charge(peer, shard, work, now)

    def add_piece(self, peer: str, transfer: int, size: int, now: float) -> None:
        """Account a DiffChunk piece of ``peer``'s transfer.

        Raises:
            ProtocolError: OVERSIZE, over the per-peer or global cap of unfinished transfers.
        """
        try:
            self.quotas.transfers.add(peer, transfer, size, now)
        except QuotaExceeded as exc:
            self.count(exc.quota)
            self.quotas.transfers.finish(peer, transfer)
            raise ProtocolError(str(exc), exc.code) from exc

    def finish_transfer(self, peer: str, transfer: int) -> None:
        self.quotas.transfers.finish(peer, transfer)

    def peer_gone(self, peer: str) -> None:
        """``peer``'s connection closed: its unfinished transfers are dropped."""
        self.quotas.transfers.drop_peer(peer)

    def expired_transfers(self, now: float) -> list[tuple[str, int]]:
        """Transfers older than the timeout, dropped from the cap (the caller drops them)."""
        old = self.quotas.transfers.expire(now)
        for _ in old:
            self.count("transfer-timeout")
        return old

    def reply_room(self, peer: str, now: float) -> bool:
        """Whether a reply to ``peer`` may be built now (else it waits, counted)."""
        short = self.quotas.replies.admit(peer, 0, now)
        if short is not None:
            self.count(f"replies.{short}")
            return False
        return True

    def replied(self, peer: str, size: int) -> None:
        """``size`` bytes of replies went to ``peer``."""
        self.quotas.replies.debit(peer, size)
