"""Acks and messages per update in a seeded simulator run of the fanout scale shape (issue 18).

    python benchmarks/ack_sim.py [--agents 64] [--updates 400] [--rate 200] [--seed 1]
        [--gossip '{"tree_push_interval": 0}']

N gossip cores in one process over the deterministic memory transport
(``crdtsync.transports.memory``), with ``GossipConfig.lan()`` (a full mesh up to 32 agents, a
tree beyond; ``--gossip``: a JSON object of fields replacing its values) and every agent
seeded with the writer ``a00``, as ``benchmarks/fanout.py
--scale`` connects them. After the overlay settles, ``a00`` writes one map entry per update at
``--rate`` updates/s (virtual time). Reported for that phase: frames per update by message
type and bytes per update, the acks per update (standalone ``Ack`` frames, own states riding on Pushes, relayed
acks on either), the CPU of the whole simulation per update (``time.process_time``; every
agent's core runs in this one process), delivery latency in virtual time (write to each
replica, p50/p99/max), and how many agents the writer's ``replicated()`` counts for its last
write 0.5 s and 2 s after it (what relayed acks reach). Virtual-time figures do not depend on
the machine's load; the CPU figure does (compare runs of the same minute).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from typing import Any

import pycrdt
from crdtsync.transports.memory import Network

from crdtsync import updates
from crdtsync.gossip import GossipConfig
from crdtsync.messages import Ack, Message, Push


class CountingNetwork(Network):
    """A :class:`Network` that also counts the acks each frame carries."""

    def __init__(self, seed: int, **kw: Any) -> None:
        super().__init__(seed, **kw)
        self.acks: Counter[str] = Counter()

    def _transmit(self, conn: Any, src: str, msg: Message) -> None:
        if conn.open_for.get(src):
            if isinstance(msg, Ack):
                self.acks["own"] += len(msg.states)
                self.acks["relayed"] += len(msg.relayed)
            elif isinstance(msg, Push):
                self.acks["own"] += msg.durable is not None
                self.acks["relayed"] += len(msg.relayed)
        super()._transmit(conn, src, msg)


def run(
    agents: int,
    updates_n: int,
    rate: float,
    seed: int,
    settle: float,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One seeded run; the figures of its write phase (see the module docstring)."""
    config = GossipConfig.lan(**(overrides or {}))
    net = CountingNetwork(seed, config=config, latency=0.0005, jitter=0.0002)
    names = [f"a{i:02d}" for i in range(agents)]
    net.add_node(names[0])
    for name in names[1:]:
        net.add_node(name, seeds=[net.address(names[0])])
    net.write(names[0], "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__("warm", 0))
    net.run_for(settle)
    links = sum(len(n.core.connected()) for n in net.nodes.values() if n.core) // 2
    written: dict[int, float] = {}
    arrived: list[float] = []

    upto: dict[str, int] = {}  # agent -> the first key it does not hold yet

    def seen(node: str, shard: str, now: float) -> None:
        if node == names[0]:
            return
        m = net.nodes[node].replicas.docs[shard].get("m", type=pycrdt.Map)
        # keys k0..kN, in order along the tree: the newest one a change brought is counted
        # (a batch brings several: the latency of its newest)
        i = j = upto.get(node, 0)
        while j in written and f"k{j}" in m:
            j += 1
        if j > i:
            upto[node] = j
            arrived.append(now - written[j - 1])

    net.observers.append(seen)
    net.reset_stats()
    net.acks.clear()

    def write(i: int) -> None:
        written[i] = net.now
        net.write(names[0], "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i))

    start = net.now
    for i in range(updates_n):
        net.at(start + i / rate, lambda i=i: write(i))
    cpu = time.process_time()
    net.run_until(start + updates_n / rate)
    net.run_for(0.5)
    cpu = time.process_time() - cpu
    by_type = dict(net.by_type)
    sent_bytes = net.total_bytes()
    acks = dict(net.acks)
    writer = net.nodes[names[0]]
    doc = writer.replicas.docs["s"]
    target = (updates.state_vector(doc), updates.delete_set(doc))
    assert writer.core is not None
    rep_half = len(writer.core.replicated("s", *target))
    net.run_for(1.5)
    rep_two = len(writer.core.replicated("s", *target))
    have = sum(
        1
        for n in net.nodes.values()
        if n.core is not None
        and f"k{updates_n - 1}" in n.replicas.docs["s"].get("m", type=pycrdt.Map)
    )
    lat = sorted(arrived) or [0.0]
    return {
        "agents": agents,
        "updates": updates_n,
        "rate": rate,
        "seed": seed,
        "links": links,
        "mode": writer.core.mode(),
        "frames_per_update": {k: round(v / updates_n, 3) for k, v in sorted(by_type.items())},
        "messages_per_update": round(sum(by_type.values()) / updates_n, 3),
        "bytes_per_update": round(sent_bytes / updates_n, 1),
        "acks_per_update": {k: round(v / updates_n, 3) for k, v in sorted(acks.items())},
        "cpu_ms_per_update": round(1000 * cpu / updates_n, 3),
        "latency_ms": {
            "p50": round(1000 * statistics.median(lat), 2),
            "p99": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2),
            "max": round(1000 * lat[-1], 2),
        },
        "replicated_last_write": {"after_0.5s": rep_half, "after_2s": rep_two},
        "agents_with_last_write": have,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=64)
    p.add_argument("--updates", type=int, default=400)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--settle", type=float, default=15.0, help="virtual seconds before writing")
    p.add_argument("--gossip", default="{}", help="JSON: GossipConfig.lan() fields to replace")
    args = p.parse_args()
    result = run(
        args.agents, args.updates, args.rate, args.seed, args.settle, json.loads(args.gossip)
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
