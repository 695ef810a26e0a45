"""Hostile peers (issue #11): an honest peer's latency before and during an attack.

Three processes on loopback: the *victim* (a crdtsync agent, ``nodes.py crdtsync``), an
*honest* peer of it (another agent), and an *attacker* (this script with ``--attack``) that
speaks the gossip protocol with raw websockets. The honest peer probes the victim at a steady
rate: it writes one key and waits for ``shard.replicated(1)``, i.e. until the victim has
applied, persisted and acknowledged it (a round trip through the victim's event loop and
store). The p99 of those round trips is measured first without, then with the attack; the
figure is their ratio (both measured in this run: the machine is shared and noisy).

The attack runs every shape of the issue's table that a peer can send at once, each
connection redialling as soon as it is cut (reconnect-after-cut):

* ``flood``: 4 connections, each sending Summary messages just under the flood limit;
* ``silent``: connections that never say Hello (held open until the victim closes them);
* ``shards``: one peer creating a new shard per push (the shard-creation quota);
* ``fans``: one peer pushing 32-client fans at one place into one shard (each within
  ``max_fan``, together quadratic: the CPU budget);
* ``chunks``: one peer starting DiffChunk transfers it never completes (the transfer cap).

Prints one JSON object: ``honest`` latency summaries before/during, ``ratios`` (p99 and p50,
during / before), and what the attacker did and how its connections ended (close codes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import Child, Progress, children, common_args, finish, machine, ratio, size_of
from benchlib import summary as lat_summary

#: Seconds of probing before and during the attack; probes per second; silent connections.
SIZES = {
    "tiny": {"seconds": 4.0, "rate": 10.0, "silent": 50},
    "quick": {"seconds": 15.0, "rate": 20.0, "silent": 200},
    "full": {"seconds": 40.0, "rate": 20.0, "silent": 400},
}


# -- the attacker (a separate process) ---------------------------------------------------------


def _uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def _fan(n: int, first: int) -> bytes:
    """``n`` one-value items of clients first.. at origin (1, 0) (tests/hostile.py)."""
    item = b"\x88" + _uint(1) + b"\x00" + b"\x01\x7d\x00"
    sections = [_uint(1) + _uint(first + i) + _uint(0) + item for i in range(n)]
    return _uint(n) + b"".join(sections) + b"\x00"


def _root_item() -> bytes:
    root = b"\x01" + _uint(4) + b"root"
    return _uint(1) + _uint(1) + _uint(1) + _uint(0) + b"\x08" + root + b"\x01\x7d\x00" + b"\x00"


async def _peer(
    url: str, name: str, until: float, stats: Counter[str], body: Any, mesh: str = "default"
) -> None:
    """Connect as agent ``name``, say Hello, run ``body(send)``; redial whenever cut."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from crdtsync import wire
    from crdtsync.messages import PROTOCOL_VERSION, Hello

    while time.monotonic() < until:
        try:
            async with connect(url, proxy=None, max_size=None, compression=None) as ws:
                stats[f"{name}.connected"] += 1
                hello = Hello(PROTOCOL_VERSION, mesh, name, None, (), 0, random.getrandbits(62))
                await ws.send(wire.encode(hello))

                async def drain() -> None:
                    async for _ in ws:
                        pass

                reader = asyncio.create_task(drain())
                try:
                    await body(ws, wire, stats, until)
                finally:
                    reader.cancel()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else "none"
            stats[f"{name}.closed.{code}"] += 1
        except InvalidStatus as exc:  # over the connection cap: an HTTP answer, no upgrade
            stats[f"{name}.refused.{exc.response.status_code}"] += 1
        except OSError:
            stats[f"{name}.refused"] += 1
        await asyncio.sleep(0.05)


async def _flood(ws: Any, wire: Any, stats: Counter[str], until: float) -> None:
    from crdtsync.messages import Summary

    frame = wire.encode(Summary(bytes(16), 0))
    while time.monotonic() < until:
        for _ in range(190):  # ~1,900/s: just under the default flood_rate of 2,000/s
            await ws.send(frame)
        stats["flood.sent"] += 190
        await asyncio.sleep(0.1)


async def _shards(ws: Any, wire: Any, stats: Counter[str], until: float) -> None:
    from crdtsync.messages import Push

    update = _root_item()
    i = 0
    while time.monotonic() < until:
        i += 1
        await ws.send(wire.encode(Push(f"spam-{i}-{random.getrandbits(30)}", (update,), seq=1)))
        stats["shards.sent"] += 1
        if i % 50 == 0:
            await asyncio.sleep(0.05)


