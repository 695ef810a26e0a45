"""The peers crdtsync is measured against, and which of them is the strongest in a run.

Hubs (one process each, 127.0.0.1 only):

* ``pycrdt-websocket``: its ``WebsocketServer`` (a YRoom) with ``pycrdt.Provider`` clients, as
  configured before issue 18. A Provider sends every transaction of its document, remote ones
  included, so each update comes back to the hub once per receiver (16 messages per update at
  8 clients where 8 would do). Kept as a row, never the strongest on purpose.
* ``pycrdt-websocket-noecho``: the same hub at its best: clients that send only their own
  updates (``YClient`` in benchmarks/groups.py, built on pycrdt's own sync functions). Its
  documentation names no server setting for throughput; the server runs with the settings
  that cost least here (no permessage-deflate, no message size limit, the room opened before
  the clients come).
* ``y-websocket-server``: the reference Yjs server, ``@y/websocket-server`` (Node), wired as its
  own ``server.js`` does (benchmarks/peers/hub.mjs), with the same Python clients.
* ``hocuspocus``: ``@hocuspocus/server`` (Node) with its defaults (``flushDelay`` 0, which
  coalesces broadcasts within one event-loop turn), the same clients speaking its framing.

The Node hubs are installed by ``npm ci`` in ``benchmarks/peers`` (``package-lock.json``
committed); :func:`ensure_node_peers` does it when ``node_modules`` is missing.

``strongest``: for each figure, the peer with the best value in the same run (highest
throughput, lowest latency or time); every ratio in ``vs_strongest`` is against that peer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import BENCH_DIR, Child, free_ports

__all__ = [
    "GROUPS",
    "NODE_HUBS",
    "PEERS",
    "PY_HUBS",
    "ensure_node_peers",
    "start_clients",
    "start_crdtsync_groups",
    "start_hub",
    "strongest",
]

PEERS_DIR = BENCH_DIR / "peers"
GROUPS = BENCH_DIR / "groups.py"
PY_HUBS = ("pycrdt-websocket", "pycrdt-websocket-noecho")
NODE_HUBS = ("y-websocket-server", "hocuspocus")
PEERS = (*PY_HUBS, *NODE_HUBS)
#: How each hub's clients talk to it: None = pycrdt.Provider (nodes.py hub-client), else the
#: framing of groups.py's YClient.
FRAMING: dict[str, str | None] = {
    "pycrdt-websocket": None,
    "pycrdt-websocket-noecho": "y",
    "y-websocket-server": "y",
    "hocuspocus": "hocuspocus",
}


def ensure_node_peers() -> Path:
    """``benchmarks/peers`` with its node_modules installed (``npm ci`` from the lockfile)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("the Node hubs need node and npm on PATH")
    if (
        not (PEERS_DIR / "node_modules" / "@hocuspocus" / "server").is_dir()
        or not (PEERS_DIR / "node_modules" / "@y" / "websocket-server").is_dir()
    ):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PEERS_DIR,
            check=True,
            stdout=sys.stderr,
        )
    return PEERS_DIR


def start_hub(
    kind: str, kids: list[Child], *, preload: Path | None = None
) -> tuple[Child, int, dict[str, Any]]:
    """Start hub ``kind`` on a free port serving room ``/bench``; returns it, its port and its
    ``ready`` event (a Node hub's names its Node version)."""
    (port,) = free_ports(1)
    if kind in PY_HUBS:
        args = ["--port", str(port), "--room", "/bench"]
        if preload is not None:
            args += ["--preload", str(preload)]
        hub = Child("hub-server", args, name=kind)
    elif kind in NODE_HUBS:
        ensure_node_peers()
        args = [str(port)] + ([str(preload), "/bench"] if preload is not None else [])
        hub = Child(kind, args, name=kind, program=["node", str(PEERS_DIR / "hub.mjs")])
    else:
        raise ValueError(f"unknown hub {kind!r}")
    kids.append(hub)
    ready = hub.wait("ready", 300)
    return hub, port, ready


