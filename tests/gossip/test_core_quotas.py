"""GossipCore driven directly: the quotas that hold across connections (issue #11,
``crdtsync/gossip/guard.py``). Each test ends with what was refused, the close code or the
drop, the counter, what is (not) stored, and an honest peer still served."""

from __future__ import annotations

from typing import Any

from corepair import *  # noqa: F403

from crdtsync.gossip.guard import QuotaSet
from crdtsync.quotas import ByteBudget, ShardQuota, TransferCap

# ruff: noqa: F405 (names from corepair)


def _core(name: str, quotas: QuotaSet, config: GossipConfig = CFG) -> GossipCore:
    replicas = MemoryReplicas(random.Random(f"ids/{name}"))
    return GossipCore(
        name,
        replicas,
        rng=random.Random(0),
        config=config,
        address=f"mem://{name}",
        quotas=quotas,
    )


def _writer(name: str) -> GossipCore:
    return make(name)


def _pair(victim: GossipCore, *peers: GossipCore) -> dict[str, GossipCore]:
    cores = {victim.name: victim, **{p.name: p for p in peers}}
    for p in peers:
        connect(p, victim)
    deliver(cores, 0.0)
    return cores


def test_flood_limit_is_per_name_and_survives_a_reconnect() -> None:
    cfg = replace(CFG, flood_rate=1.0, flood_burst=5.0)
    victim, evil, honest = _core("v", QuotaSet(), cfg), make("evil"), make("honest")
    _pair(victim, evil, honest)
    ping = Summary(bytes(16), 0)
    with pytest.raises(ProtocolError) as info:
        for _ in range(7):  # the burst of 5, and 1 refilled since the handshake
            victim.receive("evil", ping, 1.0)
    assert info.value.code == CloseCode.FLOODING
    victim.connection_lost("evil", 1.0)
    # Reconnecting right away gives no fresh bucket: the first message is refused again.
    victim.connection_made(rt(evil.hello()), 1.0, outbound=False)
    with pytest.raises(ProtocolError) as info:
        victim.receive("evil", ping, 1.0)
    assert info.value.code == CloseCode.FLOODING
    assert victim.quota_counters["quota.flood"] == 2
    victim.receive("honest", ping, 1.0)  # another name has its own bucket


def test_global_message_budget_cuts_the_heavy_sender_not_the_light() -> None:
    victim = _core("v", QuotaSet(messages_rate=1.0, messages_burst=40.0))
    heavy, honest = make("heavy"), make("honest")
    _pair(victim, heavy, honest)
    ping = Summary(bytes(16), 0)
    with pytest.raises(ProtocolError) as info:
        for _ in range(100):  # far under its own flood limit (2,000/s), over a quarter of 40
            victim.receive("heavy", ping, 1.0)
    assert info.value.code == CloseCode.FLOODING
    assert victim.quota_counters["quota.flood-share"] == 1
    victim.receive("honest", ping, 1.0)  # the total is spent, but honest is within its share
    assert victim.quota_counters == {"quota.flood-share": 1}
    victim.data_to_send()
    # Once the global bucket refills, an honest push is applied.
    delta = put(honest, "s", "k", 1)
    victim.receive("honest", Push("s", (delta,)), 100.0)
    assert content(victim, "s") == {"k": 1}


