"""The token buckets behind the quotas of :mod:`crdtsync.quotas`, the quota error, and the
budgets charged for the work a peer makes this agent do (issue #11).

:class:`_Bucket` (one token bucket) and :class:`_Buckets` (one per key, least recently used
dropped) are the primitive every rate policy is built from, here and in
:mod:`crdtsync._quota_pacing`; :class:`QuotaExceeded` is what every policy raises. The
budgets here bound what one remote update or reply costs: shards it creates
(:class:`ShardQuota`), its bytes (:class:`ByteBudget`) and its integration work
(:class:`WorkBudget`). Split out of ``quotas.py`` (a pure move) so that each module stays a
few hundred lines; import the public names from :mod:`crdtsync.quotas`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .errors import CloseCode, CrdtSyncError

__all__ = ["ByteBudget", "QuotaExceeded", "ShardQuota", "WorkBudget"]


class QuotaExceeded(CrdtSyncError):
    """A peer exceeded a quota; ``code`` is the close code if the connection is to be closed
    (``FLOODING`` for rates, ``OVERSIZE`` for sizes), ``quota`` names the quota."""

    def __init__(self, message: str, quota: str, code: CloseCode = CloseCode.FLOODING) -> None:
        super().__init__(message)
        self.quota = quota
        self.code = code


class _Bucket:
    """A token bucket: ``rate`` tokens a second up to ``burst``."""

    __slots__ = ("burst", "level", "rate", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = burst
        self.stamp = now

    def take(self, n: float, now: float) -> bool:
        if now > self.stamp:
            self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
        if n > self.level:
            return False
        self.level -= n
        return True


class _Buckets:
    """Token buckets per key, the least recently used dropped past ``max_keys`` (so a flood
    of names cannot grow the table; a dropped key starts again with a full bucket, which is
    at most one burst more per name the attacker can make)."""

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._by_key: OrderedDict[str, _Bucket] = OrderedDict()

    def refill(self, key: str, now: float) -> _Bucket:
        """``key``'s bucket, refilled up to ``now`` and marked most recently used (made, full,
        if it was not tracked). The callers on the receive path read and debit its ``level``
        themselves: one lookup per bucket instead of one per check (issue 17/18: quotas were
        15 % of a received push's handling)."""
        by_key = self._by_key
        bucket = by_key.get(key)
        if bucket is None:
            bucket = by_key[key] = _Bucket(self.rate, self.burst, now)
            while len(by_key) > self.max_keys:
                by_key.popitem(last=False)
        else:
            by_key.move_to_end(key)
            if now > bucket.stamp:  # _Bucket.take's refill, inlined
                level = bucket.level + (now - bucket.stamp) * bucket.rate
                bucket.level = level if level < bucket.burst else bucket.burst
                bucket.stamp = now
        return bucket

    def take(self, key: str, n: float, now: float) -> bool:
        bucket = self.refill(key, now)
        if n > bucket.level:
            return False
        bucket.level -= n
        return True

    def level(self, key: str) -> float:
        bucket = self._by_key.get(key)
        return self.burst if bucket is None else bucket.level

    def debit(self, key: str, n: float) -> None:
        """Take ``n`` even below zero (for costs known only afterwards)."""
        bucket = self._by_key.get(key)
        if bucket is not None:
            bucket.level -= n

    def give_back(self, key: str, n: float) -> None:
        bucket = self._by_key.get(key)
        if bucket is not None:
            bucket.level = min(bucket.burst, bucket.level + n)


@dataclass
class ShardQuota:
    """How many shards remote peers may cause this agent to create.

    A shard is charged only when it does not exist here and the first update for it has
    validated (so refused garbage costs no quota). 20,000 shards created by one peer in 3 s
    cost 9.1 KiB each and spread to every honest peer; the defaults allow a burst of 256 and
    then one new shard a second per peer, and 100,000 shards in the store.
    """

    per_peer_burst: int = 256
    per_peer_rate: float = 1.0
    max_shards: int = 100_000
    max_peers_tracked: int = 4096

    def __post_init__(self) -> None:
        self._buckets = _Buckets(self.per_peer_rate, self.per_peer_burst, self.max_peers_tracked)

    def allows(self, peer: str, now: float) -> bool:
        """Whether ``peer`` has credit for one more shard now (a cheap check before the
        update is validated; :meth:`charge` after it)."""
        return self._buckets.take(peer, 0.0, now) and self._buckets.level(peer) >= 1.0

    def charge(self, peer: str, existing: int, now: float) -> None:
        """Charge ``peer`` for one new shard, ``existing`` being the shards held now.

        Raises:
            QuotaExceeded: over the store-wide cap (``quota="shards"``) or over the peer's
                rate (``quota="shards-per-peer"``); nothing was charged then.
        """
        if existing >= self.max_shards:
            raise QuotaExceeded(
                f"store holds {existing} shards, the limit is {self.max_shards}; "
                f"{peer!r} may not create more",
                "shards",
                CloseCode.OVERSIZE,
            )
        if not self._buckets.take(peer, 1, now):
            raise QuotaExceeded(
                f"{peer!r} created shards faster than {self.per_peer_rate}/s "
                f"(burst {self.per_peer_burst})",
                "shards-per-peer",
            )


@dataclass
class ByteBudget:
    """Bytes per peer per second and for all peers together, as token buckets.

    Charge the bytes of an update before validating and applying it (work is linear in them
    once the validator's limits hold), and the bytes of a reply (diff, read answer) before
    building it: a reply that does not fit waits (back-pressure) instead of being sent.
    Defaults: 4 MiB/s per peer with a 32 MiB burst (two full frames), 32 MiB/s in all.
    """

    per_peer_rate: float = 4 << 20
    per_peer_burst: float = 32 << 20
    total_rate: float = 32 << 20
    total_burst: float = 64 << 20
    max_peers_tracked: int = 4096

    def __post_init__(self) -> None:
        self._buckets = _Buckets(self.per_peer_rate, self.per_peer_burst, self.max_peers_tracked)
        self._total = _Bucket(self.total_rate, self.total_burst, 0.0)

    def charge(self, peer: str, n: int, now: float) -> None:
        """Take ``n`` bytes from ``peer``'s bucket and the global one.

        Raises:
            QuotaExceeded: either bucket is short (``quota="bytes-per-peer"`` or
                ``"bytes-total"``). The caller defers the work (or, for a peer far over,
                closes with ``code``).
        """
        if n > self.per_peer_burst or not self._buckets.take(peer, n, now):
            raise QuotaExceeded(
                f"{peer!r} is over its byte budget ({self.per_peer_rate:.0f} B/s, "
                f"burst {self.per_peer_burst:.0f})",
                "bytes-per-peer",
            )
        if not self._total.take(n, now):
            self._buckets.give_back(peer, n)
            raise QuotaExceeded(
                f"all peers together are over the byte budget ({self.total_rate:.0f} B/s)",
                "bytes-total",
            )

    def admit(self, peer: str, n: int, now: float) -> str | None:
        """Debt-style charge for work that cannot be split (a whole update, a reply): admit
        ``n`` bytes when ``peer``'s bucket and the global one are both in credit, even if
        ``n`` takes them below zero (the peer then waits until they refill). Returns None
        when admitted, else the quota that is short (``"bytes-per-peer"``/``"bytes-total"``).
        """
        mine = self._buckets.refill(peer, now)
        if mine.level <= 0.0:
            return "bytes-per-peer"
        total = self._total
        total.take(0.0, now)
        if total.level <= 0.0:
            return "bytes-total"
        mine.level -= n
        total.level -= n
        return None

    def debit(self, peer: str, n: int) -> None:
        """Take ``n`` bytes from ``peer``'s bucket and the global one, even below zero (for a
        reply whose size is known only once it was built)."""
        self._buckets.debit(peer, n)
        self._total.level -= n


@dataclass
class WorkBudget:
    """Integration work a peer's updates may cost this agent, and that one shard may take,
    in deterministic work units per second (issue #11).

    A unit is one integration step as the strict parser counts it (``UpdateInfo.work``: a
    struct, a deleted range, a conflict-scan step, a merged byte) plus the conflict scans
    against what earlier updates put at the same places (:class:`~crdtsync.yjs.limits.
    PlaceHistory`): the same input always gets the same decision, unlike a measured CPU time.
    Debt-style: an update is admitted while both the sender's and the shard's buckets are in
    credit, then charged in full (it may take them below zero); further updates wait (are
    dropped, counted, and brought again by anti-entropy) until they refill. Defaults: 200,000
    units a second per peer and per shard (about 10-20 % of a core: a unit costs 0.5-1 us in
    Yrs, ~5 us to parse a struct), bursts of 2,000,000 (a whole 376 KB document state costs
    ~14,000).
    """

    per_peer_rate: float = 200_000.0
    per_peer_burst: float = 2_000_000.0
    per_shard_rate: float = 200_000.0
    per_shard_burst: float = 2_000_000.0
    max_keys_tracked: int = 4096

    def __post_init__(self) -> None:
        self._peers = _Buckets(self.per_peer_rate, self.per_peer_burst, self.max_keys_tracked)
        self._shards = _Buckets(self.per_shard_rate, self.per_shard_burst, self.max_keys_tracked)
        # The two buckets the last admitted short() refilled, with its (peer, shard, now): the
        # charge of that update, which follows at the same time, debits them without
        # looking them up and refilling them again (issue 17/18: 2 of the 8 bucket refills
        # of a received Push; same levels, same LRU order).
        self._admitted: tuple[str, str, float, _Bucket, _Bucket] | None = None

    def short(self, peer: str, shard: str, now: float) -> str | None:
        """None if ``peer`` and ``shard`` are both in credit now, else the quota that is not
        (``"work-per-peer"`` or ``"work-per-shard"``)."""
        self._admitted = None
        mine = self._peers.refill(peer, now)
        if mine.level <= 0.0:
            return "work-per-peer"
        theirs = self._shards.refill(shard, now)
        if theirs.level <= 0.0:
            return "work-per-shard"
        self._admitted = (peer, shard, now, mine, theirs)
        return None

    def charge(self, peer: str, shard: str, work: int, now: float) -> None:
        """Charge ``work`` units of an applied update to ``peer`` and ``shard``."""
        admitted, self._admitted = self._admitted, None
        if (
            admitted is not None
            and admitted[2] == now
            and admitted[0] == peer
            and admitted[1] == shard
        ):
            # Refilled at this very time by short(), and nothing was refilled since (short
            # and charge bracket one update's apply): the same buckets, still the most
            # recently used of their tables.
            admitted[3].level -= work
            admitted[4].level -= work
            return
        self._peers.refill(peer, now).level -= work
        self._shards.refill(shard, now).level -= work
