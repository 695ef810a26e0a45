"""Claims under real process faults (issue 16): the task-board app of the issue, a planner,
three workers and a monitor, with SIGKILLs and restarts of workers; no job is taken by two
workers after a confirmed claim, none is lost, and the monitor's subscription sees it all.

Workers are restarted within 1 s, well under the membership's suspect_timeout (5 s), so no
holder is ever declared dead and no lease expires: every job must be claimed by exactly one
worker (a killed worker resumes its own claims after restart) and done exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from crdtsync import Agent

WORKER = Path(__file__).with_name("claim_worker.py")
JOBS = 60
NAMES = ["planner", "w1", "w2", "w3", "monitor"]
WORKERS = ["w1", "w2", "w3"]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_no_job_taken_twice_or_lost_under_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRDTSYNC_FAULT_SEED", "7"))
    rng = random.Random(seed)
    ports = dict(zip(NAMES, free_ports(len(NAMES)), strict=False))
    log = tmp_path / "events.log"
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        role = name if name in ("planner", "monitor") else "worker"
        (tmp_path / f"{name}.ready").unlink(missing_ok=True)  # the worker makes it anew
        peers = [str(ports[n]) for n in NAMES if n != name]
        with open(tmp_path / f"{name}.err", "ab") as err:
            procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    role,
                    name,
                    str(tmp_path / name),
                    str(ports[name]),
                    str(JOBS),
                    str(len(NAMES)),
                    str(log),
                    *peers,
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def events() -> list[tuple[str, str, str]]:
        if not log.exists():
            return []
        return [
            tuple(line.split()) for line in log.read_text().splitlines() if line.count(" ") == 2
        ]  # type: ignore[misc]

    for name in NAMES:
        start(name)
    kills = 0
    try:
        deadline = time.monotonic() + 60
        next_kill = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            evs = events()
            if any(what == "alldone" for what, _, _ in evs) and any(
                what == "monitor" for what, _, _ in evs
            ):
                break
            if time.monotonic() >= next_kill and kills < 6:
                victim = rng.choice(WORKERS)
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                kills += 1
                time.sleep(rng.uniform(0.2, 1.0))
                start(victim)
                next_kill = time.monotonic() + rng.uniform(0.3, 0.8)
            time.sleep(0.05)
    finally:
        # SIGTERM only once each live worker has its handler (it says so with a file):
        # a worker just restarted by the nemesis may still be starting up.
        ready_by = time.monotonic() + 20
        for name, proc in procs.items():
            while (
                proc.poll() is None
                and not (tmp_path / f"{name}.ready").exists()
                and time.monotonic() < ready_by
            ):
                time.sleep(0.05)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {n: p.wait(timeout=20) for n, p in procs.items()}

    evs = events()
    claimed: dict[str, set[str]] = defaultdict(set)
    done_lines: dict[str, list[str]] = defaultdict(list)
    for what, job, who in evs:
        if what == "claimed":
            claimed[job].add(who)
        elif what == "done":
            done_lines[job].append(who)
    assert kills >= 3, f"the jobs were done before the nemesis got going ({kills} kills)"
    assert codes == {n: 0 for n in NAMES}, codes
    twice = {j: w for j, w in claimed.items() if len(w) > 1}
    assert not twice, f"jobs claimed by two workers (seed {seed}): {twice}"
    assert all(len(w) == 1 for w in done_lines.values()), done_lines
    seen = [(int(n), int(t)) for what, n, t in evs if what == "monitor"]
    assert seen and seen[0][0] > JOBS and seen[0][1] > 0, seen  # many changes, across timeouts

    async def final() -> dict[str, dict[str, object]]:
        async with Agent("planner", tmp_path / "planner") as agent:
            return (await agent.shard("work")).snapshot()["done"]  # type: ignore[no-any-return]

    result = asyncio.run(final())
    assert sorted(result) == [f"job{i:03d}" for i in range(JOBS)], "a job was lost"
    for job, rec in result.items():
        assert {rec["by"]} == claimed[job], (job, rec, claimed[job])