def test_a_peer_may_create_only_its_quota_of_shards_and_only_valid_ones() -> None:
    victim = _core("v", QuotaSet(shards=ShardQuota(per_peer_burst=3, per_peer_rate=0.01)))
    evil, honest = make("evil"), make("honest")
    _pair(victim, evil, honest)
    # A shard whose first update does not validate is not created, and costs no quota:
    # malformed, the connection is closed; beyond the work limits, the update is dropped.
    with pytest.raises(ProtocolError) as info:
        victim.receive("evil", Push("bad", (b"\x01\x02",)), 1.0)
    assert info.value.code == CloseCode.INVALID_UPDATE
    victim.receive("evil", Push("bad", (h_fan(),)), 1.0)
    assert victim.quota_counters["quota.update-limits"] == 1
    for i in range(10):
        victim.receive("evil", Push(f"s{i}", (put(evil, f"s{i}", "k", i),)), 1.0)
    assert sorted(reps(victim).docs) == ["s0", "s1", "s2"]
    assert victim.quota_counters["quota.shards-per-peer"] == 7
    # Updates to shards that exist are not charged; another peer has its own quota.
    victim.receive("evil", Push("s0", (put(evil, "s0", "k", "again"),)), 1.0)
    assert content(victim, "s0") == {"k": "again"}
    victim.receive("honest", Push("h", (put(honest, "h", "k", 1),)), 1.0)
    assert content(victim, "h") == {"k": 1}


def h_fan() -> bytes:
    """A valid-looking update over the fan limit (300 clients at one place)."""
    import hostile

    return hostile.same_origin_fan(300)


def test_byte_budget_per_peer_defers_then_applies() -> None:
    budget = ByteBudget(per_peer_rate=100, per_peer_burst=100, total_rate=1e9, total_burst=1e9)
    victim = _core("v", QuotaSet(update_bytes=budget))
    evil, honest = make("evil"), make("honest")
    _pair(victim, evil, honest)
    big = put(evil, "s", "k", "x" * 500)  # admitted on credit, the bucket goes into debt
    victim.receive("evil", Push("s", (big,)), 1.0)
    more = put(evil, "s", "k2", 2)
    victim.receive("evil", Push("s", (more,)), 1.0)  # in debt: dropped
    assert content(victim, "s") == {"k": "x" * 500}
    assert victim.quota_counters["quota.bytes-per-peer"] == 1
    victim.receive("honest", Push("t", (put(honest, "t", "k", 1),)), 1.0)
    assert content(victim, "t") == {"k": 1}
    victim.receive("evil", Push("s", (more,)), 100.0)  # back in credit
    assert content(victim, "s") == {"k": "x" * 500, "k2": 2}


def test_unfinished_transfers_have_a_global_cap_and_a_timeout() -> None:
    cap = TransferCap(per_peer_bytes=1000, total_bytes=1500, timeout=10.0)
    victim = _core("v", QuotaSet(transfers=cap))
    a, b, honest = make("a"), make("b"), make("honest")
    _pair(victim, a, b, honest)
    piece = b"\x00" * 800
    victim.receive("a", DiffChunk("s", 1, 0, 100, piece), 1.0)
    with pytest.raises(ProtocolError) as info:  # a's 800 + b's 800 > 1500 in all
        victim.receive("b", DiffChunk("s", 1, 0, 100, piece), 1.0)
    assert info.value.code == CloseCode.OVERSIZE
    assert victim.quota_counters["quota.transfer-total"] == 1
    assert cap.held == 800
    victim.tick(20.0)  # a's transfer is older than the timeout: dropped
    assert cap.held == 0 and victim.quota_counters["quota.transfer-timeout"] == 1
    # An honest transfer (two pieces of a real update) completes and applies.
    update = put(honest, "s", "k", "v" * 50)
    half = len(update) // 2
    victim.receive("honest", DiffChunk("s", 9, 0, 2, update[:half]), 21.0)
    victim.receive("honest", DiffChunk("s", 9, 1, 2, update[half:]), 21.0)
    assert content(victim, "s") == {"k": "v" * 50} and cap.held == 0


def test_replies_to_all_peers_together_wait_for_the_budget() -> None:
    replies = ByteBudget(per_peer_rate=1e9, per_peer_burst=1e9, total_rate=100, total_burst=100)
    victim = _core("v", QuotaSet(replies=replies))
    for i in range(5):
        put(victim, f"s{i}", "k", "y" * 200)
    a = make("a")
    _pair(victim, a)
    victim.receive("a", SyncRequest(tuple((f"s{i}", EMPTY_STATE_VECTOR) for i in range(5))), 1.0)
    sent = [m for _, m in victim.data_to_send() if isinstance(m, Diff)]
    assert len(sent) == 1  # one reply took the budget into debt; the rest waits
    assert victim.quota_counters["quota.replies.bytes-total"] >= 1
    assert victim.next_deadline() is not None  # and is owed at a later window
    victim.tick(1000.0)
    sent = [m for _, m in victim.data_to_send() if isinstance(m, Diff)]
    assert len(sent) == 1  # one a window while the budget is short


