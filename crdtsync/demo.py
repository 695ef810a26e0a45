"""``crdtsync demo``: show, on this machine, that flushed writes survive SIGKILL.

A child process writes to a shard and flushes in small groups, printing every acknowledged
write; the demo kills it with SIGKILL mid-write, reopens the store and checks that every
acknowledged write is there. (Run as ``python -m crdtsync.demo child DATA_DIR`` it is the
child.)
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CrashReport", "crash_and_recover", "run_child"]


@dataclass(frozen=True)
class CrashReport:
    """What one kill-and-reopen round found."""

    acknowledged: int  # writes the child reported durable before it was killed
    present: int  # writes found after reopening
    lost: int  # acknowledged but missing: must be 0
    reopen_seconds: float


async def run_child(data_dir: str, shard_name: str = "demo", start: int = 0) -> None:
    """Write ``k<n>`` keys forever, flushing every few writes and printing each durable ``n``."""
    from .agent import Agent

    async with Agent("demo-writer", data_dir=data_dir) as agent:
        shard = await agent.shard(shard_name)
        n = start
        while True:
            batch = []
            for _ in range(random.randint(1, 20)):
                shard[f"k{n}"] = {"n": n, "payload": "x" * random.randint(0, 64)}
                batch.append(n)
                n += 1
            await shard.flush()
            sys.stdout.write("".join(f"{i}\n" for i in batch))
            sys.stdout.flush()


def crash_and_recover(data_dir: Path, *, kill_after: float, shard_name: str = "demo") -> CrashReport:
    """Start a writer child, SIGKILL it after ``kill_after`` seconds, reopen and count."""
    from .agent import Agent

    existing = asyncio.run(_read_keys(Agent, data_dir, shard_name))
    start = max((int(k[1:]) for k in existing), default=-1) + 1
    child = subprocess.Popen(
        [sys.executable, "-m", "crdtsync.demo", "child", str(data_dir), shard_name, str(start)],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    time.sleep(kill_after)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reader.join()
    # only complete lines are acknowledgements; a line cut by the kill is not
    acked = [int(line) for line in lines if line.endswith(b"\n")]
    t0 = time.perf_counter()
    keys = asyncio.run(_read_keys(Agent, data_dir, shard_name))
    reopen = time.perf_counter() - t0
    present = {int(k[1:]) for k in keys}
    lost = sum(1 for n in acked if n not in present)
    return CrashReport(len(acked), len(present), lost, reopen)


async def _read_keys(agent_cls: type, data_dir: Path, shard_name: str) -> list[str]:
    async with agent_cls("demo-reader", data_dir=data_dir) as agent:
        shard = await agent.shard(shard_name)
        return list(shard.keys())


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "child":
    asyncio.run(run_child(sys.argv[2], *(sys.argv[3:4]), *(int(a) for a in sys.argv[4:5])))
