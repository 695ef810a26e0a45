"""Quotas that hold across connections (issue #11): pure policy objects for the gossip core and
the transports.

Nothing here does I/O or reads a clock: every method takes ``now`` (seconds, any monotonic
origin), so the sans-I/O core and the simulator drive them deterministically. Each refusal
raises :class:`QuotaExceeded` with the close code to use and a message that says which quota,
whose, and the numbers. Keyed by peer *name* (an authenticated identity), never by
connection, so reconnecting does not reset anything.

=====================  =============================================  =====================
policy                 bounds                                         where it is called
=====================  =============================================  =====================
:class:`ShardQuota`    shards a peer may cause to be created, per      before a remote update
                       window, and shards in the store                 creates a shard
:class:`ByteBudget`    bytes a peer may make us apply (or send it),   per Push / Diff /
                       per interval, and all peers together           reply, before the work
:class:`WorkBudget`    integration work (deterministic units) that    before each remote
                       a peer's and a shard's updates cost per        apply
                       second (what one update's check cannot bound)
:class:`TransferCap`   bytes held by unfinished chunked transfers,    per DiffChunk; tick
                       per peer and in all; and their age             ``expire`` on timers
:class:`ConnectionCap`  connections in all, per address, and how      transport accept and
                       long one may stay without a Hello              handshake
=====================  =============================================  =====================

Also here: :class:`ReadPacer` (fair reading between peers in the websocket transport) and
:class:`RefusalLimit` (refused updates a peer may send before it is closed).

:func:`name_pieces` splits a shard list into frames that each fit a byte budget, so that a
Hello (or Holdings) never grows past the frame limit with the number of shards.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import CloseCode, CrdtSyncError

__all__ = [
    "ByteBudget",
    "ConnectionCap",
    "WorkBudget",
    "MessageBudget",
    "QuotaExceeded",
    "ReadPacer",
    "RefusalLimit",
    "ShardQuota",
    "TransferCap",
    "name_pieces",
]


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

    def short(self, peer: str, shard: str, now: float) -> str | None:
        """None if ``peer`` and ``shard`` are both in credit now, else the quota that is not
        (``"work-per-peer"`` or ``"work-per-shard"``)."""
        if self._peers.refill(peer, now).level <= 0.0:
            return "work-per-peer"
        if self._shards.refill(shard, now).level <= 0.0:
            return "work-per-shard"
        return None

    def charge(self, peer: str, shard: str, work: int, now: float) -> None:
        """Charge ``work`` units of an applied update to ``peer`` and ``shard``."""
        self._peers.refill(peer, now).level -= work
        self._shards.refill(shard, now).level -= work


@dataclass
class TransferCap:
    """Unfinished chunked transfers (DiffChunk): bytes held per peer and in all, and age.

    4 connections x 248 MiB of chunks never completed held 1 GiB with no timeout. Defaults:
    64 MiB per peer, 256 MiB in all, 60 s from the first chunk to the last.
    """

    per_peer_bytes: int = 64 << 20
    total_bytes: int = 256 << 20
    timeout: float = 60.0

    def __post_init__(self) -> None:
        self._held: dict[tuple[str, int], tuple[int, float]] = {}  # -> (bytes, started)
        self._per_peer: dict[str, int] = {}
        self._total = 0

    @property
    def held(self) -> int:
        """Bytes held by all unfinished transfers."""
        return self._total

    def add(self, peer: str, transfer: int, n: int, now: float) -> None:
        """Account ``n`` more bytes of ``peer``'s transfer ``transfer`` (started if new).

        Raises:
            QuotaExceeded: over the per-peer or total cap (``code=OVERSIZE``); the caller
                drops the transfer (:meth:`finish`) and closes the connection.
        """
        key = (peer, transfer)
        held, started = self._held.get(key, (0, now))
        if self._per_peer.get(peer, 0) + n > self.per_peer_bytes:
            raise QuotaExceeded(
                f"{peer!r} holds more than {self.per_peer_bytes} bytes of unfinished chunks",
                "transfer-per-peer",
                CloseCode.OVERSIZE,
            )
        if self._total + n > self.total_bytes:
            raise QuotaExceeded(
                f"unfinished chunked transfers would hold more than {self.total_bytes} bytes",
                "transfer-total",
                CloseCode.OVERSIZE,
            )
        self._held[key] = (held + n, started)
        self._per_peer[peer] = self._per_peer.get(peer, 0) + n
        self._total += n

    def finish(self, peer: str, transfer: int) -> None:
        """Forget a transfer (completed, dropped, or its connection closed)."""
        held, _ = self._held.pop((peer, transfer), (0, 0.0))
        if held:
            left = self._per_peer[peer] - held
            if left:
                self._per_peer[peer] = left
            else:
                del self._per_peer[peer]
            self._total -= held

    def drop_peer(self, peer: str) -> None:
        """Forget every transfer of ``peer`` (its connection closed)."""
        for key in [k for k in self._held if k[0] == peer]:
            self.finish(*key)

    def expire(self, now: float) -> list[tuple[str, int]]:
        """Drop and return the transfers older than ``timeout``."""
        old = [k for k, (_, started) in self._held.items() if now - started > self.timeout]
        for key in old:
            self.finish(*key)
        return old


@dataclass
class ConnectionCap:
    """Connections in all and per remote address, and the handshake deadline.

    1,000 connections that never sent a Hello stayed open (and 1,013 exhausted the fd limit).
    Defaults: 512 in all, 16 per address, 10 s to complete the handshake.
    """

    max_total: int = 512
    max_per_address: int = 16
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        self._by_address: dict[str, int] = {}
        self._pending: dict[int, float] = {}  # connection id -> accepted at (no Hello yet)
        self._total = 0
        self._waiting_by_address: dict[str, int] = {}  # TCP accepted, no upgrade request yet
        self._waiting = 0

    @property
    def max_waiting(self) -> int:
        """TCP connections that may wait for their upgrade request at once, in all: a
        quarter of ``max_total`` (per address: ``max_per_address``). They hold no slot, but
        a file descriptor each until the driver's open timeout."""
        return max(1, self.max_total // 4)

    def tcp_accepted(self, address: str) -> None:
        """Count a just-accepted TCP connection that has not sent its upgrade request.

        Raises:
            QuotaExceeded: ``unrequested``: too many wait, in all or from ``address`` (abort
                it at once, nothing read).
        """
        per_address = self._waiting_by_address.get(address, 0)
        if self._waiting >= self.max_waiting or per_address >= self.max_per_address:
            raise QuotaExceeded(
                f"{self._waiting} connections wait without a request", "unrequested"
            )
        self._waiting_by_address[address] = per_address + 1
        self._waiting += 1

    def tcp_requested(self, address: str) -> None:
        """A connection counted by :meth:`tcp_accepted` sent its request, or ended."""
        self._waiting -= 1
        left = self._waiting_by_address[address] - 1
        if left:
            self._waiting_by_address[address] = left
        else:
            del self._waiting_by_address[address]

    def accept(self, conn: int, address: str, now: float) -> None:
        """Admit a new connection from ``address`` (call before reading from it).

        Raises:
            QuotaExceeded: too many in all or from this address (close it at once).
        """
        if self._total >= self.max_total:
            raise QuotaExceeded(
                f"{self._total} connections open, the limit is {self.max_total}", "connections"
            )
        if self._by_address.get(address, 0) >= self.max_per_address:
            raise QuotaExceeded(
                f"{address} has {self.max_per_address} connections open (the limit)",
                "connections-per-address",
            )
        self._by_address[address] = self._by_address.get(address, 0) + 1
        self._total += 1
        self._pending[conn] = now

    def handshaken(self, conn: int) -> None:
        """The connection completed its handshake; its deadline no longer applies."""
        self._pending.pop(conn, None)

    def closed(self, conn: int, address: str) -> None:
        """The connection closed (whatever the reason); frees its slots."""
        self._pending.pop(conn, None)
        n = self._by_address.get(address, 0) - 1
        if n > 0:
            self._by_address[address] = n
        else:
            self._by_address.pop(address, None)
        self._total = max(0, self._total - 1)

    def overdue(self, now: float) -> list[int]:
        """Connections still without a handshake after ``handshake_timeout`` (close them with
        ``BAD_HANDSHAKE``)."""
        return [c for c, t in self._pending.items() if now - t > self.handshake_timeout]


def name_pieces(names: Iterable[str], max_bytes: int) -> Iterator[tuple[str, ...]]:
    """Split sorted shard ``names`` into pieces whose msgpack encoding (an array of strings)
    stays under ``max_bytes``, so that the list can go out as several messages.

    The size counted per name is its UTF-8 length plus 5 bytes (the longest msgpack string
    header) and 5 for the array header, an upper bound of the encoding.
    """
    if max_bytes < 64:
        raise ValueError("max_bytes must leave room for at least one name")
    piece: list[str] = []
    size = 5
    for name in names:
        n = len(name.encode()) + 5
        if piece and size + n > max_bytes:
            yield tuple(piece)
            piece, size = [], 5
        piece.append(name)
        size += n
    if piece:
        yield tuple(piece)