def test_an_update_beyond_the_limits_is_dropped_not_a_reason_to_close() -> None:
    # A peer may pass on a document that others built past max_fan over many updates (each
    # within it); its Diff is refused and counted, and the honest traffic on that link goes on.
    victim, peer = _core("v", QuotaSet()), make("peer")
    _pair(victim, peer)
    victim.receive("peer", Diff("fan", h_fan()), 1.0)
    victim.receive("peer", Push("fan", (h_fan(), h_fan())), 1.0)  # a batch: dropped whole
    assert victim.quota_counters["quota.update-limits"] == 2
    assert "fan" not in reps(victim).docs
    victim.receive("peer", Push("notes", (put(peer, "notes", "k", 1),)), 1.0)
    assert content(victim, "notes") == {"k": 1}


def _read_offered(
    core: GossipCore, peer: str, rate: float, start: float, end: float, frame: Any
) -> tuple[int, int]:
    """Offer ``frame`` from ``peer`` at ``rate`` a second, as the websocket reader does: read
    (receive) it only when ``read_delay`` says 0, else wait that long. (frames read, waits)."""
    t, read, waits = start, 0, 0
    while t < end:
        wait = core.read_delay(peer, t)
        if wait > 0:
            t += wait
            waits += 1
            continue
        core.receive(peer, frame() if callable(frame) else frame, t)
        core.data_to_send()
        read += 1
        t += 1 / rate
    return read, waits


def test_a_peer_that_only_wastes_is_read_slowly_whatever_the_total() -> None:
    """Issue #11: 4 Summary flooders and a shard spammer each stayed within the read pacer's
    share (500 frames/s) and together took a third of a core in frames that did nothing (a
    Summary while Digests are owed already, a push the shard quota refused). Now each wasted
    frame costs its sender 8 more frames of its share: it is read at ~55/s even when the
    total (2,000/s) has room, and an honest peer's frames are never held up."""
    victim = _core("v", QuotaSet())
    flooder, spammer, honest = make("f"), make("spam"), make("honest")
    _pair(victim, flooder, spammer, honest)
    put(victim, "other", "x", 1)  # so the flooder's empty root differs: Digests owed
    ping = Summary(bytes(16), 0)
    n = iter(range(1_000_000))
    item = put(make("w"), "seed", "k", 1)

    def spam() -> Push:
        return Push(f"spam-{next(n)}", (item,))

    flooded, _ = _read_offered(victim, "f", 1900.0, 1.0, 11.0, ping)
    spammed, _ = _read_offered(victim, "spam", 1900.0, 1.0, 11.0, spam)
    # Burst of the share (1,000 frames) / 9, then 500/9 a second: ~110 + 555 in 10 s (the
    # old pacer read all 19,000 of each: alone, neither exceeds the 2,000/s total).
    assert flooded < 1_000, flooded
    assert spammed < 1_000, spammed
    assert victim.quota_counters["quota.shards-per-peer"] > 0
    # The flooder still gets its paced Digests, and nobody was closed.
    assert {p.name for p in victim.peers()} >= {"f", "spam", "honest"}
    # An honest writer, 50 pushes a second meanwhile: never waits, every push applied.
    writes = iter(range(1_000_000))

    def write() -> Push:
        return Push("s", (put(honest, "s", f"k{next(writes)}", 1),))

    read, waits = _read_offered(victim, "honest", 50.0, 11.0, 13.0, write)
    assert read >= 100 and waits == 0
    assert content(victim, "s") == content(honest, "s")
