"""GossipCore driven directly: pushes, batching and back-pressure (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

# -- push and batching ----------------------------------------------------------------------------


def test_local_update_is_pushed_at_the_next_window_boundary() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    delta = put(a, "s", "k", 1)
    a.local_update("s", delta, 5.1)
    assert a.data_to_send() == []
    assert a.next_deadline() == 5.25  # aligned to multiples of the window
    a.tick(5.2)
    assert a.data_to_send() == []
    a.tick(5.25)
    assert a.data_to_send() == [("b", Push("s", (delta,), None, 1))]
    b.receive("a", rt(Push("s", (delta,), None, 1)), 5.35)
    assert content(b, "s") == {"k": 1.0}


def test_deltas_of_one_window_are_batched_per_peer_and_shard() -> None:
    a, b, c = make("a"), make("b"), make("c")
    connect(a, b)
    connect(a, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    d1, d2, d3 = put(a, "s", "x", 1), put(a, "s", "y", 2), put(a, "t", "z", 3)
    for shard, d in (("s", d1), ("s", d2), ("t", d3)):
        a.local_update(shard, d, 5.0)
    a.tick(5.25)
    # A window's local writes of a shard go merged, one update (aligned windows hold them
    # to the flush: gossip/coalesce.py; before h-wanburst, (d1, d2) as they were).
    merged = reps(a).merge("s", [d1, d2])
    assert merged not in (d1, d2)
    assert a.data_to_send() == [
        ("b", Push("s", (merged,), None, 1)),
        ("b", Push("t", (d3,), None, 1)),
        ("c", Push("s", (merged,), None, 1)),
        ("c", Push("t", (d3,), None, 1)),
    ]


def test_batches_are_split_at_max_batch_bytes() -> None:
    a, b = make("a", config=GossipConfig(push_interval=W, max_batch_bytes=60)), make("b")
    connect(a, b)
    a.data_to_send()
    # A replica set without ``merge``: a window's writes go as a batch of updates (with it,
    # aligned windows send them merged, one update: test_core_aligned.py).
    reps(a).merge = None  # type: ignore[method-assign,assignment]
    deltas = [put(a, "s", f"k{i}", "v" * 20) for i in range(4)]
    for d in deltas:
        a.local_update("s", d, 1.0)
    a.tick(1.25)
    pushes = [m for _, m in a.data_to_send()]
    assert all(isinstance(m, Push) for m in pushes) and len(pushes) > 1
    assert [u for m in pushes for u in m.updates] == deltas  # type: ignore[union-attr]
    assert all(sum(map(len, m.updates)) <= 60 or len(m.updates) == 1 for m in pushes)  # type: ignore[union-attr]


def test_full_mesh_does_not_forward_and_tree_forwards_except_to_source() -> None:
    # Full mesh (3 agents <= full_mesh_max): b applies a's delta and forwards nothing.
    a, b, c = make("a"), make("b"), make("c")
    connect(a, b)
    connect(b, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    delta = put(a, "s", "k", 1)
    b.receive("a", Push("s", (delta,)), 1.0)
    b.tick(1.25)
    assert [m for _, m in b.data_to_send() if isinstance(m, Push)] == []
    # ...unless asked to (a sender whose view says "tree" or "relay"): then to all but a.
    delta2 = put(a, "s", "k2", 2)
    b.receive("a", Push("s", (delta2,), forward=True), 1.3)
    b.tick(1.5)
    assert b.data_to_send() == [("c", Push("s", (delta2,), None, 1))]

    # Tree mode (full_mesh_max=2): b relays to c, not back to a; a duplicate is not relayed.
    tree = GossipConfig(push_interval=W, full_mesh_max=2, relay_max=0, fanout=1)
    a, b, c = make("a", config=tree), make("b", config=tree), make("c", config=tree)
    connect(a, b)
    connect(b, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    delta = put(a, "s", "k", 1)
    b.receive("a", Push("s", (delta,)), 1.0)
    b.tick(1.25)
    assert b.data_to_send() == [
        ("c", Push("s", (delta,), None, 1, forward=True))
    ]  # c passes it on too
    b.receive("a", Push("s", (delta,)), 1.3)  # duplicate: apply() says nothing new
    b.tick(1.5)
    assert b.data_to_send() == []


# -- back-pressure --------------------------------------------------------------------------------


def test_slow_peer_queue_is_dropped_and_replaced_by_anti_entropy() -> None:
    cfg = GossipConfig(push_interval=W, max_queue_bytes=100)
    a, b = make("a", config=cfg), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    a.pause_writing("b")
    for i in range(10):
        a.local_update("s", put(a, "s", f"k{i}", "x" * 20), 1.0 + i / 100)
    a.tick(1.25)
    assert a.data_to_send() == []  # held while paused
    (status,) = a.peers()
    assert status.queued_bytes <= 100 and status.dropped > 0
    a.resume_writing("b", 2.0)
    a.tick(2.0)
    a.tick(2.25)
    out = a.data_to_send()
    assert isinstance(out[-1][1], Summary)  # the resync round
    for _, msg in out:
        b.receive("a", rt(msg), 2.3)
    deliver({"a": a, "b": b}, 2.3)
    assert content(b, "s") == content(a, "s") and len(content(b, "s")) == 10
