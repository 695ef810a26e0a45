"""A standalone agent process: ``crdtsync agent``.

Runs one :class:`~crdtsync.agent.Agent` until SIGINT or SIGTERM, then shuts down cleanly
(flush to disk, close every peer connection with ``GOING_AWAY``). Optionally it writes a
workload and prints one JSON status line per interval, which is how the demo and the
process tests watch a mesh converge from outside.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..agent import Agent
from ..lifecycle import tune_for_serving

__all__ = ["NodeOptions", "run_node"]


@dataclass(frozen=True)
class NodeOptions:
    """What ``crdtsync agent`` was asked to do."""

    name: str
    data_dir: Path | None
    listen: str | None
    peers: Sequence[str] = ()
    shards: Sequence[str] = ("board",)
    mesh: str = "default"
    writes: int = 0  # keys "<name>-<n>" to write into the first shard (a workload)
    write_rate: float = 50.0  # writes per second
    flush_writes: bool = True  # flush after every write and report it as acknowledged
    status_interval: float = 0.0  # print a JSON status line this often (0: never)
    seed: int | None = None
    replication_factor: int | None = None  # partial replication (None: every shard everywhere)
    keys: Path | None = None  # keys dir for Credentials.from_dir(keys, name)
    insecure: bool = False  # allow a non-loopback listen (or broker) without credentials/TLS
    broker: str | None = None  # mqtt[s]:// URL: gossip through an MQTT broker instead
    http: str | None = None  # serve the HTTP API on HOST:PORT (see crdtsync.http)


async def run_node(opts: NodeOptions) -> None:
    """Run the agent until SIGINT/SIGTERM (or until the workload is done and ``--exit``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    credentials = None
    if opts.keys is not None:
        from ..security.credentials import Credentials

        credentials = Credentials.from_dir(opts.keys, opts.name)
    async with Agent(
        opts.name,
        data_dir=opts.data_dir,
        listen=opts.listen,
        peers=opts.peers,
        mesh=opts.mesh,
        seed=opts.seed,
        replication_factor=opts.replication_factor,
        credentials=credentials,
        insecure=opts.insecure,
        http=opts.http,
        broker=opts.broker,
    ) as agent:
        shards = [await agent.shard(s) for s in opts.shards]
        tune_for_serving()  # a serving process: gc.freeze() after start-up (issue 18)
        _emit(
            {
                "event": "ready",
                "agent": opts.name,
                "address": agent.address,
                "pid": os.getpid(),
                "http": agent.http_url,
            }
        )
        tasks = []
        if opts.writes:
            tasks.append(asyncio.create_task(_workload(agent, shards[0], opts)))
        if opts.status_interval > 0:
            tasks.append(asyncio.create_task(_report(agent, shards, opts.status_interval)))
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    _emit({"event": "stopped", "agent": opts.name})


async def _workload(agent: Agent, shard, opts: NodeOptions) -> None:  # type: ignore[no-untyped-def]
    start = sum(1 for k in shard.keys() if k.startswith(f"{opts.name}-"))
    period = 1.0 / opts.write_rate if opts.write_rate > 0 else 0.0
    next_at = time.monotonic()
    for n in range(start, opts.writes):
        key = f"{opts.name}-{n}"
        shard[key] = {"by": opts.name, "n": n}
        if opts.flush_writes:
            await shard.flush()
            _emit({"event": "ack", "agent": opts.name, "key": key})
        next_at += period
        delay = next_at - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
    await shard.flush()
    _emit({"event": "workload-done", "agent": opts.name})


async def _report(agent: Agent, shards, interval: float) -> None:  # type: ignore[no-untyped-def]
    while True:
        _emit(
            {
                "event": "status",
                "agent": agent.name,
                "shards": {s.name: {"keys": len(s), "digest": s.digest().hex()} for s in shards},
                "connected": [p.name for p in agent.peers if p.state == "connected"],
                "known": [p.name for p in agent.peers],
            }
        )
        await asyncio.sleep(interval)


def _emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
