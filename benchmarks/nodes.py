"""Benchmark child processes: a crdtsync agent, a pycrdt-websocket hub, a hub client.

    python benchmarks/nodes.py crdtsync   --name a1 --data DIR [--listen URL] [--peer URL]...
    python benchmarks/nodes.py hub-server --port P [--preload FILE]
    python benchmarks/nodes.py hub-client --url ws://127.0.0.1:P/ROOM
    python benchmarks/nodes.py swarm      --broker URL --names a,b,c --data DIR  (swarm.py)

Each reads commands from stdin and writes events to stdout, one JSON object per line (see
``Child`` in benchlib.py). The crdtsync agent and the hub client accept the same workload
commands, so both systems run exactly the same writer and receiver code:

``write``   shard, prefix, n, rate (0: burst): n map sets ``prefix<i> = str(time.time_ns())``,
            each its own transaction, yielding to the event loop after each; rate > 0 paces
            them on an absolute schedule. Event ``written`` (first_ns, last_ns).
``expect``  shard, prefix, n, out: record, in this process, the arrival time of every key with
            that prefix (``time.time_ns()`` inside the document's observer, i.e. when the
            update is applied here). Events ``expecting`` (observer installed), then
            ``complete`` (first/last arrival) once all n arrived.
``dump``    prefix: write the latencies of an ``expect`` (arrival - stamp carried in the
            value, same machine clock) to its ``out`` file; sent by the parent once every
            receiver is complete, so that this work never competes with receiving.
``stats``   frames and payload bytes this process sent (every websocket message, counted in
            ``Connection.send``), by crdtsync message type, and its CPU seconds.
``quit``    close cleanly and exit.

``whoami``, ``stream``, ``follow``, ``follow-status``, ``follow-dump`` (both systems,
            stream.py): replay a trace live into the Text named by ``tag``, or record when
            each prefix of it arrives (see streamwork.py).

crdtsync agents also accept ``status``, ``open``, ``flush``, ``replicated`` (time until
``shard.replicated(peers)`` returns), ``genesis`` and ``replay`` (trace_replay.py). The
gossip settings come from ``--gossip`` (see :func:`gossip_config`; none: the Agent's default).

Joining (catch-up): ``--join SHARD --until-len N`` (or ``--until-text-len N`` for the Text
under key ``text``) makes the process measure, from just before it starts connecting, the
time until that shard's root map has N keys (or the text N characters): event ``synced``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import evlog
import pycrdt
import streamwork
from websockets.asyncio.connection import Connection
from websockets.protocol import Protocol

# ---------------------------------------------------------------------------------------------
# what this process sends on the wire (same instrumentation for both systems)

FRAMES = Counter()  # type: Counter[str]
_TYPE_NAMES: dict[int, str] = {}
_COUNT_TYPES = False
# Counted where every data frame is made, websockets' Protocol.send_binary / send_text: both
# Connection.send (every system) and crdtsync's direct write of a frame when its writer is idle
# (transports/_ws_inline.py, send_now) go through them.
_orig_send_binary = Protocol.send_binary
_orig_send_text = Protocol.send_text


_FRAMELOG = bool(os.environ.get("CRDTSYNC_BENCH_FRAMELOG"))
# time.time_ns() of this process's first frame sent: a joiner's start-up and connect, up to its
# first message (crdtsync's Hello, the hub client's SyncStep1), reported as first_send_s
FIRST_SEND: list[int] = []


def _count_frame(message: Any) -> None:
    if not FIRST_SEND:
        FIRST_SEND.append(time.time_ns())
    FRAMES["frames"] += 1
    FRAMES["bytes"] += len(message)
    if _COUNT_TYPES and isinstance(message, (bytes, bytearray)) and message:
        FRAMES["type:" + _frame_type(bytes(message))] += 1
    if _FRAMELOG:
        sys.stderr.write(f"FRAME {time.time():.4f} send {_frame_type(message)} {len(message)}\n")


def _counting_send_binary(self: Protocol, data: Any, fin: bool = True) -> None:
    if fin:  # (a fragmented message counts once, at its last frame)
        _count_frame(data)
    _orig_send_binary(self, data, fin)


def _counting_send_text(self: Protocol, data: Any, fin: bool = True) -> None:
    if fin:
        _count_frame(data)
    _orig_send_text(self, data, fin)


Protocol.send_binary = _counting_send_binary  # type: ignore[method-assign]
Protocol.send_text = _counting_send_text  # type: ignore[method-assign]

if _FRAMELOG:  # a timeline of frames, for investigations (sends: logged in _count_frame)
    _orig_recv = Connection.recv

    async def _logged_recv(self: Connection, *args: Any, **kwargs: Any) -> Any:
        data = await _orig_recv(self, *args, **kwargs)
        sys.stderr.write(f"FRAME {time.time():.4f} recv {_frame_type(data)} {len(data)}\n")
        return data

    Connection.recv = _logged_recv  # type: ignore[method-assign]


#: CRDTSYNC_BENCH_TIMELINE=DIR: a per-update timeline (investigations). The writer notes when
#: each frame left after each write (time.time_ns(), the peer's port, the write's index; noted in
#: ``Connection.send``, which crdtsync's direct writes of an idle link, ``send_now``, skip); a
#: receiver notes, with each arrival, when the frame that carried it was read off the socket
#: (``data_received``) and handed out by ``recv``. Written to DIR at ``dump``.
TIMELINE_DIR = os.environ.get("CRDTSYNC_BENCH_TIMELINE")
TL_WRITE: list[Any] = [None]  # the write (prefix, index) the writer made last
TL_SENDS: list[tuple[int, int, Any, int]] = []  # (ns, peer port, write, frame bytes)
TL_DATA = [0]  # ns of the last data_received
TL_RECV = [0, 0]  # ns at which the last frame was handed out by recv, our port of its link
if TIMELINE_DIR:
    _tl_send_inner = Connection.send
    _tl_recv_inner = Connection.recv
    _tl_data_inner = Connection.data_received

    async def _tl_send(self: Connection, message: Any, *args: Any, **kwargs: Any) -> None:
        port = (self.remote_address or (0, 0))[1]
        TL_SENDS.append((time.time_ns(), port, TL_WRITE[0], len(message)))
        await _tl_send_inner(self, message, *args, **kwargs)

    async def _tl_recv(self: Connection, *args: Any, **kwargs: Any) -> Any:
        data = await _tl_recv_inner(self, *args, **kwargs)
        TL_RECV[0] = time.time_ns()
        TL_RECV[1] = (self.local_address or (0, 0))[1]
        return data

    def _tl_data(self: Connection, data: bytes) -> None:
        TL_DATA[0] = time.time_ns()
        _tl_data_inner(self, data)

    Connection.send = _tl_send  # type: ignore[method-assign]
    Connection.recv = _tl_recv  # type: ignore[method-assign]
    Connection.data_received = _tl_data  # type: ignore[method-assign]
    # crdtsync's connections: a read of one binary frame does not reach websockets'
    # data_received (transports/_ws_inline.py), so their own entry point is noted too.
    from crdtsync.transports._ws_inline import InlineFrames

    _tl_inline_inner = InlineFrames.data_received

    def _tl_inline(self: Any, data: bytes) -> None:
        TL_DATA[0] = time.time_ns()
        _tl_inline_inner(self, data)

    InlineFrames.data_received = _tl_inline  # type: ignore[method-assign]


if os.environ.get("CRDTSYNC_BENCH_GCLOG"):  # each garbage collection's pause, for investigations
    import gc

    _gc_start: list[float] = [0.0]

    def _gc_log(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _gc_start[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _gc_start[0]) * 1e3
        sys.stderr.write(
            f"GC {time.time():.4f} gen{info['generation']} {ms:.1f} ms collected {info['collected']}\n"
        )

    gc.callbacks.append(_gc_log)


#: CRDTSYNC_BENCH_TUNING: "1" (default): every Python system's long-running child freezes what
#: its start-up made out of the cyclic GC's reach before ``ready`` (what
#: ``crdtsync.tune_for_serving`` does; the hub clients, nodes.py's and groups.py's, make the same
#: two stdlib calls). "0": not (the runs before issue 18's tail pass, for A/B).
_TUNING = os.environ.get("CRDTSYNC_BENCH_TUNING", "1")


#: Joiners (catch-up): with the tuning on (the default; ``CRDTSYNC_BENCH_GC_BEFORE_T0`` overrides
#: it either way), every joiner, whatever its system, collects the garbage of its imports
#: (``gc.collect()``) just before its t0. The imports are outside every timing (each process
#: makes them before t0); their garbage is part of them, and a young-generation collection of
#: it landed inside the join in 8 of 13 crdtsync paper timelines (1-7 ms; crdtsync imports more
#: than a hub's client; issue 17, h-paper). The same call in every system's joiner, as the
#: long-running children's ``gc.freeze()`` above; ``CRDTSYNC_BENCH_GC_BEFORE_T0=0`` for A/B.
_GC_BEFORE_T0 = os.environ.get("CRDTSYNC_BENCH_GC_BEFORE_T0", _TUNING) == "1"


def gc_before_t0() -> None:
    """``gc.collect()`` unless turned off (``_GC_BEFORE_T0``, see above)."""
    if _GC_BEFORE_T0:
        import gc

        gc.collect()


def _tune_process() -> None:
    """Apply ``_TUNING`` (see above) to this process, after its start-up, before ``ready``."""
    if _TUNING != "0":
        import gc

        gc.collect()
        gc.freeze()


_EVLOG = bool(os.environ.get("CRDTSYNC_BENCH_EVLOG"))  # DIR: evlog.py's event log, investigations


def _install_steplog() -> None:
    """``CRDTSYNC_BENCH_STEPLOG=1`` (investigations): a ``TL`` line on stderr at the start
    and end of the joiner's steps (agent start, validation, the shard's apply, the store's
    commit), which ``catchup_timeline.py`` merges into its timeline. Wrappers installed on
    the library's module attributes; nothing in the library changes."""
    import crdtsync.gossip._yjs as gyjs
    from crdtsync import Agent, updates
    from crdtsync.durability import GroupCommitter
    from crdtsync.shard import Shard

    def _cpu() -> str:  # this thread's CPU so far (ms): a step's CPU next to its wall time
        return f" cpu={time.thread_time() * 1e3:.2f}"

    def wrap(owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)
        if asyncio.iscoroutinefunction(inner):

            async def async_step(*a: Any, **k: Any) -> Any:
                sys.stderr.write(f"TL {time.time():.6f} {label} begin{_cpu()}\n")
                try:
                    return await inner(*a, **k)
                finally:
                    sys.stderr.write(f"TL {time.time():.6f} {label} end{_cpu()}\n")

            setattr(owner, name, async_step)
            return

        def step(*a: Any, **k: Any) -> Any:
            sys.stderr.write(f"TL {time.time():.6f} {label} begin{_cpu()}\n")
            try:
                return inner(*a, **k)
            finally:
                sys.stderr.write(f"TL {time.time():.6f} {label} end{_cpu()}\n")

        setattr(owner, name, step)

    wrap(Agent, "start", "agent.start")
    wrap(gyjs, "validate_update", "validate(core)")
    wrap(updates, "validate_update", "validate(registry)")
    wrap(Shard, "apply_remote_batch", "shard.apply_remote_batch")
    wrap(GroupCommitter, "_commit_in_worker", "committer.commit(worker thread)")
    from crdtsync.transports import websocket as ws_transport

    from crdtsync._registry import ShardRegistry
    from crdtsync.gossip.antientropy import AntiEntropy
    from crdtsync.gossip.core import GossipCore
    from crdtsync.gossip.handshake import Handshake
    from crdtsync.store import Store

    wrap(Agent, "shard", "agent.shard")
    wrap(Store, "__init__", "store.open")
    wrap(ws_transport.WebsocketTransport, "start", "transport.start")
    wrap(ws_transport.WebsocketTransport, "_dial", "transport.dial")
    wrap(Handshake, "receive", "handshake.receive")
    wrap(Handshake, "_speak", "handshake.speak")
    wrap(Shard, "digest", "shard.digest")
    wrap(ShardRegistry, "apply", "registry.apply")
    wrap(AntiEntropy, "on_diff", "ae.on_diff")
    wrap(GossipCore, "receive", "core.receive")
    from websockets.asyncio.client import ClientConnection

    from crdtsync import values

    wrap(ClientConnection, "handshake", "ws.client_handshake")
    wrap(asyncio.BaseEventLoop, "create_connection", "loop.create_connection")
    wrap(asyncio.BaseEventLoop, "sock_connect", "loop.sock_connect")
    wrap(Shard, "_on_transaction", "shard.on_transaction")
    wrap(values, "migrate", "values.migrate")


