"""The CPU floor of the fanout burst at N agents: what any library must spend on one host.

    python benchmarks/burst_floor.py [--updates 1000] [--batches 10] [--rounds 7]
        [--agents 32,64] [--cores 2] [--peer-ups 6507,4986]

Two bare pycrdt measurements, in one process, with the bench's own workload (issue 18, branch
h-n64c):

- **writer**: ``benchmarks/nodes.write_keys``' loop (one map set per transaction,
  ``await asyncio.sleep(0)`` after each) on a bare ``pycrdt.Doc`` whose observer keeps each
  update (the least a library does to send it);
- **receiver**: a fresh ``Doc`` with ``nodes.Arrivals``' observer loop (a ``time_ns`` per
  change, every key checked) applying the writer's updates merged into ``--batches`` batches
  (as crdtsync's Pushes bring them), and one by one (as a hub relays them).

From those: the least CPU of one burst, writer + (N - 1) receivers, and its span on
``--cores`` cores if the work spread perfectly, next to the span that ``--peer-ups`` x 5 (the
issue's burst target against the strongest peer's updates/s) allows. CPU time
(``time.process_time``), medians of ``--rounds`` (and the sums with the best round of each,
since the machine's load inflates CPU time too).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import pycrdt


async def _writer(n: int) -> tuple[float, list[bytes]]:
    doc = pycrdt.Doc()
    root = doc.get("m", type=pycrdt.Map)
    ups: list[bytes] = []
    doc.observe(lambda e: ups.append(e.update))
    cpu = time.process_time()
    for i in range(n):
        root[f"b{i}"] = str(time.time_ns())
        await asyncio.sleep(0)
    return time.process_time() - cpu, ups


def _receiver(feed: list[bytes], n: int) -> float:
    doc = pycrdt.Doc()
    root = doc.get("m", type=pycrdt.Map)
    arrived: dict[str, int] = {}

    def on_change(event: Any) -> None:
        now = time.time_ns()
        for key in event.keys:
            if key.startswith("b") and key not in arrived:
                arrived[key] = now

    root.observe(on_change)
    cpu = time.process_time()
    for update in feed:
        doc.apply_update(update)
    cpu = time.process_time() - cpu
    assert len(arrived) == n
    return cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--batches", type=int, default=10, help="merged batches per receiver [10]")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--agents", default="32,64")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument(
        "--peer-ups", default="6507,4986", help="strongest peer's burst updates/s per agent count"
    )
    args = p.parse_args()
    n = args.updates
    runs = [asyncio.run(_writer(n)) for _ in range(args.rounds)]
    writer_ms = 1000 * statistics.median(r[0] for r in runs)
    writer_best = 1000 * min(r[0] for r in runs)
    ups = runs[0][1]
    per = max(1, n // args.batches)
    batched = [pycrdt.merge_updates(*ups[i : i + per]) for i in range(0, n, per)]
    times = {
        name: [1000 * _receiver(feed, n) for _ in range(args.rounds)]
        for name, feed in (("batched", batched), ("one by one", ups))
    }
    rec = {name: statistics.median(v) for name, v in times.items()}
    best = writer_best + min(times["batched"])  # a writer and one receiver, best rounds
    print(f"writer loop, {n} sets: {writer_ms:.2f} ms CPU (best {writer_best:.2f})")
    for name, ms in rec.items():
        print(
            f"receiver, {n} updates {name} ({len(batched) if name == 'batched' else n} applies):"
            f" {ms:.2f} ms CPU = {1000 * ms / n:.2f} us per update"
        )
    for agents, peer in zip(
        (int(x) for x in args.agents.split(",")),
        (float(x) for x in args.peer_ups.split(",")),
        strict=True,
    ):
        total = writer_ms + (agents - 1) * rec["batched"]
        low = writer_best + (agents - 1) * (best - writer_best)
        target = 1000 * n / (5 * peer)
        print(
            f"{agents} agents: least CPU {total:.1f} ms (writer + {agents - 1} batched receivers),"
            f" span on {args.cores} cores >= {total / args.cores:.1f} ms (best rounds:"
            f" {low:.1f}, {low / args.cores:.1f}); 5x {peer:,.0f} updates/s allows {target:.1f} ms"
        )


if __name__ == "__main__":
    main()
