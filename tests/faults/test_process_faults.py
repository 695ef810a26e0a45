"""Real ``crdtsync agent`` processes under SIGKILL, restarts and SIGSTOP partitions (issue #4).

Five agents on 127.0.0.1 (:class:`crdtsync.cli.localmesh.LocalMesh`) each run the ``--write``
workload: unique keys ``<agent>-<n>`` = ``{"by": agent, "n": n}``, each flushed and then
reported as ``{"event": "ack", "key": ...}``. Meanwhile a seeded nemesis SIGKILLs agents and
restarts them on the same data directory and port, and freezes agents with SIGSTOP for 1-2.5 s
before SIGCONT: the frozen agent is cut off (it neither reads nor answers; its peers' pushes,
pings and anti-entropy go unanswered) while the others keep writing, and sometimes it is killed
while frozen. Then everything is healed: frozen agents continued, killed ones restarted.

Once every workload is done and the agents report one digest, the agents are stopped with
SIGTERM (every exit code must be 0), each data directory is opened with ``crdtsync.Agent`` and
its final key set read. The Jepsen set checker runs over EVERY agent's set: ok (acked, present),
lost (acked, absent), unexpected (present, never attempted, or with a value that was never
written) and recovered (present although its ack line was never seen: the kill came between the
flush and the print). lost == 0 and unexpected == 0, and every agent holds every key.

About 20 s (bounded well under 90 s); ``CRDTSYNC_SOAK=1``: a minute of faults and 7500 keys.
``CRDTSYNC_FAULT_SEED`` picks the nemesis seed (printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from crdtsync import Agent
from crdtsync.cli.localmesh import LocalMesh

SOAK = bool(os.environ.get("CRDTSYNC_SOAK"))
AGENTS = 5
RATE = 25.0  # writes per second per agent
WRITES = (
    1500 if SOAK else 300
)  # keys per agent: 60 s (soak) or 12 s of workload, stretched by faults
NEMESIS_SECONDS = 60.0 if SOAK else 14.0
KEY = re.compile(r"(p\d+)-(\d+)")


def jepsen(acked: set[str], present: dict[str, Any], attempted: set[str]) -> dict[str, Any]:
    """Jepsen's set checker over one final read."""
    unexpected = sorted(
        k
        for k, v in present.items()
        if k not in attempted
        or not (m := KEY.fullmatch(k))
        or v != {"by": m.group(1), "n": int(m.group(2))}
    )
    ok = sorted(acked & present.keys())
    lost = sorted(acked - present.keys())
    recovered = sorted(present.keys() - acked - set(unexpected))
    return {"ok": len(ok), "lost": lost, "unexpected": unexpected, "recovered": len(recovered)}


async def read_final(data_dir: Path) -> dict[str, Any]:
    async with Agent("final-reader", data_dir=data_dir) as agent:
        return (await agent.shard("board")).snapshot()


