"""GossipCore driven directly: repair of lost pushes (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

# -- lost pushes --------------------------------------------------------------------------------


def test_gap_in_push_sequence_asks_for_a_repair_until_it_comes() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    pushes = []
    for i, t in enumerate((1.0, 1.25, 1.5)):
        a.local_update("s", put(a, "s", f"k{i}", i), t)
        a.tick(t + W)
        ((_, push),) = a.data_to_send()
        pushes.append(push)
    assert [p.seq for p in pushes] == [1, 2, 3]
    b.receive("a", rt(pushes[0]), 1.35)
    b.receive("a", rt(pushes[2]), 1.85)  # pushes[1] was lost: k2 waits for k1 (clock order)
    assert reps(b).state_vector("s") != reps(a).state_vector("s")
    assert b.data_to_send() == [("a", SyncRequest((("s", reps(b).state_vector("s")),)))]
    assert b.next_deadline() == 1.85 + CFG.repair_timeout
    b.tick(1.85 + CFG.repair_timeout)  # the request (or its Diff) was lost too: ask again
    ((_, again),) = b.data_to_send()
    assert isinstance(again, SyncRequest)
    a.receive("b", rt(again), 2.4)
    ((_, diff),) = a.data_to_send()
    b.receive("a", rt(diff), 2.5)
    assert content(b, "s") == {"k0": 0.0, "k1": 1.0, "k2": 2.0}
    b.tick(3.0)
    assert not any(isinstance(m, SyncRequest) for _, m in b.data_to_send())
    b.receive("a", rt(pushes[1]), 3.1)  # late (reordered) or duplicated: no repair asked
    b.receive("a", rt(pushes[2]), 3.1)
    assert b.data_to_send() == []
