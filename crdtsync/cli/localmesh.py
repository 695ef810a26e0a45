"""A mesh of ``crdtsync agent`` processes on this machine (127.0.0.1), watched from outside.

Used by ``crdtsync demo``, the process tests and the benchmarks: it starts real OS
processes, reads the JSON status lines they print, kills them with SIGKILL, restarts them on
the same data directory and port, and tells when their replicas have converged.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AgentProcess", "LocalMesh", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AgentProcess:
    """One agent process and what it last reported."""

    name: str
    data_dir: Path
    port: int
    seeds: list[str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    status: dict[str, object] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    done: bool = False
    ready: bool = False
    restarts: int = 0
    log: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _readers: list[threading.Thread] = field(default_factory=list)

    def reap(self) -> None:
        """After the process exited: let the readers finish, then close its pipes."""
        for reader in self._readers:
            reader.join(5)
        self._readers.clear()
        if self.proc is not None:
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shard_status(self, shard: str = "board") -> dict[str, object]:
        shards = self.status.get("shards")
        return shards.get(shard, {}) if isinstance(shards, dict) else {}  # type: ignore[no-any-return]


class LocalMesh:
    """Start, watch, kill and restart agent processes.

    Args:
        root: parent directory of the agents' data directories.
        names: agent names; each listens on its own free port and seeds from the first agent
            and its predecessor (peer exchange does the rest).
        args: extra ``crdtsync agent`` arguments for every agent (e.g. a workload).
    """

    def __init__(self, root: Path, names: Sequence[str], args: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.agents: dict[str, AgentProcess] = {}
        ports = [free_port() for _ in names]
        for i, name in enumerate(names):
            seeds = (
                sorted(
                    {f"ws://127.0.0.1:{ports[0]}", f"ws://127.0.0.1:{ports[i - 1]}"}
                    - {f"ws://127.0.0.1:{ports[i]}"}
                )
                if i
                else []
            )
            self.agents[name] = AgentProcess(name, self.root / name, ports[i], seeds, list(args))

    def __enter__(self) -> LocalMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, name: str | None = None) -> None:
        """Start one agent (or all) as OS processes."""
        for agent in [self.agents[name]] if name else self.agents.values():
            cmd = [
                sys.executable,
                "-m",
                "crdtsync.cli",
                "agent",
                "--name",
                agent.name,
                "--data",
                str(agent.data_dir),
                "--listen",
                agent.url,
                "--status-interval",
                "0.1",
            ]
            for seed in agent.seeds:
                cmd += ["--peer", seed]
            cmd += agent.args
            agent.ready = agent.done = False
            agent.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            agent._readers = [
                threading.Thread(target=self._read, args=(agent, agent.proc), daemon=True),
                threading.Thread(target=self._drain, args=(agent, agent.proc), daemon=True),
            ]
            for reader in agent._readers:
                reader.start()

    def kill(self, name: str) -> None:
        """SIGKILL one agent: no flush, no goodbye."""
        agent = self.agents[name]
        if agent.proc is not None and agent.proc.poll() is None:
            os.kill(agent.proc.pid, signal.SIGKILL)
            agent.proc.wait()
        agent.reap()
        agent.status = {}

    def restart(self, name: str) -> None:
        """Start a killed agent again on the same data directory and port."""
        self.agents[name].restarts += 1
        self.start(name)

    def stop(self, timeout: float = 10.0) -> dict[str, int | None]:
        """SIGTERM every agent and wait for clean exits; return their exit codes."""
        codes: dict[str, int | None] = {}
        for agent in self.agents.values():
            if agent.alive:
                agent.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for agent in self.agents.values():
            if agent.proc is None:
                continue
            try:
                codes[agent.name] = agent.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                codes[agent.name] = agent.proc.wait()
            agent.reap()
        return codes

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until every running agent has opened its store and started listening."""
        self._wait(lambda: all(a.ready for a in self.agents.values() if a.alive), timeout, "ready")

    def converged(self, shard: str = "board", keys: int | None = None) -> bool:
        """Whether every running agent reports the same digest (and ``keys`` keys) for ``shard``."""
        live = [a for a in self.agents.values() if a.alive]
        if not live or any(not a.shard_status(shard) for a in live):
            return False
        digests = {a.shard_status(shard).get("digest") for a in live}
        counts = {a.shard_status(shard).get("keys") for a in live}
        return len(digests) == 1 and (keys is None or counts == {keys})

    def wait_converged(
        self, shard: str = "board", keys: int | None = None, timeout: float = 60.0
    ) -> float:
        """Wait for convergence; return the seconds it took."""
        t0 = time.monotonic()
        self._wait(lambda: self.converged(shard, keys), timeout, f"convergence of {shard!r}")
        return time.monotonic() - t0

    def _wait(self, cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no {what} within {timeout}s: "
                    + "; ".join(
                        f"{a.name}: alive={a.alive} status={a.status} stderr={a.log[-3:]}"
                        for a in self.agents.values()
                    )
                )
            time.sleep(0.05)

    @staticmethod
    def _read(agent: AgentProcess, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if not raw.endswith(b"\n"):
                break  # cut by a kill
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            event = record.get("event")
            with agent._lock:
                if event == "status":
                    agent.status = record
                elif event == "ack":
                    agent.acked.add(record["key"])
                elif event == "ready":
                    agent.ready = True
                elif event == "workload-done":
                    agent.done = True

    @staticmethod
    def _drain(agent: AgentProcess, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            agent.log.append(raw.decode(errors="replace").rstrip())
            del agent.log[:-50]
