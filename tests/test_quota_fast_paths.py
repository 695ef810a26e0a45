"""The quotas a received Push takes, with their bucket refills inlined (issue 17/18, h-recv5),
decide, debit and order their LRU tables exactly as the code they replace: each policy is
driven side by side with a copy of its former code (kept below) through the same random
sequences of calls, times and peers, with tables small enough that the least recently used
are dropped, and every answer, every exception and every bucket (level, stamp, table order)
must be equal after every call."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync._quota_buckets import QuotaExceeded, _Bucket, _Buckets
from crdtsync.quotas import ByteBudget, MessageBudget, ReadPacer, RefusalLimit, WorkBudget

# -- the former code --------------------------------------------------------------------------


class _PlainBuckets(_Buckets):
    """``_Buckets.take`` as it was: through ``refill``."""

    def take(self, key: str, n: float, now: float) -> bool:
        bucket = self.refill(key, now)
        if n > bucket.level:
            return False
        bucket.level -= n
        return True


class _PlainMessages(MessageBudget):
    def __post_init__(self) -> None:
        self._buckets = _PlainBuckets(
            self.per_peer_rate, self.per_peer_burst, self.max_peers_tracked
        )
        self._shares = _PlainBuckets(
            self.total_rate * self.share, self.total_burst * self.share, self.max_peers_tracked
        )
        self._total = _Bucket(self.total_rate, self.total_burst, 0.0)

    def take(self, peer: str, now: float) -> None:
        if not self._buckets.take(peer, 1, now):
            raise QuotaExceeded(f"{peer} exceeded {self.per_peer_rate:g} messages/s", "flood")
        within_share = self._shares.take(peer, 1, now)
        if not self._total.take(1, now) and not within_share:
            raise QuotaExceeded(
                f"all peers together exceeded {self.total_rate:g} messages/s and {peer} "
                "is one of the heaviest senders",
                "flood-share",
            )


class _PlainReads(ReadPacer):
    def delay(self, peer: str, now: float) -> float:
        total = self._total
        share = self._shares.refill(peer, now)
        within_share = share.level >= 1.0
        if within_share:
            share.level -= 1.0
        level = share.level
        if level < 0.0:
            return max(0.001, (1.0 - level) / (self.total_rate * self.share))
        if total.take(1.0, now):
            return 0.0
        if within_share:
            total.level -= 1.0
            return 0.0
        return max(0.001, (1.0 - level) / (self.total_rate * self.share))


class _PlainBytes(ByteBudget):
    def __post_init__(self) -> None:
        self._buckets = _PlainBuckets(
            self.per_peer_rate, self.per_peer_burst, self.max_peers_tracked
        )
        self._total = _Bucket(self.total_rate, self.total_burst, 0.0)

    def admit(self, peer: str, n: int, now: float) -> str | None:
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


class _PlainWork(WorkBudget):
    def short(self, peer: str, shard: str, now: float) -> str | None:
        self._admitted = None
        mine = self._peers.refill(peer, now)
        if mine.level <= 0.0:
            return "work-per-peer"
        theirs = self._shards.refill(shard, now)
        if theirs.level <= 0.0:
            return "work-per-shard"
        self._admitted = (peer, shard, now, mine, theirs)
        return None


class _PlainRefusals(RefusalLimit):
    def __post_init__(self) -> None:
        self._buckets = _PlainBuckets(self.rate, self.burst, self.max_peers_tracked)


# -- the state compared ------------------------------------------------------------------------


def _table(t: _Buckets) -> list[tuple[str, float, float]]:
    return [(k, b.level, b.stamp) for k, b in t._by_key.items()]


def _bucket(b: _Bucket) -> tuple[float, float]:
    return (b.level, b.stamp)


def _outcome(call: Any, *args: Any) -> Any:
    try:
        return ("ok", call(*args))
    except QuotaExceeded as exc:
        return ("refused", exc.quota, str(exc), exc.code)


PEERS = st.sampled_from(["p", "q", "r", "s"])
#: time steps: repeated times (the same loop turn), small and large gaps; small rates and
#: bursts below so that every bucket runs dry and refills within a sequence
STEPS = st.sampled_from([0.0, 0.0, 0.0005, 0.001, 0.01, 0.3, 2.0])


@given(st.lists(st.tuples(PEERS, STEPS), max_size=60), st.integers(1, 3))
@settings(max_examples=300, deadline=None)
def test_message_budget_as_before(calls: list[Any], keys: int) -> None:
    cfg = dict(
        per_peer_rate=50.0,
        per_peer_burst=4.0,
        total_rate=80.0,
        total_burst=6.0,
        max_peers_tracked=keys,
    )
    new, old = MessageBudget(**cfg), _PlainMessages(**cfg)  # type: ignore[arg-type]
    now = 0.0
    for peer, step in calls:
        now += step
        assert _outcome(new.take, peer, now) == _outcome(old.take, peer, now)
        assert _table(new._buckets) == _table(old._buckets)
        assert _table(new._shares) == _table(old._shares)
        assert _bucket(new._total) == _bucket(old._total)


@given(
    st.lists(st.tuples(st.sampled_from(["delay", "wasted"]), PEERS, STEPS), max_size=60),
    st.integers(1, 3),
)
@settings(max_examples=300, deadline=None)
def test_read_pacer_as_before(calls: list[Any], keys: int) -> None:
    cfg = dict(total_rate=100.0, total_burst=5.0, share=0.25, max_peers_tracked=keys)
    new, old = ReadPacer(**cfg), _PlainReads(**cfg)  # type: ignore[arg-type]
    now = 0.0
    for op, peer, step in calls:
        now += step
        if op == "delay":
            assert new.delay(peer, now) == old.delay(peer, now)
        else:
            new.wasted(peer)
            old.wasted(peer)
        assert _table(new._shares) == _table(old._shares)
        assert _bucket(new._total) == _bucket(old._total)


@given(
    st.lists(
        st.tuples(st.sampled_from(["admit", "charge", "debit"]), PEERS, STEPS, st.integers(0, 90)),
        max_size=60,
    ),
    st.integers(1, 3),
)
@settings(max_examples=300, deadline=None)
def test_byte_budget_as_before(calls: list[Any], keys: int) -> None:
    cfg = dict(
        per_peer_rate=100.0,
        per_peer_burst=60.0,
        total_rate=150.0,
        total_burst=80.0,
        max_peers_tracked=keys,
    )
    new, old = ByteBudget(**cfg), _PlainBytes(**cfg)  # type: ignore[arg-type]
    now = 0.0
    for op, peer, step, n in calls:
        now += step
        if op == "admit":
            assert new.admit(peer, n, now) == old.admit(peer, n, now)
        elif op == "charge":
            assert _outcome(new.charge, peer, n, now) == _outcome(old.charge, peer, n, now)
        else:
            new.debit(peer, n)
            old.debit(peer, n)
        assert _table(new._buckets) == _table(old._buckets)
        assert _bucket(new._total) == _bucket(old._total)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["short", "charge"]),
            PEERS,
            st.sampled_from(["a", "b"]),
            STEPS,
            st.integers(0, 3_000),
        ),
        max_size=60,
    ),
    st.integers(1, 3),
)
@settings(max_examples=300, deadline=None)
def test_work_budget_as_before(calls: list[Any], keys: int) -> None:
    cfg = dict(
        per_peer_rate=1000.0,
        per_peer_burst=2000.0,
        per_shard_rate=1500.0,
        per_shard_burst=2500.0,
        max_keys_tracked=keys,
    )
    new, old = WorkBudget(**cfg), _PlainWork(**cfg)  # type: ignore[arg-type]
    now = 0.0
    for op, peer, shard, step, work in calls:
        now += step
        if op == "short":
            assert new.short(peer, shard, now) == old.short(peer, shard, now)
        else:
            new.charge(peer, shard, work, now)
            old.charge(peer, shard, work, now)
        assert _table(new._peers) == _table(old._peers)
        assert _table(new._shards) == _table(old._shards)


@given(st.lists(st.tuples(PEERS, STEPS), max_size=60), st.integers(1, 3))
@settings(max_examples=200, deadline=None)
def test_refusal_limit_as_before(calls: list[Any], keys: int) -> None:
    """``_Buckets.take`` itself, through a policy that only takes."""
    cfg = dict(rate=20.0, burst=3.0, max_peers_tracked=keys)
    new, old = RefusalLimit(**cfg), _PlainRefusals(**cfg)  # type: ignore[arg-type]
    now = 0.0
    for peer, step in calls:
        now += step
        assert _outcome(new.take, peer, now) == _outcome(old.take, peer, now)
        assert _table(new._buckets) == _table(old._buckets)
