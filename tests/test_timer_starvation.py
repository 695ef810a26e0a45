"""A due timer fires even when the driver is kicked at every event-loop turn (issue 17's stream
burst, benchmarks/history/fanout-writer.md "h-stream, second pass").

The gossip core reports an overdue deadline as "now" (``GossipCore.next_deadline``), so its
value moves with every call into the core. An agent writing in a tight loop (each write its own
transaction, ``await asyncio.sleep(0)`` after each) kicks its transport at every turn when its
writes do not fit an open coalescing window as they are (e.g. while it owes acks). The drivers
re-armed their timer whenever the deadline moved: the due timer was cancelled at every turn just
before the loop would have run it, the window never closed, and nothing was pushed for as long
as the loop wrote (seconds to minutes at the followers). Nothing here measures time: the tests
count ticks and Pushes per loop turn or per write; the bounds only stop a hung test.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any

from crdtsync.transports.memory import MemoryReplicas
from crdtsync.transports.websocket import WebsocketTransport
from polling import until

from crdtsync import Agent
from crdtsync.gossip import GossipCore
from crdtsync.messages import Push
from crdtsync.transport import CoreTimer

WS = "ws://127.0.0.1:0"


class OverdueCore:
    """The part of a core a timer sees: one deadline, due from the start and reported as "now"
    (moving with every call, as ``GossipCore.next_deadline`` does) until a tick handles it."""

    def __init__(self) -> None:
        self.due = time.monotonic()
        self.ticks = 0

    def next_deadline(self) -> float | None:
        if self.due == math.inf:
            return None
        return max(self.due, time.monotonic())

    def tick(self, now: float) -> None:
        self.ticks += 1
        self.due = math.inf


async def kick_every_turn(kick: Callable[[], None], ticked: Callable[[], bool]) -> int:
    """Kick at every loop turn, as a tight writer does, until ``ticked()``: the turns taken.
    (The bound only stops a hung test: before the fix no tick ever came.)"""
    deadline = time.monotonic() + 30.0
    turns = 0
    while not ticked():
        kick()
        await asyncio.sleep(0)
        turns += 1
        assert time.monotonic() < deadline, f"no tick in {turns} loop turns"
    return turns


async def test_websocket_timer_due_fires_under_a_kick_every_turn(tmp_path) -> None:
    core = GossipCore("a", MemoryReplicas(random.Random(1)), rng=random.Random(1))
    stand_in = OverdueCore()
    core.next_deadline = stand_in.next_deadline  # type: ignore[method-assign]
    core.tick = stand_in.tick  # type: ignore[method-assign]
    transport = WebsocketTransport(core)
    await transport.start()
    try:
        await kick_every_turn(transport.kick, lambda: stand_in.ticks > 0)
        assert stand_in.ticks == 1
    finally:
        await transport.close()


async def test_core_timer_due_fires_under_an_arm_every_turn() -> None:
    stand_in = OverdueCore()
    timer = CoreTimer(stand_in, lambda: None)  # type: ignore[arg-type]
    try:
        await kick_every_turn(timer.arm, lambda: stand_in.ticks > 0)
        assert stand_in.ticks == 1
    finally:
        timer.close()


async def test_a_tight_writer_that_hands_over_every_write_still_pushes_while_writing(
    tmp_path,
) -> None:
    """A writer whose writes all take the hand-over path (as when it owes acks: hold_local
    declines) pushes its coalescing windows while it writes, not only once it stops."""
    async with Agent("a", tmp_path / "a", listen=WS) as a:
        async with Agent("b", tmp_path / "b", peers=[a.address or ""]) as b:
            sa, sb = await a.shard("s"), await b.shard("s")
            await until(lambda: bool(a.core and a.core.connected()))
            await until(lambda: sa.digest() == sb.digest())  # the on-connect round is over
            core: Any = a.core
            core.hold_local = lambda shard, delta, now: False  # every write handed over
            pushes = [0]
            take_frames = core.data_to_send

            def frames() -> list[tuple[str, Any]]:
                out = take_frames()
                pushes[0] += sum(1 for _, m in out if isinstance(m, Push) and m.shard == "s")
                return out

            core.data_to_send = frames
            text = sa.text("t")
            writes = 0
            # Until 3 Pushes went out while writing (at most one window of 16 ms each after
            # the first write), or 50,000 writes (far more than 3 windows of any machine:
            # each write is a pycrdt transaction and an event-loop turn).
            while pushes[0] < 4 and writes < 50_000:
                with sa.doc.transaction():
                    text.insert(writes, "xyz"[writes % 3])
                writes += 1
                await asyncio.sleep(0)
            assert pushes[0] >= 4, f"{pushes[0]} Pushes in {writes} writes"
            expected = str(text)
            await until(lambda: str(sb.text("t")) == expected)
