"""Partial replication and remote reads on a simulated 16-agent mesh (R=3). Prints JSON.

Two runs of the same workload over :class:`crdtsync.transports.memory.Network` (virtual clock,
real cores, real wire encoding, so byte counts are exact):

* ``partial``: ``replication_factor=3``; every write is made at a placement holder of its
  shard, which then lives on 3 of the 16 agents;
* ``full``: no replication factor (every agent replicates every shard), same writes by the
  same agents.

Reported:

* ``replication``: bytes and messages on the network for the write phase (writes until the
  mesh is quiet), by message type, for both runs, and the bytes partial replication saves.
  Floor of the ratio: (R-1)/(N-1), the share of agents besides the writer that must get each
  delta; ``update_payload_bytes`` (the CRDT update bytes inside Push and Diff frames) is the
  figure to hold against it, the frame totals also carry acks and membership.
* ``reads``: latency of reads from random agents, local (the agent holds the shard: no
  network; CPU time of the snapshot) and remote (virtual time from the request to the merged
  answer, plus the CPU time the whole read took in this process), p50/p99, next to the floor
  of a remote read: one round trip (2 x link latency). And bytes per remote read (ReadRequest
  plus ReadReply frames), cold (nothing cached: next to the floor, the shard's full update)
  and warm (a cached copy older than the cache ttl: only the difference comes back).

Usage: ``python benchmarks/sharding.py [--agents 16] [--shards 64] [--writes 1280]
[--reads 2000] [--latency 0.005] [--seed 1] [--png sharding.png]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pycrdt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crdtsync.transports.memory import Network  # noqa: E402

from crdtsync.gossip import GossipConfig  # noqa: E402
from crdtsync.messages import Diff, Push  # noqa: E402
from crdtsync.placement import holders  # noqa: E402
from crdtsync.query import OK  # noqa: E402
from crdtsync.readcache import ReadCache, snapshot_of  # noqa: E402
from crdtsync.sharding import ShardingConfig  # noqa: E402

DATA = ("Push", "Diff", "DiffChunk", "SyncRequest", "Digests", "Summary", "Ack")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class MeteredNetwork(Network):
    """Also counts the CRDT update bytes that Push and Diff frames carry (the payload whose
    copies replication pays for), apart from the frames' other content."""

    payload = 0
    deltas = 0  # bytes of the deltas written (each must reach every other holder once)

    def _transmit(self, conn: Any, src: str, msg: Any) -> None:
        if conn.open_for.get(src):
            if isinstance(msg, Push):
                self.payload += sum(len(u) for u in msg.updates)
            elif isinstance(msg, Diff):
                self.payload += len(msg.update)
        super()._transmit(conn, src, msg)


