"""The core's coalescing window for local writes (gossip/coalesce.py, issue 17's stream row):
a stream of small writes leaves as one merged update per shard and window, the window doubling
while the stream lasts; a lone write goes at once. Driven directly and in the simulator."""

from __future__ import annotations

import hashlib
from typing import Any

import pycrdt
from corepair import *  # noqa: F403

from crdtsync.gossip.coalesce import GROW_AT, MAX_DOUBLINGS, Coalescer

# ruff: noqa: F405 (names from corepair)

LAN = GossipConfig.lan()
W = LAN.push_interval


def test_windows_double_while_a_dense_stream_goes_on_and_narrow_after_it() -> None:
    c = Coalescer(0.002)
    assert c.hold("s", [b"1"], 1.0)  # quiet: at once
    assert not c.hold("s", [b"2"], 1.0005) and c.due == 1.002  # the window of the last one
    assert not c.hold("t", [b"3"], 1.001) and c.due == 1.002  # joins the open window
    assert c.take(1.002) == {"s": [b"2"], "t": [b"3"]} and c.due is None
    assert c.window == 0.002  # 2 writes in 2 ms (1,000/s): a moderate rate keeps the window
    windows = []
    now = 1.002
    for _ in range(5):  # a dense stream: GROW_AT writes per 2 ms fill every window
        for i in range(GROW_AT << MAX_DOUBLINGS):
            assert not c.hold("s", [b"x"], now + (i + 1) * 0.002 / GROW_AT / 8)
        windows.append(round(c.due - now, 6))  # type: ignore[operator]
        now = c.due  # type: ignore[assignment]
        c.take(now)
    # doubling from the second dense window in a row, up to 2**MAX_DOUBLINGS
    assert windows == [0.002, 0.002, 0.004, 0.008, 0.016]
    for i in range(16):  # 16 writes in 16 ms (1,000/s): under GROW_AT per 2 ms, it narrows
        assert not c.hold("s", [b"z"], now + (i + 1) * 0.001)
    now = c.due  # type: ignore[assignment]
    c.take(now)
    assert c.window == 0.002 * 2 ** (MAX_DOUBLINGS - 1)
    assert not c.hold("s", [b"z"], now + 0.0001)  # one write in 8 ms: narrower still
    c.take(c.due)  # type: ignore[arg-type]
    assert c.window == 0.002 * 2 ** (MAX_DOUBLINGS - 2)
    assert c.hold("s", [b"q"], 100.0) and c.window == 0.002  # quiet again: at once, reset
    assert Coalescer(0.0).hold("s", [b"1"], 1.0) and Coalescer(0.0).hold("s", [b"2"], 1.0)


def test_one_dense_window_alone_does_not_widen_the_next() -> None:
    # A paced writer at 1,000/s that fell behind writes what it owes in one go: that window
    # holds GROW_AT writes or more, the next ones two. The window stays at push_interval.
    c = Coalescer(0.002)
    assert c.hold("s", [b"0"], 1.0)
    for _ in range(GROW_AT + 2):  # the catch-up: GROW_AT + 2 writes at once
        assert not c.hold("s", [b"c"], 1.0005)
    c.take(c.due)  # type: ignore[arg-type]
    assert c.window == 0.002
    now = 1.002
    for _ in range(5):  # then 1,000 writes/s again
        for i in range(2):
            assert not c.hold("s", [b"p"], now + i * 0.001 + 0.0001)
        assert round(c.due - now, 6) == 0.002  # type: ignore[operator]
        now = c.due  # type: ignore[assignment]
        c.take(now)
    # two dense windows in a row do widen (a stream, not a catch-up)
    for _ in range(GROW_AT):
        assert not c.hold("s", [b"d"], now + 0.0001)
    c.take(c.due)  # type: ignore[arg-type]
    now = 1.014
    for _ in range(GROW_AT):
        assert not c.hold("s", [b"d"], now + 0.0001)
    c.take(c.due)  # type: ignore[arg-type]
    assert c.window == 0.004


def _stream(a: GossipCore, text: pycrdt.Text, n: int, start: float, step: float) -> list[bytes]:
    """n one-character writes to a's shard "s", each its own delta, ``step`` apart; the
    frames a sends, ticking it at every deadline on the way."""
    r = reps(a)
    t = start
    out: list[Any] = []
    for i in range(n):
        while (d := a.next_deadline()) is not None and d <= t:
            a.tick(d)
            out += a.data_to_send()
        before = updates.state_vector(r.doc("s"))
        text.insert(len(text), "abc"[i % 3])
        a.local_update("s", r.doc("s").get_update(before), t)
        out += a.data_to_send()
        t += step
    while (d := a.next_deadline()) is not None and d <= t + 1:
        a.tick(d)
        out += a.data_to_send()
        if a._p.pushes.coalescer.due is None:  # noqa: SLF001 (nothing held: done)
            break
    return out


