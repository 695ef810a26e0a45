"""Partial replication over real websockets and LMDB: five agents in this process on
127.0.0.1 (port 0) with R=2. Shards live on their placement holders (and on agents that open
them), reads from every agent agree, and the read API's errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdtsync import Agent, ReplicationTimeout, ShardNotFound
from crdtsync.errors import UsageError
from crdtsync.gossip import GossipConfig
from crdtsync.placement import holders

CFG = GossipConfig(
    push_interval=0.02,
    backoff_base=0.05,
    backoff_max=0.5,
    dial_grace=0.2,
    anti_entropy_interval=1.0,
)
R = 2
NAMES = [f"w{i}" for i in range(5)]


async def _until(cond: object, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[dict[str, Agent]]:
    agents: dict[str, Agent] = {}
    try:
        first = Agent(
            NAMES[0],
            tmp_path / NAMES[0],
            listen="ws://127.0.0.1:0",
            replication_factor=R,
            gossip=CFG,
            seed=0,
        )
        await first.start()
        agents[first.name] = first
        for i, name in enumerate(NAMES[1:], 1):
            a = Agent(
                name,
                tmp_path / name,
                listen="ws://127.0.0.1:0",
                peers=[first.address or ""],
                replication_factor=R,
                gossip=CFG,
                seed=i,
            )
            await a.start()
            agents[name] = a
        await _until(lambda: all(len(a.core.members()) == len(NAMES) - 1 for a in agents.values()))  # type: ignore[union-attr]
        yield agents
    finally:
        for a in agents.values():
            await a.close()


async def test_five_agents_r2_reads_from_every_agent_agree(mesh: dict[str, Agent]) -> None:
    shards = [f"board/{i}" for i in range(8)]
    for i, s in enumerate(shards):
        writer = mesh[holders(s, NAMES, R)[0]]  # a placement holder writes
        shard = await writer.shard(s)
        shard["task"] = f"t{i}"
        shard["n"] = i
        await shard.replicated(peers=R - 1, timeout=5)
    # placement: each shard on exactly its R holders (no writer here is a non-holder)
    for s in shards:
        await _until(
            lambda s=s: (
                {n for n, a in mesh.items() if s in a.shard_names()} == set(holders(s, NAMES, R))
            )
        )
    for i, s in enumerate(shards):
        values = [await a.read(s, timeout=3) for a in mesh.values()]
        assert all(v == {"task": f"t{i}", "n": i} for v in values), values
        majority = [await a.read(s, quorum="majority", timeout=3) for a in mesh.values()]
        assert majority == values
    # a scan by prefix from every agent gives the same view of all shards
    views = [await a.read_many(prefix="board/", timeout=3) for a in mesh.values()]
    assert all(v == views[0] for v in views) and sorted(views[0]) == shards
    # non-holders never stored a shard they do not hold
    for name, a in mesh.items():
        assert {s for s in a.shard_names() if s.startswith("board/")} == {
            s for s in shards if name in holders(s, NAMES, R)
        }


async def test_writes_of_a_subscriber_reach_the_holders_and_other_subscribers(
    mesh: dict[str, Agent],
) -> None:
    s = "notes"
    placed = holders(s, NAMES, R)
    subs = [n for n in NAMES if n not in placed][:2]
    a = await mesh[subs[0]].shard(s)  # two agents open it without being placed
    b = await mesh[subs[1]].shard(s)
    a["from_a"] = 1
    await a.replicated(peers=R, timeout=5)  # both placement holders have it on disk
    await _until(lambda: b.snapshot().get("from_a") == 1)  # relayed to the other subscriber
    b["from_b"] = 2
    await _until(lambda: a.snapshot().get("from_b") == 2)
    reader = next(n for n in NAMES if n not in placed and n not in subs)
    assert await mesh[reader].read(s, quorum="all", timeout=3) == {"from_a": 1, "from_b": 2}


async def test_read_errors(mesh: dict[str, Agent]) -> None:
    a = mesh[NAMES[0]]
    with pytest.raises(ShardNotFound):
        await a.read("nobody-has-this", timeout=2)
    with pytest.raises(UsageError):
        await a.read("x", quorum="most")
    with pytest.raises(UsageError):
        await a.read("x", quorum=0)
    s = "lonely"
    placed = holders(s, NAMES, R)
    shard = await mesh[placed[0]].shard(s)
    shard["k"] = "v"
    await shard.replicated(peers=1, timeout=5)
    other = mesh[placed[1]]
    reader = mesh[next(n for n in NAMES if n not in placed)]
    await other.close()  # one holder leaves: the survivor hands the shard to the next agent
    with pytest.raises(ReplicationTimeout):  # more answers than there are holders
        await reader.read(s, quorum=R + 1, timeout=0.5)
    assert await reader.read(s, timeout=2) == {"k": "v"}  # one is enough by default
    survivors = [n for n in NAMES if n != placed[1]]
    new = holders(s, survivors, R)
    assert placed[1] not in new and placed[0] in new
    await _until(lambda: s in mesh[new[0] if new[0] != placed[0] else new[1]].shard_names())
    for _ in range(50):  # and then every holder answers
        try:
            assert await reader.read(s, quorum="all", timeout=0.5) == {"k": "v"}
            break
        except ReplicationTimeout:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the shard was not re-replicated")


async def test_a_burst_of_concurrent_reads_sends_one_request(mesh: dict[str, Agent]) -> None:
    s = "hot"
    placed = holders(s, NAMES, R)
    shard = await mesh[placed[0]].shard(s)
    shard["k"] = 1
    await shard.replicated(peers=1, timeout=5)
    reader = mesh[next(n for n in NAMES if n not in placed)]
    asked = reader.core.sharding.queries._next_id  # type: ignore[union-attr]
    values = await asyncio.gather(*(reader.read(s) for _ in range(20)))
    assert all(v == {"k": 1} for v in values)
    assert reader.core.sharding.queries._next_id - asked == 1  # type: ignore[union-attr]


async def test_agent_without_peers_reads_locally_or_not_at_all(tmp_path: Path) -> None:
    async with Agent("solo", tmp_path / "solo") as a:
        (await a.shard("mine"))["k"] = 1
        assert await a.read("mine") == {"k": 1}
        assert await a.read_many(prefix="m") == {"mine": {"k": 1}}
        with pytest.raises(ShardNotFound):
            await a.read("theirs")


async def test_opening_a_shard_held_elsewhere_brings_its_state_at_once(
    mesh: dict[str, Agent],
) -> None:
    s = "existing"
    placed = holders(s, NAMES, R)
    shard = await mesh[placed[0]].shard(s)
    shard["k"] = "v"
    await shard.replicated(peers=1, timeout=5)
    other = mesh[next(n for n in NAMES if n not in placed)]
    start = time.monotonic()
    mine = await other.shard(s)  # a subscription: synced now, not at the next anti-entropy round
    await _until(lambda: mine.snapshot() == {"k": "v"}, timeout=CFG.anti_entropy_interval / 2)
    assert time.monotonic() - start < CFG.anti_entropy_interval / 2
    shard["k2"] = "v2"  # and kept up to date by pushes
    await _until(lambda: mine.snapshot().get("k2") == "v2", timeout=2)


async def test_inspect_reports_holders_and_sizes_without_disturbing_placement(
    mesh: dict[str, Agent],
) -> None:
    from crdtsync.cli.meshview import inspect_mesh

    shards = [f"inv/{i}" for i in range(4)]
    for s in shards:
        shard = await mesh[holders(s, NAMES, R)[0]].shard(s)
        shard["k"] = s
        await shard.replicated(peers=1, timeout=5)
    view = await inspect_mesh(
        mesh[NAMES[2]].address or "", prefix="inv/", replication_factor=R, settle=0.3, timeout=5
    )
    assert set(view.members) >= set(NAMES) and not view.missing
    for s in shards:
        assert set(view.shards[s]) == set(holders(s, NAMES, R)) == set(view.expected[s])
        assert all(size > 0 for size in view.shards[s].values())
    counts = view.agents()
    assert sum(n for n, _ in counts.values()) == len(shards) * R
    for a in mesh.values():  # the observer (it does not listen) was given nothing to hold
        assert not any(
            s.startswith("inv/") and a.name not in holders(s, NAMES, R) for s in a.shard_names()
        )
    assert view.to_json()["shards"]["inv/0"]["expected"] == list(holders("inv/0", NAMES, R))  # type: ignore[index]
