"""Many crdtsync agents on one MQTT broker in one process (the ``swarm`` role of nodes.py).

    python benchmarks/nodes.py swarm --broker mqtt://127.0.0.1:P --names s0,s1,... --data DIR

Every agent is a real :class:`crdtsync.Agent` (its own LMDB store, group commit, gossip core
and broker connection), all in this process's event loop, so that a scale curve of 128 agents
fits a 2-core machine in a few processes. Commands (JSON lines on stdin, as nodes.py):

``status``  event ``status``: the fewest agents any of ours sees present on the broker, and
            the fewest links any of ours holds.
``run``     shard, total, rate, n_total, offset, stride, start_ns, out, timeout: our i-th
            agent is agent ``offset + i * stride`` of the mesh. The mesh as a whole writes
            ``total`` keys at ``rate`` per second on one absolute schedule from ``start_ns``
            (write j is agent ``j % n_total``'s, at ``start_ns + j / rate``), each
            ``w<agent>-<j> = str(time_ns())``; every agent records in its document observer
            when each other agent's key arrived. Once all arrived (or ``timeout``), the
            latencies (arrival - stamp, one machine clock) go to ``out``, and event ``done``
            says how many arrived and how many are missing.
``stats``   as nodes.py, with the agents' broker counters summed (``mqtt``).
``quit``    close every agent and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import nodes

from crdtsync import Agent

#: agents of this process that start together
STARTING = 8


class _Watch:
    """Arrival times of other agents' keys at one agent (taken in the observer)."""

    def __init__(self, agent_index: int, root: Any, expected: int) -> None:
        self.own = f"w{agent_index}-"
        self.arrived: dict[str, int] = {}
        self.expected = expected
        self.root = root
        self.complete = asyncio.Event()
        self._sub = root.observe(self._on_change)
        if expected == 0:
            self.complete.set()

    def _on_change(self, event: Any) -> None:
        now = time.time_ns()
        for key in event.keys:
            if key.startswith("w") and not key.startswith(self.own) and key not in self.arrived:
                self.arrived[key] = now
        if len(self.arrived) >= self.expected:
            self.complete.set()

    def latencies_ms(self) -> list[float]:
        self.root.unobserve(self._sub)
        return [(t - int(self.root[k])) / 1e6 for k, t in self.arrived.items()]


async def _write(shard: Any, g: int, n_total: int, total: int, rate: float, start_ns: int) -> None:
    for j in range(g, total, n_total):
        delay = (start_ns + j * 1e9 / rate - time.time_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        shard[f"w{g}-{j}"] = str(time.time_ns())


async def _run(agents: list[Agent], cmd: dict[str, Any]) -> dict[str, Any]:
    total, n_total = int(cmd["total"]), int(cmd["n_total"])
    offset, stride = int(cmd["offset"]), int(cmd["stride"])
    shards = [await a.shard(cmd["shard"]) for a in agents]
    index = [offset + i * stride for i in range(len(agents))]  # global index of each agent
    watches = []
    for g, s in zip(index, shards, strict=True):
        own = len(range(g, total, n_total))
        watches.append(_Watch(g, s.crdt, total - own))
    writers = [
        asyncio.create_task(_write(s, g, n_total, total, float(cmd["rate"]), int(cmd["start_ns"])))
        for g, s in zip(index, shards, strict=True)
    ]
    await asyncio.gather(*writers)
    try:
        await asyncio.wait_for(
            asyncio.gather(*(w.complete.wait() for w in watches)), float(cmd["timeout"])
        )
    except TimeoutError:
        pass
    lat: list[float] = []
    missing = 0
    for w in watches:
        lat.extend(w.latencies_ms())
        missing += max(0, w.expected - len(w.arrived))
    Path(cmd["out"]).write_text(json.dumps({"latency_ms": lat}))
    attempts = sum(a.counters.get("attempts", 0) for a in agents)
    return {
        "event": "done",
        "arrived": len(lat),
        "missing": missing,
        "connection_attempts": attempts,
        "log": dict(TALLY.errors),
    }


class _Tally(logging.Handler):
    """Errors logged in this process, counted and reported (``done``) rather than fatal: with
    a hundred agents in one loop, one reconnection must not end the run, but it is shown."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.errors: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname} {record.name}: {record.getMessage()[:80]}"
        self.errors[key] = self.errors.get(key, 0) + 1


TALLY = _Tally()


async def run_swarm(args: argparse.Namespace) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if type(h).__name__ == "_FailFast":
            root.removeHandler(h)
    root.addHandler(TALLY)
    names = args.names.split(",")
    agents = [
        Agent(
            name,
            data_dir=Path(args.data) / name,
            broker=args.broker,
            mesh="swarm",
            seed=i,
            durability_interval=0.05,
        )
        for i, name in enumerate(names)
    ]

    async def start(agent: Agent) -> None:
        await agent.start()
        await agent.shard("bench")  # opened before the run: its creation is not a write

    # A fleet starting at once (in groups of STARTING, so that one starved event loop does
    # not time out dozens of broker handshakes), not one agent after another: each join
    # reshapes the overlay for everyone present, so a slow serial start churns links longest.
    for i in range(0, len(agents), STARTING):
        await asyncio.gather(*(start(a) for a in agents[i : i + STARTING]))
    nodes.AGENTS.extend(agents)
    nodes.emit({"event": "ready", "agents": len(agents)})
    commands = nodes.Commands(asyncio.get_running_loop())
    tasks: set[asyncio.Task[Any]] = set()
    try:
        while True:
            cmd = await commands.queue.get()
            op = cmd.get("cmd")
            if op == "quit":
                break
            if op == "status":
                present = [len(getattr(a._transport, "_present", {})) for a in agents]
                linked = [len(a.core.connected()) for a in agents]
                nodes.emit(
                    {"event": "status", "present_min": min(present), "linked_min": min(linked)}
                )
            elif op == "stats":
                nodes.emit(nodes.stats_event())
            elif op == "run":

                async def go(cmd: dict[str, Any] = cmd) -> None:
                    try:
                        nodes.emit(await _run(agents, cmd))
                    except Exception as exc:  # report it to the parent
                        nodes.emit({"event": "error", "message": f"run: {exc!r}"})

                tasks.add(asyncio.create_task(go()))
            else:
                nodes.emit({"event": "error", "message": f"unknown command {op!r}"})
    finally:
        for t in tasks:
            t.cancel()
        for a in agents:
            await a.close()
        nodes.emit({"event": "stopped"})
