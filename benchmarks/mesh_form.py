"""How fast (and whether) the 64-agent overlay forms: links per agent over time (issue 18).

    python benchmarks/mesh_form.py --agents 64 [--gossip '{"full_mesh_max": 64}'] [--procs 4]

Starts crdtsync agents as ``benchmarks/fanout.py --scale`` does (the writer alone, the others
as asyncio tasks in ``--procs`` processes, all seeded with the writer), then polls every
agent's connected peers every half second until the counts have been still for ``--quiet``
seconds (or ``--timeout``). Prints one line per poll (seconds since the last process was
ready, links in all, min/max per agent, the transports' handshake counters) and a JSON
summary: when every agent had the links it ends with, and the counters (``handshake_timeout``:
inbound connections closed for no Hello in time; ``auth_failed.*``: refused handshakes).
It measures formation only, no workload.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import peers
from benchlib import children


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=64)
    p.add_argument("--procs", type=int, default=4, help="receiver processes [4]")
    p.add_argument("--gossip", default="{}", help="JSON overrides of the Agent's settings")
    p.add_argument("--quiet", type=float, default=8.0, help="still this long = formed [8]")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh_form") as tmp, children() as kids:
        t_start = time.monotonic()
        try:
            groups, _ = peers.start_crdtsync_groups(
                args.agents, args.procs, args.gossip, Path(tmp), kids, "form"
            )
        except TimeoutError as exc:
            print(json.dumps({"error": str(exc)[:300]}))
            for c in kids:
                for line in c.log[-8:]:
                    print(f"[{c.name}] {line}")
            raise SystemExit(1) from exc
        t0 = time.monotonic()
        last: list[int] = []
        since = t0
        history: list[dict[str, Any]] = []
        while True:
            counts: list[int] = []
            counters: collections.Counter[str] = collections.Counter()
            for c in groups:
                c.send(cmd="status")
                ev = c.wait("status", 60)
                counts += ev["connected_per_member"]
                counters.update(ev.get("counters", {}))
            now = time.monotonic()
            if counts != last:
                last, since = counts, now
            keep = {k: v for k, v in counters.items() if "handshake" in k or "auth" in k}
            row = {
                "t": round(now - t0, 1),
                "links": sum(counts),
                "min": min(counts),
                "max": max(counts),
                "counters": keep,
            }
            history.append(row)
            print(json.dumps(row), flush=True)
            if now - since >= args.quiet or now - t0 > args.timeout:
                break
            time.sleep(0.5)
        final = history[-1]
        formed_at = next(h["t"] for h in history if h["links"] == final["links"])
        print(
            json.dumps(
                {
                    "agents": args.agents,
                    "gossip": args.gossip,
                    "start_s": round(t0 - t_start, 1),
                    "links_final": final["links"],
                    "min_final": final["min"],
                    "formed_at_s": formed_at,
                    "settled": now - since >= args.quiet,
                    "counters": final["counters"],
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )
        for c in groups:
            for line in c.log[-5:]:
                print(f"[{c.name}] {line}")


if __name__ == "__main__":
    main()
