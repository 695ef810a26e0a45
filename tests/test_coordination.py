"""Coordination primitives (issue 16): containers that merge by name, counters, ``+=``.

Property tests run over the deterministic simulator (crdtsync.testing.Network) with the very
view and counter classes a Shard hands out; agent-level tests use real agents on a LocalHub.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync import Agent
from crdtsync.containers import Counter, root_name
from crdtsync.errors import ClosedError, InvalidShardName, LostUpdate, UsageError
from crdtsync.testing import LocalHub, mesh, put, value
from crdtsync.views import ListView, MapView

# -- property: named containers created concurrently merge; counters sum -------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["map", "list", "counter"]),
        st.integers(0, 4),  # key index / list value
        st.integers(-3, 5),  # value / increment
    ),
    max_size=6,
)


def _apply(net, node: str, ops) -> None:  # type: ignore[no-untyped-def]
    def fn(d: pycrdt.Doc) -> None:
        for kind, k, v in ops:
            if kind == "map":
                MapView(d.get(root_name("map", "tasks"), type=pycrdt.Map))[f"{node}-{k}"] = v
            elif kind == "list":
                ListView(d.get(root_name("list", "log"), type=pycrdt.Array)).append(f"{node}:{k}")
            else:
                Counter(
                    d.get(root_name("counter", "n"), type=pycrdt.Map), f"{node}/{d.client_id}"
                ).increment(v)

    for op in ops:  # one transaction per op: many deltas, gossiped while partitioned
        net.write(node, "board", lambda d, op=op: _apply_one(d, node, op))


def _apply_one(d: pycrdt.Doc, node: str, op) -> None:  # type: ignore[no-untyped-def]
    kind, k, v = op
    if kind == "map":
        MapView(d.get(root_name("map", "tasks"), type=pycrdt.Map))[f"{node}-{k}"] = v
    elif kind == "list":
        ListView(d.get(root_name("list", "log"), type=pycrdt.Array)).append(f"{node}:{k}")
    else:
        Counter(
            d.get(root_name("counter", "n"), type=pycrdt.Map), f"{node}/{d.client_id}"
        ).increment(v)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    per_agent=st.lists(_ops, min_size=2, max_size=3),
    seed=st.integers(0, 1000),
    loss=st.sampled_from([0.0, 0.1]),
)
def test_named_containers_created_concurrently_merge(per_agent, seed, loss) -> None:  # type: ignore[no-untyped-def]
    n = len(per_agent)
    net = mesh(n, seed=seed, loss=loss)
    names = [f"n{i}" for i in range(n)]
    net.partition([[x] for x in names])  # nobody has met: every container is created concurrently
    expected_map: dict[str, int] = {}
    expected_log: list[str] = []
    expected_n = 0
    for node, ops in zip(names, per_agent, strict=False):
        for op in ops:
            net.write(node, "board", lambda d, node=node, op=op: _apply_one(d, node, op))
            kind, k, v = op
            if kind == "map":
                expected_map[f"{node}-{k}"] = v  # one writer per key: its last write
            elif kind == "list":
                expected_log.append(f"{node}:{k}")
            else:
                expected_n += v
    net.run_for(1.0)
    net.heal()
    net.run_until_converged(timeout=120)
    snaps = [value(net, x, "board") for x in names]
    assert all(s == snaps[0] for s in snaps)
    got = snaps[0]
    assert got.get("tasks", {}) == expected_map
    assert sorted(got.get("log", [])) == sorted(expected_log)
    slots = any(kind == "counter" and v != 0 for ops in per_agent for kind, _, v in ops)
    assert got.get("n", 0) == expected_n if slots else "n" not in got or got["n"] == 0


def test_plain_keys_created_concurrently_do_lose_entries() -> None:
    """The problem the named containers solve, kept visible: ``shard["tasks"] = {...}`` on two
    agents that have not met keeps one of the two maps."""
    net = mesh(2, seed=3)
    net.partition([["n0"], ["n1"]])
    put(net, "n0", "board", "tasks", pycrdt.Map({"a": "x"}))
    put(net, "n1", "board", "tasks", pycrdt.Map({"b": "y"}))
    net.heal()
    net.run_until_converged(timeout=60)
    assert value(net, "n0", "board")["tasks"] in ({"a": "x"}, {"b": "y"})


# -- agents ------------------------------------------------------------------------------------


def _agents(tmp_path: Path, hub: LocalHub, *names: str) -> list[Agent]:
    first = names[0]
    return [
        Agent(
            n,
            tmp_path / n,
            listen=f"hub://{n}",
            peers=() if n == first else (f"hub://{first}",),
            transport=hub.transport,
        )
        for n in names
    ]


async def _until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


async def test_counter_converges_to_the_sum_over_three_agents(tmp_path: Path) -> None:
    hub = LocalHub(latency=0.001)
    agents = _agents(tmp_path, hub, "a", "b", "c")
    for x in agents:
        await x.start()
    try:
        shards = [await x.shard("board") for x in agents]

        async def work(shard, k: int) -> None:  # type: ignore[no-untyped-def]
            c = shard.counter("n")
            for i in range(100):
                c += 1
                if i % 10 == 0:
                    c.decrement(2)
                    await asyncio.sleep(0)

        await asyncio.gather(*(work(s, k) for k, s in enumerate(shards)))
        await _until(lambda: all(s.counter("n").value == 3 * (100 - 20) for s in shards))
        assert all(s.snapshot()["n"] == 240 for s in shards)
        # named maps created on every agent before any sync all merge
        for x, s in zip("abc", shards, strict=False):
            s.map("tasks")[x] = {"by": x}
        await _until(lambda: all(len(s.map("tasks")) == 3 for s in shards))
        assert shards[0]["tasks"] == {"a": {"by": "a"}, "b": {"by": "b"}, "c": {"by": "c"}}
    finally:
        for x in agents:
            await x.close()


async def test_plus_equals_number_is_refused_and_text_appends(tmp_path: Path) -> None:
    async with Agent("solo", tmp_path / "solo") as agent:
        shard = await agent.shard("s")
        shard["n"] = 1
        with pytest.raises(LostUpdate, match="counter"):
            shard["n"] += 1
        assert shard["n"] == 1
        shard["n"] = int(shard["n"]) + 1  # explicit last-writer-wins is allowed
        assert shard["n"] == 2 and type(shard.snapshot()["n"]) is int
        shard["stats"] = {"x": 1.5}
        with pytest.raises(LostUpdate):
            shard["stats"]["x"] += 1

        # Text: += appends, once, with no error
        shard["answer"] = pycrdt.Text()
        for token in ["Hel", "lo", "!"]:
            shard["answer"] += token
        assert str(shard["answer"]) == "Hello!"
        t = shard.text("stream")
        t += "ab"
        t += "c"
        assert shard.snapshot()["stream"] == "abc"
        # list += extends once
        shard["log"] = ["a"]
        shard["log"] += ["b", "c"]
        assert shard["log"] == ["a", "b", "c"]
        # The same through the key of a named Text or list (the README's streaming form):
        # appended once, no error (this raised UnsupportedValue after appending).
        named = shard.text("named")
        named += "Hel"
        for token in ["lo", "!"]:
            shard["named"] += token
        assert shard.snapshot()["named"] == "Hello!"
        shard.list("steps").append(1)
        shard["steps"] += [2, 3]
        assert shard.snapshot()["steps"] == [1, 2, 3]
        # a counter used through shard[key] += n counts
        shard.counter("hits").increment(2)
        shard["hits"] += 3
        assert shard.counter("hits").value == 5 and shard.snapshot()["hits"] == 5


async def test_setdefault_returns_the_live_view(tmp_path: Path) -> None:
    async with Agent("solo", tmp_path / "solo") as agent:
        shard = await agent.shard("s")
        shard.setdefault("log", []).append("x")
        shard.setdefault("log", []).append("y")
        shard.setdefault("cfg", {})["k"] = 1
        assert shard.snapshot() == {"log": ["x", "y"], "cfg": {"k": 1}}


async def test_write_after_close_raises_plain_closed_error_and_changes_nothing(
    tmp_path: Path,
) -> None:
    agent = Agent("solo", tmp_path / "solo")
    await agent.start()
    shard = await agent.shard("s")
    shard["tasks"] = {"t1": 1}
    tasks = shard["tasks"]
    log = shard.setdefault("log", [])
    await agent.close()
    for write in (
        lambda: shard.__setitem__("k", 1),
        lambda: tasks.__setitem__("t2", 2),
        lambda: log.append("x"),
        lambda: shard.update(k=1),
        lambda: shard.__delitem__("tasks"),
        lambda: shard.counter("n").increment(),
    ):
        with pytest.raises(ClosedError):
            write()
    assert shard.snapshot() == {"tasks": {"t1": 1}, "log": []}


def test_bad_agent_name_says_agent() -> None:
    with pytest.raises(InvalidShardName, match="invalid agent name"):
        Agent("bad name")


async def test_subscription_survives_timeouts_and_on_change(tmp_path: Path) -> None:
    async with Agent("solo", tmp_path / "solo") as agent:
        shard = await agent.shard("s")
        seen = []
        stop = shard.on_change(seen.append)
        with shard.subscribe() as sub:
            assert await sub.get(timeout=0.01) is None
            assert await sub.get(timeout=0.01) is None
            shard["a"] = 1
            change = await sub.get(timeout=1)
            assert change is not None and change.paths == (("a",),)
            shard["b"] = 2
            assert (await sub.get(timeout=1)).paths == (("b",),)  # type: ignore[union-attr]
        stop()
        shard["c"] = 3
        assert [c.paths for c in seen] == [(("a",),), (("b",),)]
        with pytest.raises(UsageError):
            shard.counter("n").increment(1.5)  # type: ignore[arg-type]


async def test_job_queue_three_consumers_take_each_job_once(tmp_path: Path) -> None:
    from crdtsync.claims import JobQueue

    hub = LocalHub(latency=0.002)
    agents = _agents(tmp_path, hub, "p", "w1", "w2", "w3")
    for x in agents:
        await x.start()
    try:
        await _until(lambda: all(len(x.peers) == 3 for x in agents))
        shards = [await x.shard("work") for x in agents]
        planner = JobQueue(agents[0], shards[0], members=4, timeout=5)
        for i in range(12):
            planner.put(f"job{i}", {"n": i})
        await shards[0].replicated(peers=3, timeout=10)
        taken: dict[str, list[str]] = {}

        async def worker(k: int) -> None:
            q = JobQueue(agents[k], shards[k], members=4, timeout=5)
            while q.pending():
                got = await q.take(wait=0.5)
                if got is None:
                    continue
                job, payload = got
                taken.setdefault(job, []).append(agents[k].name)
                await q.complete(job, payload["n"] * 2)

        await asyncio.wait_for(asyncio.gather(*(worker(k) for k in (1, 2, 3))), 60)
        assert sorted(taken) == sorted(f"job{i}" for i in range(12))
        assert all(len(v) == 1 for v in taken.values()), taken
        await _until(lambda: all(len(s.map("done")) == 12 for s in shards))
        done = shards[0].snapshot()["done"]
        assert {j: d["by"] for j, d in done.items()} == {j: v[0] for j, v in taken.items()}
    finally:
        for x in agents:
            await x.close()
