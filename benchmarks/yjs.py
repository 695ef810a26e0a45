"""Yjs door vs the pycrdt-websocket hub, with stock Node y-websocket clients.

* fanout: 8 y-websocket clients (one Node process) on one room; client 0 writes map sets as
  fast as its socket takes them, the 7 others receive every one: updates/s until the last
  client has them all, and per-update latency p50/p99 (one clock: one process). Once against
  a crdtsync agent's ``/yjs/<shard>`` door (updates validated, persisted in LMDB and handed to
  gossip), once against pycrdt-websocket's ``WebsocketServer`` (in memory) — both servers in
  this Python process, the clients in the same Node process.
  ``server_cpu_s``: the server process's CPU seconds during the fanout (the agent's or the
  pycrdt-websocket hub's: this process; a Node hub's: its ``process.cpuUsage()``).
* sync: one Node client joins a room holding a 200,000-entry map (quick: 50,000) and waits
  until it has every entry.

* the same against the reference Yjs server ``@y/websocket-server`` (y-websocket clients) and
  Hocuspocus (``@hocuspocus/provider`` clients, ``benchmarks/peers/client.mjs``), each a Node
  process (benchmarks/peers: ``npm ci``, done on first use).

Full size runs every system 3 times, interleaved (``--repeat``), and reports the medians.

Targets (issue 12), against the strongest hub of the run (``vs_strongest``): fanout
throughput >= its, p99 no worse; sync within 1.5x. Needs node + npm (``tests/js``: ``npm ci``).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt
from benchlib import REPO, common_args, finish, free_ports, machine, ratio, size_of
from peers import NODE_HUBS, PEERS_DIR, describe, ensure_node_peers

JS = REPO / "tests" / "js"
UPDATES = {"tiny": 300, "quick": 2000, "full": 10000}
ENTRIES = {"tiny": 5000, "quick": 50000, "full": 200000}


async def node(*args: str, script: Path = JS / "bench.mjs") -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(script), *args, cwd=script.parent, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def map_state(entries: int) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    m = doc.get("m", type=pycrdt.Map)
    with doc.transaction():
        for i in range(entries):
            m[f"k{i}"] = i
    return doc.get_update()


class _Channel:
    def __init__(self, ws: Any, path: str) -> None:
        self._ws, self.path = ws, path

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(message)
        except ConnectionClosed:
            pass

    async def recv(self) -> bytes:
        return bytes(await self._ws.recv())


async def on_agent(tmp: Path, updates: int, state: bytes) -> dict[str, Any]:
    from crdtsync import Agent

    async with Agent("bench", tmp / "agent", listen="ws://127.0.0.1:0") as agent:
        big = await agent.shard("big")
        big.doc.apply_update(state)
        await big.flush()
        url = f"{agent.address}/yjs"
        cpu0 = time.process_time()
        fan = await node("fanout", url, "fan", "8", str(updates))
        fan["server_cpu_s"] = round(time.process_time() - cpu0, 3)
        sync = await node("sync", url, "big", str(len(big.doc.get("m", type=pycrdt.Map))))
    return {"fanout": fan, "sync": sync}


async def on_hub(updates: int, state: bytes) -> dict[str, Any]:
    from pycrdt.websocket import WebsocketServer
    from websockets.asyncio.server import serve

    server = WebsocketServer(auto_clean_rooms=False)

    async def handler(ws: Any) -> None:
        await server.serve(_Channel(ws, ws.request.path))

    async with server, serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        await server.get_room("/fan")
        room = await server.get_room("/big")
        room.ydoc.apply_update(state)
        url = f"ws://127.0.0.1:{port}"
        cpu0 = time.process_time()
        fan = await node("fanout", url, "fan", "8", str(updates))
        fan["server_cpu_s"] = round(time.process_time() - cpu0, 3)
        sync = await node("sync", url, "big", str(len(room.ydoc.get("m", type=pycrdt.Map))))
    return {"fanout": fan, "sync": sync}


async def on_node_hub(kind: str, updates: int, state: bytes, tmp: Path) -> dict[str, Any]:
    """A Node hub (benchmarks/peers/hub.mjs) with its natural Node clients: y-websocket's
    ``WebsocketProvider`` for @y/websocket-server, ``HocuspocusProvider`` for Hocuspocus."""
    (port,) = free_ports(1)
    state_file = tmp / "big.ystate"
    state_file.write_bytes(state)
    hub = await asyncio.create_subprocess_exec(
        "node",
        str(PEERS_DIR / "hub.mjs"),
        kind,
        str(port),
        str(state_file),
        "/big",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert hub.stdout is not None
        ready = json.loads(await asyncio.wait_for(hub.stdout.readline(), 120))
        assert ready.get("event") == "ready", ready
        url = f"ws://127.0.0.1:{port}"
        script = PEERS_DIR / "client.mjs" if kind == "hocuspocus" else JS / "bench.mjs"
        cpu0 = await _hub_cpu(hub)
        fan = await node("fanout", url, "fan", "8", str(updates), script=script)
        fan["server_cpu_s"] = round(await _hub_cpu(hub) - cpu0, 3)
        sync = await node("sync", url, "big", _entries(state), script=script)
    finally:
        if hub.returncode is None:
            hub.kill()
        await hub.wait()
    return {"fanout": fan, "sync": sync, "hub_process": ready}


async def _hub_cpu(hub: asyncio.subprocess.Process) -> float:
    """The Node hub's CPU seconds so far (hub.mjs ``stats``)."""
    assert hub.stdin is not None and hub.stdout is not None
    hub.stdin.write(b'{"cmd":"stats"}\n')
    await hub.stdin.drain()
    while True:
        line = json.loads(await asyncio.wait_for(hub.stdout.readline(), 60))
        if line.get("event") == "stats":
            return float(line["cpu_s"])