async def _fans(ws: Any, wire: Any, stats: Counter[str], until: float) -> None:
    from crdtsync.messages import Push

    await ws.send(wire.encode(Push("fan", (_root_item(),), seq=1)))
    k = random.getrandbits(20) * 1000
    seq = 1
    while time.monotonic() < until:
        seq += 1
        await ws.send(wire.encode(Push("fan", (_fan(32, 2 + 32 * k),), seq=seq)))
        k += 1
        stats["fans.sent"] += 1
        await asyncio.sleep(0.01)


async def _chunks(ws: Any, wire: Any, stats: Counter[str], until: float) -> None:
    from crdtsync.messages import DiffChunk

    piece = b"\x00" * (1 << 20)
    t = 0
    while time.monotonic() < until:
        t += 1
        for i in range(8):  # 8 MiB of a 1,000-piece transfer, never completed
            await ws.send(wire.encode(DiffChunk("big", t, i, 1000, piece)))
            stats["chunks.bytes"] += len(piece)
        await asyncio.sleep(0.2)


async def _silent(url: str, n: int, until: float, stats: Counter[str]) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    async def one() -> None:
        while time.monotonic() < until:
            try:
                async with connect(url, proxy=None) as ws:
                    stats["silent.connected"] += 1
                    try:
                        async with asyncio.timeout(max(0.1, until - time.monotonic())):
                            async for _ in ws:
                                pass
                    except TimeoutError:
                        return
            except ConnectionClosed as exc:
                stats[f"silent.closed.{exc.rcvd.code if exc.rcvd else 'none'}"] += 1
            except InvalidStatus as exc:  # over the connection cap: an HTTP answer
                stats[f"silent.refused.{exc.response.status_code}"] += 1
            except OSError:
                stats["silent.refused"] += 1
            await asyncio.sleep(0.5)

    await asyncio.gather(*(one() for _ in range(n)))


ATTACKS = ("flood", "silent", "shards", "fans", "chunks")


async def attack(url: str, seconds: float, silent: int, only: set[str]) -> dict[str, int]:
    """Run the attacks ``only`` names against ``url`` for ``seconds``; counts of what was
    done and seen."""
    stats: Counter[str] = Counter()
    until = time.monotonic() + seconds
    runs = []
    if "flood" in only:
        runs += [_peer(url, f"flood{i}", until, stats, _flood) for i in range(4)]
    for name, body in (("shards", _shards), ("fans", _fans), ("chunks", _chunks)):
        if name in only:
            runs.append(_peer(url, name, until, stats, body))
    if "silent" in only:
        runs.append(_silent(url, silent, until, stats))
    await asyncio.gather(*runs)
    return dict(sorted(stats.items()))


# -- the measurement ---------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: A probe waits at most this long for replicated(1) (then it counts as a timeout, at this
#: value): no probe can hang the benchmark.
PROBE_TIMEOUT = 10.0


def _probe(
    honest: Child, seconds: float, rate: float, tag: str, timeouts: list[str] | None = None
) -> list[float]:
    """Round trips (ms) of write + replicated(1) from the honest peer, at ``rate`` a second;
    the tags of probes that timed out are appended to ``timeouts``."""
    out: list[float] = []
    t_end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        honest.send(cmd="write", shard="probe", prefix=f"{tag}{i}-", n=1, rate=0)
        honest.wait("written", 30)
        t1 = time.monotonic()
        honest.send(cmd="replicated", shard="probe", peers=1, timeout=PROBE_TIMEOUT)
        if honest.wait("replicated", PROBE_TIMEOUT + 20).get("timed_out") and timeouts is not None:
            timeouts.append(f"{tag}{i}")
        out.append((time.monotonic() - t0) * 1000)
        if os.environ.get("CRDTSYNC_HOSTILE_DEBUG"):
            sys.stderr.write(
                f"probe {tag}{i}: at {t0:.3f} write {t1 - t0:.3f} s, replicated {time.monotonic() - t1:.3f} s\n"
            )
        i += 1
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - t0)))
    return out


