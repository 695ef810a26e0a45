"""CPU per receive through a real mosquitto, in one process: ``python benchmarks/receive_cost.py``.

The scale curve of broker.py spreads N agents over a few processes and measures latency on a
shared, noisy machine. This measures what one receive costs instead: ``--receivers`` agents
and one writer, all real :class:`crdtsync.Agent` instances on one asyncio event loop and one
mosquitto of our own (broker.py's ``Broker``), the writer paced at ``--rate`` writes per
second; each receiver observes its map (pycrdt's ``Map.observe``, as an application would)
and stamps every arrival. The process's CPU time (user and system, the commit threads
included; the writer's share too, one agent in ``receivers + 1``) over the receives is the
figure; the driver's effects passes (``MqttTransport.kick``) are counted per receive.
Issue 14's third pass used it (benchmarks/history/mqtt-broker.md): contention from other jobs inflates CPU
time far less than it inflates latency, and interleaved runs of two versions compare well.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from broker import Broker
from crdtsync.transports import mqtt

from crdtsync import Agent


async def measure(receivers: int, writes: int, rate: float, tmp: Path) -> dict[str, Any]:
    broker = Broker(tmp / "mosquitto")
    url = f"{broker.url}?keepalive=60"
    agents = [
        Agent(f"r{i}", data_dir=tmp / f"r{i}", broker=url, mesh="cost", seed=i)
        for i in range(receivers + 1)
    ]
    kicks = [0]
    real_kick = mqtt.MqttTransport.kick

    def counted_kick(self: mqtt.MqttTransport) -> None:
        kicks[0] += 1
        real_kick(self)

    try:
        for i in range(0, len(agents), 8):
            await asyncio.gather(*(a.start() for a in agents[i : i + 8]))
        shards = [await a.shard("bench") for a in agents]
        deadline = time.monotonic() + 60
        while min(len(getattr(a._transport, "_present", {})) for a in agents) < receivers:
            if time.monotonic() > deadline:
                raise RuntimeError("agents did not all see each other on the broker")
            await asyncio.sleep(0.2)
        await asyncio.sleep(3 + receivers / 16)  # the overlay's dials and prunes settle
        arrived = [0]
        latencies: list[float] = []

        def watcher(shard: Any) -> Any:
            def on_change(event: Any) -> None:
                now = time.time_ns()
                for key in event.keys:
                    arrived[0] += 1
                    latencies.append((now - int(shard.crdt[key])) / 1e6)

            return on_change

        for s in shards[1:]:
            s.crdt.observe(watcher(s))
        mqtt.MqttTransport.kick = counted_kick  # type: ignore[method-assign]
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        writer = shards[0]
        for j in range(writes):
            delay = t0 + j / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer[f"k{j}"] = str(time.time_ns())
        expected = writes * receivers
        while arrived[0] < expected and time.monotonic() - t0 < writes / rate + 60:
            await asyncio.sleep(0.05)
        wall = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        mqtt.MqttTransport.kick = real_kick  # type: ignore[method-assign]
        for a in agents:
            await a.close()
        broker.stop()
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    n = max(1, arrived[0])
    latencies.sort()
    return {
        "benchmark": "receive_cost",
        "receivers": receivers,
        "writes": writes,
        "rate": rate,
        "received": arrived[0],
        "expected": expected,
        "cpu_ms_per_receive": round(1000 * (user + system) / n, 4),
        "user_s": round(user, 3),
        "system_s": round(system, 3),
        "kicks_per_receive": round(kicks[0] / n, 3),
        "wall_s": round(wall, 2),
        "latency_ms": {
            "p50": round(latencies[len(latencies) // 2], 2) if latencies else None,
            "p99": round(latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
        },
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--receivers", type=int, default=32)
    p.add_argument("--writes", type=int, default=300)
    p.add_argument("--rate", type=float, default=50.0, help="writes per second")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-receive-cost-"))
    try:
        report = asyncio.run(measure(args.receivers, args.writes, args.rate, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