def _frame_type(frame: bytes) -> str:
    """The crdtsync message type of a frame (an msgpack array whose first item is the tag)."""
    head = frame[0]
    if 0x90 <= head <= 0x9F:
        tag = frame[1]
    elif head == 0xDC:
        tag = frame[3]
    elif head == 0xDD:
        tag = frame[5]
    else:
        return "?"
    return _TYPE_NAMES.get(tag, f"tag{tag}")


class _FailFast(logging.Handler):
    """An ERROR logged by the library (a task or callback that failed), or a connection closed
    because one of our own agents sent something invalid, ends the benchmark: the parent
    sees an ``error`` event at once instead of waiting for a timeout."""

    _BUGS = (
        "INVALID_UPDATE",
        "INTERNAL_ERROR",
        "MALFORMED_FRAME",
        "UNKNOWN_MESSAGE",
        "INVALID_SHARD",
    )

    #: Set for an agent that hostile peers talk to (benchmarks/hostile.py): closing them with
    #: INVALID_UPDATE is its job there, not a bug.
    _ATTACKED = bool(os.environ.get("CRDTSYNC_BENCH_ATTACKED"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and (
            self._ATTACKED or not any(b in record.getMessage() for b in self._BUGS)
        ):
            return
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        emit({"event": "error", "message": f"{record.name}: {text}"[:2000]})


def _install_logging() -> None:
    logging.basicConfig(
        level=logging.INFO if os.environ.get("CRDTSYNC_DEBUG_LOG") else logging.WARNING,
        stream=sys.stderr,
        format="%(relativeCreated)d %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().addHandler(_FailFast(level=logging.WARNING))


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


#: Agents of this process whose transport counters go into ``stats`` (broker publishes).
AGENTS: list[Any] = []


def stats_event() -> dict[str, Any]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    mqtt: Counter[str] = Counter()
    for agent in AGENTS:
        mqtt.update(agent.counters)
    return {
        "event": "stats",
        "pid": os.getpid(),
        "frames": FRAMES["frames"],
        "bytes": FRAMES["bytes"],
        "by_type": {k[5:]: v for k, v in FRAMES.items() if k.startswith("type:")},
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 4),
        "mqtt": dict(mqtt),
        "hub_dropped": HUB_DROPPED[0],
    }


class Commands:
    """stdin JSON lines -> an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._loop = loop
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            self._loop.call_soon_threadsafe(self.queue.put_nowait, cmd)
        self._loop.call_soon_threadsafe(self.queue.put_nowait, {"cmd": "quit"})


# ---------------------------------------------------------------------------------------------
# the workload, identical for both systems


async def write_keys(setter: Any, prefix: str, n: int, rate: float) -> dict[str, Any]:
    """n sets ``prefix<i> = str(time_ns)``, each its own transaction, yielding after each."""
    start = time.perf_counter()
    first = last = 0
    for i in range(n):
        if rate > 0:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        stamp = time.time_ns()
        TL_WRITE[0] = (prefix, i)
        if _EVLOG:
            evlog.note_set(f"{prefix}{i}")
        setter(f"{prefix}{i}", str(stamp))
        if i == 0:
            first = stamp
        last = stamp
        await asyncio.sleep(0)
    if TIMELINE_DIR:
        Path(TIMELINE_DIR).mkdir(parents=True, exist_ok=True)
        mine = [(ns, port, w[1], size) for ns, port, w, size in TL_SENDS if w and w[0] == prefix]
        Path(TIMELINE_DIR, f"send-{os.getpid()}-{prefix}.json").write_text(json.dumps(mine))
        TL_SENDS.clear()
    return {
        "event": "written",
        "prefix": prefix,
        "n": n,
        "first_ns": first,
        "last_ns": last,
        "wall_s": round(time.perf_counter() - start, 4),
    }


class Arrivals:
    """Arrival times of the keys ``prefix<i>`` of a map, recorded in its observer.

    Only the arrival time is taken in the observer; reading the stamps back and writing the
    latencies happens on ``dump``, after every receiver is complete, so that this work does
    not steal CPU from receivers still receiving.
    """

    def __init__(self, root: pycrdt.Map, prefix: str, n: int, out: str, read: Any) -> None:
        self.root, self.prefix, self.n, self.out, self.read = root, prefix, n, out, read
        self.arrived: dict[str, int] = {}
        self.frames: dict[str, tuple[int, int, int]] = {}  # key -> data_received, recv ns, port
        self.done = asyncio.get_running_loop().create_future()
        self._sub = root.observe(self._on_change)

    def _on_change(self, event: Any) -> None:
        now = time.time_ns()
        for key in event.keys:
            if key.startswith(self.prefix) and key not in self.arrived:
                self.arrived[key] = now
                if _EVLOG:
                    evlog.EV.append((now, "arr", key, 0))
                if TIMELINE_DIR:
                    self.frames[key] = (TL_DATA[0], TL_RECV[0], TL_RECV[1])
        if len(self.arrived) >= self.n and not self.done.done():
            self.done.get_loop().call_soon(self._finish)

    def _finish(self) -> None:
        if self.done.done():
            return
        self.root.unobserve(self._sub)
        arrivals = self.arrived.values()
        self.done.set_result(
            {
                "event": "complete",
                "prefix": self.prefix,
                "first_ns": min(arrivals),
                "last_ns": max(arrivals),
            }
        )

    def dump(self) -> dict[str, Any]:
        lat_us = []
        for i in range(self.n):
            key = f"{self.prefix}{i}"
            stamp = int(self.read(key))
            lat_us.append((self.arrived[key] - stamp) / 1000)
        Path(self.out).write_text(json.dumps({"latency_us": lat_us}))
        if TIMELINE_DIR:
            rows = [
                (
                    i,
                    int(self.read(f"{self.prefix}{i}")),
                    *self.frames.get(f"{self.prefix}{i}", (0, 0, 0)),
                    self.arrived[f"{self.prefix}{i}"],
                )
                for i in range(self.n)
            ]
            Path(TIMELINE_DIR).mkdir(parents=True, exist_ok=True)
            Path(TIMELINE_DIR, f"recv-{os.getpid()}-{self.prefix}.json").write_text(
                json.dumps({"rows": rows})
            )
        return {"event": "dumped", "prefix": self.prefix}


async def watch(arrivals: Arrivals) -> None:
    try:
        emit(await arrivals.done)
    except Exception as exc:
        emit({"event": "error", "message": f"expect: {type(exc).__name__}: {exc}"})


#: CRDTSYNC_BENCH_JOINPROF=DIR (investigations): cProfile a joiner from its t0 until the document
#: is complete (``JoinWatch``), nothing before or after, into DIR/join-<pid>.prof; the process's
#: start-up, imports and the time after "synced" are left out, unlike CRDTSYNC_BENCH_CPROFILE.
_JOINPROF_DIR = os.environ.get("CRDTSYNC_BENCH_JOINPROF")
_JOINPROF: list[Any] = []
_MODULES_AT_T0: set[str] = set()  # (steplog: what a joiner imports inside its timing)


def joinprof_start() -> None:
    """Start the join-window profiler (a no-op unless ``CRDTSYNC_BENCH_JOINPROF`` is set)."""
    if _JOINPROF_DIR and not _JOINPROF:
        import cProfile

        _JOINPROF.append(cProfile.Profile())
        _JOINPROF[0].enable()


def _joinprof_stop() -> None:
    if _JOINPROF:
        prof = _JOINPROF.pop()
        prof.disable()
        Path(_JOINPROF_DIR or ".").mkdir(parents=True, exist_ok=True)
        prof.dump_stats(str(Path(_JOINPROF_DIR or ".") / f"join-{os.getpid()}.prof"))


class JoinWatch:
    """Time from ``t0`` until a condition on a document holds (checked after each transaction)."""

    def __init__(self, t0_ns: int, condition: Any, cpu0: float | None = None) -> None:
        self.t0 = t0_ns
        self.condition = condition
        self.done = asyncio.get_running_loop().create_future()
        # CPU of this process (all threads) from about t0 until done: a figure that the
        # machine's load moves far less than the wall time
        self.cpu0 = time.process_time() if cpu0 is None else cpu0
        self.cpu_s: float | None = None

    def poke(self, _event: Any = None) -> None:
        if not self.done.done():
            self.done.get_loop().call_soon(self._check)

    def _check(self) -> None:
        if not self.done.done() and self.condition():
            self.cpu_s = time.process_time() - self.cpu0
            _joinprof_stop()
            if os.environ.get("CRDTSYNC_BENCH_STEPLOG"):
                sys.stderr.write(
                    f"TL {time.time():.6f} visible cpu={time.thread_time() * 1e3:.2f}\n"
                )
                new = sorted(set(sys.modules) - _MODULES_AT_T0)
                sys.stderr.write(f"TL {time.time():.6f} imported since t0: {' '.join(new)}\n")
            self.done.set_result(time.time_ns())


# ---------------------------------------------------------------------------------------------
# crdtsync


async def run_crdtsync(args: argparse.Namespace) -> None:
    global _COUNT_TYPES

    # Imports stay outside every timing, as for the hubs' clients (their libraries are imported
    # before their t0): Agent.start() imports the websocket driver (with the security package,
    # cryptography, PyJWT) and the metrics (prometheus-client) on first use, 0.1-0.3 s on this
    # machine that a long-running process pays once, not per catch-up.
    import crdtsync.transports.websocket  # noqa: F401

    import crdtsync.metrics  # noqa: F401
    from crdtsync import Agent, wire

    _TYPE_NAMES.update({tag: cls.__name__ for cls, tag in wire.TAGS.items()})
    _COUNT_TYPES = True
    pycrdt.Doc()  # pycrdt imports anyio's asyncio backend at its first Doc (the hub client's
    # Doc is made before its t0 too)
    config = gossip_config(args.gossip, args.name)
    loop = asyncio.get_running_loop()
    commands = Commands(loop)
    steplog = bool(os.environ.get("CRDTSYNC_BENCH_STEPLOG"))
    if steplog:
        _install_steplog()
    if args.join:
        gc_before_t0()
        joinprof_start()
    if steplog:
        _MODULES_AT_T0.update(sys.modules)
    t0, cpu0 = time.time_ns(), time.process_time()
    if steplog:
        sys.stderr.write(f"TL {t0 / 1e9:.6f} t0 cpu={time.thread_time() * 1e3:.2f}\n")
    agent = Agent(
        args.name,
        data_dir=args.data,
        listen=args.listen,
        peers=args.peer,
        gossip=config,
        seed=args.seed,
        durability_interval=args.durability_interval,
        broker=args.broker,
    )
    AGENTS.append(agent)
    join: JoinWatch | None = None
    if args.join:
        await agent.start()
        shard = await agent.shard(args.join)  # no await happened since start: nothing arrived yet
        join = JoinWatch(t0, _join_condition(shard.crdt, args), cpu0)
        shard.doc.observe(join.poke)
        join.poke()
    else:
        await agent.start()
    for name in args.shard:
        await agent.shard(name)
    effective = getattr(agent, "_gossip_config", config)
    if join is None:  # (a catch-up measures from t0: no collection inside it)
        if _TUNING != "0":
            from crdtsync import tune_for_serving

            tune_for_serving()
    emit(
        {
            "event": "ready",
            "agent": args.name,
            "address": agent.address,
            "pid": os.getpid(),
            "gossip": {k: getattr(effective, k, None) for k in _REPORTED},
            "start_s": round((time.time_ns() - t0) / 1e9, 4),
        }
    )
    tasks: set[asyncio.Task[Any]] = set()
    expecting: dict[str, Arrivals] = {}
    following: dict[str, Any] = {}
    if join is not None:

        async def joined() -> None:
            assert join is not None
            t_visible = await join.done
            shard = await agent.shard(args.join)
            await shard.flush()
            t_durable = time.time_ns()
            emit(
                {
                    "event": "synced",
                    "visible_s": (t_visible - join.t0) / 1e9,
                    "durable_s": (t_durable - join.t0) / 1e9,
                    "first_send_s": (FIRST_SEND[0] - join.t0) / 1e9 if FIRST_SEND else None,
                    "cpu_s": join.cpu_s,
                    "digest": shard.digest().hex(),
                }
            )

        tasks.add(asyncio.create_task(joined()))
    try:
        while True:
            cmd = await commands.queue.get()
            op = cmd.get("cmd")
            try:
                if op == "quit":
                    break
                if op == "status":
                    emit(
                        {
                            "event": "status",
                            "connected": [p.name for p in agent.peers if p.state == "connected"],
                            "shards": {
                                n: {
                                    "digest": (await agent.shard(n)).digest().hex(),
                                    "len": len(await agent.shard(n)),
                                }
                                for n in cmd.get("shards", [])
                            },
                        }
                    )
                elif op == "open":
                    for n in cmd["shards"]:
                        await agent.shard(n)
                    emit({"event": "opened", "count": len(cmd["shards"])})
                elif op == "write":
                    shard = await agent.shard(cmd["shard"])

                    async def do_write(shard: Any = shard, cmd: dict[str, Any] = cmd) -> None:
                        emit(
                            await write_keys(
                                shard.__setitem__, cmd["prefix"], cmd["n"], cmd.get("rate", 0)
                            )
                        )

                    tasks.add(asyncio.create_task(do_write()))
                elif op == "expect":
                    shard = await agent.shard(cmd["shard"])
                    arr = expecting[cmd["prefix"]] = Arrivals(
                        shard.crdt, cmd["prefix"], cmd["n"], cmd["out"], shard.__getitem__
                    )
                    tasks.add(asyncio.create_task(watch(arr)))
                    emit({"event": "expecting", "prefix": cmd["prefix"]})
                elif op == "replicated":
                    shard = await agent.shard(cmd["shard"])

                    async def do_replicated(shard: Any = shard, cmd: dict[str, Any] = cmd) -> None:
                        t = time.time_ns()
                        timed_out = False
                        try:
                            await shard.replicated(cmd["peers"], timeout=cmd.get("timeout", 60))
                        except TimeoutError:
                            # Answered, not left to the caller's own (longer) wait: a probe
                            # is bounded by the timeout it asked for (benchmarks/hostile.py).
                            timed_out = True
                        emit(
                            {
                                "event": "replicated",
                                "at_ns": time.time_ns(),
                                "waited_s": (time.time_ns() - t) / 1e9,
                                "timed_out": timed_out,
                            }
                        )

                    tasks.add(asyncio.create_task(do_replicated()))
                elif op == "genesis":
                    shard = await agent.shard(cmd["shard"])
                    shard.apply_remote(Path(cmd["file"]).read_bytes(), "genesis")
                    await shard.flush()
                    emit({"event": "genesis"})
                elif op == "replay":
                    tasks.add(asyncio.create_task(_replay(agent, cmd)))
                elif op in STREAM_OPS:
                    shard = await agent.shard(cmd["shard"])
                    flush = shard.flush if cmd.get("durable") else None
                    text = shard.text(cmd["tag"])
                    _stream_command(op, cmd, shard.doc, text, tasks, following, flush)
                elif op == "flush":
                    for n in agent.shard_names():
                        await (await agent.shard(n)).flush()
                    emit({"event": "flushed"})
                elif op == "stats":
                    emit(stats_event())
                elif op == "counters":  # the agent's refusal counters (benchmarks/hostile.py)
                    emit({"event": "counters", "counters": agent.counters})
                elif op == "dump":
                    emit(expecting.pop(cmd["prefix"]).dump())
                    if _EVLOG:
                        evlog.dump()
                else:
                    emit({"event": "error", "message": f"unknown command {op!r}"})
            except Exception as exc:  # report, keep serving
                emit({"event": "error", "message": f"{op}: {type(exc).__name__}: {exc}"})
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await agent.close()
        emit({"event": "stopped"})


_REPORTED = (
    "push_interval",
    "align_windows",
    "send_when_idle",
    "full_mesh_max",
    "anti_entropy_interval",
)


def gossip_config(spec_text: str | None, name: str) -> Any:
    """The GossipConfig to run with, from ``--gossip``: a JSON object whose optional ``preset``
    is ``"default"`` (whatever ``Agent`` uses when given none: the figure users get),
    ``"wan"`` (the class defaults, ``GossipConfig()``) or ``"lan"`` (``GossipConfig.lan()``),
    and whose other keys override fields of it. None (no flag, or the bare default) lets the
    Agent choose."""
    from dataclasses import replace

    from crdtsync import Agent
    from crdtsync.gossip import GossipConfig

    spec = json.loads(spec_text) if spec_text else {}
    preset = spec.pop("preset", "default")
    if preset == "default" and not spec:
        return None
    if preset == "wan":
        base = GossipConfig()
    elif preset == "lan":
        base = GossipConfig.lan()
    else:  # the Agent's own default, read from an Agent that is never started
        base = getattr(Agent(name, data_dir=os.devnull), "_gossip_config", None) or GossipConfig()
    return replace(base, **spec)


def _join_condition(root: pycrdt.Map, args: argparse.Namespace) -> Any:
    if args.until_text_len is not None:

        def cond() -> bool:
            text = root.get("text")
            return text is not None and len(text) >= args.until_text_len

        return cond
    return lambda: len(root) >= args.until_len


async def _replay(agent: Any, cmd: dict[str, Any]) -> None:
    """Trace replay: apply this author's precomputed updates in order, each once the shard
    holds everything it was typed on top of (its parents' state vector), then wait until the
    text has its final length and content. Events ``replayed`` and ``final``."""
    from crdtsync import updates

    plan = json.loads(Path(cmd["plan"]).read_text())
    shard = await agent.shard(cmd["shard"])
    start_at = cmd["start_ns"]
    changed = asyncio.Event()
    shard.doc.observe(lambda _e: changed.set())
    await asyncio.sleep(max(0.0, (start_at - time.time_ns()) / 1e9))
    waits = done = 0
    for step in plan["steps"]:
        need = {int(c): k for c, k in step["needs"].items()}
        while True:
            sv = updates.decode_state_vector(shard.doc.get_state())
            if all(sv.get(c, 0) >= k for c, k in need.items()):
                break
            waits += 1
            changed.clear()
            await changed.wait()
        shard.apply_remote(bytes.fromhex(step["update"]), "trace")
        done += 1
        if done % 250 == 0:
            emit({"event": "replay-progress", "steps": done})
        await asyncio.sleep(0)
    emit(
        {"event": "replayed", "at_ns": time.time_ns(), "steps": len(plan["steps"]), "waits": waits}
    )
    final_len = cmd["final_len"]
    while True:
        text = shard.crdt.get("text")
        if text is not None and len(text) >= final_len:
            break
        changed.clear()
        await changed.wait()
    done = time.time_ns()
    content = str(shard.crdt["text"])
    emit({"event": "final", "at_ns": done, "len": len(content), "sha": _sha(content)})


STREAM_OPS = ("whoami", "stream", "follow", "follow-status", "follow-dump")


def _stream_command(
    op: str,
    cmd: dict[str, Any],
    doc: pycrdt.Doc,
    text: pycrdt.Text,
    tasks: set[asyncio.Task[Any]],
    following: dict[str, Any],
    flush: Any,
) -> None:
    """``stream`` / ``follow`` / ``follow-dump`` of stream.py (see streamwork.py), the same
    code for both systems. Events ``streamed``, ``following`` then ``followed``,
    ``follow-dumped``."""
    if op == "whoami":
        emit({"event": "whoami", "client_id": doc.client_id})
    elif op == "stream":

        async def go() -> None:
            emit(await streamwork.stream_edits(doc, text, cmd, flush))

        tasks.add(asyncio.create_task(go()))
    elif op == "follow":
        follower = following[cmd["tag"]] = streamwork.Follower(doc, text, cmd)

        async def wait() -> None:
            emit(await follower.done)

        tasks.add(asyncio.create_task(wait()))
        emit({"event": "following", "tag": cmd["tag"], "held": follower.held})
    elif op == "follow-status":  # progress, for stream.py's stall watchdog
        emit({"event": "follow-status", "tag": cmd["tag"], "held": following[cmd["tag"]].held})
    else:
        emit(following.pop(cmd["tag"]).dump())


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# pycrdt-websocket: the hub and its clients


class WsChannel:
    """pycrdt's ``Channel`` over a ``websockets`` asyncio connection (both ends)."""

    def __init__(self, ws: Connection, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WsChannel:
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
        data = await self._ws.recv()
        return bytes(data) if not isinstance(data, bytes) else data


#: Updates the pycrdt-websocket hub dropped (see :func:`_count_hub_drops`), in ``stats``.
HUB_DROPPED = [0]


def _count_hub_drops() -> None:
    """Count the updates the hub's room drops without a word.

    ``YRoom`` (pycrdt-websocket 0.16) queues each update of its document for broadcast with
    ``put_updates``: ``send_nowait`` on a memory stream of ``max_buffer_size=65536`` inside
    ``try: ... except Exception: pass``. When its broadcast task falls more than 65,536
    updates behind the updates it applies (the stream's burst: 259,778 one-edit
    transactions), the rest are dropped, no client is told, and y-protocols has no later
    exchange that would repair them: its clients wait for ever. This wrapper leaves the
    hub's behaviour as it is and only counts, before the call, a send that cannot fit."""
    from pycrdt.websocket import yroom

    inner = yroom.put_updates

    def counting(stream: Any, event: Any) -> None:
        st = stream.statistics()
        if st.current_buffer_used >= st.max_buffer_size and st.tasks_waiting_receive == 0:
            HUB_DROPPED[0] += 1
        inner(stream, event)

    yroom.put_updates = counting


async def run_hub_server(args: argparse.Namespace) -> None:
    from pycrdt.websocket import WebsocketServer
    from websockets.asyncio.server import serve

    _count_hub_drops()
    loop = asyncio.get_running_loop()
    commands = Commands(loop)
    server = WebsocketServer(auto_clean_rooms=False)

    async def handler(ws: Any) -> None:
        await server.serve(WsChannel(ws, ws.request.path))

    async with server, serve(handler, "127.0.0.1", args.port, max_size=None, compression=None):
        # Open the room before any client comes: eight clients joining a room that does not
        # exist yet race in WebsocketServer.get_room/start_room (a client can be left unsynced).
        room = await server.get_room(args.room)
        if args.preload:
            room.ydoc.apply_update(Path(args.preload).read_bytes())
        emit({"event": "ready", "pid": os.getpid(), "port": args.port})
        while True:
            cmd = await commands.queue.get()
            if cmd.get("cmd") == "quit":
                break
            if cmd.get("cmd") == "stats":
                emit(stats_event())
    emit({"event": "stopped"})


async def run_hub_client(args: argparse.Namespace) -> None:
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    commands = Commands(loop)
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    join: JoinWatch | None = None
    if args.join:
        gc_before_t0()
    t0 = time.time_ns()
    if args.join:
        join = JoinWatch(t0, _join_condition(root, args))
        doc.observe(join.poke)
    path = "/" + args.url.split("/", 3)[3] if args.url.count("/") >= 3 else "/"
    tasks: set[asyncio.Task[Any]] = set()
    expecting: dict[str, Arrivals] = {}
    following: dict[str, Any] = {}
    async with connect(args.url, max_size=None, compression=None) as ws:
        async with pycrdt.Provider(doc, WsChannel(ws, path)) as provider:
            await provider.synced.wait()
            if join is None:
                _tune_process()
            emit(
                {
                    "event": "ready",
                    "pid": os.getpid(),
                    "start_s": round((time.time_ns() - t0) / 1e9, 4),
                }
            )
            if join is not None:

                async def joined() -> None:
                    assert join is not None
                    join.poke()
                    t_visible = await join.done
                    emit(
                        {
                            "event": "synced",
                            "visible_s": (t_visible - t0) / 1e9,
                            "durable_s": None,
                            "first_send_s": (FIRST_SEND[0] - t0) / 1e9 if FIRST_SEND else None,
                            "cpu_s": join.cpu_s,
                        }
                    )

                tasks.add(asyncio.create_task(joined()))
            while True:
                cmd = await commands.queue.get()
                op = cmd.get("cmd")
                try:
                    if op == "quit":
                        break
                    if op == "write":

                        async def do_write(cmd: dict[str, Any] = cmd) -> None:
                            emit(
                                await write_keys(
                                    root.__setitem__, cmd["prefix"], cmd["n"], cmd.get("rate", 0)
                                )
                            )

                        tasks.add(asyncio.create_task(do_write()))
                    elif op == "expect":
                        arr = expecting[cmd["prefix"]] = Arrivals(
                            root, cmd["prefix"], cmd["n"], cmd["out"], root.__getitem__
                        )
                        tasks.add(asyncio.create_task(watch(arr)))
                        emit({"event": "expecting", "prefix": cmd["prefix"]})
                    elif op in STREAM_OPS:
                        text = doc.get(streamwork.text_root(cmd["tag"]), type=pycrdt.Text)
                        _stream_command(op, cmd, doc, text, tasks, following, None)
                    elif op == "status":
                        emit({"event": "status", "len": len(root)})
                    elif op == "stats":
                        emit(stats_event())
                    elif op == "dump":
                        emit(expecting.pop(cmd["prefix"]).dump())
                        if _EVLOG:
                            evlog.dump()
                    else:
                        emit({"event": "error", "message": f"unknown command {op!r}"})
                except Exception as exc:
                    emit({"event": "error", "message": f"{op}: {type(exc).__name__}: {exc}"})
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    emit({"event": "stopped"})


def main() -> None:
    if _EVLOG:
        evlog.install(_frame_type)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)
    c = sub.add_parser("crdtsync")
    c.add_argument("--name", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--listen", default=None)
    c.add_argument("--peer", action="append", default=[])
    c.add_argument("--shard", action="append", default=[])
    c.add_argument("--gossip", default=None, help="JSON object of GossipConfig overrides")
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--durability-interval", type=float, default=0.05)
    c.add_argument("--broker", default=None, help="mqtt://HOST:PORT: gossip through a broker")
    sw = sub.add_parser("swarm", help="many agents on a broker in this process (swarm.py)")
    sw.add_argument("--broker", required=True)
    sw.add_argument("--names", required=True, help="comma-separated agent names")
    sw.add_argument("--data", required=True)
    sw.add_argument(
        "--remote-durability-cap",
        type=float,
        default=None,
        help="A/B: crdtsync.agent.REMOTE_DURABILITY_CAP for this swarm (0.05: as before it)",
    )
    for q in (c, sub.add_parser("hub-client")):
        q.add_argument("--join", default=None)
        q.add_argument("--until-len", type=int, default=None)
        q.add_argument("--until-text-len", type=int, default=None)
    hc = sub.choices["hub-client"]
    hc.add_argument("--url", required=True)
    hs = sub.add_parser("hub-server")
    hs.add_argument("--port", type=int, required=True)
    hs.add_argument("--preload", default=None)
    hs.add_argument("--room", default="/bench")
    args = p.parse_args()
    _install_logging()
    if args.role == "swarm":
        from swarm import run_swarm

        runner: Any = run_swarm
    else:
        runner = {
            "crdtsync": run_crdtsync,
            "hub-server": run_hub_server,
            "hub-client": run_hub_client,
        }[args.role]
    prof_dir = os.environ.get("CRDTSYNC_BENCH_CPROFILE")  # DIR: cProfile every child into it
    profiler = None
    if prof_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        asyncio.run(runner(args))
    except KeyboardInterrupt:
        pass
    finally:
        if profiler is not None:
            profiler.disable()
            Path(prof_dir).mkdir(parents=True, exist_ok=True)
            who = getattr(args, "name", None) or args.role
            profiler.dump_stats(str(Path(prof_dir) / f"{who}-{os.getpid()}.prof"))


if __name__ == "__main__":
    main()
