"""GossipCore driven directly: anti-entropy rounds (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

# -- anti-entropy ---------------------------------------------------------------------------------


def test_idle_round_is_one_message_with_1000_shards() -> None:
    shards = [f"shard-{i:04d}" for i in range(1000)]
    a, b = make("a"), make("b")
    for s in shards:  # identical content on both sides
        d = put(a, s, "k", s)
        reps(b).doc(s)
        reps(b).apply(s, d, "a")
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    assert kinds(log) == [("a", "b", "PeerList"), ("a", "b", "Summary"), ("b", "a", "PeerList")]
    for t in (8.0, 16.0, 24.0):  # each periodic round: a single Summary, no reply
        a.tick(t)
        b.tick(t)
        log = deliver({"a": a, "b": b}, t)
        assert sorted(kinds(log)) == [("a", "b", "Summary"), ("b", "a", "Summary")]


def test_round_repairs_both_directions_with_exact_messages() -> None:
    a, b = make("a", config=CLASSIC), make("b", config=CLASSIC)
    put(a, "s", "from_a", 1)
    put(b, "s", "from_b", 2)
    put(b, "only_b", "k", 3)
    put(a, "only_a", "k", 4)
    ra, rb = reps(a), reps(b)
    sv_a = ra.state_vector("s")
    expected_b_to_a = [
        Diff("only_b", rb.diff("only_b", EMPTY_STATE_VECTOR), rb.state_vector("only_b")),
        Diff("s", rb.diff("s", sv_a), rb.state_vector("s")),
    ]
    sv_b = rb.state_vector("s")
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    assert kinds(log) == [
        ("a", "b", "PeerList"),
        ("a", "b", "Summary"),
        ("b", "a", "PeerList"),
        ("b", "a", "Digests"),  # roots differ
        ("a", "b", "Diff"),  # only_a: b lacks it entirely, sent at once
        ("a", "b", "SyncRequest"),  # only_b (a has nothing) and s (digests differ)
        ("b", "a", "DiffBatch"),  # only_b and s, with b's state vectors: one frame
        ("a", "b", "Diff"),  # s: a has what b lacks; not only_b: digests now equal
    ]
    assert log[3][2] == Digests((("only_b", rb.digest("only_b")), ("s", log[3][2].digests[1][1])))  # type: ignore[union-attr]
    assert log[4][2] == Diff("only_a", ra.diff("only_a", EMPTY_STATE_VECTOR))
    assert log[5][2] == SyncRequest((("only_b", EMPTY_STATE_VECTOR), ("s", sv_a)))
    assert log[6][2] == DiffBatch(tuple(expected_b_to_a))
    assert log[7][2] == Diff("s", ra.diff("s", sv_b))
    for shard in ("s", "only_a", "only_b"):
        assert ra.digest(shard) == rb.digest(shard)
    assert content(b, "s") == {"from_a": 1.0, "from_b": 2.0}


def test_lost_delete_is_repaired_although_state_vectors_are_equal() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 0.5)
    # a deletes the key; the delta is lost on the way to b
    delete = reps(a).change("s", lambda doc: doc.get("m", type=pycrdt.Map).pop("k"))
    assert delete is not None
    a.local_update("s", delete, 1.0)
    a.tick(1.25)
    assert [type(m) for _, m in a.data_to_send()] == [Push]  # dropped
    assert reps(a).state_vector("s") == reps(b).state_vector("s")
    assert reps(a).digest("s") != reps(b).digest("s")
    a.tick(8.0)  # periodic round from a
    log = deliver({"a": a, "b": b}, 8.0)
    assert [k for _, _, k in kinds(log)] == ["Summary", "Digests", "SyncRequest", "Diff", "Diff"]
    assert content(b, "s") == {}
    assert reps(a).digest("s") == reps(b).digest("s")


def test_round_from_the_side_missing_the_delete() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 0.5)
    reps(a).change("s", lambda doc: doc.get("m", type=pycrdt.Map).pop("k"))  # never pushed
    b.tick(8.0)  # b (which lacks the delete) starts the round
    log = deliver({"a": a, "b": b}, 8.0)
    assert [k for _, _, k in kinds(log)] == ["Summary", "Digests", "SyncRequest", "Diff"]
    assert content(b, "s") == {}


def test_busy_tree_links_skip_periodic_rounds_but_not_forever() -> None:
    tree = GossipConfig(
        push_interval=W,
        full_mesh_max=2,
        relay_max=0,
        fanout=1,
        anti_entropy_interval=8.0,
        anti_entropy_jitter=0.0,
        prune_grace=1e6,
    )
    a, b, c = make("a", config=tree), make("b", config=tree), make("c", config=tree)
    connect(a, b)
    connect(b, c)
    cores = {"a": a, "b": b, "c": c}
    settle(cores, 0.25)

    rounds: list[float] = []

    def step(t: float) -> None:  # run every timer at t, deliver, note a's rounds
        for core in cores.values():
            core.tick(t)
        rounds.extend(t for src, _, m in deliver(cores, t) if src == "a" and isinstance(m, Summary))

    t = 1.0
    while t < 8.0 * 8:  # pushes both ways on a-b every 4 s
        a.local_update("s", put(a, "s", f"a{t}", t), t)
        b.local_update("s", put(b, "s", f"b{t}", t), t)
        step(t)
        step(t + W)
        t += 4.0
    # a-b carried pushes both ways all along: rounds were skipped, but one was forced within
    # anti_entropy_skip_max intervals of the on-connect round
    assert rounds and rounds[0] > 8.0 * 2 and rounds[0] <= 8.0 * (tree.anti_entropy_skip_max + 1)
    # an idle link gets its periodic round
    t = rounds[-1] + 40.0
    a.tick(t)
    assert Summary in [type(m) for _, m in a.data_to_send()]


def test_sync_shards_per_round_are_bounded() -> None:
    cfg = GossipConfig(
        push_interval=W, max_sync_shards=3, anti_entropy_jitter=0.0, early_sync_shards=0
    )
    a, b = make("a", config=cfg), make("b", config=cfg)
    for i in range(5):
        put(b, f"s{i}", "k", i)
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    request = next(m for _, _, m in log if isinstance(m, SyncRequest))
    assert [s for s, _ in request.state_vectors] == ["s0", "s1", "s2"]
    a.tick(100.0)
    deliver({"a": a, "b": b}, 100.0)
    assert sorted(reps(a).docs) == [f"s{i}" for i in range(5)]


def test_joining_many_shards_continues_rounds_in_batched_frames() -> None:
    # Issue 16: a round covers max_sync_shards shards; the rest used to wait for the periodic
    # timer (seconds per round). Now the cut round continues at once, and small Diffs travel
    # several to a frame. No tick here: everything happens in the on-connect exchange.
    cfg = replace(CFG, max_sync_shards=100)
    a, b = make("a", config=cfg), make("b", config=cfg)
    shards = [f"s{i:04d}" for i in range(450)]
    for s in shards:
        put(a, s, "k", s)
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    assert sorted(reps(b).shard_names()) == shards
    assert all(reps(b).digest(s) == reps(a).digest(s) for s in shards)
    sent = [m for src, _, m in log if src == "a"]
    summaries = sum(isinstance(m, Summary) for m in sent)
    assert summaries == 5  # 450 shards in rounds of 100: the on-connect one and 4 more
    diffs = sum(len(m.diffs) for m in sent if isinstance(m, DiffBatch))
    assert diffs == 450 and not any(isinstance(m, Diff) for m in sent)
    assert sum(isinstance(m, DiffBatch) for m in sent) <= 450 // 100 + 5  # frames, not shards


def test_continuation_waits_for_the_diffs_it_asked_for() -> None:
    # A peer that never answers our SyncRequests (here: they are dropped) must not make
    # continuation rounds run back to back: the next round starts only once this one's
    # Diffs came (the periodic rounds take over otherwise).
    cfg = replace(CFG, max_sync_shards=10)
    a, b = make("a", config=cfg), make("b", config=cfg)
    for i in range(30):
        put(b, f"s{i:02d}", "k", i)
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0, drop={SyncRequest})
    assert sum(isinstance(m, Summary) for src, _, m in log if src == "a") == 1
    log = deliver({"a": a, "b": b}, 0.0)  # nothing more is pending
    assert log == []
