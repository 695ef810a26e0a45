"""Claim leases (issue #16): a claim whose holder the membership declared dead is ignored, so
the job is taken again; while the holder lives, its confirmed claim keeps every other agent
off the job."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdtsync import Agent, GossipConfig
from crdtsync.claims import Claims
from crdtsync.testing import LocalHub

# Agents declare a peer without a connection dead after half a second (default: 5 s).
FAST = GossipConfig(suspect_timeout=0.5)


async def _until(cond, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_a_dead_holders_claim_expires_and_the_job_is_taken_again(tmp_path: Path) -> None:
    hub = LocalHub(latency=0.001)
    names = ("p", "w1", "w2")
    agents = {
        n: Agent(
            n,
            tmp_path / n,
            listen=f"hub://{n}",
            peers=() if n == "p" else ("hub://p",),
            transport=hub.transport,
            gossip=FAST,
        )
        for n in names
    }
    for x in agents.values():
        await x.start()
    try:
        await _until(lambda: all(len(x.peers) == 2 for x in agents.values()))
        shards = {n: await x.shard("work") for n, x in agents.items()}
        claims = {n: Claims(agents[n], shards[n], members=3, timeout=5) for n in ("w1", "w2")}
        first = await claims["w1"].claim("job")
        assert first.won, first
        await _until(lambda: claims["w2"].holder("job") == {"w1"})
        second = await claims["w2"].claim("job")
        assert not second.won and "w1" in second.reason  # a live holder keeps the job
        await agents["w1"].close()  # dies holding the claim
        await _until(lambda: any(p.name == "w1" and p.state == "dead" for p in agents["w2"].peers))
        third = await claims["w2"].claim("job")  # p and w2 are a quorum of 3
        assert third.won, third
        await claims["w2"].done("job", 42)
        await _until(lambda: "job" in shards["p"].map("done"))
        assert shards["p"].snapshot()["done"]["job"]["by"] == "w2"
    finally:
        for x in agents.values():
            await x.close()
