"""Gossip through one MQTT broker (mosquitto) vs the websocket mesh vs the pycrdt-websocket hub.

Two parts, each against its peers in the same run:

* ``compare``: the fan-out workload of fanout.py (one writer, seven receivers, each write its
  own transaction stamped with ``time.time_ns()``; phases ``burst``, ``paced`` at ``--rate``,
  ``paced_low`` at ``--low-rate``) for three systems of 8 processes each: crdtsync agents on
  one mosquitto (``crdtsync-broker``), crdtsync agents in a websocket mesh (``crdtsync``) and
  the pycrdt-websocket hub. Figures as fanout.py (updates/s, latency p50/p99 over every
  (update, receiver) pair, CPU ms per update over every process), plus for the broker: what
  the agents published per write (``publishes_per_write``: pushes, acks, link frames and
  presence alike; ``push_publishes_per_write``: the broadcast pushes alone) and what the
  broker delivered to them per write (``deliveries_per_write``). mosquitto's own CPU is
  counted in ``cpu_ms_per_update`` (it is one of the system's processes).
* ``scale``: N = 8, 32, 128 agents (``--scale``) as asyncio agents in a few processes
  (swarm.py), all on one mosquitto: the mesh writes ``--scale-rate`` keys per second in
  total (each agent its share, one absolute schedule) for ``--scale-seconds``; every agent
  records the arrival of every other agent's key. Latency p50/p99 over every (write,
  receiver) pair, publishes and deliveries per write, vs N.

Beside the scale curve, ``simulated_mesh``: the websocket mesh's curve for the same N and
write rate from the deterministic simulator (gossip_sim.py: ``GossipConfig.lan()``, as a
websocket agent uses, 0.5 ms links, no loss, virtual time, no CPU cost modelled), so it is
the protocol's floor for a mesh of N agents, not a measurement of N real processes: its
messages per write are agent-to-agent frames (what a broker delivery is to an agent), its
latency per (write, receiver) pair.

Targets (issue #14): at N = 128 through one broker, p99 under 100 ms at 100 writes/s on this
machine, and one publish per write (the broker does the fan-out). Prints one JSON object;
``--plot-dir`` draws ``broker.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Child,
    Progress,
    children,
    common_args,
    cpu_seconds,
    finish,
    free_ports,
    machine,
    pyplot,
    ratio,
    size_of,
    summary,
    wait_mesh,
    wait_with_progress,
)
from fanout import HUB, run_crdtsync, run_hub, run_phase
from gossip_sim import run_scenario

from crdtsync.gossip import GossipConfig

BROKER = "crdtsync-broker"
SIZES = {"full": 2000, "quick": 1000, "tiny": 100}
LOW = {"full": 1000, "quick": 500, "tiny": 50}
SCALE = {"full": "8,32,128", "quick": "8,32,128", "tiny": "4,8"}
SCALE_SECONDS = {"full": 10.0, "quick": 5.0, "tiny": 2.0}
#: MQTT keepalive of the swarm agents: dozens of agents share one starved event loop on a
#: loaded 2-core machine, and the broker's 1.5 x keepalive without a packet would otherwise
#: fire Last Wills of agents that are only slow.
KEEPALIVE = 60
#: swarm processes per N (asyncio agents share them)
PROCS = {3: 1, 4: 1, 6: 2, 8: 2, 32: 4}
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


class Broker:
    """A mosquitto of our own on 127.0.0.1 (Nagle off, no queue or in-flight limits)."""

    def __init__(self, workdir: Path) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        workdir.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_type error",
            "set_tcp_nodelay true",
            "max_queued_messages 0",
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        conf = workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _mqtt_totals(kids: list[Child]) -> dict[str, int]:
    for k in kids:
        k.send(cmd="stats")
    out: dict[str, int] = {}
    for k in kids:
        for key, v in k.wait("stats", 30).get("mqtt", {}).items():
            out[key] = out.get(key, 0) + v
    return out


def _per_write(after: dict[str, int], before: dict[str, int], n: int) -> dict[str, Any]:
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delivered = sum(
        d.get(k, 0) for k in ("received", "broadcasts_in", "broadcasts_unused", "garbage")
    )
    return {
        "publishes_per_write": round(d.get("published", 0) / n, 3),
        "push_publishes_per_write": round(d.get("broadcast_pushes", 0) / n, 3),
        "ack_publishes_per_write": round(d.get("broadcast_acks", 0) / n, 3),
        "deliveries_per_write": round(delivered / n, 3),
        # broadcasts a receiver handed to its core at once, on average (one loop turn's)
        "broadcasts_per_turn": round(
            (d.get("broadcasts_in", 0) + d.get("broadcasts_unused", 0))
            / max(1, d.get("broadcast_turns", 0)),
            2,
        )
        if d.get("broadcast_turns")
        else None,
        # link frames (anti-entropy, repairs, membership) the agents sent, by message type
        "link_frames_per_write": {
            k[5:]: round(v / n, 3) for k, v in sorted(d.items()) if k.startswith("sent_") and v
        },
    }


def run_broker(
    agents: int, n: int, rate: float, low: tuple[int, float], tmp: Path, prog: Progress
) -> dict[str, Any]:
    """fanout.py's three phases with 8 agents (one process each) on one mosquitto."""
    broker = Broker(tmp / "mosquitto")
    out: dict[str, Any] = {"topology": "8 agent processes, one mosquitto"}
    try:
        with children() as kids:
            for i in range(agents):
                args = ["--name", f"a{i}", "--data", str(tmp / BROKER / f"a{i}")]
                args += ["--broker", broker.url, "--shard", "bench", "--seed", str(i)]
                kids.append(Child("crdtsync", args, name=f"{BROKER}/a{i}"))
            out["gossip"] = [k.wait("ready", 60).get("gossip") for k in kids][0]
            wait_mesh(kids, agents - 1)
            time.sleep(1.0)
            writer, receivers = kids[0], kids[1:]
            for phase, prefix, count, r in (
                ("burst", "b", n, 0.0),
                ("paced", "p", n, rate),
                ("paced_low", "q", low[0], low[1]),
            ):
                m0, c0 = _mqtt_totals(kids), broker.cpu_s()
                figs, _ = run_phase(
                    BROKER,
                    writer,
                    receivers,
                    kids,
                    [broker.port],
                    prefix,
                    count,
                    r,
                    tmp,
                    prog,
                    True,
                )
                m1, c1 = _mqtt_totals(kids), broker.cpu_s()
                figs.update(_per_write(m1, m0, count))
                figs["broker_cpu_s"] = round(c1 - c0, 3)
                figs["cpu_ms_per_update"] = round(
                    figs["cpu_ms_per_update"] + 1000 * (c1 - c0) / count, 4
                )
                figs.pop("latency_cdf_ms", None)
                out[phase] = figs
    finally:
        broker.stop()
    return out