def build(n: int, r: int | None, seed: int, latency: float) -> MeteredNetwork:
    cfg = GossipConfig(anti_entropy_interval=5.0, suspect_timeout=5.0, prune_grace=3.0)
    net = MeteredNetwork(
        seed,
        config=cfg,
        sharding=ShardingConfig(replication_factor=r),
        latency=latency,
        jitter=latency / 5,
        trace=True,
    )
    rng = random.Random(seed)
    names = [f"a{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        net.add_node(name, seeds=[net.address(names[rng.randrange(i)])] if i else [])
    net.run_for(15)  # membership settles, overlay formed
    return net


def workload(
    names: list[str], shards: list[str], writes: int, r: int, seed: int
) -> list[tuple[float, str, str, str, str]]:
    """(time, writer, shard, key, value): each write at a placement holder of its shard."""
    rng = random.Random(seed)
    out = []
    for i in range(writes):
        s = shards[i % len(shards)] if i < len(shards) else rng.choice(shards)
        writer = rng.choice(holders(s, names, r))
        out.append((i * 0.05, writer, s, f"k{rng.randrange(10)}", f"v{i:06d}-" + "x" * 24))
    return out


def traffic(net: Network, since: int) -> dict[str, Any]:
    assert net.trace is not None
    by_bytes: Counter[str] = Counter()
    by_msgs: Counter[str] = Counter()
    for _, _, _, kind, size in net.trace[since:]:
        by_bytes[kind] += size
        by_msgs[kind] += 1
    return {
        "bytes": sum(by_bytes.values()),
        "messages": sum(by_msgs.values()),
        "data_bytes": sum(v for k, v in by_bytes.items() if k in DATA),
        "bytes_by_type": dict(by_bytes.most_common()),
    }


def run_writes(net: MeteredNetwork, plan: list[tuple[float, str, str, str, str]]) -> dict[str, Any]:
    assert net.trace is not None
    start, mark = net.now, len(net.trace)
    net.payload = net.deltas = 0

    def write(w: str, s: str, k: str, v: str) -> None:
        delta = net.write(w, s, lambda d: d.get("root", type=pycrdt.Map).__setitem__(k, v))
        net.deltas += len(delta or b"")

    for t, writer, shard, key, value in plan:
        net.at(start + t, lambda w=writer, s=shard, k=key, v=value: write(w, s, k, v))
    net.run_until(start + plan[-1][0] + 0.01)
    net.run_until_quiet(120, idle=2.0)
    out = traffic(net, mark)
    out["update_payload_bytes"] = net.payload
    out["deltas_written_bytes"] = net.deltas
    out["virtual_seconds"] = round(net.now - start, 2)
    return out


def run_reads(
    net: Network, names: list[str], shards: list[str], reads: int, seed: int, latency: float
) -> dict[str, Any]:
    assert net.trace is not None
    rng = random.Random(seed + 1)
    local_cpu: list[float] = []
    remote_virtual: list[float] = []
    remote_cpu: list[float] = []
    cold_bytes: list[int] = []
    cold_floor: list[int] = []
    warm_bytes: list[int] = []
    caches = {n: ReadCache(ttl=0.25) for n in names}
    for i in range(reads):
        reader, shard = rng.choice(names), rng.choice(shards)
        node = net.nodes[reader]
        if shard in node.replicas.docs:  # held here: a local read
            t = time.perf_counter()
            snapshot_of(node.replicas.docs[shard])
            local_cpu.append(time.perf_counter() - t)
            continue
        cache = caches[reader]
        warm = shard in cache
        if warm:  # make the cached copy stale: a few writes since, and past the ttl
            h = holders(shard, names, 3)[0]
            net.write(
                h,
                shard,
                lambda d, i=i: d.get("root", type=pycrdt.Map).__setitem__(f"k{i % 10}", f"w{i}"),
            )
        net.run_for(0.5)
        mark = len(net.trace)
        t0, v0 = time.perf_counter(), net.now
        qid = net.call(
            reader,
            lambda c, s=shard, sv=cache.state_vector(shard): c.sharding.read(  # noqa: B008
                s, quorum=1, state_vector=sv, now=net.now, timeout=5.0
            ),
        )
        core = node.core
        assert core is not None
        while (out := core.sharding.result(qid)) is None:
            nxt = net._heap[0][0] if net._heap else net.now + 0.001  # next event: exact end time
            net.run_until(nxt)
        assert out.status == OK, out
        snapshot_of(cache.join(shard, [u for _, u in out.answers[shard]], now=net.now, quorum=1))
        remote_cpu.append(time.perf_counter() - t0)
        remote_virtual.append(out.at - v0)
        size = sum(b for _, _, _, k, b in net.trace[mark:] if k in ("ReadRequest", "ReadReply"))
        if warm:
            warm_bytes.append(size)
        else:
            cold_bytes.append(size)
            h = holders(shard, names, 3)[0]
            cold_floor.append(len(net.nodes[h].replicas.docs[shard].get_update()))
    us = 1e6
    return {
        "local": {
            "count": len(local_cpu),
            "cpu_us_p50": round(pct(local_cpu, 50) * us, 1),
            "cpu_us_p99": round(pct(local_cpu, 99) * us, 1),
            "network_ms": 0.0,
        },
        "remote": {
            "count": len(remote_virtual),
            "latency_ms_p50": round(pct(remote_virtual, 50) * 1000, 2),
            "latency_ms_p99": round(pct(remote_virtual, 99) * 1000, 2),
            "floor_rtt_ms": round(2 * latency * 1000, 2),
            "cpu_us_p50": round(pct(remote_cpu, 50) * us, 1),
            "cpu_us_p99": round(pct(remote_cpu, 99) * us, 1),
        },
        "bytes_per_remote_read": {
            "cold_mean": round(statistics.mean(cold_bytes), 1) if cold_bytes else None,
            "cold_floor_full_update_mean": round(statistics.mean(cold_floor), 1)
            if cold_floor
            else None,
            "warm_mean": round(statistics.mean(warm_bytes), 1) if warm_bytes else None,
            "cold_reads": len(cold_bytes),
            "warm_reads": len(warm_bytes),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--r", type=int, default=3)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--writes", type=int, default=1280)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.005)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--png", type=Path, default=None, help="also draw the figures here (needs matplotlib)"
    )
    args = ap.parse_args()
    names = [f"a{i:02d}" for i in range(args.agents)]
    shards = [f"s{i:03d}" for i in range(args.shards)]
    plan = workload(names, shards, args.writes, args.r, args.seed)
    wall = time.perf_counter()

    partial = build(args.agents, args.r, args.seed, args.latency)
    partial_writes = run_writes(partial, plan)
    copies = Counter(len([n for n in names if s in partial.nodes[n].replicas.docs]) for s in shards)
    reads = run_reads(partial, names, shards, args.reads, args.seed, args.latency)

    full = build(args.agents, None, args.seed, args.latency)
    full_writes = run_writes(full, plan)

    saved = full_writes["bytes"] - partial_writes["bytes"]
    report = {
        "setup": {
            "agents": args.agents,
            "replication_factor": args.r,
            "shards": args.shards,
            "writes": args.writes,
            "reads": args.reads,
            "link_latency_ms": args.latency * 1000,
            "seed": args.seed,
        },
        "placement": {"copies_per_shard": dict(sorted(copies.items()))},
        "replication": {
            "partial": partial_writes,
            "full": full_writes,
            "bytes_saved": saved,
            "bytes_saved_pct": round(100 * saved / full_writes["bytes"], 1),
            "data_bytes_ratio_partial_over_full": round(
                partial_writes["data_bytes"] / full_writes["data_bytes"], 3
            ),
            "update_payload_ratio_partial_over_full": round(
                partial_writes["update_payload_bytes"] / full_writes["update_payload_bytes"], 3
            ),
            "floor_ratio_(R-1)/(N-1)": round((args.r - 1) / (args.agents - 1), 3),
            # each delta carried once to each other holder: R-1 resp. N-1 copies
            "partial_payload_over_floor": round(
                partial_writes["update_payload_bytes"]
                / ((args.r - 1) * partial_writes["deltas_written_bytes"]),
                3,
            ),
            "full_payload_over_floor": round(
                full_writes["update_payload_bytes"]
                / ((args.agents - 1) * full_writes["deltas_written_bytes"]),
                3,
            ),
        },
        "reads": reads,
        "wall_seconds": round(time.perf_counter() - wall, 2),
    }
    print(json.dumps(report, indent=2))
    if args.png is not None:
        plot(report, args.png)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    rep = report["replication"]
    setup = report["setup"]
    labels = ["full: frames", "full: updates", "partial: frames", "partial: updates"]
    values = [
        rep["full"]["bytes"],
        rep["full"]["update_payload_bytes"],
        rep["partial"]["bytes"],
        rep["partial"]["update_payload_bytes"],
    ]
    ax1.bar(labels, [v / 1e6 for v in values], color=["grey", "silver", "tab:blue", "lightblue"])
    floors = [
        (setup["agents"] - 1) * rep["full"]["deltas_written_bytes"],
        (setup["replication_factor"] - 1) * rep["partial"]["deltas_written_bytes"],
    ]
    ax1.hlines(
        [f / 1e6 for f in floors],
        [0.6, 2.6],
        [1.4, 3.4],
        colors="k",
        linestyles="--",
        label="floor: each delta once to each other holder",
    )
    ax1.set_ylabel("MB sent (write phase)")
    ax1.tick_params(axis="x", labelsize=7)
    ax1.legend(fontsize=7)
    rd = report["reads"]["remote"]
    ax2.bar(
        ["remote p50", "remote p99"], [rd["latency_ms_p50"], rd["latency_ms_p99"]], color="tab:blue"
    )
    ax2.axhline(rd["floor_rtt_ms"], ls="--", color="k", label="floor: one round trip")
    ax2.set_ylabel("read latency, ms (virtual)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
