"""Gossip Glomers in virtual time: benchmarks/gossip_sim.py at 0% and 20% loss, and a scale curve.

Runs ``benchmarks/gossip_sim.py`` (the deterministic simulator, 100 ms links, 100 writes/s
spread over the agents) as it is:

1. once with its defaults (25 agents), which reports the lossless and the 20%-loss scenario;
2. lossless, for N = 10 ... 1000 agents: propagation latency and messages per write vs N.

Each point is drawn against its analytic floor:

* latency in rounds (one round = one link latency): ``ceil(log_{1+f} N)`` with f the gossip
  fanout, the depth of the fastest possible epidemic/tree with f new receivers per informed
  agent per round (1 round up to ``full_mesh_max`` agents, where everyone talks to
  everyone); and the simulator's own floor for the overlay actually built (hops from the
  writer to the farthest agent, ``latency_floor_median_ms``);
* messages per write: N - 1, every other agent receiving the write once with no batching.
  Batching (one Push per link per window) can go below it; anti-entropy, acks and membership
  are counted too.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from typing import Any

from benchlib import BENCH_DIR, Progress, common_args, finish, machine, pyplot, size_of

SCALE = {
    "full": [10, 25, 50, 100, 250, 500, 1000],
    "quick": [10, 25, 50, 100, 200],
    "tiny": [10, 20],
}
SCALE_DURATION = {"full": 2.0, "quick": 2.0, "tiny": 1.0}
BASE_ARGS = {
    "full": [],
    "quick": ["--duration", "5"],
    "tiny": ["--agents", "10", "--duration", "2"],
}


def sim(args: list[str]) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, str(BENCH_DIR / "gossip_sim.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"gossip_sim.py {' '.join(args)} failed: {res.stderr[-3000:]}")
    return json.loads(res.stdout)


def fanout_and_mesh() -> tuple[int, int]:
    from crdtsync.gossip import GossipConfig

    cfg = GossipConfig()
    return int(getattr(cfg, "fanout", 4)), int(getattr(cfg, "full_mesh_max", 1))


def rounds_floor(n: int, f: int, full_mesh_max: int) -> int:
    if n <= full_mesh_max:
        return 1
    return max(1, math.ceil(math.log(n) / math.log(1 + f) - 1e-9))


def _pick(run: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "agents",
        "loss",
        "writes",
        "converged_writes",
        "msgs_per_write",
        "bytes_per_write",
        "latency_median_ms",
        "latency_p99_ms",
        "latency_max_ms",
        "latency_floor_median_ms",
        "overlay_diameter_hops",
        "max_agent_share",
        "fair_share",
        "idle_msgs_per_s",
        "messages_by_type",
        "wall_s",
    )
    return {k: run.get(k) for k in keys if k in run}


def plot(rows: list[dict[str, Any]], f: int, mesh_max: int, latency_ms: float) -> Any:
    plt = pyplot()
    ns = [r["agents"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(11.5, 4.3))
    a = ax[0]
    a.plot(
        ns,
        [r["latency_median_ms"] / latency_ms for r in rows],
        "o-",
        color="tab:blue",
        label="crdtsync median",
    )
    a.plot(
        ns,
        [r["latency_max_ms"] / latency_ms for r in rows],
        "s--",
        color="tab:blue",
        alpha=0.5,
        label="crdtsync max",
    )
    fine = sorted({*range(2, 11), *[int(10 ** (i / 20)) for i in range(20, 61)], *ns})
    a.step(
        fine,
        [rounds_floor(n, f, mesh_max) for n in fine],
        where="post",
        color="black",
        label=f"floor ceil(log_(1+{f}) N)",
    )
    if all(r.get("latency_floor_median_ms") is not None for r in rows):
        a.plot(
            ns,
            [r["latency_floor_median_ms"] / latency_ms for r in rows],
            "^:",
            color="tab:gray",
            label="floor on the overlay built (median hops)",
        )
    a.set_xscale("log")
    a.set_xlabel("agents N (log)")
    a.set_ylabel(f"rounds to reach every agent (1 round = {latency_ms:.0f} ms link)")
    a.set_title("propagation latency vs N")
    a.legend(fontsize=7)
    a = ax[1]
    a.plot(
        ns,
        [r["msgs_per_write"] for r in rows],
        "o-",
        color="tab:blue",
        label="crdtsync (all message types)",
    )
    a.plot(
        fine,
        [max(n - 1, 1) for n in fine],
        color="black",
        label="N - 1 (each agent gets it once, no batching)",
    )
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("agents N (log)")
    a.set_ylabel("messages per write (log)")
    a.set_title("messages per write vs N (100 writes/s over the mesh)")
    a.legend(fontsize=7)
    fig.suptitle(
        "Gossip Glomers scale curve (simulated network, virtual clock, lossless)", fontsize=10
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument("--agents", default=None, help="comma-separated N for the scale curve")
    p.add_argument("--duration", type=float, default=None, help="seconds of writes per scale point")
    args = p.parse_args(argv)
    size = size_of(args)
    ns = [int(x) for x in args.agents.split(",")] if args.agents else SCALE[size]
    duration = args.duration or SCALE_DURATION[size]
    f, mesh_max = fanout_and_mesh()
    prog = Progress("glomers")
    try:
        task = prog.task("gossip_sim.py defaults, 0% and 20% loss", 1)
        base = sim(BASE_ARGS[size])
        prog.update(task, 1)
        task = prog.task("scale curve N = " + ",".join(map(str, ns)), len(ns))
        rows = []
        for i, n in enumerate(ns):
            run = sim(["--agents", str(n), "--skip-lossy", "--duration", str(duration)])["lossless"]
            row = _pick(run)
            row["rounds_median"] = (
                round(run["latency_median_ms"] / 100.0, 2) if run.get("latency_median_ms") else None
            )
            row["rounds_floor"] = rounds_floor(n, f, mesh_max)
            row["msgs_floor_no_batching"] = n - 1
            rows.append(row)
            prog.update(task, i + 1)
    finally:
        prog.close()
    report: dict[str, Any] = {
        "benchmark": "glomers",
        "size": size,
        "machine": machine(),
        "gossip_sim_defaults": {
            k: base.get(k)
            for k in ("setting", "lossless", "lossless_vs_targets", "lossy", "lossy_vs_targets")
        },
        "scale": {
            "fanout": f,
            "full_mesh_max": mesh_max,
            "link_latency_ms": 100,
            "writes_per_s": 100,
            "duration_s": duration,
            "points": rows,
        },
    }
    finish(
        report,
        args.out,
        plot_dir=args.plot_dir,
        plots={"glomers_scale.png": lambda: plot(rows, f, mesh_max, 100.0)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
