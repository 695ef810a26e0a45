"""Local writes reach the peers coalesced (issue 17's stream row): the deltas of one turn go to
the gossip core in one hand-over, which sends them as one update merged by pycrdt, and a stream
over many turns as one update per coalescing window (gossip/coalesce.py), over real websockets;
the peer ends with exactly the writer's text."""

from __future__ import annotations

import asyncio
from typing import Any

from polling import until

from crdtsync import Agent
from crdtsync.messages import Push

WS = "ws://127.0.0.1:0"


async def test_writes_of_one_turn_reach_the_core_as_one_merged_update(tmp_path) -> None:
    async with Agent("a", tmp_path / "a", listen=WS) as a:
        async with Agent("b", tmp_path / "b", peers=[a.address or ""]) as b:
            sa, sb = await a.shard("s"), await b.shard("s")
            await until(lambda: bool(a.core and a.core.connected()))
            await until(lambda: sa.digest() == sb.digest())  # the on-connect round is over
            core: Any = a.core
            handed: list[tuple[str, int]] = []
            pushed: list[int] = []  # updates per Push of "s" a sent
            take_updates, take_frames = core.local_updates, core.data_to_send

            def counting(shard: str, deltas: list[bytes], now: float) -> None:
                handed.append((shard, len(deltas)))
                take_updates(shard, deltas, now)

            def frames() -> list[tuple[str, Any]]:
                out = take_frames()
                pushed.extend(
                    len(m.updates) for _, m in out if isinstance(m, Push) and m.shard == "s"
                )
                return out

            core.local_updates, core.data_to_send = counting, frames
            text = sa.text("t")
            for i in range(300):  # each its own transaction, all in one loop turn
                with sa.doc.transaction():
                    text.insert(i, "xyz"[i % 3])
            expected = str(text)
            await until(lambda: str(sb.text("t")) == expected)
            assert handed == [("s", 300)]  # one hand-over
            assert pushed == [1]  # one Push of one merged update
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
            assert 1 < len(handed) <= 301  # a hand-over per turn
            assert set(pushed) == {1} and len(pushed) < 150  # coalesced by the core
            await until(lambda: sa.digest() == sb.digest())