def close_pipes(procs: list[subprocess.Popen[bytes]]) -> None:
    """LocalMesh leaves every process's stdout/stderr pipes open (see the xfail test below):
    close them once the processes are gone and their reader threads have seen EOF."""
    time.sleep(0.3)
    for proc in procs:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_acknowledged_writes_survive_kills_restarts_and_freezes(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRDTSYNC_FAULT_SEED", "4"))
    rng = random.Random(seed)
    names = [f"p{i}" for i in range(AGENTS)]
    attempted = {f"{a}-{n}" for a in names for n in range(WRITES)}
    faults: Counter[str] = Counter()
    log: list[str] = []
    t0 = time.monotonic()

    def event(what: str) -> None:
        log.append(f"{time.monotonic() - t0:5.1f}s {what}")

    mesh = LocalMesh(tmp_path, names, ["--write", str(WRITES), "--write-rate", str(RATE)])
    frozen: dict[str, float] = {}  # name -> when to SIGCONT
    killed: dict[str, float] = {}  # name -> when to restart
    procs: list[subprocess.Popen[bytes]] = []
    disk_checks: Counter[str] = Counter()
    try:
        mesh.start()
        mesh.wait_ready(30)
        event("all ready")

        def thaw(name: str) -> None:
            proc = mesh.agents[name].proc
            assert proc is not None
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
            frozen.pop(name, None)
            event(f"SIGCONT {name}")

        def revive(name: str) -> None:
            mesh.restart(name)
            killed.pop(name, None)
            event(f"restart {name}")

        def kill(name: str) -> None:
            """SIGKILL, then check the agent's own disk before it restarts: every key of its
            own that it acknowledged (flushed) is there, whatever peers hold."""
            proc = mesh.agents[name].proc
            assert proc is not None
            procs.append(proc)
            mesh.kill(name)
            time.sleep(0.05)  # the reader thread takes the last complete ack lines
            mine = {k for k in mesh.agents[name].acked if k.startswith(f"{name}-")}
            on_disk = asyncio.run(read_final(mesh.agents[name].data_dir))
            missing = sorted(mine - on_disk.keys())
            disk_checks["checked"] += 1
            disk_checks["acked keys checked"] += len(mine)
            assert not missing, (
                f"{name} lost acknowledged keys on its own disk: {missing[:10]} (seed {seed})"
            )

        end = time.monotonic() + NEMESIS_SECONDS
        while time.monotonic() < end:
            now = time.monotonic()
            for name, at in list(frozen.items()):
                if now >= at:
                    thaw(name)
            for name, at in list(killed.items()):
                if now >= at:
                    revive(name)
            up = [n for n in names if n not in killed and n not in frozen]
            action = rng.random()
            if len(up) > AGENTS - 2 and up:  # at most two agents down at a time
                victim = rng.choice(up)
                if action < 0.45:
                    kill(victim)
                    killed[victim] = now + rng.uniform(0.3, 2.0)
                    faults["SIGKILL"] += 1
                    event(f"SIGKILL {victim}")
                elif action < 0.9:
                    proc = mesh.agents[victim].proc
                    assert proc is not None
                    os.kill(proc.pid, signal.SIGSTOP)
                    frozen[victim] = now + rng.uniform(1.0, 2.5)
                    faults["SIGSTOP"] += 1
                    event(f"SIGSTOP {victim}")
            elif frozen and action < 0.15:  # kill one while it is frozen
                victim = rng.choice(sorted(frozen))
                frozen.pop(victim)
                kill(victim)
                killed[victim] = now + rng.uniform(0.3, 1.5)
                faults["SIGKILL while stopped"] += 1
                event(f"SIGKILL {victim} (frozen)")
            time.sleep(rng.uniform(0.3, 1.0))

        # heal: everyone continued or restarted
        for name in sorted(frozen):
            thaw(name)
        for name in sorted(killed):
            revive(name)
        mesh.wait_ready(30)
        event("healed")
        expected = AGENTS * WRITES
        deadline = time.monotonic() + (90 if SOAK else 50)
        while not (all(a.done for a in mesh.agents.values()) and mesh.converged(keys=expected)):
            assert time.monotonic() < deadline, (
                f"no convergence on {expected} keys (seed {seed}): "
                + "; ".join(
                    f"{a.name}: done={a.done} {a.shard_status()} err={a.log[-2:]}"
                    for a in mesh.agents.values()
                )
                + "\n"
                + "\n".join(log)
            )
            time.sleep(0.1)
        event("converged")
    finally:
        for name in list(frozen):  # never leave a stopped process behind
            proc = mesh.agents[name].proc
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        codes = mesh.stop()
        close_pipes(procs + [a.proc for a in mesh.agents.values() if a.proc is not None])
    event("stopped")

    acked = set().union(*(a.acked for a in mesh.agents.values()))
    finals = {name: asyncio.run(read_final(mesh.agents[name].data_dir)) for name in names}
    results = {name: jepsen(acked, finals[name], attempted) for name in names}
    print(
        f"\nprocess faults (seed {seed}, {time.monotonic() - t0:.1f}s): {dict(faults)}; "
        f"{len(acked)} acknowledged of {len(attempted)} attempted; own-disk checks after SIGKILL: "
        f"{disk_checks['checked']} ({disk_checks['acked keys checked']} acked keys, none missing)"
    )
    for name, r in results.items():
        print(
            f"  {name}: ok={r['ok']} lost={len(r['lost'])} unexpected={len(r['unexpected'])} "
            f"recovered={r['recovered']} keys={len(finals[name])}"
        )
    history = "\n".join(log)
    assert all(code == 0 for code in codes.values()), f"unclean exits {codes}\n{history}"
    for name, r in results.items():
        assert r["lost"] == [] and r["unexpected"] == [], (
            f"{name}: {r['lost'][:10]} {r['unexpected'][:10]}\n{history}"
        )
        assert set(finals[name]) == attempted, (
            f"{name} lacks {sorted(attempted - set(finals[name]))[:10]}"
        )
    assert faults["SIGKILL"] + faults["SIGKILL while stopped"] >= 2 and faults["SIGSTOP"] >= 2, (
        faults
    )
    assert all(f == finals[names[0]] for f in finals.values())  # same state everywhere


def test_local_mesh_closes_the_pipes_of_the_processes_it_started(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path, ["q0"])
    mesh.start()
    try:
        mesh.wait_ready(30)
        first = mesh.agents["q0"].proc
        mesh.kill("q0")
        mesh.restart("q0")
        mesh.wait_ready(30)
    finally:
        mesh.stop()
        time.sleep(0.3)
    procs = [first, mesh.agents["q0"].proc]
    leaked = [
        p.stdout for p in procs if p is not None and p.stdout is not None and not p.stdout.closed
    ]
    close_pipes([p for p in procs if p is not None])
    assert leaked == []