def _entries(state: bytes) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(state)
    return str(len(doc.get("m", type=pycrdt.Map)))


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's rounds as one result: each number of ``fanout`` and ``sync`` the median
    over the rounds (latency percentiles too: the median of the rounds' p99, not a p99 of
    the pooled samples), ``ok`` only if every round was, other values from the first round;
    every round is kept in ``each_run``."""
    out: dict[str, Any] = dict(runs[0])
    for part in ("fanout", "sync"):
        merged: dict[str, Any] = dict(runs[0][part])
        for key, value in runs[0][part].items():
            if isinstance(value, bool):
                merged[key] = all(bool(r[part].get(key)) for r in runs)
            elif isinstance(value, int | float):
                values = [r[part][key] for r in runs if isinstance(r[part].get(key), int | float)]
                merged[key] = statistics.median(values)
        out[part] = merged
    if len(runs) > 1:
        out["each_run"] = [{"fanout": r["fanout"], "sync": r["sync"]} for r in runs]
    return out


def ensure_js_clients() -> Path:
    """``tests/js`` with its node_modules (the stock Yjs clients), installed with ``npm ci``
    from its lockfile on first use, as the tests and the Node hubs do: the bench runs from a
    fresh clone (issue 17). Exits with a clear message without node/npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("the yjs bench needs node (>= 18) and npm on PATH")
    if not (JS / "node_modules" / "y-websocket").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, stdout=sys.stderr
        )
    return JS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds, each running every system once, interleaved (door, then each hub);"
        " figures are the medians over rounds (default: 3 at full size, else 1)",
    )
    p.add_argument(
        "--peers",
        default="pycrdt-websocket,y-websocket-server,hocuspocus",
        help="hubs next to the door (comma-separated)",
    )
    args = p.parse_args(argv)
    size = size_of(args)
    p_peers = args.peers.split(",") if args.peers else []
    ensure_js_clients()
    if any(k in NODE_HUBS for k in p_peers):
        ensure_node_peers()
    repeat = args.repeat if args.repeat is not None else (3 if size == "full" else 1)
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-yjs-bench-"))
    runs: dict[str, list[dict[str, Any]]] = {"crdtsync": [], **{k: [] for k in p_peers}}
    loads: list[float] = []
    try:
        t0 = time.perf_counter()
        state = map_state(ENTRIES[size])
        build = time.perf_counter() - t0
        for r in range(repeat):
            # Interleaved (door, hub, hub, ..., door, ...): a change of the machine's load
            # hits every system alike.
            runs["crdtsync"].append(asyncio.run(on_agent(tmp / f"agent{r}", UPDATES[size], state)))
            for kind in p_peers:
                if kind == "pycrdt-websocket":
                    runs[kind].append(asyncio.run(on_hub(UPDATES[size], state)))
                else:
                    runs[kind].append(asyncio.run(on_node_hub(kind, UPDATES[size], state, tmp)))
            loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    agent = _median_run(runs["crdtsync"])
    hubs = {kind: _median_run(runs[kind]) for kind in p_peers}
    fa = agent["fanout"]
    report: dict[str, Any] = {
        "benchmark": "yjs",
        "size": size,
        "machine": machine(),
        "node_peers": describe(),
        "map_entries": ENTRIES[size],
        "map_build_s": round(build, 2),
        "rounds": repeat,
        "load_after_each_round": [round(v, 2) for v in loads],
        "crdtsync": agent,
        "peers": hubs,
    }
    if "pycrdt-websocket" in hubs:
        hub = hubs["pycrdt-websocket"]
        fh = hub["fanout"]
        report["hub"] = hub
        report["ratios"] = {
            "updates_per_s (>= 1 meets)": ratio(fa.get("updates_per_s"), fh.get("updates_per_s")),
            "p99 (<= 1 meets)": ratio(fa.get("p99_ms"), fh.get("p99_ms")),
            "sync seconds (<= 1.5 meets)": ratio(
                agent["sync"].get("seconds"), hub["sync"].get("seconds")
            ),
        }
    strong: dict[str, Any] = {}
    for name, key, part, higher, target in (
        ("updates_per_s", "updates_per_s", "fanout", True, 1.0),
        ("p99_ms", "p99_ms", "fanout", False, 1.0),
        ("sync_seconds", "seconds", "sync", False, 1.5),
    ):
        best = None
        for kind, h in hubs.items():
            v = h[part].get(key) if h[part].get("ok", True) else None
            if v is not None and (best is None or (v > best[1] if higher else v < best[1])):
                best = (kind, v)
        mine = agent[part].get(key)
        if best is None or mine is None:
            continue
        r = ratio(mine, best[1])
        strong[name] = {
            "peer": best[0],
            "peer_value": best[1],
            "crdtsync": mine,
            "value": r,
            "target": (">= " if higher else "<= ") + f"{target:g}",
            "met": (mine >= target * best[1]) if higher else (mine <= target * best[1]),
        }
    report["vs_strongest"] = strong
    finish(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
