"""Per-message rate policies of :mod:`crdtsync.quotas` (issue #11): how many frames a peer
may send, how fast they are read, and how many refused updates it may send before it is
closed.

:class:`MessageBudget` (the flood limit, per name and in all), :class:`RefusalLimit` (refused
updates per name) and :class:`ReadPacer` (fair reading between peers in the websocket
transport) count messages, not what a message costs (that is :mod:`crdtsync._quota_buckets`),
and are built from its token buckets. Split out of ``quotas.py`` (a pure move) so that each
module stays a few hundred lines; import the public names from :mod:`crdtsync.quotas`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._quota_buckets import QuotaExceeded, _Bucket, _Buckets
from .errors import CloseCode

__all__ = ["MessageBudget", "ReadPacer", "RefusalLimit"]


@dataclass
class MessageBudget:
    """Messages per peer *name* (the flood limit: reconnecting does not reset it) and from
    all peers together (4 connections each just under the per-peer limit held a victim at
    96 % CPU). Defaults: 4,000 a second in all, bursts of 8,000 (about what one Python agent
    handles on one core: benchmarks/hostile.py); the per-peer rate is
    :attr:`GossipConfig.flood_rate`.
    """

    per_peer_rate: float = 2000.0
    per_peer_burst: float = 10000.0
    total_rate: float = 4000.0
    total_burst: float = 8000.0
    max_peers_tracked: int = 4096

    #: A peer's fair share of the total, as a fraction of it (a bucket per name at this
    #: share of ``total_rate`` and ``total_burst``).
    share: float = 0.25

    def __post_init__(self) -> None:
        self._buckets = _Buckets(self.per_peer_rate, self.per_peer_burst, self.max_peers_tracked)
        self._shares = _Buckets(
            self.total_rate * self.share, self.total_burst * self.share, self.max_peers_tracked
        )
        self._total = _Bucket(self.total_rate, self.total_burst, 0.0)

    def take(self, peer: str, now: float) -> None:
        """Count one message from ``peer``.

        A peer within its share is never refused, even while the total is spent: dropping an
        honest peer's message costs it a repair round (seconds: measured p99 of 16.9 s in
        benchmarks/hostile.py when light peers' messages were dropped).

        Raises:
            QuotaExceeded: ``quota="flood"`` (``peer`` over its own rate: close it) or
                ``"flood-share"`` (all peers together are over the total and ``peer`` is
                over its fair share of it, :attr:`share`: one of the heavy senders, close it).
        """
        if not self._buckets.take(peer, 1, now):
            raise QuotaExceeded(f"{peer} exceeded {self.per_peer_rate:g} messages/s", "flood")
        within_share = self._shares.take(peer, 1, now)
        if not self._total.take(1, now) and not within_share:
            raise QuotaExceeded(
                f"all peers together exceeded {self.total_rate:g} messages/s and {peer} "
                "is one of the heaviest senders",
                "flood-share",
            )


@dataclass
class RefusalLimit:
    """How many refused updates (well formed, beyond the work limits) a peer may send before
    its connection is closed.

    One refused update is dropped and counted, and the link stays up: an honest peer may pass
    on a document that another peer built past the limits, and cutting it off would cut the
    honest traffic with it. A peer that *keeps* sending them costs a parse each: over a burst
    of 16, then one a second, its connection is closed (``INVALID_UPDATE``), and since the
    bucket is kept per name, reconnecting gives no fresh burst.
    """

    rate: float = 1.0
    burst: float = 16.0
    max_peers_tracked: int = 4096

    def __post_init__(self) -> None:
        self._buckets = _Buckets(self.rate, self.burst, self.max_peers_tracked)

    def take(self, peer: str, now: float) -> None:
        """Count one refused update of ``peer``.

        Raises:
            QuotaExceeded: ``quota="refused-updates"``, ``code=INVALID_UPDATE``: close it.
        """
        if not self._buckets.take(peer, 1.0, now):
            raise QuotaExceeded(
                f"{peer} kept sending updates beyond the work limits (more than "
                f"{self.burst:g}, then {self.rate:g} a second)",
                "refused-updates",
                CloseCode.INVALID_UPDATE,
            )


@dataclass
class ReadPacer:
    """Fair reading between peers: how long a transport waits before it takes the next frame
    of one peer, so that heavy senders wait (TCP back-pressure) instead of being processed.

    4 connections each just under the flood limit (1,900 messages a second each) held a
    victim at 100 % CPU and its honest peer's p99 at 18x its normal (benchmarks/hostile.py):
    the flood and global message budgets count what the agent *processed*, and an agent that
    cannot keep up never reaches them. Pacing works on what is read: while all peers together
    stay within ``total_rate`` frames a second, nobody waits; beyond it, a peer within its
    fair share (``share`` of the total) still goes at once and a peer over its share waits
    until its share bucket refills. A frame that waits costs nothing: it stays in the kernel's
    socket buffer, and the sender blocks once that is full. Defaults: 2,000 frames a second
    in all (about a third of what one agent handles on one core), bursts of 4,000; a heavy
    peer gets at least a quarter of that.

    **Waste.** A frame that made the agent work for nothing (:meth:`wasted`: a Summary while
    Digests are owed already, an update a quota refused, a chunked transfer abandoned) costs
    its sender ``waste_cost`` more frames of its share, below zero if need be; a peer in debt
    waits until it is paid, *whatever the total*. Under all of issue #11's attacks at once
    the readers still took 2,000 frames a second of Summaries nobody needed and pushes the
    shard quota refused (a third of a core, which a shared machine did not have: the honest
    peer's p99 went to 6-10x). Now a peer that only wastes is read at ``1 / (1 +
    waste_cost)`` of its share (55 frames a second by default), one that wastes now and then
    is never held up, and an honest peer wastes next to nothing.
    """

    total_rate: float = 2000.0
    total_burst: float = 4000.0
    share: float = 0.25
    max_peers_tracked: int = 4096
    #: Extra frames of its share a wasted frame costs its sender (see above).
    waste_cost: float = 8.0

    def __post_init__(self) -> None:
        self._shares = _Buckets(
            self.total_rate * self.share, self.total_burst * self.share, self.max_peers_tracked
        )
        self._total = _Bucket(self.total_rate, self.total_burst, 0.0)

    def delay(self, peer: str, now: float) -> float:
        """Seconds to wait before reading ``peer``'s next frame (0.0: read it now; then it is
        counted). Ask again after waiting."""
        total = self._total
        share = self._shares.refill(peer, now)
        within_share = share.level >= 1.0
        if within_share:
            share.level -= 1.0
        level = share.level
        if level < 0.0:  # in debt for wasted frames (only wasted() goes below zero)
            return max(0.001, (1.0 - level) / (self.total_rate * self.share))
        if total.take(1.0, now):
            return 0.0
        if within_share:
            total.level -= 1.0  # a light peer goes even now; the heavy ones wait longer
            return 0.0
        return max(0.001, (1.0 - level) / (self.total_rate * self.share))

    def wasted(self, peer: str, frames: float = 1.0) -> None:
        """``peer`` made the agent work for nothing, ``frames`` frames' worth: its share is
        debited ``frames * waste_cost``, below zero if need be (a peer never read through
        :meth:`delay`, as in the simulator, is not tracked: nothing happens)."""
        self._shares.debit(peer, frames * self.waste_cost)
