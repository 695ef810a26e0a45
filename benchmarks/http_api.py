"""The HTTP door's cost: PATCH requests/s and SSE delivery latency, next to in-process writes.

Measured in the same run on the same machine:

* ``in_process``: ``shard[key] = value`` in the agent's own process (apply + store append, no
  flush: what a PATCH does too), and the latency from such a write to the record coming out of
  ``shard.changes()`` (the feed the SSE endpoint reads).
* ``http``: a ``crdtsync agent --http`` process; ``concurrency`` keep-alive clients (a minimal
  HTTP/1.1 client, see :class:`RawClient`) send ``PATCH /shards/bench`` (one key each, JSON
  merge patch) as fast as answers come back; and a
  paced writer's PATCHes timed until their ``change`` event arrives on an SSE subscriber
  (``GET /shards/bench/events``) of the same agent: send-to-delivery latency.

Prints one JSON object; ``--plot-dir`` draws ``http_api.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx
from benchlib import common_args, finish, machine, pyplot, size_of, summary

from crdtsync import Agent

SIZES = {  # patches, concurrency, sse writes, sse rate (/s)
    "full": (20_000, 16, 2_000, 200.0),
    "quick": (4_000, 16, 500, 200.0),
    "tiny": (300, 4, 60, 100.0),
}


async def in_process(ops: int, sse_writes: int, rate: float, path: Path) -> dict[str, Any]:
    async with Agent("bench", data_dir=path) as agent:
        shard = await agent.shard("bench")
        t0 = time.perf_counter()
        for i in range(ops):
            shard[f"k{i}"] = i
        ops_per_s = ops / (time.perf_counter() - t0)
        sent: dict[str, float] = {}
        latencies: list[float] = []
        done = asyncio.Event()

        async def follow() -> None:
            async for change in shard.changes():
                now = time.perf_counter()
                for p in change.paths:
                    if p and p[0] in sent:
                        latencies.append((now - sent.pop(str(p[0]))) * 1000)
                if len(latencies) >= sse_writes:
                    done.set()
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        for i in range(sse_writes):
            key = f"w{i}"
            sent[key] = time.perf_counter()
            shard[key] = i
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(done.wait(), 10)
        await task
    return {"writes_per_s": ops_per_s, "feed_latency_ms": summary(latencies, 3)}


def start_agent(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).parent / "crdtsync"
    proc = subprocess.Popen(
        [
            str(exe) if exe.exists() else "crdtsync",
            "agent",
            "--name",
            "bench",
            "--data",
            str(tmp / "http-agent"),
            "--http",
            "127.0.0.1:0",
            "--shard",
            "bench",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    return proc, ready["http"]


class RawClient:
    """A minimal HTTP/1.1 keep-alive client for PATCH: httpx costs ~3 ms of client CPU per
    request here, several times what the server spends, so it would measure itself."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.writer is not None
        self.writer.close()
        await self.writer.wait_closed()

    async def patch(self, path: str, body: bytes) -> int:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            b"PATCH %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/merge-patch+json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"PATCH {path}: HTTP {status}")
        return status


async def http_patches(url: str, ops: int, concurrency: int) -> float:
    per = ops // concurrency

    async def client(c: int) -> None:
        async with RawClient(url) as http:
            for i in range(per):
                await http.patch("/shards/bench", f'{{"c{c}-{i % 500}": {i}}}'.encode())

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return per * concurrency / (time.perf_counter() - t0)


async def sse_latency(url: str, writes: int, rate: float) -> dict[str, Any]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    subscribed = asyncio.Event()
    done = asyncio.Event()

    async def subscriber() -> None:
        async with (
            httpx.AsyncClient(base_url=url, timeout=None) as http,
            http.stream("GET", "/shards/bench/events") as r,
        ):
            event = ""
            async for line in r.aiter_lines():
                now = time.perf_counter()
                if line.startswith("event: "):
                    event = line[7:]
                    if event == "snapshot":
                        subscribed.set()
                elif line.startswith("data: ") and event == "change":
                    for p in json.loads(line[6:])["paths"]:
                        if p and p[0] in sent:
                            latencies.append((now - sent.pop(p[0])) * 1000)
                    if len(latencies) >= writes:
                        done.set()
                        return

    task = asyncio.create_task(subscriber())
    await asyncio.wait_for(subscribed.wait(), 10)
    async with RawClient(url) as http:
        for i in range(writes):
            key = f"sse{i}"
            sent[key] = time.perf_counter()
            await http.patch("/shards/bench", f'{{"{key}": {i}}}'.encode())
            await asyncio.sleep(1 / rate)
    await asyncio.wait_for(done.wait(), 30)
    await task
    return summary(latencies, 3)


def plot(result: dict[str, Any]) -> Any:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    vals = [result["in_process"]["writes_per_s"], result["http"]["patch_requests_per_s"]]
    bars = a1.bar(
        ["shard[k] = v\n(in process)", f"PATCH over HTTP\n({result['concurrency']} clients)"],
        vals,
        color=["tab:gray", "tab:blue"],
    )
    a1.bar_label(bars, fmt="%.0f", fontsize=8)
    a1.set_yscale("log")
    a1.set_ylabel("writes per second (log)")
    lat_in, lat_http = result["in_process"]["feed_latency_ms"], result["http"]["sse_latency_ms"]
    labels = ["p50", "p99", "max"]
    x = range(len(labels))
    a2.bar(
        [i - 0.2 for i in x],
        [lat_in[k] for k in labels],
        width=0.4,
        label="changes() in process",
        color="tab:gray",
    )
    a2.bar(
        [i + 0.2 for i in x],
        [lat_http[k] for k in labels],
        width=0.4,
        label="PATCH -> SSE event",
        color="tab:blue",
    )
    a2.set_xticks(list(x), labels)
    a2.set_ylabel("delivery latency, ms")
    a2.legend(fontsize=8)
    fig.suptitle("HTTP API vs in-process writes", fontsize=9)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    args = parser.parse_args()
    size = size_of(args)
    ops, concurrency, sse_writes, rate = SIZES[size]
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-bench-http-"))
    proc = None
    try:
        base = asyncio.run(in_process(ops, sse_writes, rate, tmp / "in-process"))
        proc, url = start_agent(tmp)
        patches = asyncio.run(http_patches(url, ops, concurrency))
        sse = asyncio.run(sse_latency(url, sse_writes, rate))
        result: dict[str, Any] = {
            "benchmark": "http_api",
            "size": size,
            "machine": machine(),
            "ops": ops,
            "concurrency": concurrency,
            "sse_writes": sse_writes,
            "sse_rate_per_s": rate,
            "in_process": {
                "writes_per_s": round(base["writes_per_s"]),
                "feed_latency_ms": base["feed_latency_ms"],
            },
            "http": {"patch_requests_per_s": round(patches), "sse_latency_ms": sse},
            "ratio_patch_to_in_process": round(patches / base["writes_per_s"], 4),
        }
        finish(
            result, args.out, plot_dir=args.plot_dir, plots={"http_api.png": lambda: plot(result)}
        )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
