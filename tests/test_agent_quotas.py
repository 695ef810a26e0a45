"""Agent(quotas=...): the cross-connection quotas of issue #11 set from the public API, checked
over real websockets on 127.0.0.1 with real LMDB stores."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdtsync import Agent
from crdtsync.gossip import GossipConfig, QuotaSet
from crdtsync.quotas import ShardQuota


async def _until(cond: object, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_shard_quota_set_on_the_agent_refuses_a_peers_new_shards(tmp_path: Path) -> None:
    # Two new shards a peer may make here, then one a thousand seconds: its pushes of the
    # other shards are refused and counted (anti-entropy would fetch them later, as asked-for
    # diffs that no quota charges; the long interval keeps it from doing so in this test).
    quotas = QuotaSet(shards=ShardQuota(per_peer_burst=2, per_peer_rate=0.001))
    slow_rounds = GossipConfig.lan(anti_entropy_interval=1000.0)
    async with Agent(
        "a",
        data_dir=tmp_path / "a",
        listen="ws://127.0.0.1:0",
        quotas=quotas,
        gossip=slow_rounds,
    ) as a:
        assert a.address is not None
        async with Agent("b", data_dir=tmp_path / "b", peers=[a.address], gossip=slow_rounds) as b:
            await _until(lambda: any(p.name == "a" and p.state == "connected" for p in b.peers))
            for i in range(5):
                shard = await b.shard(f"s{i}")
                shard["k"] = i
            await _until(lambda: a.counters.get("quota.shards-per-peer", 0) >= 1)
            await asyncio.sleep(0.3)  # what else was going to arrive has arrived
            made = [n for n in a.shard_names() if n.startswith("s")]
            assert len(made) == 2, made  # the quota's burst, no more
            assert a.counters["quota.shards-per-peer"] == 3


async def test_default_quotas_let_the_same_shards_through(tmp_path: Path) -> None:
    # The same workload without quotas= (the defaults: a burst of 64): all five arrive.
    async with Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0") as a:
        assert a.address is not None
        async with Agent("b", data_dir=tmp_path / "b", peers=[a.address]) as b:
            await _until(lambda: any(p.name == "a" and p.state == "connected" for p in b.peers))
            for i in range(5):
                shard = await b.shard(f"s{i}")
                shard["k"] = i
            await _until(lambda: len([n for n in a.shard_names() if n.startswith("s")]) == 5)
            assert a.counters.get("quota.shards-per-peer", 0) == 0