def _split(total: int, procs: int) -> list[int]:
    base, extra = divmod(total, procs)
    return [base + (1 if i < extra else 0) for i in range(procs) if base or i < extra]


def start_clients(
    kind: str,
    port: int,
    clients: int,
    procs: int,
    kids: list[Child],
    extra: list[str] | None = None,
) -> list[Child]:
    """``clients`` clients of hub ``kind``: the first (the writer) alone in its process, the
    others spread over ``procs`` processes (``procs`` >= clients - 1: one each). Provider
    clients (``pycrdt-websocket``) always get one process each."""
    url = f"ws://127.0.0.1:{port}/bench"
    framing = FRAMING[kind]
    out: list[Child] = []
    if framing is None:
        for i in range(clients):
            out.append(Child("hub-client", ["--url", url, *(extra or [])], name=f"{kind}/c{i}"))
    else:
        sizes = [1, *_split(clients - 1, max(1, min(procs, clients - 1)))]
        for i, k in enumerate(sizes):
            out.append(
                Child(
                    "yclient",
                    ["--url", url, "--count", str(k), "--framing", framing, *(extra or [])],
                    name=f"{kind}/g{i}",
                    program=[sys.executable, str(GROUPS)],
                )
            )
    kids.extend(out)
    for c in out:
        c.wait("ready", 120)
    return out


def start_crdtsync_groups(
    agents: int, procs: int, gossip: str, data: Path, kids: list[Child], label: str
) -> tuple[list[Child], list[int]]:
    """``agents`` crdtsync Agents: a0 (the writer) alone in its process, the others spread over
    ``procs`` processes as asyncio tasks, each with its own store and port, seeded with a0."""
    ports = free_ports(agents)
    seed = f"ws://127.0.0.1:{ports[0]}"
    sizes = [1, *_split(agents - 1, max(1, min(procs, agents - 1)))]
    out: list[Child] = []
    first = 0
    for g, k in enumerate(sizes):
        args = ["--data", str(data), "--first-index", str(first), "--gossip", gossip]
        for port in ports[first : first + k]:
            args += ["--port", str(port)]
        if first:
            args += ["--peer", seed]
        out.append(
            Child("crdtsync", args, name=f"{label}/g{g}", program=[sys.executable, str(GROUPS)])
        )
        first += k
        if g == 0:
            out[0].wait("ready", 120)  # the seed listens before the others dial it
    kids.extend(out)
    for c in out[1:]:
        c.wait("ready", 180)
    deadline = time.monotonic() + 120
    while True:  # every agent connected to at least one other (the overlay forms from there)
        counts = []
        for c in out:
            c.send(cmd="status")
            counts += c.wait("status", 30)["connected_per_member"]
        if min(counts) >= 1:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: agents without a peer: {counts}")
        time.sleep(0.3)
    return out, ports


def strongest(
    results: dict[str, Any], get: Callable[[dict[str, Any]], float | None], higher: bool
) -> tuple[str | None, float | None]:
    """The peer (of ``PEERS`` present in ``results``) with the best value of ``get``."""
    best: tuple[str | None, float | None] = (None, None)
    for name in PEERS:
        if name not in results:
            continue
        try:
            v = get(results[name])
        except (KeyError, TypeError, IndexError):
            v = None
        if v is None:
            continue
        if best[1] is None or (v > best[1] if higher else v < best[1]):
            best = (name, v)
    return best


def describe() -> dict[str, Any]:
    """Versions of the Node hubs as installed (for the result's machine block)."""
    out: dict[str, Any] = {}
    for pkg in ("@y/websocket-server", "@hocuspocus/server", "yjs"):
        f = PEERS_DIR / "node_modules" / pkg / "package.json"
        if f.is_file():
            out[pkg] = json.loads(f.read_text()).get("version")
    if shutil.which("node"):
        out["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return out
