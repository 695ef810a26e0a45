"""GossipCore driven directly: a received Push or Ack recomputes only the timers it can move
(the light generation of ``next_deadline``), and still every timer it does move."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

LAN = GossipConfig.lan()


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


def test_durable_moves_only_the_acks_timers_and_still_arms_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``durable()`` (every group commit) owes acks: a light generation, as a received Ack
    is, so the membership, dial, pruning and anti-entropy timers are not computed again
    (h-fold); the flush and the ack it owes are still ``next_deadline``'s, read after a
    ``next_deadline`` cached before it, and a local write held in the window is no longer
    held (owed acks ride on its Push)."""
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    (push,) = _pushes(a, 1)
    b.receive("a", rt(push), 1.3)
    assert reps(b).commit() == ["s"]
    b.tick(1.6)
    b.data_to_send()
    before = b.next_deadline()  # cached: nothing owed, no flush
    assert before > 1.61 + CFG.ack_delay
    calls = []
    real = type(b)._component_deadlines
    monkeypatch.setattr(type(b), "_component_deadlines", lambda self: calls.append(1) or real(self))
    b.durable(["s"], 1.61)
    assert b.next_deadline() == b._ctx.flush_at < before  # the flush the owed ack asked for
    assert calls == []  # light: the fixed timers came from the cache
    b.tick(b._ctx.flush_at)
    assert b.data_to_send() == []  # (no Push to ride on: the ack waits ack_delay)
    assert b.next_deadline() == 1.61 + CFG.ack_delay
    b.tick(1.61 + CFG.ack_delay)
    sv, ds = reps(b).durable_state("s")
    assert b.data_to_send() == [("a", Ack((ShardState("s", sv, ds),)))]


def test_durable_ends_holding_local_writes_in_the_window() -> None:
    """Acks owed on a link make a local write move a timer (it carries them): after
    ``durable()`` a write is no longer held by ``hold_local`` (its cache is reset, as after
    a received Push)."""
    a, b = make("a", config=LAN), make("b", config=LAN)
    connect(a, b)
    settle({"a": a, "b": b}, 0.5)
    a.local_update("s", put(a, "s", "k", 1), 1.0)
    (push,) = [m for _, m in a.data_to_send() if isinstance(m, Push)]
    b.receive("a", rt(push), 1.01)
    assert reps(b).commit() == ["s"]
    d1, d2, d3, d4 = (put(b, "s", f"b{i}", i) for i in range(4))
    b.local_update("s", d1, 1.02)  # at once
    b.data_to_send()
    b.local_update("s", d2, 1.0201)  # opens the window
    assert b.hold_local("s", d3, 1.0202)
    b.durable(["s"], 1.0203)
    assert not b.hold_local("s", d4, 1.0204)
