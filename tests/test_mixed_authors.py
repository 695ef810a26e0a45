"""A change that came in a batch of several writers names its writer (issue 17, h-mixauth).

A rotating relay's broadcast carries the batches of every writer of its window (and, under
loss, its repeats of others'); a tree's or a hub's batch, the deltas of several writers. The
Push names each update's writer (``Push.authors``), but a receiver applied the batch as ONE
pycrdt transaction, whose change record (``Shard.on_change``, the HTTP events) then said
``author=None``. Now, while somebody listens, each run of one writer's updates is its own
transaction (``Shard.apply_remote_by_writer``), so each record names its writer.

Both tests run real :class:`~crdtsync.shard.Shard` objects: the seeded simulator with the
LMDB replica set of ``simharness`` (virtual time), and real agents over websockets. Nothing
is timed: what is checked is the author of each remote change against the agent that wrote
the keys it changed (each key is written by one agent only).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crdtsync.transports.memory import Network
from simharness import LmdbReplicas

from crdtsync import Agent, Change, GossipConfig
from crdtsync.gossip import RELAY
from crdtsync.messages import Message, Push

WS = "ws://127.0.0.1:0"


#: What a listener saw: each change, and whether it came from ``ReplicaSet.apply`` with no
#: writer (a Diff of anti-entropy, or an update sent with no name: documented as None).
Seen = dict[str, list[tuple[Change, bool]]]


def _check(seen: Seen, writer_of: dict[str, str]) -> tuple[int, set[object], set[object]]:
    """Every remote change that wrote keys names the one agent that wrote them, unless it
    came with no writer's name at all. Returns (the changes checked, the (receiver, key)
    pairs that came in a change naming their writer, those that came with none)."""
    checked, named, unnamed = 0, set(), set()
    for receiver, changes in seen.items():
        for change, no_writer in changes:
            keys = {p[0] for p in change.paths if p and p[0] in writer_of}
            if change.local or not keys:
                continue  # (a path-less change is the shard's value-format marker)
            checked += 1
            writers = {writer_of[str(k)] for k in keys}
            if change.author is None and no_writer:
                unnamed.update((receiver, k) for k in keys)
                continue
            assert change.author is not None, (receiver, change, writers)
            assert writers == {change.author}, (receiver, change, writers)
            named.update((receiver, k) for k in keys)
    return checked, named, unnamed


class Tracked(LmdbReplicas):
    """Notes whether the update being applied came with no writer (``apply(author=None)``)."""

    no_writer = False

    def apply(self, *args: Any, **kw: Any) -> Any:
        self.no_writer = kw.get("author") is None
        try:
            return super().apply(*args, **kw)
        finally:
            self.no_writer = False


class Mixing(Network):
    """Counts the Pushes sent that name several writers (what this test is about)."""

    mixed = 0

    def _transmit(self, conn, src: str, msg: Message) -> None:  # type: ignore[no-untyped-def]
        if isinstance(msg, Push) and len({a for a in msg.authors if a is not None}) > 1:
            self.mixed += 1
        super()._transmit(conn, src, msg)


@pytest.mark.parametrize("seed", [1, 2])
def test_simulated_relay_broadcast_names_each_writer(tmp_path: Path, seed: int) -> None:
    config = GossipConfig()  # WAN defaults: 10 agents are a rotating relay
    net = Mixing(seed, latency=0.05, config=config)
    names = [f"n{i}" for i in range(10)]
    rng = random.Random(seed)
    for i, name in enumerate(names):
        replicas = Tracked(tmp_path / name, random.Random(f"{seed}/{name}"))
        seeds = [net.address(names[rng.randrange(i)])] if i else []
        net.add_node(name, seeds=seeds, replicas=replicas)  # type: ignore[arg-type]
    net.run_until(15.0)
    assert {n.core.mode() for n in net.nodes.values() if n.core} == {RELAY}
    seen: Seen = {}
    for name in names:
        replicas: Any = net.nodes[name].replicas
        seen[name] = []
        replicas.open("s").on_change(
            lambda c, got=seen[name], r=replicas: got.append((c, r.no_writer))
        )
    net.mixed = 0
    writer_of: dict[str, str] = {}
    start = net.now
    for i in range(200):  # every agent in turn, several per relay window
        name = names[i % len(names)]
        writer_of[f"k{i}"] = name

        def write(name: str = name, i: int = i) -> None:
            net.write(name, "s", lambda s: s.__setitem__(f"k{i}", i))

        net.at(start + i * 0.01, write)
    net.run_for(8.0)
    assert net.mixed, "no Push named several writers: nothing checked"
    for name in names:  # every write reached everyone
        snap = net.nodes[name].replicas.shards["s"].snapshot()  # type: ignore[attr-defined]
        assert {k for k in snap if k.startswith("k")} == set(writer_of), name
    checked, named, unnamed = _check(seen, writer_of)
    # each key reached each of the 9 other agents in a change naming its writer, or (a few)
    # by anti-entropy during the writes
    pairs = {(n, k) for n in names for k, w in writer_of.items() if w != n}
    assert checked and named | unnamed == pairs and len(unnamed) < len(named) / 10


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until true (the bound only stops a hung test; nothing is timed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_websocket_relay_broadcast_names_each_writer(tmp_path: Path) -> None:
    # Four agents beyond full_mesh_max = 2: the rotating relay, everyone linked to everyone
    # (the WAN windows, aligned to the clock: the relay needs them; quicker dials).
    config = GossipConfig(full_mesh_max=2, backoff_base=0.1, dial_grace=0.25)
    agents: list[Agent] = []
    try:
        first = Agent("a", tmp_path / "a", listen=WS, gossip=config)
        await first.start()
        agents.append(first)
        for name in ("b", "c", "d"):
            agent = Agent(
                name, tmp_path / name, listen=WS, peers=[first.address or ""], gossip=config
            )
            await agent.start()
            agents.append(agent)
        await until(
            lambda: all(
                ag.core is not None and ag.core.mode() == RELAY and len(ag.core.connected()) == 3
                for ag in agents
            )
        )
        shards = [await ag.shard("s") for ag in agents]
        await until(lambda: len({s.digest() for s in shards}) == 1)  # the on-connect rounds
        seen: Seen = {}
        mixed = [0]  # Pushes received that named several writers (what this test is about)
        for ag, s in zip(agents, shards, strict=True):
            seen[ag.name] = []
            core: Any = ag.core
            replicas = core.replicas
            no_writer = [False]
            apply = replicas.apply

            def tracked(*args: Any, apply: Any = apply, flag: Any = no_writer, **kw: Any) -> Any:
                flag[0] = kw.get("author") is None
                try:
                    return apply(*args, **kw)
                finally:
                    flag[0] = False

            replicas.apply = tracked
            s.on_change(lambda c, got=seen[ag.name], flag=no_writer: got.append((c, flag[0])))
            inner = core.receive

            def receive(peer: str, msg: Message, now: float, inner: Any = inner) -> Any:
                if isinstance(msg, Push) and len({a for a in msg.authors if a}) > 1:
                    mixed[0] += 1
                return inner(peer, msg, now)

            core.receive = receive
        writer_of: dict[str, str] = {}
        for i in range(30):  # three writers at once: a relay's window holds several
            for ag, s in zip(agents[1:], shards[1:], strict=True):
                key = f"{ag.name}{i}"
                writer_of[key] = ag.name
                s[key] = i
            await asyncio.sleep(0.003)
        await until(lambda: all(len(s.snapshot()) >= len(writer_of) for s in shards))
        await until(lambda: len({s.digest() for s in shards}) == 1)
        assert mixed[0], "no Push named several writers: nothing checked"
        checked, named, unnamed = _check(seen, writer_of)
        # every key reached the 3 agents that did not write it in a change naming its writer,
        # or (a few) by anti-entropy during the writes
        pairs = {(ag.name, k) for ag in agents for k, w in writer_of.items() if w != ag.name}
        assert checked and named | unnamed == pairs and len(unnamed) < len(named) / 10
    finally:
        for agent in reversed(agents):
            await agent.close()
