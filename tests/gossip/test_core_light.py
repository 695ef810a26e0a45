"""GossipCore driven directly: a received Push or Ack recomputes only the timers it can move
(the light generation of ``next_deadline``), and still every timer it does move."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)


def _pushes(a: GossipCore, n: int) -> list[Push]:
    out = []
    for i, t in enumerate(1.0 + W * k for k in range(n)):
        a.local_update("s", put(a, "s", f"k{i}", i), t)
        a.tick(t + W)
        ((_, push),) = a.data_to_send()
        out.append(push)
    return out


def test_a_push_with_a_gap_moves_next_deadline_after_it_was_read() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    pushes = _pushes(a, 3)
    b.receive("a", rt(pushes[0]), 1.35)
    assert b.data_to_send() == []
    assert b.next_deadline() > 1.85 + CFG.repair_timeout  # read (and cached) before the gap
    b.receive("a", rt(pushes[2]), 1.85)  # pushes[1] was lost: a repair, and its timer
    assert [type(m) for _, m in b.data_to_send()] == [SyncRequest]
    assert b.next_deadline() == 1.85 + CFG.repair_timeout
    assert b.dials() == []


def test_an_ack_showing_a_lag_moves_next_deadline_after_it_was_read() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    (push,) = _pushes(a, 1)  # b never gets it; a's ack of it shows b lags behind
    assert b.next_deadline() > 2.0 + CFG.repair_timeout
    sv = reps(a).state_vector("s")
    b.receive("a", rt(Ack((ShardState("s", sv, b"\x00"),))), 2.0)
    assert b.next_deadline() == 2.0 + CFG.repair_timeout  # checked again then (repair.py)
    b.tick(2.0 + CFG.repair_timeout)
    assert any(isinstance(m, SyncRequest) for _, m in b.data_to_send())