def _system_cpu_s(pid: int) -> float:
    """System (kernel) CPU seconds a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[12]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def _stalls(
    done: list[dict[str, Any]], late: list[tuple[float, float]], start_ns: int
) -> dict[str, Any]:
    """The swarms' loop stalls and collections (swarm.py's _Stalls), and the arrivals over
    100 ms counted by the second (after the first write) their write was made in."""
    t0 = start_ns / 1e9
    by_second: dict[int, int] = {}
    for written, _ms in late:
        sec = int(written - t0)
        by_second[sec] = by_second.get(sec, 0) + 1
    gcs: dict[str, dict[str, float]] = {}
    for d in done:
        for gen, g in d.get("gc", {}).items():
            tot = gcs.setdefault(gen, {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
            tot["count"] += g["count"]
            tot["total_ms"] = round(tot["total_ms"] + g["total_ms"], 1)
            tot["max_ms"] = max(tot["max_ms"], g["max_ms"])
    lags = [d["loop_lag_ms"] for d in done if "loop_lag_ms" in d]
    worst = sorted(
        ((round(t - t0, 2), ms) for d in done for t, ms in d.get("worst_stalls", [])),
        key=lambda x: -x[1],
    )[:10]
    compactions = sorted((round(t - t0, 2), ms) for d in done for t, ms in d.get("compactions", []))
    return {
        "late_arrivals_by_second": dict(sorted(by_second.items())),
        "loop_lag_p99_ms": max((x["p99"] for x in lags), default=None),
        "loop_lag_max_ms": max((x["max"] for x in lags), default=None),
        "loop_stalls_over_100ms": sum(x["over_100ms"] for x in lags),
        "stall_cpu_share": [d.get("stall_cpu_share") for d in done],
        "worst_stalls_s_ms": worst,
        # the agents' automatic compactions: (s after the first write it began, ms it took)
        "compactions": len(compactions),
        "compactions_s_ms": compactions,
        "gc": gcs,
    }


def run_scale(
    n_agents: int,
    rate: float,
    seconds: float,
    tmp: Path,
    prog: Progress,
    remote_cap: float | None = None,
) -> dict[str, Any]:
    """N asyncio agents in a few processes on one mosquitto; see the module docstring."""
    broker = Broker(tmp / f"mosquitto-{n_agents}")
    procs = PROCS.get(n_agents, 4)
    total = int(rate * seconds)
    try:
        with children() as kids:
            names = [f"s{i}" for i in range(n_agents)]
            groups = [names[p::procs] for p in range(procs)]
            for p, group in enumerate(groups):
                url = f"{broker.url}?keepalive={KEEPALIVE}"
                args = ["--broker", url, "--names", ",".join(group)]
                args += ["--data", str(tmp / f"swarm-{n_agents}-{p}")]
                if remote_cap is not None:
                    args += ["--remote-durability-cap", str(remote_cap)]
                kids.append(Child("swarm", args, name=f"swarm{n_agents}/{p}"))
            t_start = time.monotonic()
            for k in kids:
                k.wait("ready", 60 + 4 * n_agents)
            t0 = time.monotonic()
            while True:  # every agent sees every other one present (subscriptions in place)
                for k in kids:
                    k.send(cmd="status")
                st = [k.wait("status", 60) for k in kids]
                if all(s["present_min"] >= n_agents - 1 for s in st):
                    break
                if time.monotonic() - t0 > 30 + n_agents:
                    break  # broadcasts need subscriptions only: run, and report what was seen
                time.sleep(0.5)
            seen = {
                "present_min": min(s["present_min"] for s in st),
                "linked_min": min(s["linked_min"] for s in st),
                "startup_s": round(time.monotonic() - t_start, 1),
            }
            settle = 2.0 + n_agents / 16  # the overlay's last dials and prunes
            wait_with_progress(prog, f"N={n_agents} settle", settle)
            m0 = _mqtt_totals(kids)
            c0 = [cpu_seconds(k.pid) for k in kids] + [broker.cpu_s()]
            s0 = [_system_cpu_s(k.pid) for k in kids] + [_system_cpu_s(broker.proc.pid)]
            start_ns = time.time_ns() + 1_000_000_000
            outs = []
            for p, k in enumerate(kids):
                out = tmp / f"scale-{n_agents}-{p}.json"
                outs.append(out)
                # the swarm's agents are names[p::procs]: global indices p, p+procs, ...
                k.send(
                    cmd="run",
                    shard="bench",
                    total=total,
                    rate=rate,
                    n_total=n_agents,
                    start_ns=start_ns,
                    out=str(out),
                    timeout=30 + seconds + n_agents,
                    stride=procs,
                    offset=p,
                )
            task = prog.task(f"scale N={n_agents}", len(kids))
            done = []
            for i, k in enumerate(kids):
                done.append(k.wait("done", 120 + seconds * 2 + n_agents))
                prog.update(task, i + 1)
            time.sleep(1.0)
            m1 = _mqtt_totals(kids)
            c1 = [cpu_seconds(k.pid) for k in kids] + [broker.cpu_s()]
            s1 = [_system_cpu_s(k.pid) for k in kids] + [_system_cpu_s(broker.proc.pid)]
            lat: list[float] = []
            late: list[tuple[float, float]] = []
            for out in outs:
                got = json.loads(out.read_text())
                lat.extend(got["latency_ms"])
                late.extend(got.get("late", []))
    finally:
        broker.stop()
    expected = total * (n_agents - 1)
    cpu = sum(c1) - sum(c0)
    return {
        "agents": n_agents,
        "processes": procs,
        "keepalive_s": KEEPALIVE,
        "remote_durability_cap": remote_cap,
        # before the run: the fewest agents any agent saw present, the fewest links any held
        **seen,
        "writes": total,
        "rate": rate,
        "latency_ms": summary(lat, 3),
        "arrivals": len(lat),
        "expected_arrivals": expected,
        "missing": sum(d["missing"] for d in done),
        # broker connections opened, every agent (1 each when none was lost)
        "connection_attempts": sum(d.get("connection_attempts", 0) for d in done),
        "log": {k: v for d in done for k, v in d.get("log", {}).items()},
        **_per_write(m1, m0, total),
        # where the tail comes from: event-loop stalls and garbage collections per process,
        # and when the arrivals over 100 ms were written (seconds after the first write)
        "stalls": _stalls(done, late, start_ns),
        "cpu_s_all_processes": round(cpu, 3),
        "system_cpu_s": round(sum(s1) - sum(s0), 3),
        "broker_cpu_s": round(c1[-1] - c0[-1], 3),
        "cpu_ms_per_write": round(1000 * cpu / total, 3),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


#: one-way link latency of the simulated websocket mesh (loopback-like), s
SIM_LINK_S = 0.0005
#: seconds of writes simulated per N (message mix and latency are steady well before)
SIM_SECONDS = {"full": 2.0, "quick": 1.0, "tiny": 0.5}


def run_simulated(n_agents: int, rate: float, seconds: float, prog: Progress) -> dict[str, Any]:
    """The websocket mesh of ``n_agents`` under the scale workload, in the simulator."""
    task = prog.task(f"simulated mesh N={n_agents}", 1)
    r = run_scenario(
        agents=n_agents,
        latency=SIM_LINK_S,
        rate=rate,
        duration=seconds,
        loss=0.0,
        seed=1,
        config=GossipConfig.lan(),
        warmup=10.0,
    )
    prog.update(task, 1)
    keep = (
        "agents",
        "writes",
        "converged_writes",
        "msgs_per_write",
        "pair_latency_p50_ms",
        "pair_latency_p99_ms",
        "pair_arrivals",
        "latency_median_ms",
        "latency_p99_ms",
        "overlay_mode",
        "overlay_diameter_hops",
        "messages_by_type",
        "wall_s",
    )
    return {"link_latency_ms": SIM_LINK_S * 1000, "rate": rate, **{k: r[k] for k in keep}}


def _ratios(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    me = results.get(BROKER)
    for peer in ("crdtsync", HUB):
        other = results.get(peer)
        if not me or not other:
            continue
        key = "vs_websocket_mesh" if peer == "crdtsync" else "vs_hub"
        out[key] = {
            f"{phase}_{fig}_ratio": ratio(get(me[phase]), get(other[phase]))
            for phase in ("burst", "paced", "paced_low")
            for fig, get in (
                ("updates_per_s", lambda f: f["updates_per_s"]),
                ("p50", lambda f: f["latency_ms"]["p50"]),
                ("p99", lambda f: f["latency_ms"]["p99"]),
                ("cpu_per_update", lambda f: f["cpu_ms_per_update"]),
            )
        }
    return out


def _vs_sim(scale: list[dict[str, Any]], sim: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per N: the broker's figures over the simulated mesh's (messages per write: broker
    deliveries vs agent-to-agent frames; latency: measured vs the simulator's floor)."""
    out = []
    by_n = {r["agents"]: r for r in sim}
    for s in scale:
        r = by_n.get(s["agents"])
        if r is None:
            continue
        out.append(
            {
                "agents": s["agents"],
                "deliveries_per_write": s["deliveries_per_write"],
                "sim_msgs_per_write": r["msgs_per_write"],
                "messages_ratio": ratio(s["deliveries_per_write"], r["msgs_per_write"]),
                "publishes_per_write": s["publishes_per_write"],
                "p99_ms": s["latency_ms"].get("p99"),
                "sim_p99_ms": r["pair_latency_p99_ms"],
            }
        )
    return out


