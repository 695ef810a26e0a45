"""Fan-out over real websockets: one writer, seven receivers; crdtsync next to pycrdt-websocket.

Eight OS processes on 127.0.0.1 per system, the same workload for both (benchmarks/nodes.py):
one process writes ``n`` map sets, each its own transaction, valued with ``time.time_ns()``
at the moment of the write; the seven others record in their own process, in the document
observer, when each key arrived. All processes share one machine clock, so
``arrival - stamp`` is the one-way latency of that update to that receiver, with nothing
estimated.

* ``burst``: the writer writes as fast as it can (yielding to its event loop after each
  write); updates/s = n / (last arrival at the last receiver - first write), and the
  latency of every (update, receiver) pair.
* ``paced``: the writer writes at ``rate`` per second on an absolute schedule; latency
  p50/p99/max.
* ``paced_low``: the same at ``low_rate`` (200/s by default, fewer updates): a load that
  every system sustains on a small machine, so that the latency it shows is the system's
  own, not the queueing of a saturated process.

Systems:

* ``crdtsync``: 8 agents (crdtsync.Agent, LMDB store, group commit) with the gossip settings
  an Agent uses when given none (``GossipConfig.lan()`` today: 2 ms Nagle-like batching, a
  full mesh at this size); the effective settings are in the result (``gossip``).
* ``crdtsync-wan``: the same agents with the WAN settings (``GossipConfig()``: batching windows
  of ~0.1 s aligned to the clock), to show what the batching window costs in latency and
  saves in messages.
* ``pycrdt-websocket``: its ``WebsocketServer`` hub (a YRoom) in its own process and eight
  ``pycrdt.Provider`` clients, each in its own process, over the same ``websockets`` library.

Wire figures per update: ``msgs`` = websocket messages sent by all processes (counted in
``Connection.send`` in every process), ``wire_bytes`` = TCP payload bytes sent over all the
system's connections as the kernel counts them (``ss``: framing and pings included), both
from just before the first write until one second after the last arrival (trailing acks
included). crdtsync's receivers also write every update to LMDB and group-commit it; the hub
keeps nothing on disk.

Repetition: the full size runs every system 3 times, interleaved (A B C A B C A B C) so that a
change in the machine's load hits all systems alike; scalar figures are the median of the
runs, latency percentiles are over the pooled (update, receiver) pairs of all runs, and each
run's headline figures are kept (``each_run``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Child,
    Progress,
    cdf_points,
    children,
    common_args,
    counter_delta,
    finish,
    free_ports,
    machine,
    pyplot,
    ratio,
    save_figure,
    size_of,
    summary,
    tcp_counters,
    wait_mesh,
)
from fanout_report import plot_scale, verdict_strongest
from peers import (
    NODE_HUBS,
    PEERS,
    describe,
    start_clients,
    start_crdtsync_groups,
    start_hub,
)

HUB = "pycrdt-websocket"
TOPOLOGY = {
    "pycrdt-websocket": "hub: WebsocketServer (YRoom) + pycrdt.Provider clients (echo remote updates)",
    "pycrdt-websocket-noecho": "hub: WebsocketServer (YRoom) + YClient (own updates only)",
    "y-websocket-server": "hub: @y/websocket-server (Node) + YClient",
    "hocuspocus": "hub: @hocuspocus/server (Node) + YClient (Hocuspocus framing)",
}
#: What the issue author measured for the hub (same workload, their machine).
ISSUE_HUB = {"burst_updates_per_s": 3770, "burst_p99_ms": 81.0, "paced_p99_ms": 0.9}
SIZES = {"full": 5000, "quick": 2000, "tiny": 200}
LOW = {"full": 1000, "quick": 500, "tiny": 100}  # updates of the paced_low phase
PHASES = ("burst", "paced", "paced_low")
SYSTEMS: dict[str, dict[str, Any] | None] = {
    "crdtsync": {},
    "crdtsync-wan": {"preset": "wan"},
    **dict.fromkeys(PEERS),
}
#: Systems of the 32- and 64-agent runs (crdtsync at its default, the peers at their best).
SCALE_SYSTEMS = ("crdtsync", "pycrdt-websocket-noecho", *NODE_HUBS)
#: Overlay variants a scale run may name in ``--scale-systems`` (not run by default), to measure
#: an overlay against the default in the same run: ``crdtsync-mesh`` is a full mesh up to 64
#: agents (the LAN default is a tree beyond 32), ``crdtsync-tree64`` the tree with fanout 8,
#: ``crdtsync-unpaced`` the default without a limit on dials under way (``max_dialing``),
#: ``crdtsync-mesh-w10`` the full mesh with 10 ms batching windows (2 ms on the LAN),
#: ``crdtsync-w10`` the default overlay with them (``-w5``, ``-w20``: 5 and 20 ms),
#: ``crdtsync-tree-w2`` the tree with the mesh's 2 ms window (the LAN default before the tree's
#: own 10 ms window, ``tree_push_interval``).
SCALE_VARIANTS: dict[str, dict[str, Any]] = {
    "crdtsync-mesh": {"full_mesh_max": 64},
    "crdtsync-tree64": {"full_mesh_max": 32, "fanout": 8},
    "crdtsync-unpaced": {"max_dialing": 0},
    "crdtsync-mesh-w10": {"full_mesh_max": 64, "push_interval": 0.01},
    "crdtsync-w10": {"push_interval": 0.01},
    "crdtsync-w5": {"push_interval": 0.005},
    "crdtsync-w20": {"push_interval": 0.02},
    "crdtsync-tree-w2": {"tree_push_interval": 0.0},
    # issue 18, branch h-tree: the grid overlay (row + column links, per-writer trees, two
    # hops); -g16 uses it from 17 agents on (so at 32 too), -w5 with a 5 ms window
    "crdtsync-grid": {"overlay_shape": "grid"},
    "crdtsync-grid-w5": {"overlay_shape": "grid", "tree_push_interval": 0.005},
    "crdtsync-grid-w20": {"overlay_shape": "grid", "tree_push_interval": 0.02},
    "crdtsync-grid-w40": {"overlay_shape": "grid", "tree_push_interval": 0.04},
    "crdtsync-grid-g16": {"overlay_shape": "grid", "full_mesh_max": 16},
    "crdtsync-tree-g16": {"full_mesh_max": 16},
    # issue 18, branch h-n64b: -hopwait, a tree's relays wait for the window at every hop (the
    # LAN default before tree_relay_wait 0); -cut, 0 (the LAN default since); -w20-cut with a
    # 20 ms window at the writer's first hop, -rw3 at most 3 ms at each relay
    "crdtsync-tree-hopwait": {"tree_relay_wait": -1.0},
    "crdtsync-tree-cut": {"tree_relay_wait": 0.0},
    "crdtsync-tree-w20-cut": {"tree_push_interval": 0.02, "tree_relay_wait": 0.0},
    "crdtsync-tree-rw3": {"tree_relay_wait": 0.003},
    "crdtsync-tree-turn": {"tree_relay_wait": 1e-6},
    "crdtsync-tree-f8-cut": {"fanout": 8, "tree_relay_wait": 0.0},
    # issue 18, branch h-root: a writer also pushes its own writes to the tree's top (the
    # first 1 or 6 agents in rank order: the root, or the root and its children), every
    # agent linked to them (GossipConfig.tree_writer_top)
    "crdtsync-tree-top1": {"tree_writer_top": 1},
    "crdtsync-tree-top6": {"tree_writer_top": 6},
    # and with a 5 ms window at the writer (the tree's window, tree_push_interval), alone too
    "crdtsync-tree-top6-w5": {"tree_writer_top": 6, "tree_push_interval": 0.005},
    "crdtsync-tree-w5": {"tree_push_interval": 0.005},
}
SCALE_PHASES = ("burst", "paced_low")
SCALE = {"full": (32, 64), "quick": (32,), "tiny": (6,)}
SCALE_UPDATES = {"full": 1000, "quick": 500, "tiny": 100}


def _stats(kids: list[Child]) -> list[dict[str, Any]]:
    for k in kids:
        k.send(cmd="stats")
    return [k.wait("stats", 30) for k in kids]


def run_phase(
    label: str,
    writer: Child,
    receivers: list[Child],
    kids: list[Child],
    ports: list[int],
    prefix: str,
    n: int,
    rate: float,
    tmp: Path,
    prog: Progress,
    replicate: int,
    count_received: bool = False,
    slack: float = 120.0,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """One phase (burst or paced) on a running system; returns figures and raw latencies.

    ``replicate``: crdtsync only, the writer's ``replicated(replicate)`` is timed (0: not).
    ``count_received``: the hub cannot count what it sends (a Node hub), so its messages are
    counted where they arrive (every client counts the frames it receives)."""
    task = prog.task(f"{label} {'burst' if rate == 0 else f'paced {rate:g}/s'}", len(receivers))
    tmp.mkdir(parents=True, exist_ok=True)
    outs = {r.name: tmp / f"{prefix}-{r.name.replace('/', '-')}.json" for r in receivers}
    for r in receivers:
        r.send(cmd="expect", shard="bench", prefix=prefix, n=n, out=str(outs[r.name]))
    for r in receivers:
        r.wait("expecting", 30, prefix=prefix)
    stats0, tcp0 = _stats(kids), tcp_counters(ports)
    writer.send(cmd="write", shard="bench", prefix=prefix, n=n, rate=rate)
    written = writer.wait("written", 600, prefix=prefix)
    replicated = None
    if replicate:
        writer.send(cmd="replicated", shard="bench", peers=replicate, timeout=120)
    timeout = slack + (n / rate if rate else 0)
    completes = []
    for i, r in enumerate(receivers):
        completes.append(r.wait("complete", timeout, prefix=prefix))
        prog.update(task, i + 1)
    if replicate:
        replicated = writer.wait("replicated", 130)
    time.sleep(1.0)  # trailing acks and anti-entropy belong to the phase
    stats1, tcp1 = _stats(kids), tcp_counters(ports)
    for r in receivers:
        r.send(cmd="dump", prefix=prefix)
    for r in receivers:
        r.wait("dumped", 60, prefix=prefix)

    pair_ms: list[float] = []
    per_update = [0.0] * n
    for r in receivers:
        data = json.loads(outs[r.name].read_text())
        for member in data.get("latency_us_by_member") or [data["latency_us"]]:
            lat = [x / 1000 for x in member]
            pair_ms.extend(lat)
            per_update = [max(a, b) for a, b in zip(per_update, lat, strict=False)]
    last = max(c["last_ns"] for c in completes)
    span = (last - written["first_ns"]) / 1e9
    frames = sum(b["frames"] - a["frames"] for a, b in zip(stats0, stats1, strict=False))
    if count_received:
        frames += sum(
            b.get("recv_frames", 0) - a.get("recv_frames", 0)
            for a, b in zip(stats0, stats1, strict=False)
        )
    payload = sum(b["bytes"] - a["bytes"] for a, b in zip(stats0, stats1, strict=False))
    by_type: dict[str, int] = {}
    for a, b in zip(stats0, stats1, strict=False):
        for k, v in b["by_type"].items():
            by_type[k] = by_type.get(k, 0) + v - a["by_type"].get(k, 0)
    wire = counter_delta(tcp1, tcp0)
    out = {
        "updates": n,
        "rate": rate or None,
        "writer_s": written["wall_s"],
        "all_delivered_s": round(span, 4),
        "updates_per_s": round(n / span, 1),
        "latency_ms": summary(pair_ms, 3),
        "latency_all_receivers_ms": summary(per_update, 3),
        "msgs_per_update": round(frames / n, 3),
        "payload_bytes_per_update": round(payload / n, 1),
        "wire_bytes_per_update": round(wire["bytes_sent"] / n, 1),
        "tcp_segments_per_update": round(wire["data_segs_out"] / n, 3),
        "cpu_s_all_processes": round(
            cpu := sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(stats0, stats1, strict=False)), 3
        ),
        "cpu_ms_per_update": round(1000 * cpu / n, 4),
        # per process, in the order of ``kids`` (crdtsync: the writer first; a hub: the hub)
        "cpu_ms_per_update_by_process": [
            round(1000 * (b["cpu_s"] - a["cpu_s"]) / n, 4)
            for a, b in zip(stats0, stats1, strict=False)
        ],
        "msgs_by_type": {k: v for k, v in sorted(by_type.items()) if v},
        "latency_cdf_ms": cdf_points(pair_ms),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if replicated is not None:
        out["durable_on_all_s"] = round((replicated["at_ns"] - written["first_ns"]) / 1e9, 4)
    return out, {"pairs": pair_ms, "per_update": per_update}


def run_crdtsync(
    label: str,
    overrides: dict[str, Any],
    agents: int,
    n: int,
    rate: float,
    low: tuple[int, float],
    tmp: Path,
    prog: Progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    ports = free_ports(agents)
    gossip = json.dumps(overrides)
    raw: dict[str, Any] = {}
    with children() as kids:
        for i, port in enumerate(ports):
            args = [
                "--name",
                f"a{i}",
                "--data",
                str(tmp / label / f"a{i}"),
                "--listen",
                f"ws://127.0.0.1:{port}",
                "--shard",
                "bench",
                "--gossip",
                gossip,
                "--seed",
                str(i),
            ]
            if i:
                args += ["--peer", f"ws://127.0.0.1:{ports[0]}"]
            kids.append(Child("crdtsync", args, name=f"{label}/a{i}"))
        effective = [k.wait("ready", 60).get("gossip") for k in kids][0]
        wait_mesh(kids, agents - 1)
        time.sleep(1.0)  # on-connect anti-entropy rounds and peer lists settle
        writer, receivers = kids[0], kids[1:]
        burst, raw["burst"] = run_phase(
            label, writer, receivers, kids, ports, "b", n, 0, tmp, prog, agents - 1
        )
        paced, raw["paced"] = run_phase(
            label, writer, receivers, kids, ports, "p", n, rate, tmp, prog, agents - 1
        )
        paced_low, raw["paced_low"] = run_phase(
            label, writer, receivers, kids, ports, "q", low[0], low[1], tmp, prog, agents - 1
        )
    return {
        "config": overrides or "Agent default",
        "gossip": effective,
        "burst": burst,
        "paced": paced,
        "paced_low": paced_low,
    }, raw


def run_hub(
    kind: str,
    agents: int,
    n: int,
    rate: float,
    low: tuple[int, float],
    tmp: Path,
    prog: Progress,
    procs: int,
    phases: tuple[str, ...] = PHASES,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Hub ``kind`` (benchmarks/peers.py) with ``agents`` clients, one the writer."""
    raw: dict[str, Any] = {}
    out: dict[str, Any] = {"topology": TOPOLOGY[kind], "client_processes": None}
    with children() as kids:
        _hub, port, ready = start_hub(kind, kids)
        out["hub_process"] = {k: ready.get(k) for k in ("pid", "kind", "node")}
        clients = start_clients(kind, port, agents, procs, kids)
        out["client_processes"] = len(clients)
        time.sleep(1.0)
        writer, receivers = clients[0], clients[1:]
        warm_up(kind, writer, receivers, kids, [port], tmp, prog, 0, kind in NODE_HUBS)
        for phase in phases:
            prefix, count, r = _phase_args(phase, n, rate, low)
            out[phase], raw[phase] = run_phase(
                kind,
                writer,
                receivers,
                kids,
                [port],
                prefix,
                count,
                r,
                tmp,
                prog,
                0,
                kind in NODE_HUBS,
                slack=900,
            )
    return out, raw


