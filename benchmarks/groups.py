"""Benchmark child hosting several replicas as asyncio tasks in one process (benchmarks/peers.py).

    python benchmarks/groups.py yclient  --url ws://127.0.0.1:P/ROOM --count K [--framing F]
    python benchmarks/groups.py crdtsync --data DIR --port P1 ... [--peer URL] --first-index I

``yclient`` members are :class:`YClient`: a Yjs sync-protocol client made of pycrdt's own pieces
(``create_sync_message``, ``handle_sync_message``, ``create_update_message``) that sends only
the updates of its own transactions, never one it received (``pycrdt.Provider`` sends every
transaction of its document back, remote ones included: one echo per update and receiver).
``--framing hocuspocus`` speaks Hocuspocus' framing around the same messages (a document name
before every message, an ``Auth`` message first, its ``SyncReply``/``SyncStatus`` types).
``crdtsync`` members are ``crdtsync.Agent`` instances, each with its own LMDB store and port.

The commands and events are those of benchmarks/nodes.py (one JSON object a line; same writer
loop ``write_keys``, same observer ``Arrivals``), applied to every member: ``write`` (by
member ``member``, default 0), ``expect`` (every member but those in ``skip``: one ``complete``
once all of them have all keys), ``dump`` (latencies per member), ``replicated`` (member 0),
``status`` (connected peers per member) and ``stats`` (frames and bytes this process sent and
received, CPU seconds). Clients of several processes let 32 or 64 replicas share a 2-core
machine without 64 Python interpreters being the first limit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import time
from pathlib import Path
from typing import Any

import nodes  # noqa: I001  (patches websockets' Connection.send to count frames, once)
import pycrdt
from pycrdt import (
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)
from websockets.asyncio.client import connect
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

RECEIVED = collections.Counter()  # type: collections.Counter[str]
_orig_recv = Connection.recv


async def _counting_recv(self: Connection, *args: Any, **kwargs: Any) -> Any:
    data = await _orig_recv(self, *args, **kwargs)
    RECEIVED["frames"] += 1
    RECEIVED["bytes"] += len(data)
    return data


Connection.recv = _counting_recv  # type: ignore[method-assign]

# Hocuspocus message types (@hocuspocus/server MessageType) and its Auth sub-type Token.
_HP_SYNC, _HP_AUTH, _HP_SYNC_REPLY, _HP_TOKEN = 0, 2, 4, 0


def _varuint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def _varstring(s: str) -> bytes:
    raw = s.encode()
    return _varuint(len(raw)) + raw


def _read_varuint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, pos


class YClient:
    """One Yjs document synced with a hub over one websocket; sends only its own updates.

    Remote updates are applied with ``self._applying`` set, so the document observer, which
    pycrdt calls synchronously inside ``apply_update``, knows not to queue them for sending.
    """

    def __init__(self, url: str, framing: str = "y") -> None:
        self.url = url
        self.room = url.split("/", 3)[3] if url.count("/") >= 3 else ""
        self.framing = framing
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.root = self.doc.get("root", type=pycrdt.Map)
        self.synced = asyncio.Event()
        self._applying = False
        self._outbox: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._ws: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._sub = self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: Any) -> None:
        if not self._applying:
            self._outbox.append(self._frame(create_update_message(event.update)))
            self._wake.set()

    def _frame(self, message: bytes) -> bytes:
        if self.framing == "hocuspocus":
            return _varstring(self.room) + message
        return message

    def _unframe(self, data: bytes) -> bytes | None:
        """The y-sync message inside a hub's message, or None for anything else."""
        if self.framing != "hocuspocus":
            return data if data and data[0] == YMessageType.SYNC else None
        name_len, pos = _read_varuint(data, 0)
        pos += name_len
        kind, pos = _read_varuint(data, pos)
        if kind in (_HP_SYNC, _HP_SYNC_REPLY):
            return bytes([YMessageType.SYNC]) + data[pos:]
        return None  # Auth (authenticated), SyncStatus (an ack per update), awareness

    async def start(self) -> None:
        self._ws = await connect(self.url, max_size=None, compression=None)
        if self.framing == "hocuspocus":
            await self._ws.send(
                _varstring(self.room) + _varuint(_HP_AUTH) + _varuint(_HP_TOKEN) + _varstring("")
            )
        await self._ws.send(self._frame(create_sync_message(self.doc)))
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._send())]

    async def _read(self) -> None:
        try:
            while True:
                data = await self._ws.recv()
                message = self._unframe(bytes(data))
                if message is None:
                    continue
                self._applying = True
                try:
                    reply = handle_sync_message(message[1:], self.doc)
                finally:
                    self._applying = False
                if message[1] == YSyncMessageType.SYNC_STEP2:
                    self.synced.set()
                if reply is not None:
                    await self._ws.send(self._frame(reply))
        except ConnectionClosed:
            pass

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                await self._ws.send(self._outbox.popleft())

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()