def _targets(scale: list[dict[str, Any]]) -> dict[str, Any]:
    big = max(scale, key=lambda s: s["agents"]) if scale else None
    if big is None:
        return {}
    return {
        "agents": big["agents"],
        "rate": big["rate"],
        "p99_ms": {
            "value": big["latency_ms"]["p99"],
            "target": "< 100 at N = 128, 100 writes/s",
            "met": big["latency_ms"]["p99"] < 100 and big["agents"] >= 128,
        },
        "push_publishes_per_write": {
            "value": big["push_publishes_per_write"],
            "target": "= 1",
            "met": big["push_publishes_per_write"] <= 1.0,
        },
        "missing": big["missing"],
    }


def plot(
    results: dict[str, Any],
    scale: list[dict[str, Any]],
    sim: list[dict[str, Any]] | None = None,
    baseline: list[dict[str, Any]] | None = None,
) -> Any:
    """The 8-agent comparison (or, without it, CPU per write vs N), latency vs N and messages
    per write vs N; ``baseline``: an earlier run's scale curve (``--baseline``), drawn faint."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    systems = [s for s in (BROKER, "crdtsync", HUB) if s in results]
    ax = axes[0]
    if systems:
        for i, phase in enumerate(("burst", "paced", "paced_low")):
            vals = [results[s][phase]["latency_ms"]["p99"] for s in systems]
            ax.bar([j + i * 0.27 for j in range(len(systems))], vals, 0.27, label=f"{phase} p99")
        ax.set_xticks([j + 0.27 for j in range(len(systems))], systems, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("latency p99 (ms)")
        ax.set_title("8 agents: p99 per phase")
        ax.legend(fontsize=7)
    elif scale:
        for label, curve, style in (("this run", scale, "o-"), ("baseline", baseline, "x:")):
            if curve:
                cn = [s["agents"] for s in curve]
                ax.plot(cn, [s["cpu_ms_per_write"] for s in curve], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("agents on one broker")
        ax.set_ylabel("CPU ms per write (all processes + broker)")
        ax.set_title("CPU per write vs N")
        ax.legend(fontsize=7)
    ax = axes[1]
    ns = [s["agents"] for s in scale]
    if scale:
        ax.plot(ns, [s["latency_ms"]["p50"] for s in scale], "o-", label="p50")
        ax.plot(ns, [s["latency_ms"]["p99"] for s in scale], "o-", label="p99")
        if baseline:
            bn = [s["agents"] for s in baseline]
            ax.plot(bn, [s["latency_ms"]["p50"] for s in baseline], "x:", label="baseline p50")
            ax.plot(bn, [s["latency_ms"]["p99"] for s in baseline], "x:", label="baseline p99")
        if sim:
            sn = [r["agents"] for r in sim]
            ax.plot(sn, [r["pair_latency_p50_ms"] for r in sim], "s--", label="ws mesh sim p50")
            ax.plot(sn, [r["pair_latency_p99_ms"] for r in sim], "s--", label="ws mesh sim p99")
        ax.axhline(100, color="red", ls="--", lw=0.8, label="target p99")
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("agents on one broker")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"scale: {scale[0]['rate']:g} writes/s in total")
        ax.legend(fontsize=7)
    ax = axes[2]
    if scale:
        ax.plot(ns, [s["push_publishes_per_write"] for s in scale], "o-", label="push publishes")
        ax.plot(ns, [s["publishes_per_write"] for s in scale], "o-", label="all publishes")
        if baseline:
            ax.plot(
                [s["agents"] for s in baseline],
                [s["publishes_per_write"] for s in baseline],
                "x:",
                label="baseline: all publishes",
            )
        ax.plot(ns, [s["deliveries_per_write"] for s in scale], "o-", label="broker deliveries")
        if sim:
            ax.plot(
                [r["agents"] for r in sim],
                [r["msgs_per_write"] for r in sim],
                "s--",
                label="ws mesh sim: frames",
            )
        ax.plot(ns, [n - 1 for n in ns], ":", color="grey", label="N-1 (one per peer)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("agents on one broker")
        ax.set_ylabel("messages per write")
        ax.set_title("messages per write vs N")
        ax.legend(fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument("--updates", type=int, default=None, help="writes per phase [2000]")
    p.add_argument("--rate", type=float, default=1000.0, help="paced phase writes/s")
    p.add_argument("--low-rate", type=float, default=100.0, help="paced_low phase writes/s")
    p.add_argument("--systems", default=f"{BROKER},crdtsync,{HUB}")
    p.add_argument("--scale", default=None, help="agent counts of the scale curve [8,32,128]")
    p.add_argument("--scale-rate", type=float, default=100.0, help="writes/s, whole mesh")
    p.add_argument("--scale-seconds", type=float, default=None)
    p.add_argument("--no-sim", action="store_true", help="skip the simulated websocket curve")
    p.add_argument(
        "--remote-durability-cap",
        type=float,
        default=None,
        help="A/B: the swarm agents' REMOTE_DURABILITY_CAP in seconds (0.05: no stretch)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="JSON report (--out) of an earlier run: its scale curve is plotted beside this one",
    )
    args = p.parse_args(argv)
    size = size_of(args)
    n = args.updates or SIZES[size]
    low = (min(n, LOW[size]), args.low_rate)
    baseline = json.loads(Path(args.baseline).read_text())["scale"] if args.baseline else None
    prog = Progress("broker")
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-broker-"))
    results: dict[str, Any] = {}
    scale: list[dict[str, Any]] = []
    sim: list[dict[str, Any]] = []
    try:
        for label in [s for s in args.systems.split(",") if s]:
            if label == BROKER:
                results[label] = run_broker(8, n, args.rate, low, tmp / label, prog)
            elif label == HUB:
                results[label] = run_hub(HUB, 8, n, args.rate, low, tmp / label, prog, 8)[0]
            else:
                results[label] = run_crdtsync(label, {}, 8, n, args.rate, low, tmp / label, prog)[0]
            for phase in ("burst", "paced", "paced_low"):
                results[label][phase].pop("latency_cdf_ms", None)
        seconds = args.scale_seconds or SCALE_SECONDS[size]
        for count in (int(x) for x in (args.scale or SCALE[size]).split(",") if x):
            scale.append(
                run_scale(count, args.scale_rate, seconds, tmp, prog, args.remote_durability_cap)
            )
            if not args.no_sim:
                sim.append(run_simulated(count, args.scale_rate, SIM_SECONDS[size], prog))
    finally:
        prog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "benchmark": "broker",
        "size": size,
        "machine": machine(),
        "setting": {"agents": 8, "updates": n, "paced_rate": args.rate, "low": list(low)},
        "systems": results,
        "ratios": _ratios(results),
        "scale": scale,
        "simulated_mesh": sim,
        "scale_vs_simulated_mesh": _vs_sim(scale, sim),
        "baseline": {"file": args.baseline, "scale": baseline} if baseline else None,
        "targets": _targets(scale),
    }
    finish(
        report,
        args.out,
        plot_dir=args.plot_dir,
        plots={"broker.png": lambda: plot(results, scale, sim, baseline)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
