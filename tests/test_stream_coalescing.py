"""Local writes reach the core coalesced (issue 17's stream row): the deltas of one shard
waiting in the agent go to the gossip core as one update merged by pycrdt, over real
websockets, and the peer ends with exactly the writer's text."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from crdtsync import Agent

WS = "ws://127.0.0.1:0"


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until true (the bound only stops a hung test; nothing is timed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_writes_of_one_turn_reach_the_core_as_one_merged_update(tmp_path) -> None:
    async with Agent("a", tmp_path / "a", listen=WS) as a:
        async with Agent("b", tmp_path / "b", peers=[a.address or ""]) as b:
            sa, sb = await a.shard("s"), await b.shard("s")
            await until(lambda: bool(a.core and a.core.connected()))
            await until(lambda: sa.digest() == sb.digest())  # the on-connect round is over
            core: Any = a.core
            handed: list[tuple[str, bytes]] = []
            original = core.local_update

            def counting(shard: str, delta: bytes, now: float) -> None:
                handed.append((shard, delta))
                original(shard, delta, now)

            core.local_update = counting
            text = sa.text("t")
            for i in range(300):  # each its own transaction, all in one loop turn
                with sa.doc.transaction():
                    text.insert(i, "xyz"[i % 3])
            expected = str(text)
            await until(lambda: str(sb.text("t")) == expected)
            assert [shard for shard, _ in handed] == ["s"]  # one hand-over, one update
            # A stream over many turns arrives whole too (however it was windowed).
            for i in range(300):
                with sa.doc.transaction():
                    if i % 7 == 6:
                        del text[0:2]
                    else:
                        text.insert(len(text) // 2, "ab"[i % 2])
                await asyncio.sleep(0)
            expected = str(text)
            await until(lambda: str(sb.text("t")) == expected)
            assert 1 < len(handed) <= 301
            await until(lambda: sa.digest() == sb.digest())