class _AgentMember:
    """A crdtsync Agent as a group member (same surface as YClient for the workload)."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.shard: Any = None

    async def start(self) -> None:
        await self.agent.start()
        self.shard = await self.agent.shard("bench")
        self.root = self.shard.crdt

    async def close(self) -> None:
        await self.agent.close()


def _stats() -> dict[str, Any]:
    ev = nodes.stats_event()
    ev["recv_frames"], ev["recv_bytes"] = RECEIVED["frames"], RECEIVED["bytes"]
    return ev


async def run(args: argparse.Namespace) -> None:
    members: list[Any]
    if args.kind == "yclient":
        members = [YClient(args.url, args.framing) for _ in range(args.count)]
    else:
        from crdtsync import Agent, wire

        nodes._TYPE_NAMES.update({tag: cls.__name__ for cls, tag in wire.TAGS.items()})
        nodes._COUNT_TYPES = True
        members = []
        for j, port in enumerate(args.port):
            i = args.first_index + j
            members.append(
                _AgentMember(
                    Agent(
                        f"a{i}",
                        data_dir=str(Path(args.data) / f"a{i}"),
                        listen=f"ws://127.0.0.1:{port}",
                        peers=args.peer if i else [],
                        gossip=nodes.gossip_config(args.gossip, f"a{i}"),
                        seed=i,
                    )
                )
            )
    commands = nodes.Commands(asyncio.get_running_loop())
    if getattr(args, "join", False):
        nodes.gc_before_t0()
        nodes.joinprof_start()
    t0 = time.time_ns()
    join: nodes.JoinWatch | None = None
    if getattr(args, "join", False):  # catch-up: time from before connecting until complete
        join = nodes.JoinWatch(t0, nodes._join_condition(members[0].root, args))
        members[0].doc.observe(join.poke)
    for m in members:
        await m.start()
    if args.kind == "yclient":
        await asyncio.wait_for(asyncio.gather(*(m.synced.wait() for m in members)), 60)
    if join is None:  # the settings of every Python system's process (nodes.py, _TUNING)
        nodes._tune_process()
    nodes.emit(
        {
            "event": "ready",
            "pid": os.getpid(),
            "members": len(members),
            "start_s": round((time.time_ns() - t0) / 1e9, 4),
        }
    )
    tasks: set[asyncio.Task[Any]] = set()
    if join is not None:

        async def joined(join: nodes.JoinWatch = join) -> None:
            join.poke()
            at = await join.done
            first = nodes.FIRST_SEND[0] if nodes.FIRST_SEND else None
            nodes.emit(
                {
                    "event": "synced",
                    "visible_s": (at - t0) / 1e9,
                    "durable_s": None,
                    "first_send_s": None if first is None else (first - t0) / 1e9,
                    "cpu_s": join.cpu_s,
                }
            )

        tasks.add(asyncio.create_task(joined()))
    expecting: dict[str, tuple[list[nodes.Arrivals], str]] = {}

    async def watch_all(prefix: str, arrs: list[nodes.Arrivals]) -> None:
        done = await asyncio.gather(*(a.done for a in arrs))
        nodes.emit(
            {
                "event": "complete",
                "prefix": prefix,
                "first_ns": min(d["first_ns"] for d in done),
                "last_ns": max(d["last_ns"] for d in done),
            }
        )

    try:
        while True:
            cmd = await commands.queue.get()
            op = cmd.get("cmd")
            try:
                if op == "quit":
                    break
                if op == "write":
                    root = members[cmd.get("member", 0)].root

                    async def do_write(root: Any = root, cmd: dict[str, Any] = cmd) -> None:
                        nodes.emit(
                            await nodes.write_keys(
                                root.__setitem__, cmd["prefix"], cmd["n"], cmd.get("rate", 0)
                            )
                        )

                    tasks.add(asyncio.create_task(do_write()))
                elif op == "expect":
                    skip = set(cmd.get("skip", []))
                    arrs = [
                        nodes.Arrivals(m.root, cmd["prefix"], cmd["n"], "", m.root.__getitem__)
                        for j, m in enumerate(members)
                        if j not in skip
                    ]
                    expecting[cmd["prefix"]] = (arrs, cmd["out"])
                    tasks.add(asyncio.create_task(watch_all(cmd["prefix"], arrs)))
                    nodes.emit({"event": "expecting", "prefix": cmd["prefix"]})
                elif op == "dump":
                    arrs, out = expecting.pop(cmd["prefix"])
                    by_member = []
                    for a in arrs:
                        by_member.append(
                            [
                                (a.arrived[f"{a.prefix}{i}"] - int(a.read(f"{a.prefix}{i}"))) / 1000
                                for i in range(a.n)
                            ]
                        )
                    Path(out).write_text(json.dumps({"latency_us_by_member": by_member}))
                    nodes.emit({"event": "dumped", "prefix": cmd["prefix"]})
                    if nodes._EVLOG:
                        nodes.evlog.dump()
                elif op == "replicated":
                    shard = members[0].shard

                    async def do_replicated(shard: Any = shard, cmd: dict[str, Any] = cmd) -> None:
                        await shard.replicated(cmd["peers"], timeout=cmd.get("timeout", 60))
                        nodes.emit({"event": "replicated", "at_ns": time.time_ns()})

                    tasks.add(asyncio.create_task(do_replicated()))
                elif op == "status":
                    connected = [
                        len([p for p in m.agent.peers if p.state == "connected"])
                        if isinstance(m, _AgentMember)
                        else int(m.synced.is_set())
                        for m in members
                    ]
                    counters: collections.Counter[str] = collections.Counter()
                    for m in members:
                        if isinstance(m, _AgentMember):
                            counters.update(m.agent.counters)
                    nodes.emit(
                        {
                            "event": "status",
                            "connected_per_member": connected,
                            "counters": dict(counters),
                        }
                    )
                elif op == "stats":
                    nodes.emit(_stats())
                else:
                    nodes.emit({"event": "error", "message": f"unknown command {op!r}"})
            except Exception as exc:
                nodes.emit({"event": "error", "message": f"{op}: {type(exc).__name__}: {exc}"})
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for m in members:
            await m.close()
        nodes.emit({"event": "stopped"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="kind", required=True)
    y = sub.add_parser("yclient")
    y.add_argument("--url", required=True)
    y.add_argument("--count", type=int, default=1)
    y.add_argument("--framing", choices=("y", "hocuspocus"), default="y")
    y.add_argument("--join", action="store_true", help="catch-up: emit synced (one member)")
    y.add_argument("--until-len", type=int, default=None)
    y.add_argument("--until-text-len", type=int, default=None)
    c = sub.add_parser("crdtsync")
    c.add_argument("--data", required=True)
    c.add_argument("--port", type=int, action="append", required=True)
    c.add_argument("--peer", action="append", default=[])
    c.add_argument("--first-index", type=int, default=0)
    c.add_argument("--gossip", default=None)
    args = p.parse_args()
    nodes._install_logging()
    if nodes._EVLOG:
        nodes.evlog.install(nodes._frame_type)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
