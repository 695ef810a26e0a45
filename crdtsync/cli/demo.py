"""``crdtsync demo``: show, on this machine, that flushed writes survive SIGKILL.

A child process writes to a shard and flushes in small groups, printing every acknowledged
write; the demo kills it with SIGKILL mid-write, reopens the store and checks that every
acknowledged write is there. (Run as ``python -m crdtsync.cli.demo child DATA_DIR`` it is the
child.)
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CrashReport", "crash_and_recover", "fresh_demo_dir", "mesh_demo", "run_child"]

#: What the demo makes in its folder: only a folder holding nothing else is wiped.
DEMO_ENTRIES = frozenset({"durability", "mesh"})


def fresh_demo_dir(data_dir: Path) -> None:
    """Make ``data_dir`` an empty folder for the demo: wipe it only if it holds nothing but
    an earlier demo's folders (``--data .`` once wiped the folder it was run from, a checkout
    included).

    Raises:
        ValueError: it is not a folder, or it holds anything else (the message says what).
    """
    if data_dir.exists():
        if not data_dir.is_dir():
            raise ValueError(f"--data {data_dir} is not a folder")
        others = sorted(p.name for p in data_dir.iterdir() if p.name not in DEMO_ENTRIES)
        if others:
            raise ValueError(
                f"--data {data_dir}: the demo wipes its folder first, and this one holds "
                f"{', '.join(others[:5])}{', ...' if len(others) > 5 else ''}; give a new or "
                "empty folder (or one an earlier demo made)"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)


@dataclass(frozen=True)
class CrashReport:
    """What one kill-and-reopen round found."""

    acknowledged: int  # writes the child reported durable before it was killed
    present: int  # writes found after reopening
    lost: int  # acknowledged but missing: must be 0
    reopen_seconds: float


async def run_child(data_dir: str, shard_name: str = "demo", start: int = 0) -> None:
    """Write ``k<n>`` keys forever, flushing every few writes and printing each durable ``n``."""
    from ..agent import Agent

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


def crash_and_recover(
    data_dir: Path, *, kill_after: float, shard_name: str = "demo"
) -> CrashReport:
    """Start a writer child, SIGKILL it ``kill_after`` seconds after its first acknowledged
    write (so the kill lands mid-write however long its start-up takes), reopen and count."""
    from ..agent import Agent

    existing = asyncio.run(_read_keys(Agent, data_dir, shard_name))
    start = max((int(k[1:]) for k in existing), default=-1) + 1
    child = subprocess.Popen(
        [sys.executable, "-m", "crdtsync.cli.demo", "child", str(data_dir), shard_name, str(start)],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    lines: list[bytes] = []
    writing = threading.Event()

    def read() -> None:
        for line in child.stdout:  # type: ignore[union-attr]
            lines.append(line)
            writing.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Timed from the first acknowledgement, not from the start: on a loaded machine the child's
    # imports alone took longer than kill_after, and the demo killed a writer that had not
    # written yet (a round of 0 acknowledged writes).
    deadline = time.monotonic() + 60.0
    while not writing.wait(0.05) and child.poll() is None and time.monotonic() < deadline:
        pass
    time.sleep(kill_after)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reader.join()
    child.stdout.close()
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


def mesh_demo(
    root: Path,
    *,
    agents: int = 4,
    writes: int = 150,
    rate: float = 40.0,
    console: object | None = None,
) -> dict[str, object]:
    """Run ``agents`` agent processes that each write ``writes`` keys; SIGKILL one mid-way,
    restart it, and show them converge in a live table. Returns the figures it saw."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from .localmesh import LocalMesh

    con = console if isinstance(console, Console) else Console()
    names = [f"agent-{i}" for i in range(agents)]
    victim = names[-1]
    expected = agents * writes
    events: list[str] = []

    def table(mesh: LocalMesh) -> Table:
        t = Table(
            "agent",
            "process",
            "keys in 'board'",
            "digest",
            "connected peers",
            "acknowledged writes",
            title=f"{agents} agents, {expected} writes in all",
        )
        for a in mesh.agents.values():
            st = a.shard_status()
            state = (
                "[red]killed"
                if not a.alive
                else ("[yellow]restarted" if a.restarts else "[green]running")
            )
            keys = st.get("keys", "-")
            t.add_row(
                a.name,
                state,
                f"{keys}",
                str(st.get("digest", "-"))[:12],
                str(len(a.status.get("connected", []))) if a.alive else "-",
                str(len(a.acked)),
            )
        t.caption = " | ".join(events[-3:])
        return t

    with LocalMesh(root, names, ["--write", str(writes), "--write-rate", str(rate)]) as mesh:
        t0 = time.monotonic()
        mesh.start()
        with Live(table(mesh), console=con, refresh_per_second=8) as live:

            def pump(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    live.update(table(mesh))
                    time.sleep(0.1)

            mesh.wait_ready()
            pump(writes / rate / 3)
            mesh.kill(victim)
            events.append(f"t={time.monotonic() - t0:.1f}s SIGKILL {victim}")
            pump(1.5)
            mesh.restart(victim)
            events.append(f"t={time.monotonic() - t0:.1f}s restarted {victim}")
            deadline = time.monotonic() + 90
            while not (mesh.converged(keys=expected) and all(a.done for a in mesh.agents.values())):
                if time.monotonic() > deadline:
                    break
                pump(0.2)
            converged = mesh.converged(keys=expected)
            took = time.monotonic() - t0
            events.append(f"t={took:.1f}s " + ("all converged" if converged else "NOT converged"))
            live.update(table(mesh))
        # every write an agent acknowledged (flushed) must be in the converged shard
        final_keys = {a.name: a.shard_status().get("keys") for a in mesh.agents.values()}
        acked = sum(len(a.acked) for a in mesh.agents.values())
        codes = mesh.stop()
    return {
        "converged": converged,
        "seconds": round(took, 2),
        "expected_keys": expected,
        "final_keys": final_keys,
        "acknowledged": acked,
        "exit_codes": codes,
    }
