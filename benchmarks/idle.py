"""Idle cost: what 8 agents holding S shards send when nothing changes, for S = 10, 100, 1000.

Eight ``crdtsync`` agent processes on 127.0.0.1 (a full mesh: 8 is
``GossipConfig.full_mesh_max``) each start from a copy of the same store of S shards (one
key each), so every replica is already equal and nothing needs repairing. After the mesh has
formed and its on-connect rounds are over, a window of W seconds is measured:

* ``rounds``: anti-entropy rounds started (each starts with one ``Summary``);
* ``msgs_per_round``: every websocket message any agent sent in the window (all types,
  counted in ``Connection.send``), divided by the rounds;
* ``wire_bytes_per_round``: TCP payload bytes of every connection of the mesh (``ss``:
  websocket framing and keepalive pings included), divided by the rounds;
* ``cpu_ms_per_round``: CPU time of all agents in the window (root hashes over S digests
  are computed here), divided by the rounds.

Target: O(1) per round, independent of S (a round between equal agents is one ``Summary``
message carrying a hash over all their shards). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Child,
    Progress,
    children,
    common_args,
    counter_delta,
    finish,
    free_ports,
    machine,
    pyplot,
    size_of,
    tcp_counters,
    wait_mesh,
    wait_with_progress,
)

SHARDS = {"full": [10, 100, 1000], "quick": [10, 100, 1000], "tiny": [2, 20]}
#: Whole periods of the agents' websocket keepalive (a ping every 20 s per connection end,
#: transports/websocket.py): in a window of any other length the pings that fall in it depend
#: on when the connections formed, which differs with the store size (an agent of 1,000
#: shards starts later), and 56 pings and pongs cost as much CPU as ~10 idle rounds. A 15 s
#: window caught them at 1,000 shards and not at 10: that was the "growth" of issue 17's row.
WINDOW = {"full": 40.0, "quick": 20.0, "tiny": 6.0}


def build_store(path: Path, shards: int) -> None:
    from crdtsync import Agent

    async def go() -> None:
        async with Agent("seed", data_dir=path) as agent:
            for i in range(shards):
                s = await agent.shard(f"s{i:04d}")
                s["k"] = i
            await (await agent.shard("s0000")).flush()

    asyncio.run(go())


def _stats(kids: list[Child]) -> list[dict[str, Any]]:
    for k in kids:
        k.send(cmd="stats")
    return [k.wait("stats", 60) for k in kids]


def measure(shards: int, agents: int, window: float, tmp: Path, prog: Progress) -> dict[str, Any]:
    seed = tmp / f"seed-{shards}"
    build_store(seed, shards)
    ports = free_ports(agents)
    with children() as kids:
        for i, port in enumerate(ports):
            data = tmp / f"s{shards}" / f"a{i}"
            shutil.copytree(seed, data, ignore=shutil.ignore_patterns("LOCK"))
            args = [
                "--name",
                f"a{i}",
                "--data",
                str(data),
                "--listen",
                f"ws://127.0.0.1:{port}",
                "--seed",
                str(i),
            ]
            if i:
                args += ["--peer", f"ws://127.0.0.1:{ports[0]}"]
            kids.append(Child("crdtsync", args, name=f"idle{shards}/a{i}"))
        effective = [k.wait("ready", 120).get("gossip") for k in kids][0]
        wait_mesh(kids, agents - 1)
        time.sleep(3.0)  # on-connect rounds and the first peer lists are not idle traffic
        stats0, tcp0 = _stats(kids), tcp_counters(ports)
        wait_with_progress(prog, f"{shards} shards: idle window", window)
        stats1, tcp1 = _stats(kids), tcp_counters(ports)
    by_type: dict[str, int] = {}
    for a, b in zip(stats0, stats1, strict=False):
        for k, v in b["by_type"].items():
            by_type[k] = by_type.get(k, 0) + v - a["by_type"].get(k, 0)
    by_type = {k: v for k, v in sorted(by_type.items()) if v}
    frames = sum(b["frames"] - a["frames"] for a, b in zip(stats0, stats1, strict=False))
    payload = sum(b["bytes"] - a["bytes"] for a, b in zip(stats0, stats1, strict=False))
    cpu = sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(stats0, stats1, strict=False))
    wire = counter_delta(tcp1, tcp0)
    rounds = by_type.get("Summary", 0)
    per = max(rounds, 1)
    return {
        "shards": shards,
        "window_s": window,
        "rounds": rounds,
        "msgs": frames,
        "msgs_by_type": by_type,
        "msgs_per_round": round(frames / per, 3),
        "payload_bytes_per_round": round(payload / per, 1),
        "wire_bytes_per_round": round(wire["bytes_sent"] / per, 1),
        "msgs_per_s_mesh": round(frames / window, 3),
        "wire_bytes_per_s_mesh": round(wire["bytes_sent"] / window, 1),
        "cpu_ms_per_round": round(1000 * cpu / per, 3),
        "gossip": effective,
    }


def plot(rows: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.8))
    s = [r["shards"] for r in rows]
    for a, key, title in (
        (ax[0], "msgs_per_round", "messages per round"),
        (ax[1], "wire_bytes_per_round", "wire bytes per round"),
        (ax[2], "cpu_ms_per_round", "CPU ms per round (all agents)"),
    ):
        vals = [r[key] for r in rows]
        a.plot(s, vals, "o-", color="tab:blue", label="crdtsync, measured")
        for x, y in zip(s, vals, strict=False):
            a.annotate(
                f"{y:g}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
            )
        if key == "msgs_per_round":
            a.axhline(1.0, color="tab:gray", ls="--", label="floor: 1 Summary per round")
        a.set_xscale("log")
        a.set_xticks(s, [str(x) for x in s])
        a.minorticks_off()
        a.set_xlim(min(s) / 2, max(s) * 2)
        a.set_xlabel("shards held by every agent (log)")
        a.set_title(title)
        a.set_ylim(bottom=0, top=max(vals) * 1.35 + 1e-9)
        a.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "idle mesh: 8 agents, equal replicas, nothing changing (target: flat in shard count)",
        fontsize=10,
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument("--shards", default=None, help="comma-separated shard counts [10,100,1000]")
    p.add_argument(
        "--window", type=float, default=None, help="measured idle seconds per shard count"
    )
    p.add_argument("--agents", type=int, default=8)
    args = p.parse_args(argv)
    size = size_of(args)
    counts = [int(x) for x in args.shards.split(",")] if args.shards else SHARDS[size]
    window = args.window or WINDOW[size]
    prog = Progress("idle")
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-idle-"))
    try:
        rows = [measure(s, args.agents, window, tmp, prog) for s in counts]
    finally:
        prog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    first, last = rows[0], rows[-1]
    report: dict[str, Any] = {
        "benchmark": "idle",
        "size": size,
        "machine": machine(),
        "setting": {"agents": args.agents, "window_s": window, "topology": "full mesh"},
        "by_shard_count": rows,
        "growth": {
            "shards_ratio": last["shards"] / first["shards"],
            "msgs_per_round_ratio": round(last["msgs_per_round"] / first["msgs_per_round"], 3)
            if first["msgs_per_round"]
            else None,
            "wire_bytes_per_round_ratio": round(
                last["wire_bytes_per_round"] / first["wire_bytes_per_round"], 3
            )
            if first["wire_bytes_per_round"]
            else None,
            "cpu_per_round_ratio": round(last["cpu_ms_per_round"] / first["cpu_ms_per_round"], 2)
            if first["cpu_ms_per_round"]
            else None,
        },
    }
    g = report["growth"]
    report["target_o1_per_round"] = {
        "met": bool(
            g["msgs_per_round_ratio"] is not None
            and g["msgs_per_round_ratio"] <= 1.5
            and g["wire_bytes_per_round_ratio"] is not None
            and g["wire_bytes_per_round_ratio"] <= 1.5
        ),
        "rule": "messages and wire bytes per round grow < 1.5x from the fewest to the most shards",
    }
    finish(report, args.out, plot_dir=args.plot_dir, plots={"idle.png": lambda: plot(rows)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
