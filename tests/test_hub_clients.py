"""Clients of one listening agent in a full mesh (h-hubfwd; crdtsync/gossip/_context.py).

Agents without a listen address hold no link with each other. A client's write reaches the
other clients of its hub (the first listening agent it links with, by name) in one extra hop,
and the writer's ``replicated()`` counts them (their acks are relayed back by the hub). The
simulator runs give the "before" too: the same seed with the rule switched off (every link
taken as listening, no hub) leaves the other clients without the write and the writer
without their acks, until anti-entropy (set far away here) would bring the data only.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pycrdt
import pytest
from crdtsync.transports.memory import Network

from crdtsync import Agent, updates
from crdtsync.gossip import GossipConfig, _connections, _context, links

#: lan() (the config whose docstring gives "what a hub gives its clients: one hop"), with
#: anti-entropy far away: only pushes can bring a write within the tests' bounds.
CFG = dataclasses.replace(GossipConfig.lan(), anti_entropy_interval=60.0)


@contextmanager
def rule_off() -> Iterator[None]:
    """The protocol as it was before: no client picks a hub, every link counts as listening."""
    mp = pytest.MonkeyPatch()

    def accept(*args: object, **kw: object) -> links.Link:
        link = links.accept(*args, **kw)  # type: ignore[arg-type]
        link.listens = True
        return link

    mp.setattr(_connections, "accept", accept)
    mp.setattr(_context.Context, "client_hub", lambda self: None)
    try:
        yield
    finally:
        mp.undo()


def put(net: Network, node: str, key: str, value: object) -> None:
    net.write(node, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(key, value))


def keys(net: Network, node: str) -> set[str]:
    doc = net.nodes[node].replicas.docs.get("s")
    return set() if doc is None else set(doc.get("m", type=pycrdt.Map).keys())


def hub_and_clients(seed: int) -> Network:
    """One listening agent ``h`` and three clients ``c1``-``c3`` (no address) dialling it."""
    net = Network(seed, latency=0.005, config=CFG, trace=True)
    net.add_node("h")
    for c in ("c1", "c2", "c3"):
        net.add_node(c, seeds=[net.address("h")], listen=False)
    net.run_for(3.0)
    put(net, "h", "start", 0)  # every agent holds the shard
    net.run_for(1.0)
    assert all(keys(net, n) == {"start"} for n in net.nodes)
    return net


def write_and_wait(net: Network) -> tuple[float | None, float | None]:
    """c1 writes; virtual seconds until c2 and c3 hold it, and until c1's replicated() counts
    3 peers (None: not within 2 s)."""
    put(net, "c1", "k", 1)
    doc = net.nodes["c1"].replicas.docs["s"]
    target = (updates.state_vector(doc), updates.delete_set(doc))
    core = net.nodes["c1"].core
    assert core is not None
    start, seen, acked = net.now, None, None
    while net.now - start < 2.0 and (seen is None or acked is None):
        net.run_for(0.001)
        if seen is None and all("k" in keys(net, c) for c in ("c2", "c3")):
            seen = net.now - start
        if acked is None and len(core.replicated("s", *target)) >= 3:
            acked = net.now - start
    return seen, acked


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_clients_write_reaches_the_other_clients_of_its_hub(seed: int) -> None:
    with rule_off():
        before = write_and_wait(hub_and_clients(seed))
    assert before == (None, None), f"without the rule: {before}"  # the test can fail
    seen, acked = write_and_wait(net := hub_and_clients(seed))
    assert seen is not None and seen < 0.05, f"seed {seed}: seen after {seen}"  # 2 hops of 5 ms
    assert acked is not None and acked < 1.0, f"seed {seed}: replicated(peers=3) after {acked}"
    core = net.nodes["c1"].core
    assert core is not None
    doc = net.nodes["c1"].replicas.docs["s"]
    got = core.replicated("s", updates.state_vector(doc), updates.delete_set(doc))
    assert got == ("c2", "c3", "h")


def test_a_reader_of_a_client_counts_the_other_clients() -> None:
    # c2 waits (replicated, WANT_ACK) for c1's write: its hub asks its other clients.
    net = hub_and_clients(4)
    put(net, "c1", "k", 1)
    net.run_for(0.5)
    doc = net.nodes["c2"].replicas.docs["s"]
    target = (updates.state_vector(doc), updates.delete_set(doc))
    core = net.nodes["c2"].core
    assert core is not None
    start = net.now
    while set(core.replicated("s", *target)) < {"c1", "c3", "h"}:
        net.call("c2", lambda core: core.want_acks("s", net.now))
        assert net.now - start < 2.0, core.replicated("s", *target)
        net.run_for(0.05)


def test_one_hub_forwards_when_clients_link_several_listening_agents() -> None:
    # Two listening agents, two clients linked to both: c1's write reaches c2 once (from
    # h1, the first by name), not once per listening agent.
    net = Network(5, latency=0.005, config=CFG, trace=True)
    net.add_node("h1")
    net.add_node("h2", seeds=[net.address("h1")])
    for c in ("c1", "c2"):
        net.add_node(c, seeds=[net.address("h2")], listen=False)
    net.run_for(4.0)
    assert set(net.nodes["c1"].core.connected()) == {"h1", "h2"}  # type: ignore[union-attr]
    put(net, "h1", "start", 0)
    net.run_for(1.0)
    assert net.trace is not None
    mark = len(net.trace)
    put(net, "c1", "k", 1)
    net.run_for(0.2)
    assert "k" in keys(net, "c2")
    pushes = Counter((s, d) for _, s, d, kind, _ in net.trace[mark:] if kind == "Push")
    assert pushes[("h1", "c2")] == 1 and pushes[("h2", "c2")] == 0, pushes


def test_a_mesh_of_listening_agents_sends_the_same_frames() -> None:
    # Every agent listens: the rule never applies, the trace is the same frame for frame.
    def trace() -> list[tuple[float, str, str, str, int]]:
        net = Network(6, latency=0.005, config=CFG, trace=True)
        net.add_node("a0")
        for i in range(1, 5):
            net.add_node(f"a{i}", seeds=[net.address("a0")])
        net.run_for(3.0)
        for i in range(5):
            put(net, f"a{i}", f"k{i}", i)
            net.run_for(0.05)
        net.run_for(2.0)
        assert net.trace is not None
        return net.trace

    with rule_off():
        before = trace()
    assert trace() == before


async def test_two_agents_without_a_listen_port_count_each_other(tmp_path: Path) -> None:
    # Real websockets on 127.0.0.1: one listening agent, two that only dial it.
    async with Agent("hub", data_dir=tmp_path / "hub", listen="ws://127.0.0.1:0") as hub:
        assert hub.address is not None
        async with (
            Agent("c1", data_dir=tmp_path / "c1", peers=[hub.address]) as c1,
            Agent("c2", data_dir=tmp_path / "c2", peers=[hub.address]) as c2,
        ):
            board = await c1.shard("board")
            other = await c2.shard("board")
            board["task"] = "t1"
            # The hub and c2 (no other agent exists): raises ReplicationTimeout naming c2
            # without the rule (h-walk measured it with a 20 s timeout).
            await board.replicated(peers=2, timeout=5.0)
            for _ in range(100):  # c2 acked it on disk: it is there (a bound, not a timing)
                if other.snapshot() == {"task": "t1"}:
                    break
                await asyncio.sleep(0.01)
            assert other.snapshot() == {"task": "t1"}
