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
import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import nodes

from crdtsync import Agent
from crdtsync.durability import GroupCommitter

#: agents of this process that start together
STARTING = 8


class _Watch:
    """Arrival times of other agents' keys at one agent (taken in the observer).

    The observer is subscribed on pycrdt's native map (``Map.integrated``) and reads only the
    native event's changed keys: pycrdt's Python ``Map.observe`` wraps every event first (a
    ``Map`` for its target, its path, every value converted), about 13 us a receive against
    2.5 us (measured on this machine), which at N = 128 was ~10 % of a swarm process's CPU
    (py-spy, issue 14's third pass): the bench's instrument, not the agents' work. The time
    is still taken in the observer, i.e. when the update is applied. The write's stamp is
    read there too, from the event's new value: looking 63,500 keys up in pycrdt after the
    run cost each process a few seconds of CPU while the others were still draining."""

    def __init__(self, agent_index: int, root: Any, expected: int) -> None:
        self.own = f"w{agent_index}-"
        self.arrived: dict[str, tuple[int, int]] = {}  # key -> (arrival ns, write stamp ns)
        self.expected = expected
        self.root = root
        self.complete = asyncio.Event()
        self._sub = root.integrated.observe(self._on_change)
        if expected == 0:
            self.complete.set()

    def _on_change(self, event: Any) -> None:
        now = time.time_ns()
        for key, change in event.keys.items():
            if key.startswith("w") and not key.startswith(self.own) and key not in self.arrived:
                self.arrived[key] = (now, int(change["newValue"]))
        if len(self.arrived) >= self.expected:
            self.complete.set()

    def late(self, over_ms: float) -> list[tuple[float, float]]:
        """(unix time the key was written, latency ms) of the arrivals over ``over_ms``."""
        out = []
        for t, stamp in self.arrived.values():
            if (t - stamp) / 1e6 > over_ms:
                out.append((round(stamp / 1e9, 3), round((t - stamp) / 1e6, 1)))
        return out

    def latencies_ms(self) -> list[float]:
        self._sub.drop()
        return [(t - stamp) / 1e6 for t, stamp in self.arrived.values()]