def test_a_stream_of_local_writes_goes_as_one_merged_update_per_window() -> None:
    a, b = make("a", config=LAN), make("b", config=LAN)
    connect(a, b)
    settle({"a": a, "b": b}, 0.5)
    text = reps(a).doc("s").get("t", type=pycrdt.Text)
    sent = _stream(a, text, 400, 1.0, 0.0002)  # 5,000 writes/s for 80 ms
    pushes = [m for p, m in sent if isinstance(m, Push) and m.shard == "s"]
    assert all(len(m.updates) == 1 for m in pushes)  # merged: one update per Push
    assert 8 <= len(pushes) <= 21  # windows of 2, 2, 4, 8, then 16 ms: not one per write
    paced = _stream(a, text, 50, 3.0, 0.001)  # 1,000 writes/s: windows stay at 2 ms
    paced_pushes = [m for _, m in paced if isinstance(m, Push) and m.shard == "s"]
    assert 20 <= len(paced_pushes) <= 30  # about one Push per 2 ms
    pushes += paced_pushes
    for m in pushes:
        b.receive("a", rt(m), 4.0)
    assert str(reps(b).doc("s").get("t", type=pycrdt.Text)) == str(text)


def test_a_lone_write_goes_at_once_and_flush_local_sends_what_is_held() -> None:
    a, b = make("a", config=LAN), make("b", config=LAN)
    connect(a, b)
    settle({"a": a, "b": b}, 0.5)
    d1, d2 = put(a, "s", "k1", 1), put(a, "s", "k2", 2)
    a.local_update("s", d1, 1.0)
    assert len(a.data_to_send()) == 1  # at once
    a.local_update("s", d2, 1.0001)
    assert a.data_to_send() == [] and a.next_deadline() == 1.0 + W
    a.flush_local(1.0002)  # a driver closing: what is held goes now
    assert [m.updates for _, m in a.data_to_send()] == [(d2,)]  # type: ignore[attr-defined]
    assert a.next_deadline() != 1.0 + W
    # Deltas handed over together are merged in every config (one update).
    c, d = make("c"), make("d")
    connect(c, d)
    settle({"c": c, "d": d}, 0.25)
    e1, e2 = put(c, "s", "x", 1), put(c, "s", "y", 2)
    c.local_updates("s", [e1, e2], 5.1)
    c.tick(5.25)
    (push,) = [m for _, m in c.data_to_send() if isinstance(m, Push)]
    assert len(push.updates) == 1
    d.receive("c", rt(push), 5.3)
    assert content(d, "s") == {"x": 1.0, "y": 2.0}


def _simulate(seed: int) -> tuple[int, int, str, bool]:
    """3 agents on LAN settings in the simulator; a00 streams 300 one-character writes 0.5 ms
    apart. (Pushes a00 sent to a01, writes, fingerprint of every frame, converged)."""
    fingerprint = hashlib.sha256()
    sent: list[tuple[str, str, str]] = []

    def trace(conn: Any, src: str, msg: Message) -> None:
        fingerprint.update(f"{net.now!r} {src}".encode() + wire.encode(msg))
        sent.append((src, conn.other(src), type(msg).__name__))

    net = lan_text_stream(seed, [3.0 + i * 0.0005 for i in range(300)], trace)
    net.run_until(6.0)
    pushes = sum(1 for s, d, k in sent if (s, d, k) == ("a00", "a01", "Push"))
    texts = {str(n.replicas.doc("s").get("t", type=pycrdt.Text)) for n in net.nodes.values()}
    return pushes, 300, fingerprint.hexdigest(), len(texts) == 1 and net.converged()


def test_the_simulator_coalesces_a_stream_deterministically() -> None:
    pushes, writes, fp, converged = _simulate(7)
    assert converged
    assert pushes <= writes // 5  # one merged update per window, not one Push per write
    assert _simulate(7)[2] == fp  # the same frames, at the same virtual times


def test_hold_local_adds_to_an_open_window_only() -> None:
    a, b = make("a", config=LAN), make("b", config=LAN)
    connect(a, b)
    settle({"a": a, "b": b}, 0.5)
    d1, d2, d3, d4 = (put(a, "s", f"k{i}", i) for i in range(4))
    assert not a.hold_local("s", d1, 1.0)  # no window open: hand it over
    a.local_update("s", d1, 1.0)  # at once
    (first,) = [m for _, m in a.data_to_send() if isinstance(m, Push)]
    assert not a.hold_local("s", d2, 1.0001)  # still none open (the last write went at once)
    a.local_update("s", d2, 1.0001)  # opens the window
    due = a.next_deadline()
    assert a.hold_local("s", d3, 1.0002) and a.hold_local("s", d4, 1.0003)
    assert a.data_to_send() == [] and a.next_deadline() == due  # nothing for the driver
    assert not a.hold_local("t", d4, 1.0003)  # a shard not written here before
    a.tick(due)  # type: ignore[arg-type]
    (push,) = [m for _, m in a.data_to_send() if isinstance(m, Push)]
    assert len(push.updates) == 1
    b.receive("a", rt(first), 1.01)  # (b gates on causal readiness: k0 comes first)
    b.receive("a", rt(push), 1.01)
    assert content(b, "s") == {"k0": 0.0, "k1": 1.0, "k2": 2.0, "k3": 3.0}