def _sent(child: Child) -> dict[str, int]:
    """Frames ``child`` (a ``nodes.py crdtsync`` agent) has sent so far, by message type."""
    child.send(cmd="stats")
    stats = child.wait("stats", 30)
    return {"frames": stats["frames"], **stats.get("by_type", {})}


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument("--attack", default=None, help=argparse.SUPPRESS)  # the attacker process
    p.add_argument("--seconds", type=float, default=None, help="probe seconds per phase")
    p.add_argument("--silent", type=int, default=None, help="silent connections")
    p.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated attacks to run")
    args = p.parse_args(argv)
    size = size_of(args)
    cfg = dict(SIZES[size])
    if args.seconds is not None:
        cfg["seconds"] = args.seconds
    if args.silent is not None:
        cfg["silent"] = args.silent
    if args.attack:
        only = set(args.attacks.split(","))
        print(
            json.dumps(asyncio.run(attack(args.attack, cfg["seconds"], int(cfg["silent"]), only)))
        )
        return 0
    prog = Progress("hostile")
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-hostile-bench-"))
    try:
        with children() as kids:
            victim = Child(
                "crdtsync",
                ["--name", "victim", "--data", str(tmp / "v"), "--listen", "ws://127.0.0.1:0"],
                name="victim",
                env={"CRDTSYNC_BENCH_ATTACKED": "1"},
            )
            kids.append(victim)
            url = victim.wait("ready", 60)["address"]
            honest = Child(
                "crdtsync",
                ["--name", "honest", "--data", str(tmp / "h"), "--peer", url],
                name="honest",
            )
            kids.append(honest)
            honest.wait("ready", 60)
            deadline = time.monotonic() + 30
            while True:
                honest.send(cmd="status")
                if "victim" in honest.wait("status", 30)["connected"]:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the honest peer did not connect")
                time.sleep(0.1)
            _probe(honest, 1.0, cfg["rate"], "warm")
            prog.task("before", 1)
            timeouts: list[str] = []
            cpu0 = _cpu_seconds(victim.proc.pid)
            before = _probe(honest, cfg["seconds"], cfg["rate"], "before", timeouts)
            cpu_before = _cpu_seconds(victim.proc.pid) - cpu0
            prog.update("before", 1)
            attacker = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--attack",
                    url,
                    "--seconds",
                    str(cfg["seconds"] + 2.0),
                    "--silent",
                    str(cfg["silent"]),
                    "--attacks",
                    args.attacks,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                time.sleep(1.0)  # the attack under way
                prog.task("during", 1)
                cpu0 = _cpu_seconds(victim.proc.pid)
                cpu0_honest = _cpu_seconds(honest.proc.pid)
                cpu0_attacker = _cpu_seconds(attacker.pid)
                sent0 = {k: _sent(c) for k, c in (("victim", victim), ("honest", honest))}
                t_during = time.monotonic()
                during = _probe(honest, cfg["seconds"], cfg["rate"], "during", timeouts)
                cpu_during = _cpu_seconds(victim.proc.pid) - cpu0
                cpu_during_honest = _cpu_seconds(honest.proc.pid) - cpu0_honest
                cpu_during_attacker = _cpu_seconds(attacker.pid) - cpu0_attacker
                sent = {
                    k: _minus(_sent(c), sent0[k])
                    for k, c in (("victim", victim), ("honest", honest))
                }
                during_s = time.monotonic() - t_during
                prog.update("during", 1)
                out, _ = attacker.communicate(timeout=cfg["seconds"] + 60)
            except BaseException:
                sys.stderr.write("victim: " + victim.tail(40) + "\n")
                raise
            finally:
                if attacker.poll() is None:
                    attacker.kill()
                    attacker.wait()
            attack_stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            honest.send(cmd="status")
            still = "victim" in honest.wait("status", 30)["connected"]
            victim.send(cmd="counters")
            victim_counters = victim.wait("counters", 30)["counters"]
    finally:
        prog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    b, d = lat_summary(before), lat_summary(during)
    report = {
        "benchmark": "hostile",
        "size": size,
        "machine": machine(),
        "config": {**cfg, "attacks": args.attacks.split(",")},
        "honest_round_trip_ms": {"before": b, "during": d},
        "honest_still_connected": still,
        "probes_timed_out": timeouts,
        # The victim's CPU (share of one core) while probing: what the attack costs it.
        "victim_cpu_share": {
            "before": round(cpu_before / cfg["seconds"], 3),
            "during": round(cpu_during / during_s, 3),
        },
        # The other two processes' CPU during the attack (the machine has 2 cores): how much
        # of the "during" latency the attacker's own load on the machine can explain.
        "cpu_share_during": {
            "honest": round(cpu_during_honest / during_s, 3),
            "attacker": round(cpu_during_attacker / during_s, 3),
        },
        # Frames each agent sent during the attack phase, by message type.
        "frames_sent_during": sent,
        "load_average": list(os.getloadavg()),
        "ratios": {
            "p99 during / before": ratio(d.get("p99"), b.get("p99")),
            "p50 during / before": ratio(d.get("p50"), b.get("p50")),
        },
        "attack": attack_stats,
        "victim_counters": victim_counters,
    }
    plots = {"hostile_latency.png": lambda: _plot(before, during)}
    finish(report, args.out, plot_dir=args.plot_dir, plots=plots)
    return 0


def _plot(before: list[float], during: list[float]) -> Any:
    from benchlib import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for values, label in ((before, "before the attack"), (during, "during the attack")):
        v = sorted(values)
        if v:
            ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("honest write -> replicated(1) round trip (ms)")
    ax.set_ylabel("fraction")
    ax.set_title("An honest peer of an agent under attack (issue #11)")
    ax.legend()
    return fig


if __name__ == "__main__":
    raise SystemExit(main())
