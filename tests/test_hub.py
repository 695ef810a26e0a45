"""crdtsync.testing.LocalHub: real agents meshed in one process, no sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdtsync import Agent, GossipConfig
from crdtsync.testing import LocalHub


async def _until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


async def test_three_agents_replicate_over_the_hub(tmp_path: Path) -> None:
    hub = LocalHub(latency=0.002)

    def agent(name: str, *peers: str) -> Agent:
        return Agent(
            name, tmp_path / name, listen=f"hub://{name}", peers=peers, transport=hub.transport
        )

    async with agent("a") as a, agent("b", "hub://a") as b, agent("c", "hub://a") as c:
        await _until(lambda: all(len(x.core.members()) == 2 for x in (a, b, c)))  # type: ignore[union-attr]
        shard = await a.shard("board")
        shard["task"] = {"title": "docs"}
        await shard.replicated(peers=2, timeout=10)
        for other in (b, c):
            await _until(lambda o=other: "board" in o.shard_names())
            assert (await other.shard("board")).snapshot() == {"task": {"title": "docs"}}
        assert await c.read("board") == {"task": {"title": "docs"}}
    assert hub.frames > 0


async def test_a_cut_link_heals(tmp_path: Path) -> None:
    hub = LocalHub()
    cfg = GossipConfig.lan(anti_entropy_interval=0.2, backoff_max=0.2)

    def agent(name: str, *peers: str) -> Agent:
        return Agent(
            name,
            tmp_path / name,
            listen=f"hub://{name}",
            peers=peers,
            gossip=cfg,
            transport=hub.transport,
        )

    async with agent("a") as a, agent("b", "hub://a") as b:
        await _until(lambda: a.core.connected() == ("b",))  # type: ignore[union-attr]
        hub.cut("a", "b")
        assert a.core.connected() == ()  # type: ignore[union-attr]
        (await b.shard("s"))["k"] = 1
        await _until(lambda: "s" in a.shard_names() and a.core.connected() == ("b",))  # type: ignore[union-attr]
        shard = await a.shard("s")
        await _until(lambda: shard.snapshot() == {"k": 1})