async def _write(shard: Any, g: int, n_total: int, total: int, rate: float, start_ns: int) -> None:
    for j in range(g, total, n_total):
        delay = (start_ns + j * 1e9 / rate - time.time_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        shard[f"w{g}-{j}"] = str(time.time_ns())


class _Stalls:
    """Where this process's event loop stood still during a run: how late a 10 ms sleep
    woke (every wake-up, with its time), every garbage collection (generation, duration)
    and every automatic compaction of an agent's shard (when it began, how long its worker
    thread took: it replays the shard's log holding the GIL, beside the loop), so that a
    latency tail can be told apart from a queue (issue 14)."""

    TICK = 0.01

    def __init__(self) -> None:
        self.lags: list[tuple[float, float]] = []  # (time.time(), lateness s)
        self.gcs: list[tuple[int, float]] = []  # (generation, seconds)
        self.stall_cpu: list[tuple[float, float]] = []  # stalls over 50 ms: (CPU s, wall s)
        self.compactions: list[tuple[float, float]] = []  # (time.time() at start, seconds)
        self._gc_start = 0.0
        self._task: asyncio.Task[None] | None = None
        self._compact: Any = None  # GroupCommitter._compact, while wrapped
        self._own_compact = False

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gcs.append((int(info["generation"]), time.perf_counter() - self._gc_start))

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.TICK
            cpu = time.process_time()
            await asyncio.sleep(self.TICK)
            lag = loop.time() - due
            self.lags.append((time.time(), lag))
            if lag > 0.05:  # how much of that stall this process ran (vs waited for a CPU)
                self.stall_cpu.append((time.process_time() - cpu, self.TICK + lag))

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._tick())
        self._own_compact = "_compact" in vars(GroupCommitter)  # (else inherited)
        compact = self._compact = GroupCommitter._compact
        seen = self.compactions

        def timed(committer: Any, name: str) -> Any:  # (in the committer's worker thread)
            began, t0 = time.time(), time.perf_counter()
            try:
                return compact(committer, name)
            finally:
                seen.append((began, time.perf_counter() - t0))

        GroupCommitter._compact = timed  # type: ignore[method-assign]

    def stop(self) -> dict[str, Any]:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._compact is not None:
            if self._own_compact:
                GroupCommitter._compact = self._compact  # type: ignore[method-assign]
            else:
                del GroupCommitter._compact  # back to the inherited one
            self._compact = None
        if self._task is not None:
            self._task.cancel()
        lags = sorted(lag for _, lag in self.lags) or [0.0]
        by_gen: dict[str, list[float]] = {}
        for gen, sec in self.gcs:
            by_gen.setdefault(str(gen), []).append(sec)
        return {
            "loop_lag_ms": {
                "p50": round(1000 * lags[len(lags) // 2], 2),
                "p99": round(1000 * lags[int(len(lags) * 0.99)], 2),
                "max": round(1000 * lags[-1], 2),
                "over_100ms": sum(1 for x in lags if x > 0.1),
            },
            # in the stalls over 50 ms: the process's CPU time over the wall time (1 = it
            # ran its own work all along; near 0 = it waited for a CPU; > 1: commit threads)
            "stall_cpu_share": round(
                sum(c for c, _ in self.stall_cpu) / max(1e-9, sum(w for _, w in self.stall_cpu)), 2
            )
            if self.stall_cpu
            else None,
            # the 10 longest stalls: (unix time, ms), to set beside the late arrivals
            "worst_stalls": [
                (round(t, 3), round(1000 * lag, 1))
                for t, lag in sorted(self.lags, key=lambda x: -x[1])[:10]
            ],
            # automatic compactions during the run: (unix time begun, ms in the worker)
            "compactions": [(round(t, 3), round(1000 * sec, 1)) for t, sec in self.compactions],
            "gc": {
                gen: {
                    "count": len(v),
                    "total_ms": round(1000 * sum(v), 1),
                    "max_ms": round(1000 * max(v), 1),
                }
                for gen, v in sorted(by_gen.items())
            },
        }


async def _run(agents: list[Agent], cmd: dict[str, Any]) -> dict[str, Any]:
    if not os.environ.get("CRDTSYNC_BENCH_NO_GC_FREEZE"):
        # Dozens of agents' start-up objects (stores, documents, cores) moved out of the
        # collector's reach, as a long-lived server process would: at N = 128 the full
        # collections of a 32-agent process took 0.4-0.7 s each (wall, on the loaded machine;
        # measured by _Stalls below), the loop standing still meanwhile. Objects made during
        # the run are collected as usual. (CRDTSYNC_BENCH_NO_GC_FREEZE=1: not done, for A/B.)
        gc.freeze()
    stalls = _Stalls()
    stalls.start()
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
    diagnostics = stalls.stop()
    lat: list[float] = []
    late: list[tuple[float, float]] = []  # (unix time written, ms) of arrivals over 100 ms
    missing = 0
    for w in watches:
        lat.extend(w.latencies_ms())
        late.extend(w.late(100.0))
        missing += max(0, w.expected - len(w.arrived))
    Path(cmd["out"]).write_text(json.dumps({"latency_ms": lat, "late": late}))
    attempts = sum(a.counters.get("attempts", 0) for a in agents)
    return {
        "event": "done",
        "arrived": len(lat),
        "missing": missing,
        "connection_attempts": attempts,
        "log": dict(TALLY.errors),
        **diagnostics,
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
    if os.environ.get("CRDTSYNC_BENCH_NO_BUFFERED_READ"):
        # A/B only: paho reads each packet with its own recv calls, as before read_buffered
        import crdtsync.transports._mqtt_session as session

        session.read_buffered = lambda client: False  # type: ignore[assignment]
    if getattr(args, "remote_durability_cap", None) is not None:
        # A/B only (broker.py --remote-durability-cap): the cap equal to durability_interval
        # commits what each agent received every 50 ms, as before the stretch existed.
        import crdtsync.agent

        crdtsync.agent.REMOTE_DURABILITY_CAP = float(args.remote_durability_cap)
        # (and received updates start from durability_interval, as before h-recv's 0.2 s)
        crdtsync.agent.RECEIVED_DURABILITY_INTERVAL = min(
            crdtsync.agent.RECEIVED_DURABILITY_INTERVAL, float(args.remote_durability_cap)
        )
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
