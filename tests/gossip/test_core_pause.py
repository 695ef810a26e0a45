"""The core ends a coalescing window when the writer's stream pauses (gossip/coalesce.py).

The pause is a deadline of the core (the last local write + ``PAUSE``), reported by
``next_deadline`` and acted on in ``tick``, so the simulator and every driver see the same
behaviour with no driver code (before: a 0.5 ms asyncio timer in the agent). Driven directly
and in the simulator, in virtual time: deterministic.
"""

from __future__ import annotations

from typing import Any

from corepair import *  # noqa: F403

from crdtsync.gossip.coalesce import GROW_AT, PAUSE, Coalescer

# ruff: noqa: F405 (names from corepair)

LAN = GossipConfig.lan()
W = LAN.push_interval


def test_pause_at_only_for_a_window_that_may_end_at_a_pause() -> None:
    c = Coalescer(0.002)
    assert c.pause_at() is None  # nothing held
    assert c.hold("s", [b"a"], 1.0)  # quiet: at once
    assert not c.hold("s", [b"b"], 1.0001)  # opens the window (due 1.002)
    for i in range(GROW_AT - 2):
        assert c.add("s", b"c", 1.0002 + i * 0.0001)
        assert c.pause_at() is None  # fewer than GROW_AT: waits for the window's end
    # The write that would let it end at a pause is handed over (hold), not added: its
    # driver then reads the new deadline.
    assert not c.add("s", b"d", 1.0005)
    assert not c.hold("s", [b"d"], 1.0005)
    assert c.paused() and c.pause_at() == 1.0005 + PAUSE
    assert not c.paused_by(1.0005 + PAUSE / 2)
    assert c.add("s", b"e", 1.0007)  # a later write moves the pause
    assert c.pause_at() == 1.0007 + PAUSE and c.paused_by(1.0007 + PAUSE)
    assert not c.add("s", b"f", 1.0019) or c.pause_at() is None  # after its end: none
    c.take(1.002)
    assert c.pause_at() is None and not c.add("s", b"g", 1.0021)  # no window open


def test_a_widened_window_reports_its_pause_from_its_first_write() -> None:
    c = Coalescer(0.002)
    c._busy = 2  # noqa: SLF001 (a window of 8 ms: the stream was dense two windows in a row)
    c._last = 0.0  # noqa: SLF001
    assert not c.hold("s", [b"x"], 0.001)
    assert c.due == 0.008 and c.pause_at() == 0.001 + PAUSE
    assert c.add("s", b"y", 0.002) and c.pause_at() == 0.002 + PAUSE


def _burst(a: GossipCore, n: int, start: float, step: float) -> tuple[list[float], float]:
    """n writes of a to shard "s", ``step`` apart, ticking a at each of its deadlines on the
    way and after; (the virtual times a sent a Push of "s", the last write's time)."""
    sent: list[float] = []
    t = start

    def drain(at: float) -> None:
        for _, m in a.data_to_send():
            if isinstance(m, Push) and m.shard == "s":
                sent.append(at)

    last = start
    for i in range(n):
        while (d := a.next_deadline()) is not None and d <= t:
            a.tick(d)
            drain(d)
        delta = put(a, "s", f"k{i}", i)
        if not a.hold_local("s", delta, t):
            a.local_update("s", delta, t)
        drain(t)
        last = t
        t += step
    while a.holding_local and (d := a.next_deadline()) is not None:
        a.tick(d)
        drain(d)
    return sent, last


def test_the_core_ends_a_dense_window_at_the_pause_and_a_sparse_one_at_its_end() -> None:
    a, b = make("a", config=LAN), make("b", config=LAN)
    connect(a, b)
    settle({"a": a, "b": b}, 0.5)
    # A dense stream (10,000 writes/s): its windows widen; the last one goes PAUSE after
    # the last write, not at its end (up to 16 ms later).
    sent, last = _burst(a, 200, 1.0, 0.0001)
    assert sent[-1] == last + PAUSE
    assert 5 <= len(sent) <= 12  # still one Push per window, not per write
    # A sparse one (3 writes 0.5 ms apart after a quiet one): waits for the window's end.
    sent, last = _burst(a, 3, 2.0, 0.0005)
    assert sent == [2.0, 2.0 + W]
    # A writer that waited for a CPU does not look paused: its next write comes before the
    # driver's late tick (the timer is queued behind the writer's step), and moves the pause.
    sent, last = _burst(a, 1 + GROW_AT, 3.0, 0.0001)
    assert sent == [3.0, last + PAUSE]
    for i in range(1 + GROW_AT):
        delta = put(a, "s", f"late{i}", i)
        if not a.hold_local("s", delta, 4.0 + i * 0.0001):
            a.local_update("s", delta, 4.0 + i * 0.0001)
    a.data_to_send()
    late = 4.0 + GROW_AT * 0.0001 + 2 * PAUSE  # the process stalled past the pause
    delta = put(a, "s", "after-the-stall", 1)
    assert a.hold_local("s", delta, late)  # (the writer's step runs first)
    assert a.next_deadline() == late + PAUSE
    a.tick(late)  # the late timer
    assert a.holding_local and a.data_to_send() == []
    a.tick(late + PAUSE)
    assert a.next_deadline() != late + PAUSE and not a.holding_local


def _simulate(step: float, n: int) -> tuple[list[float], float]:
    """3 agents on LAN settings in the simulator; a00 writes n one-character writes ``step``
    apart from 3.0. (The virtual times a00 sent a Push to a01 from 3.0, the last write's.)"""
    sent: list[float] = []

    def trace(conn: Any, src: str, msg: Message) -> None:
        if src == "a00" and conn.other(src) == "a01" and isinstance(msg, Push):
            if msg.shard == "s":
                sent.append(net.now)

    times = [3.0 + i * step for i in range(n)]
    net = lan_text_stream(11, times, trace)
    net.run_until(5.0)
    assert net.converged()
    return sent, times[-1]


def test_the_simulator_sees_the_pause() -> None:
    sent, last = _simulate(0.0001, 300)  # a burst at 10,000 writes/s, then nothing
    assert sent[-1] == last + PAUSE  # the last window went at the pause, in virtual time
    assert len(sent) <= 300 // 10  # coalesced
    assert _simulate(0.0001, 300) == (sent, last)  # deterministic
    sent, last = _simulate(0.001, 20)  # 1,000 writes/s: never dense, no early end
    assert all(t - last != PAUSE for t in sent)
    assert sent[-1] >= last and sent[-1] - last < W + 1e-9  # at its window's end
