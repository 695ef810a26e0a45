"""Durable local writes per second with group commit, next to its floor and a baseline.

All three are measured in the same run on the same machine, so the ratios are what to read:

* ``floor``: the same map sets on a bare in-memory ``pycrdt.Doc`` (no encoding, no store).
* ``group_commit``: crdtsync's ``shard[key] = value`` for every op, then one ``flush()``; the
  clock stops when the last op is durable (fsynced in LMDB).
* ``acknowledged``: ``tasks`` concurrent writers each doing ``set`` + ``await flush()`` per op:
  every op is individually acknowledged durable, group commit shares the fsyncs.
* ``per_op_commit``: the baseline without group commit: one LMDB transaction + fsync per op.

Prints one JSON object; ``--plot-dir`` draws ``local_writes.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import pycrdt
from benchlib import common_args, finish, machine, pyplot, size_of

from crdtsync import Agent
from crdtsync.store import Store


def floor(ops: int) -> float:
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    sink: list[bytes] = []
    doc.observe(lambda ev: sink.append(ev.update))  # pycrdt producing the delta, as we need it
    t0 = time.perf_counter()
    for i in range(ops):
        root[f"k{i % 1000}"] = f"value {i}"
    return ops / (time.perf_counter() - t0)


async def group_commit(ops: int, path: Path) -> dict[str, float]:
    async with Agent("bench", data_dir=path) as agent:
        shard = await agent.shard("bench")
        t0 = time.perf_counter()
        for i in range(ops):
            shard[f"k{i % 1000}"] = f"value {i}"
        t_applied = time.perf_counter()
        await shard.flush()
        t1 = time.perf_counter()
        total = shard.stats().total_updates
        last = ops - 1
        held = len(shard), shard[f"k{last % 1000}"]
    # +1: a new shard's first update records its value format (crdtsync.values.MARKER); a run
    # of a shard's own writes may be stored as one entry (Store.fold_tail), so at most that
    assert 1 <= total <= ops + 1, (total, ops)
    assert held == (min(ops, 1000), f"value {last}"), held
    return {"ops_per_s": ops / (t1 - t0), "final_flush_ms": (t1 - t_applied) * 1000}


async def acknowledged(ops: int, tasks: int, path: Path) -> float:
    async with Agent("bench", data_dir=path) as agent:
        shard = await agent.shard("bench")

        async def writer(w: int) -> None:
            for i in range(ops // tasks):
                shard[f"w{w}-{i % 100}"] = i
                await shard.flush()

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(tasks)))
        return (ops // tasks * tasks) / (time.perf_counter() - t0)


def per_op_commit(ops: int, path: Path) -> float:
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    with Store(path) as store:
        doc.observe(lambda ev: store.append("bench", ev.update))
        t0 = time.perf_counter()
        for i in range(ops):
            root[f"k{i % 1000}"] = f"value {i}"
            store.commit()
        return ops / (time.perf_counter() - t0)


SIZES = {  # ops, baseline ops, tasks, repeat
    "full": (200_000, 3_000, 200, 3),
    "quick": (50_000, 1_000, 200, 1),
    "tiny": (2_000, 200, 20, 1),
}


def plot(result: dict[str, object]) -> object:
    plt = pyplot()
    labels = [
        "floor: bare pycrdt\n(in memory)",
        "group commit\n(durable)",
        f"acknowledged\n({result['acknowledged_tasks']} writers)",
        "per-op commit\n(no group commit)",
    ]
    vals = [
        result["floor_in_memory_ops_per_s"],
        result["group_commit_durable_ops_per_s"],
        result["acknowledged_ops_per_s"],
        result["per_op_commit_ops_per_s"],
    ]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    bars = ax.bar(labels, vals, color=["tab:gray", "tab:blue", "tab:cyan", "tab:red"])
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("map sets per second (log)")
    ax.axhline(100_000, color="black", ls=":", lw=0.8, label="target 100k durable ops/s")
    ax.set_title(
        f"local durable writes, {result['ops']:,} ops (ratio to floor {result['ratio_group_commit_to_floor']})",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--ops", type=int, default=None, help="[200000; quick 50000]")
    parser.add_argument("--baseline-ops", type=int, default=None)
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument(
        "--repeat", type=int, default=None, help="best of N for each figure [3; quick 1]"
    )
    args = parser.parse_args()
    size = size_of(args)
    d_ops, d_base, d_tasks, d_repeat = SIZES[size]
    args.ops = args.ops or d_ops
    args.baseline_ops = args.baseline_ops or d_base
    args.tasks = args.tasks or d_tasks
    args.repeat = args.repeat or d_repeat
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-bench-"))
    try:
        floors, groups, acks, bases = [], [], [], []
        for r in range(args.repeat):
            floors.append(floor(args.ops))
            groups.append(asyncio.run(group_commit(args.ops, tmp / f"g{r}")))
            acks.append(asyncio.run(acknowledged(min(args.ops, 50_000), args.tasks, tmp / f"a{r}")))
            bases.append(per_op_commit(args.baseline_ops, tmp / f"b{r}"))
        best_floor = max(floors)
        best_group = max(groups, key=lambda g: g["ops_per_s"])
        result = {
            "benchmark": "local_writes",
            "size": size,
            "machine": machine(),
            "ops": args.ops,
            "floor_in_memory_ops_per_s": round(best_floor),
            "group_commit_durable_ops_per_s": round(best_group["ops_per_s"]),
            "group_commit_final_flush_ms": round(best_group["final_flush_ms"], 2),
            "acknowledged_ops_per_s": round(max(acks)),
            "acknowledged_tasks": args.tasks,
            "per_op_commit_ops_per_s": round(max(bases)),
            "ratio_group_commit_to_floor": round(best_group["ops_per_s"] / best_floor, 3),
            "ratio_group_commit_to_per_op_commit": round(best_group["ops_per_s"] / max(bases), 1),
            "targets": {"durable_ops_per_s": 100_000, "ratio_to_floor": 0.3},
        }
        result["targets_met"] = {
            "durable_ops_per_s": result["group_commit_durable_ops_per_s"] >= 100_000,
            "ratio_to_floor": result["ratio_group_commit_to_floor"] >= 0.3,
        }
        finish(
            result,
            args.out,
            plot_dir=args.plot_dir,
            plots={"local_writes.png": lambda: plot(result)},
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
