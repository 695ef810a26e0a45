"""A writer's wait in ``replicated()``: ``python benchmarks/replicated_wait.py``.

Not part of ``crdtsync bench``. One writer :class:`crdtsync.Agent` in this process, ``--receivers``
receiving agents (default 7) in a child process, all over websockets on 127.0.0.1. The writer
sets ``--writes`` map keys, ``--gap`` seconds apart, and after each awaits
``shard.replicated(peers=receivers)``; prints the wait's p50 / p90 / max in ms as one JSON
object. Used to check that committing received updates less often (``Agent``'s
``received_durability_interval``) does not make a writer wait longer: its WANT_ACK hurries
the receivers' commits (benchmarks/history/fanout-receive.md, "Issue 17/18, fifth pass"). For an A/B, run two
trees alternately, each with its own venv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter


async def _receivers(url: str, tmp: str, count: int) -> None:
    from crdtsync import Agent

    agents = [
        Agent(f"r{i}", data_dir=Path(tmp) / f"r{i}", peers=[url], seed=i) for i in range(count)
    ]
    for agent in agents:
        await agent.start()
        await agent.shard("s")
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    for agent in agents:
        await agent.close()


async def _writer(args: argparse.Namespace) -> dict[str, object]:
    from crdtsync import Agent

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="replicated-wait-")
    url = f"ws://127.0.0.1:{port}"
    writer = Agent("w", data_dir=Path(tmp) / "w", listen=url, seed=99)
    await writer.start()
    shard = await writer.shard("s")
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", url, tmp, "--receivers", str(args.receivers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError("the receivers did not start")
    while len(writer.peers) < args.receivers:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    waits = []
    for i in range(args.writes):
        shard[f"k{i}"] = i
        t0 = perf_counter()
        await shard.replicated(peers=args.receivers, timeout=30)
        waits.append(1000 * (perf_counter() - t0))
        await asyncio.sleep(args.gap)
    child.stdin.close()
    child.wait()
    await writer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    waits.sort()
    return {
        "benchmark": "replicated_wait",
        "writes": args.writes,
        "receivers": args.receivers,
        "p50_ms": round(statistics.median(waits), 1),
        "p90_ms": round(waits[int(0.9 * len(waits))], 1),
        "max_ms": round(waits[-1], 1),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=100)
    p.add_argument("--gap", type=float, default=0.05, help="seconds between two writes")
    p.add_argument("--receivers", type=int, default=7)
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        asyncio.run(_receivers(args.child[0], args.child[1], args.receivers))
    else:
        print(json.dumps(asyncio.run(_writer(args))))


if __name__ == "__main__":
    main()