def run_crdtsync_groups(
    label: str,
    overrides: dict[str, Any],
    agents: int,
    n: int,
    rate: float,
    low: tuple[int, float],
    tmp: Path,
    prog: Progress,
    procs: int,
    phases: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """crdtsync with its agents as asyncio tasks in ``procs`` + 1 processes (32 or 64 agents)."""
    raw: dict[str, Any] = {}
    out: dict[str, Any] = {"config": overrides or "Agent default"}
    with children() as kids:
        groups, ports = start_crdtsync_groups(
            agents, procs, json.dumps(overrides), tmp / label, kids, label
        )
        out["client_processes"] = len(groups)
        writer, receivers = groups[0], groups[1:]
        # No replicated(): beyond the full mesh (32 agents with the LAN settings) the writer is
        # not connected to every agent, and Shard.replicated(n) counts the acks of connected
        # peers.
        warm_up(label, writer, receivers, kids, ports, tmp, prog, 0, False)
        out["overlay"] = settle(groups)
        time.sleep(1.0)
        for phase in phases:
            prefix, count, r = _phase_args(phase, n, rate, low)
            out[phase], raw[phase] = run_phase(
                label, writer, receivers, kids, ports, prefix, count, r, tmp, prog, 0, slack=900
            )
    return out, raw


def settle(groups: list[Child], quiet: float = 6.0, timeout: float = 90.0) -> dict[str, Any]:
    """Wait until the overlay has formed: the agents' connection counts unchanged for
    ``quiet`` seconds, longer than ``prune_grace`` (5 s: a tree closes the links it does not
    want that long after they opened; a full mesh dials everyone after the seed), so that no
    phase measures the overlay still forming (the seed's extra links, then their Closes).
    Returns the links per agent and how long it took."""
    t0 = time.monotonic()
    last: list[int] = []
    since = t0
    while True:
        counts: list[int] = []
        for c in groups:
            c.send(cmd="status")
            counts += c.wait("status", 30)["connected_per_member"]
        now = time.monotonic()
        if counts != last:
            last, since = counts, now
        elif now - since >= quiet or now - t0 > timeout:
            return {
                "links_per_agent": {"min": min(counts), "max": max(counts), "writer": counts[0]},
                "settled": now - since >= quiet,
                "settle_s": round(now - t0, 2),
            }
        time.sleep(0.5)


def _phase_args(phase: str, n: int, rate: float, low: tuple[int, float]) -> tuple[str, int, float]:
    return {"burst": ("b", n, 0.0), "paced": ("p", n, rate), "paced_low": ("q", *low)}[phase]


def warm_up(
    label: str,
    writer: Child,
    receivers: list[Child],
    kids: list[Child],
    ports: list[int],
    tmp: Path,
    prog: Progress,
    replicate: int,
    count_received: bool,
) -> None:
    """A few updates through the system before measuring: every replica is reached once (for
    crdtsync at 32 or 64 agents, the overlay beyond the seed is formed and used)."""
    run_phase(
        f"{label} warm-up",
        writer,
        receivers,
        kids,
        ports,
        "w",
        20,
        0,
        tmp,
        prog,
        replicate,
        count_received,
    )


_MEDIAN_KEYS = (
    "writer_s",
    "all_delivered_s",
    "updates_per_s",
    "msgs_per_update",
    "payload_bytes_per_update",
    "wire_bytes_per_update",
    "tcp_segments_per_update",
    "cpu_s_all_processes",
    "cpu_ms_per_update",
    "durable_on_all_s",
)


def combine(
    runs: list[dict[str, Any]], raws: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Repeated runs of one system: the median of each scalar figure, latency percentiles over
    the pooled (update, receiver) pairs of every run, and each run's headline figures."""
    out: dict[str, Any] = {
        k: v for k, v in runs[0].items() if k not in ("burst", "paced", "paced_low")
    }
    raw: dict[str, Any] = {}
    out["runs"] = len(runs)
    for phase in (ph for ph in PHASES if ph in runs[0]):
        figs = [r[phase] for r in runs]
        pairs = [x for rw in raws for x in rw[phase]["pairs"]]
        per_update = [x for rw in raws for x in rw[phase]["per_update"]]
        merged = dict(figs[0])
        for k in _MEDIAN_KEYS:
            vals = [f[k] for f in figs if f.get(k) is not None]
            if vals:
                merged[k] = round(statistics.median(vals), 4)
        merged["latency_ms"] = summary(pairs, 3)
        merged["latency_all_receivers_ms"] = summary(per_update, 3)
        merged["latency_cdf_ms"] = cdf_points(pairs)
        merged["each_run"] = [
            {
                "updates_per_s": f["updates_per_s"],
                "p50_ms": f["latency_ms"]["p50"],
                "p99_ms": f["latency_ms"]["p99"],
                "load_avg_1min": f.get("load_avg_1min"),
            }
            for f in figs
        ]
        out[phase] = merged
        raw[phase] = {"pairs": pairs}
    return out, raw


def verdict(results: dict[str, Any], label: str = "crdtsync") -> dict[str, Any]:
    me, hub = results.get(label), results.get(HUB)
    if not me or not hub:
        return {}
    b, hb, p, hp = me["burst"], hub["burst"], me["paced"], hub["paced"]
    return {
        "burst_updates_per_s_ratio": {
            "value": ratio(b["updates_per_s"], hb["updates_per_s"]),
            "target": ">= 5",
            "met": b["updates_per_s"] >= 5 * hb["updates_per_s"],
        },
        "burst_p99_ratio": {
            "value": ratio(b["latency_ms"]["p99"], hb["latency_ms"]["p99"]),
            "target": "< 1",
            "met": b["latency_ms"]["p99"] < hb["latency_ms"]["p99"],
        },
        "paced_p99_ratio": {
            "value": ratio(p["latency_ms"]["p99"], hp["latency_ms"]["p99"]),
            "target": "<= 1",
            "met": p["latency_ms"]["p99"] <= hp["latency_ms"]["p99"],
        },
        "paced_low_p99_ratio": {
            "value": ratio(
                me["paced_low"]["latency_ms"]["p99"], hub["paced_low"]["latency_ms"]["p99"]
            ),
            "target": "<= 1 (same target, at a rate the hub sustains)",
            "met": me["paced_low"]["latency_ms"]["p99"] <= hub["paced_low"]["latency_ms"]["p99"],
        },
    }


def plot(
    results: dict[str, Any],
    raw: dict[str, Any],
    n: int,
    rate: float,
    low_rate: float,
    receivers: int,
    runs: int,
) -> Any:
    plt = pyplot()
    labels = list(results)
    colors = {
        "crdtsync": "tab:blue",
        "crdtsync-wan": "tab:cyan",
        HUB: "tab:orange",
        "pycrdt-websocket-noecho": "tab:red",
        "y-websocket-server": "tab:green",
        "hocuspocus": "tab:purple",
    }
    fig, ax = plt.subplots(2, 3, figsize=(15, 8))
    bar_colors = [colors.get(s, "gray") for s in labels]
    for a, key, fmt, title, ylabel in (
        (
            ax[0][0],
            "updates_per_s",
            "%.0f",
            f"burst: updates/s until all receivers have all {n}",
            "updates/s (higher is better)",
        ),
        (
            ax[0][1],
            "msgs_per_update",
            "%.3g",
            "burst: websocket messages per update",
            "messages, all processes (lower is better)",
        ),
        (
            ax[0][2],
            "wire_bytes_per_update",
            "%.0f",
            "burst: TCP payload bytes per update",
            "bytes, all connections (lower is better)",
        ),
    ):
        bars = a.bar(labels, [results[s]["burst"][key] for s in labels], color=bar_colors)
        a.bar_label(bars, fmt=fmt)
        a.tick_params(axis="x", labelrotation=25)
        a.set_title(title)
        a.set_ylabel(ylabel)
    for a, phase, title in (
        (ax[1][0], "burst", "burst"),
        (ax[1][1], "paced", f"paced at {rate:g}/s"),
        (ax[1][2], "paced_low", f"paced at {low_rate:g}/s"),
    ):
        for s in labels:
            v = sorted(raw.get(s, {}).get(phase, {}).get("pairs", []))
            if v:
                ys = [(i + 1) / len(v) for i in range(len(v))]
            else:  # re-plotting from the JSON: its downsampled CDF
                pts = results[s][phase].get("latency_cdf_ms", [])
                v, ys = [x for x, _ in pts], [y for _, y in pts]
            if not v:
                continue
            p99 = results[s][phase]["latency_ms"]["p99"]
            a.plot(
                [max(x, 1e-3) for x in v],
                ys,
                label=f"{s} (p99 {p99:.1f} ms)",
                color=colors.get(s, "gray"),
            )
        a.set_xscale("log")
        a.set_xlabel("latency write -> receiver, ms (log)")
        a.set_ylabel("fraction of (update, receiver) pairs")
        a.set_title(f"{title}: latency CDF")
        a.axhline(0.99, color="black", lw=0.5, ls=":")
        a.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"fan-out: 1 writer -> {receivers} receivers, one process each on 127.0.0.1, same workload for "
        f"every system ({runs} run{'s' if runs > 1 else ''} each, interleaved)",
        fontsize=11,
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument(
        "--updates", type=int, default=None, help="map sets per phase [5000; quick 2000]"
    )
    p.add_argument("--rate", type=float, default=1000.0, help="paced phase writes/s")
    p.add_argument("--low-rate", type=float, default=200.0, help="paced_low phase writes/s")
    p.add_argument(
        "--low-updates", type=int, default=None, help="map sets of the paced_low phase [1000]"
    )
    p.add_argument("--agents", type=int, default=8)
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated: " + ", ".join(SYSTEMS) + " ('' for none: the scale runs only)",
    )
    p.add_argument(
        "--scale",
        default=None,
        help="agent counts of the runs with clients as tasks in a few processes, comma-separated "
        "('' for none) [full 32,64; quick 32; tiny 6]",
    )
    p.add_argument(
        "--scale-systems", default=",".join(SCALE_SYSTEMS), help="systems of the scale runs"
    )
    p.add_argument("--procs", type=int, default=4, help="receiver processes of the scale runs [4]")
    p.add_argument(
        "--replot", default=None, metavar="JSON", help="only redraw fanout.png from a result file"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs of every system, interleaved (A B C A B C ...) [full 3, else 1]",
    )
    args = p.parse_args(argv)
    size = size_of(args)
    repeat = args.repeat or (3 if size == "full" else 1)
    if args.replot:
        old = json.loads(Path(args.replot).read_text())
        st = old["setting"]
        out = Path(args.plot_dir or Path(args.replot).parent) / "fanout.png"
        fig = plot(
            old["systems"],
            {},
            st["updates"],
            st["paced_rate"],
            st["low_rate"],
            st["agents"] - 1,
            st.get("repeat", 1),
        )
        save_figure(fig, out)
        if old.get("scale"):
            save_figure(plot_scale(old["scale"]), out.parent / "fanout_scale.png")
        print(out)
        return 0
    n = args.updates or SIZES[size]
    prog = Progress("fanout")
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-fanout-"))
    results: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    runs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    scale: dict[str, Any] = {}
    low = (args.low_updates or min(n, LOW[size]), args.low_rate)
    try:
        # Interleaved, so that a change in the machine's load hits every system alike.
        for r in range(repeat):
            for label in [x for x in args.systems.split(",") if x.strip()]:
                if label in PEERS:
                    one = run_hub(
                        label, args.agents, n, args.rate, low, tmp / f"r{r}", prog, args.agents
                    )
                else:
                    one = run_crdtsync(
                        label,
                        SYSTEMS.get(label) or {},
                        args.agents,
                        n,
                        args.rate,
                        low,
                        tmp / f"r{r}",
                        prog,
                    )
                runs.setdefault(label, []).append(one)
        for label, got in runs.items():
            results[label], raw[label] = combine([g[0] for g in got], [g[1] for g in got])
        scale_counts = (
            SCALE[size]
            if args.scale is None
            else [int(x) for x in args.scale.split(",") if x.strip()]
        )
        n_scale = args.updates or SCALE_UPDATES[size]
        low_scale = (max(1, n_scale // 2), low[1])
        for count in scale_counts:
            at: dict[str, Any] = {}
            for label in [x for x in args.scale_systems.split(",") if x.strip()]:
                where = tmp / f"s{count}"
                try:  # a failure here is reported in the result, the 8-agent runs are kept
                    if label in PEERS:
                        one = run_hub(
                            label,
                            count,
                            n_scale,
                            args.rate,
                            low_scale,
                            where,
                            prog,
                            args.procs,
                            SCALE_PHASES,
                        )
                    else:
                        one = run_crdtsync_groups(
                            label,
                            SYSTEMS.get(label) or SCALE_VARIANTS.get(label) or {},
                            count,
                            n_scale,
                            args.rate,
                            low_scale,
                            where,
                            prog,
                            args.procs,
                            SCALE_PHASES,
                        )
                except (RuntimeError, TimeoutError, OSError) as exc:
                    at[label] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                    continue
                at[label] = combine([one[0]], [one[1]])[0]
            scale[str(count)] = {
                "agents": count,
                "updates": n_scale,
                "low_updates": low_scale[0],
                "receiver_processes": args.procs,
                "systems": at,
                "vs_strongest": verdict_strongest(at),
            }
    finally:
        prog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "benchmark": "fanout",
        "size": size,
        "machine": machine(),
        "setting": {
            "agents": args.agents,
            "updates": n,
            "repeat": repeat,
            "paced_rate": args.rate,
            "low_rate": args.low_rate,
            "low_updates": args.low_updates or min(n, LOW[size]),
            "host": "127.0.0.1",
        },
        "systems": results,
        "vs_hub": verdict(results),
        "vs_hub_crdtsync_wan": verdict(results, "crdtsync-wan"),
        "vs_strongest": verdict_strongest(results),
        "vs_strongest_crdtsync_wan": verdict_strongest(results, "crdtsync-wan"),
        "scale": scale,
        "node_peers": describe(),
        "issue_author_hub": ISSUE_HUB,
    }
    plots = {
        "fanout.png": lambda: plot(
            results, raw, n, args.rate, args.low_rate, args.agents - 1, repeat
        )
    }
    if scale:
        plots["fanout_scale.png"] = lambda: plot_scale(scale)
    finish(report, args.out, plot_dir=args.plot_dir, plots=plots)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
