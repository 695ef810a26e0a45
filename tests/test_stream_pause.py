"""A coalescing window ends early when the writer's stream pauses (issue 17/18, h-send).

The last window of a burst waited for its end (up to 16 ms) after the writer's last write;
a window that already holds a dense window's worth of writes now ends once the writer's
stream pauses (gossip/coalesce.py, ``Coalescer.pause_at``: a deadline of the core, 0.5 ms
after the last local write, which the transport's timer serves). A window holding fewer writes still
waits for its end, so a sparse stream is not pushed write by write. No timing is asserted: the
windows here are a whole second long, and what ended each is recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

from polling import until

from crdtsync import Agent
from crdtsync.gossip import GossipConfig
from crdtsync.gossip.coalesce import GROW_AT, Coalescer
from crdtsync.messages import Push

WS = "ws://127.0.0.1:0"


def test_paused_only_with_a_dense_window_held() -> None:
    c = Coalescer(0.002)
    assert not c.paused()  # nothing held
    assert c.hold("s", [b"a"], 0.0)  # a quiet window: at once
    for i in range(GROW_AT - 1):
        assert not c.hold("s", [b"b"], 0.0001 * (i + 1))
        assert not c.paused()  # fewer than GROW_AT per push_interval: waits for its end
    assert not c.hold("t", [b"c"], 0.0005)  # writes of every shard count
    assert c.paused()
    held = c.take(0.0006)
    assert sum(len(d) for d in held.values()) == GROW_AT
    assert not c.paused()


def test_a_widened_window_ends_at_a_pause_whatever_it_holds() -> None:
    c = Coalescer(0.002)
    c._busy = 2  # a window of 8 ms: the stream was dense for two windows in a row
    c._last = 0.0
    assert not c.paused()  # nothing held
    c.hold("s", [b"x"], 0.001)
    assert c.due is not None and c.paused()  # the end of a burst: one write is enough


def _record_ends(core: Any) -> list[bool]:
    """For each coalescing window of ``core`` that ended, whether it ended before its due
    time (True: the writer's pause ended it, the core's deadline; False: its end)."""
    ended: list[bool] = []
    coalescer = core._p.pushes.coalescer  # noqa: SLF001
    real = coalescer.take

    def recorded(now: float) -> dict[str, list[bytes]]:
        ended.append(coalescer.due is not None and now < coalescer.due)
        return real(now)

    coalescer.take = recorded
    return ended


async def _pair(tmp_path: Any, window: float) -> tuple[Agent, Agent]:
    cfg = GossipConfig.lan(push_interval=window)
    a = Agent("a", tmp_path / "a", listen=WS, gossip=cfg)
    await a.start()
    b = Agent("b", tmp_path / "b", peers=[a.address or ""], gossip=cfg)
    await b.start()
    return a, b


async def test_a_burst_ends_its_window_when_it_stops_writing(tmp_path) -> None:
    a, b = await _pair(tmp_path, 1.0)  # windows of 1 s: only a pause ends one in this test
    try:
        sa, sb = await a.shard("s"), await b.shard("s")
        await until(lambda: bool(a.core and a.core.connected()))
        await until(lambda: sa.digest() == sb.digest())
        await asyncio.sleep(1.1)  # the on-connect round's window is over
        core: Any = a.core
        pushed: list[int] = []
        take_frames = core.data_to_send

        def frames() -> list[tuple[str, Any]]:
            out = take_frames()
            pushed.extend(len(m.updates) for _, m in out if isinstance(m, Push) and m.shard == "s")
            return out

        core.data_to_send = frames
        ended = _record_ends(core)
        m = sa.map("m")
        m["k0"] = 0  # after a quiet window: goes at once
        await asyncio.sleep(0)
        assert len(pushed) == 1
        for i in range(1, 2 * GROW_AT + 1):  # a burst, one write per loop turn
            m[f"k{i}"] = i
            await asyncio.sleep(0)
            assert core.holding_local  # held in the open (1 s) window while it writes
        assert len(pushed) == 1
        # The writer stopped: the pause (the core's deadline, 0.5 ms after its last write)
        # ends the 1 s window.
        await until(lambda: not core.holding_local)
        assert ended == [True]  # by the pause, not at the window's end
        assert len(pushed) == 2  # the burst's writes left as one merged update
        await until(lambda: sb.map("m").get(f"k{2 * GROW_AT}") == 2 * GROW_AT)
    finally:
        await b.close()
        await a.close()


async def test_a_sparse_stream_still_waits_for_the_window(tmp_path) -> None:
    a, b = await _pair(tmp_path, 1.0)
    try:
        sa, sb = await a.shard("s"), await b.shard("s")
        await until(lambda: bool(a.core and a.core.connected()))
        await until(lambda: sa.digest() == sb.digest())
        await asyncio.sleep(1.1)
        core: Any = a.core
        ended = _record_ends(core)
        m = sa.map("m")
        m["k0"] = 0  # at once
        await asyncio.sleep(0)
        for i in range(1, GROW_AT):  # fewer than a dense window's worth, pauses between
            m[f"k{i}"] = i
            await asyncio.sleep(0.005)  # a pause after each write
            assert core.holding_local  # not ended by it: waits for the window's end
        await until(lambda: not core.holding_local)  # its end (1 s) sends it
        assert ended == [False]
        await until(lambda: sb.map("m").get(f"k{GROW_AT - 1}") == GROW_AT - 1)
    finally:
        await b.close()
        await a.close()
