"""Probe the fanout scale run: message mix per update, hops per update, profiles (issue 18).

    python benchmarks/scale_probe.py --agents 32 --out /tmp/probe [--gossip JSON] [--spy]

Runs crdtsync as ``benchmarks/fanout.py --scale`` does (the writer alone, the other agents as
asyncio tasks in 4 processes, the same warm-up and settling), then a burst and a 200/s phase,
with every agent's gossip core probed: each Push it receives (sender, updates carried), each
delta that changed its replica (and from whom), each message it sends (type). Prints, per
phase: messages sent per update by type, Pushes received and how many carried news, updates
per Push, the hops from the writer (each agent's depth along the peer that brought it most of
its news) and the Pushes each agent sent per update. ``--spy`` records the writer's process and
one receiver process with ``py-spy record --gil`` during each phase (``benchmarks/profile_top.py``
reads the files). Everything lands in ``--out``: ``result.json``, one event log per process.

The probe wraps three methods of the core (``_PushReceive.on_push``, ``_PushForward._forward``,
``Context.send``) in the child processes only; it is an investigation tool, not a benchmark
(the wrappers cost CPU). ``--gossip`` overrides fields of the Agent's default settings, as
``benchmarks/nodes.py --gossip`` does (e.g. ``'{"full_mesh_max": 16}'``: the tree at 32).
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVENTS: list[tuple[Any, ...]] = []


def _install_probes() -> None:
    """In a child: record what every core receives, applies and sends (see the docstring)."""
    from crdtsync.gossip import _context, _push_forward, _push_receive

    recv, fwd = _push_receive._PushReceive, _push_forward._PushForward
    on_push, forward, send = recv.on_push, fwd._forward, _context.Context.send

    def probed_on_push(self: Any, conn: Any, msg: Any, now: float) -> None:
        EVENTS.append(("r", time.time(), self._ctx.name, conn.name, len(msg.updates)))
        on_push(self, conn, msg, now)

    def probed_forward(
        self: Any, conn: Any, shard: str, delta: bytes, fwd: bool, *rest: Any, **kw: Any
    ) -> None:
        EVENTS.append(("n", time.time(), self._ctx.name, conn.name, len(delta)))
        forward(self, conn, shard, delta, fwd, *rest, **kw)

    def probed_send(self: Any, peer: str, msg: Any) -> None:
        n = len(getattr(msg, "updates", ()) or ())
        EVENTS.append(("s", time.time(), self.name, peer, type(msg).__name__, n))
        send(self, peer, msg)

    recv.on_push = probed_on_push  # type: ignore[method-assign]
    fwd._forward = probed_forward  # type: ignore[method-assign]
    _context.Context.send = probed_send  # type: ignore[method-assign]
    out = os.environ["CRDTSYNC_SCALE_PROBE"]
    atexit.register(lambda: Path(out, f"{os.getpid()}.json").write_text(json.dumps(EVENTS)))


def _depth(parent: dict[str, str], agent: str) -> int | None:
    """Hops from the writer (the agent no news came to) along ``parent``; None on a cycle."""
    hops, seen = 0, {agent}
    while agent in parent:
        agent = parent[agent]
        if agent in seen:
            return None
        seen.add(agent)
        hops += 1
    return hops


def analyse(out: Path) -> str:
    """The per-phase report of a finished run in ``out`` (see the module docstring)."""
    res = json.loads((out / "result.json").read_text())
    events: list[list[Any]] = []
    for f in out.glob("[0-9]*.json"):
        events += json.loads(f.read_text())
    lines = [f"overlay: {res.get('overlay')}"]
    for phase in ("burst", "paced_low"):
        t0, t1, n = res[phase]["t0"], res[phase]["t1"], res[phase]["updates"]
        ev = [e for e in events if t0 <= e[1] <= t1]
        sent = [e for e in ev if e[0] == "s"]
        recv = [e for e in ev if e[0] == "r"]
        news = [e for e in ev if e[0] == "n"]
        by_type = collections.Counter(e[4] for e in sent)
        pushes = [e for e in sent if e[4] == "Push"]
        lines.append(f"== {phase}: {n} updates")
        lines.append(f"  sent per update: { {k: round(v / n, 2) for k, v in by_type.items()} }")
        carried = sum(e[4] for e in recv)
        lines.append(
            f"  Pushes received {len(recv)} ({carried / max(1, len(recv)):.2f} updates each),"
            f" deltas that changed a replica {len(news)}"
        )
        by_agent: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for e in news:
            by_agent[e[2]][e[3]] += 1
        parent = {a: c.most_common(1)[0][0] for a, c in by_agent.items()}

        hops = collections.Counter(_depth(parent, a) for a in parent)
        lines.append(f"  hops from the writer (agents): {dict(sorted(hops.items(), key=str))}")
        per_agent = collections.Counter(e[2] for e in pushes)
        top = [(a, round(v / n, 2)) for a, v in per_agent.most_common(6)]
        lines.append(f"  Pushes sent per update, busiest agents: {top}")
        sizes = collections.Counter(e[5] for e in pushes)
        lines.append(f"  updates per Push sent: {sorted(sizes.items())[:10]}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    import fanout
    import peers
    from benchlib import Progress, children

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("[0-9]*.json"):
        f.unlink()
    os.environ["CRDTSYNC_SCALE_PROBE"] = str(out)
    peers.GROUPS = Path(__file__).resolve()  # the children run groups.py through the probe
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    tmp = Path(tempfile.mkdtemp(prefix="scale-probe-"))
    prog = Progress("scale probe")
    res: dict[str, Any] = {}
    try:
        with children() as kids:
            groups, ports = peers.start_crdtsync_groups(
                args.agents, args.procs, args.gossip, tmp / "data", kids, "crdtsync"
            )
            writer, receivers = groups[0], groups[1:]
            fanout.warm_up("crdtsync", writer, receivers, kids, ports, tmp, prog, 0, False)
            res["overlay"] = fanout.settle(groups)
            time.sleep(1.0)
            for phase in ("burst", "paced_low"):
                prefix, count, rate = fanout._phase_args(
                    phase, args.updates, 200.0, (args.updates // 2, 200.0)
                )
                spies = []
                if args.spy and spy:
                    for who, child in (("writer", groups[0]), ("receivers", groups[2])):
                        target = out / f"{phase}-{who}.txt"
                        cmd = [spy, "record", "--gil", "-r", "300", "-f", "raw", "-o", str(target)]
                        cmd += ["--pid", str(child.pid), "--nonblocking"]
                        spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
                    time.sleep(0.5)
                t0 = time.time()
                figures, _ = fanout.run_phase(
                    "crdtsync", writer, receivers, kids, ports, prefix, count, rate, tmp, prog, 0
                )
                figures.pop("latency_cdf_ms", None)
                res[phase] = {**figures, "t0": t0, "t1": time.time()}
                for p in spies:
                    p.send_signal(2)  # SIGINT: py-spy writes its file
                    p.wait(30)
    finally:
        prog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    (out / "result.json").write_text(json.dumps(res, indent=1))
    print(analyse(out))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "crdtsync":  # a child (peers.GROUPS points here)
        sys.path.insert(0, str(HERE))
        _install_probes()
        import groups

        groups.main()
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=32)
    p.add_argument("--procs", type=int, default=4, help="receiver processes [4]")
    p.add_argument("--updates", type=int, default=500, help="burst updates (200/s: half) [500]")
    p.add_argument("--gossip", default="{}", help="JSON overrides of the Agent's settings")
    p.add_argument("--out", required=True, help="directory for the result and the event logs")
    p.add_argument("--spy", action="store_true", help="py-spy the writer and one receiver")
    p.add_argument("--analyse", action="store_true", help="only print the report of --out")
    args = p.parse_args()
    if args.analyse:
        print(analyse(Path(args.out)))
    else:
        run(args)


if __name__ == "__main__":
    main()
