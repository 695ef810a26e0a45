"""The quota policies of issue #11 (crdtsync/quotas.py): pure, clock passed in."""

from __future__ import annotations

import msgpack
import pytest

from crdtsync.errors import CloseCode, CrdtSyncError
from crdtsync.quotas import (
    ByteBudget,
    ConnectionCap,
    QuotaExceeded,
    ShardQuota,
    TransferCap,
    name_pieces,
)


def test_shard_quota_per_peer_burst_then_rate_and_store_cap() -> None:
    q = ShardQuota(per_peer_burst=3, per_peer_rate=1.0, max_shards=10)
    for _ in range(3):
        q.charge("evil", 0, now=0.0)
    with pytest.raises(QuotaExceeded) as exc:
        q.charge("evil", 0, now=0.0)
    assert exc.value.quota == "shards-per-peer" and exc.value.code == CloseCode.FLOODING
    assert isinstance(exc.value, CrdtSyncError)
    q.charge("honest", 0, now=0.0)  # another peer has its own bucket
    q.charge("evil", 0, now=1.0)  # one more a second
    with pytest.raises(QuotaExceeded):
        q.charge("evil", 0, now=1.5)
    with pytest.raises(QuotaExceeded) as exc:
        q.charge("honest", 10, now=100.0)
    assert exc.value.quota == "shards"


def test_shard_quota_twenty_thousand_in_three_seconds_is_cut_to_the_burst() -> None:
    q = ShardQuota()
    created = 0
    for i in range(20_000):
        try:
            q.charge("evil", created, now=3.0 * i / 20_000)
            created += 1
        except QuotaExceeded:
            pass
    assert created <= q.per_peer_burst + 3


def test_byte_budget_per_peer_and_total_and_refund() -> None:
    b = ByteBudget(per_peer_rate=100, per_peer_burst=1000, total_rate=150, total_burst=1500)
    b.charge("a", 1000, now=0.0)
    with pytest.raises(QuotaExceeded) as exc:
        b.charge("a", 1, now=0.0)
    assert exc.value.quota == "bytes-per-peer"
    with pytest.raises(QuotaExceeded) as exc:
        b.charge("b", 600, now=0.0)  # b has room, the total has 500 left
    assert exc.value.quota == "bytes-total"
    b.charge("b", 500, now=0.0)  # the refused 600 were given back to b's bucket
    b.charge("a", 100, now=1.0)
    with pytest.raises(QuotaExceeded):
        b.charge("a", 2000, now=1000.0)  # never fits the burst


def test_transfer_cap_bytes_and_timeout() -> None:
    t = TransferCap(per_peer_bytes=100, total_bytes=150, timeout=10.0)
    t.add("a", 1, 60, now=0.0)
    with pytest.raises(QuotaExceeded) as exc:
        t.add("a", 2, 50, now=1.0)
    assert exc.value.code == CloseCode.OVERSIZE and exc.value.quota == "transfer-per-peer"
    t.add("b", 1, 80, now=5.0)
    with pytest.raises(QuotaExceeded) as exc:
        t.add("c", 1, 20, now=5.0)
    assert exc.value.quota == "transfer-total"
    assert t.expire(now=10.5) == [("a", 1)]
    assert t.held == 80
    t.drop_peer("b")
    assert t.held == 0
    t.add("c", 1, 100, now=20.0)
    t.finish("c", 1)
    assert t.held == 0


def test_connection_cap_total_per_address_and_handshake_deadline() -> None:
    c = ConnectionCap(max_total=3, max_per_address=2, handshake_timeout=10.0)
    c.accept(1, "10.0.0.1", now=0.0)
    c.accept(2, "10.0.0.1", now=1.0)
    with pytest.raises(QuotaExceeded) as exc:
        c.accept(3, "10.0.0.1", now=1.0)
    assert exc.value.quota == "connections-per-address"
    c.accept(3, "10.0.0.2", now=2.0)
    with pytest.raises(QuotaExceeded) as exc:
        c.accept(4, "10.0.0.3", now=2.0)
    assert exc.value.quota == "connections"
    c.handshaken(2)
    assert c.overdue(now=11.5) == [1]
    c.closed(1, "10.0.0.1")
    c.accept(4, "10.0.0.3", now=12.0)


def test_name_pieces_fit_the_budget_and_keep_every_name_in_order() -> None:
    names = [f"shard-{i:06d}" for i in range(132_000)]
    pieces = list(name_pieces(names, 1 << 20))
    assert [n for p in pieces for n in p] == names
    assert len(pieces) > 1
    for p in pieces:
        assert len(msgpack.packb(list(p))) <= 1 << 20
    assert list(name_pieces([], 1024)) == []


def test_message_budget_per_name_and_in_all_cuts_the_heavy_senders() -> None:
    from crdtsync.quotas import MessageBudget

    own = MessageBudget(per_peer_rate=1, per_peer_burst=5)
    for _ in range(5):
        own.take("a", now=0.0)
    with pytest.raises(QuotaExceeded) as exc:
        own.take("a", now=0.0)
    assert exc.value.quota == "flood"
    # Under the per-peer limit, but together over the total: the peers over their share
    # (a quarter of the total: 25 of a burst of 100) are cut, the others only dropped.
    b = MessageBudget(per_peer_rate=1000, per_peer_burst=1000, total_rate=10, total_burst=100)
    for _ in range(100):
        b.take("heavy", now=0.0)
    with pytest.raises(QuotaExceeded) as exc:
        b.take("heavy", now=0.0)
    assert exc.value.quota == "flood-share"
    b.take("light", now=0.0)  # within its share: never refused, even now


def test_byte_budget_admit_goes_into_debt_then_waits() -> None:
    b = ByteBudget(per_peer_rate=100, per_peer_burst=100, total_rate=1e9, total_burst=1e9)
    assert b.admit("a", 10_000, now=0.0) is None  # in credit: admitted, even far over
    assert b.admit("a", 1, now=1.0) == "bytes-per-peer"  # in debt for ~99 s
    assert b.admit("b", 1, now=1.0) is None
    assert b.admit("a", 1, now=200.0) is None


def test_read_pacer_holds_a_wasteful_peer_back_whatever_the_total() -> None:
    from crdtsync.quotas import ReadPacer

    p = ReadPacer(total_rate=100.0, total_burst=100.0, share=0.5, waste_cost=8.0)
    assert p.delay("light", 0.0) == 0.0
    assert p.delay("waster", 0.0) == 0.0  # its share bucket exists now (50 frames)
    for _ in range(7):
        p.wasted("waster")  # 56 frames' worth: 6 below zero
    wait = p.delay("waster", 0.0)
    assert wait == pytest.approx(8.0 / 50.0)  # from -7 to one frame of credit at 50/s
    assert p.delay("light", 0.0) == 0.0  # the total has room; a light peer is not held up
    assert p.delay("waster", wait) == 0.0  # paid off
    p.wasted("never-read")  # a peer never read through delay() is not tracked: no effect
    assert p.delay("never-read", 1.0) == 0.0
