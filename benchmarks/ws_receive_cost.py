"""CPU per received update over real websockets: ``python benchmarks/ws_receive_cost.py``.

fanout.py measures latency with 8 processes on a shared, noisy machine; what decides its paced
tail is the CPU each receiver spends per update (benchmarks/history/fanout-receive.md, h-recv's timeline). This
measures that CPU directly: one receiving :class:`crdtsync.Agent` (LMDB store, group commit,
websocket transport, the default LAN settings) in this process (``--local N``: N of them, as
in fanout.py's scale runs, 8 agents a process), observing its map as
fanout.py's receivers do; a writer agent in a child process, and ``--others`` more receivers
in a third, all on 127.0.0.1. The writer sets ``--writes`` map keys at ``--rate`` per second,
each its own transaction (fanout.py's paced workload). The figure is this process's CPU time
(user + system, all threads: the event loop, the commit thread) from the first write until the
last arrival plus the trailing commit and ack, per received update; the event loop's thread
alone is given too, with what the loop did per update: selector wake-ups (``select`` calls
that returned events), loop iterations, messages received and frames sent, the core's timer
ticks, group commits; and the writer process's CPU per write (it sends to 1 + ``--others``).

``--rounds R`` repeats the measured phase R times on the same agents (after a warm-up) and
reports each round and the median. For an A/B of two trees, run the two alternately with
``PYTHONPATH`` pointing at a copy of the other tree (the children inherit it).
``--segments`` and ``--cprofile FILE`` are diagnostics (they slow what they measure).
``--handoffs`` also counts, per received update, what the measured process handed to the
event loop and its threads: timer handles made (``call_at``, which ``call_later`` calls) and
cancelled, ``call_soon``, executor hand-offs (``run_in_executor``: the group commit's worker
thread), self-pipe wake-ups (a thread waking the loop), futures and tasks made, and for each
of the core's ticks which of its timers was due (the acks', the send window's, anti-entropy's,
...). Counts, not times: they do not move with the machine's load.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHARD = "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _lines(proc: asyncio.subprocess.Process) -> Any:
    assert proc.stdout is not None
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            raise RuntimeError("the writer process ended")
        try:
            yield json.loads(raw)
        except ValueError:
            continue


# -- the child: writer and the other receivers ---------------------------------------------


async def run_writer(port: int, others: int, tmp: Path) -> None:
    """Serve the writer until stdin closes; write on command and report this process's CPU
    per write (the writer alone: the ``others`` receivers run in a process of their own)."""
    from crdtsync import Agent

    url = f"ws://127.0.0.1:{port}"
    writer = Agent("w", data_dir=tmp / "w", listen=url, seed=1, insecure=True)
    await writer.start()
    rest = None
    if others:
        rest = subprocess.Popen(
            [sys.executable, __file__, "--role", "others", "--port", str(port)]
            + ["--others", str(others), "--tmp", str(tmp)],
            stdin=subprocess.PIPE,
        )
    shard = await writer.shard(SHARD)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"event": "ready"}), flush=True)
    while line := await reader.readline():
        cmd = json.loads(line)
        prefix, n, rate = cmd["prefix"], cmd["n"], cmd["rate"]
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            shard[f"{prefix}{i}"] = str(time.time_ns())
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # the acks of the last writes
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        event = {"event": "wrote", "prefix": prefix, "writer_cpu_us_per_update": 1e6 * cpu / n}
        print(json.dumps(event), flush=True)
    if rest is not None and rest.stdin is not None:
        rest.stdin.close()
        rest.wait()
    await writer.close()


async def run_others(port: int, others: int, tmp: Path) -> None:
    """The other receivers (one process, as fanout.py's receivers but sharing it) until stdin
    closes."""
    from crdtsync import Agent

    url = f"ws://127.0.0.1:{port}"
    rest = [Agent(f"o{i}", data_dir=tmp / f"o{i}", peers=[url], seed=10 + i) for i in range(others)]
    for a in rest:
        await a.start()
        await a.shard(SHARD)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for a in rest:
        await a.close()


# -- this process: the measured receiver ----------------------------------------------------


class _Counts:
    """What the event loop and the transport did, counted by thin wrappers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from websockets.protocol import Protocol

        from crdtsync.durability import GroupCommitter
        from crdtsync.gossip import GossipCore

        self.loop = loop
        self.c = {"selects": 0, "wakeups": 0, "received": 0, "send": 0, "ticks": 0, "commits": 0}
        self.c.update({"gc0": 0, "gc1": 0, "gc2": 0, "ns_gc": 0})
        c = self.c
        gc_start = [0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_start[0] = time.thread_time_ns()
            else:
                c[f"gc{info['generation']}"] += 1
                c["ns_gc"] += time.thread_time_ns() - gc_start[0]

        gc.callbacks.append(on_gc)
        selector = getattr(loop, "_selector", None)  # (not on uvloop: not counted there)
        if selector is not None:
            real_select = selector.select

            def select(timeout: float | None = None) -> Any:
                events = real_select(timeout)
                c["selects"] += 1
                if events:
                    c["wakeups"] += 1
                return events

            selector.select = select
        real_receive, real_send = GossipCore.receive, Protocol.send_binary
        real_tick, real_commit = GossipCore.tick, GroupCommitter._commit_in_worker

        def receive(self: Any, *a: Any, **k: Any) -> Any:
            c["received"] += 1
            return real_receive(self, *a, **k)

        def send(self: Any, *a: Any, **k: Any) -> Any:
            c["send"] += 1
            return real_send(self, *a, **k)

        def tick(self: Any, *a: Any, **k: Any) -> Any:
            c["ticks"] += 1
            return real_tick(self, *a, **k)

        def commit(self: Any, *a: Any, **k: Any) -> Any:
            c["commits"] += 1
            return real_commit(self, *a, **k)

        GossipCore.receive = receive  # type: ignore[method-assign]
        Protocol.send_binary = send  # type: ignore[method-assign]
        GossipCore.tick = tick  # type: ignore[method-assign]
        GroupCommitter._commit_in_worker = commit  # type: ignore[method-assign]

    def snapshot(self) -> dict[str, int]:
        return dict(self.c)

    def handoffs(self) -> None:
        """Count timer handles, executor hand-offs, self-pipe wake-ups, futures and tasks,
        and the core's ticks by the timer that was due (``--handoffs``, see the module
        docstring). Every instance is counted: run it with one local receiver."""
        from asyncio import base_events, events

        from crdtsync.gossip import GossipCore

        c = self.c

        def counted(owner: Any, attr: str, key: str) -> None:
            real = getattr(owner, attr)
            c[key] = 0

            def wrapper(*a: Any, **k: Any) -> Any:
                c[key] += 1
                return real(*a, **k)

            setattr(owner, attr, wrapper)

        loop_cls = base_events.BaseEventLoop
        counted(loop_cls, "call_at", "n_timer_handles")
        counted(loop_cls, "call_soon", "n_call_soon")
        counted(loop_cls, "call_soon_threadsafe", "n_call_soon_threadsafe")
        counted(loop_cls, "run_in_executor", "n_executor_handoffs")
        counted(loop_cls, "create_future", "n_futures")
        counted(loop_cls, "create_task", "n_tasks")
        counted(events.TimerHandle, "cancel", "n_timer_cancels")
        # (the loop registered its bound _read_from_self at creation: count what it calls,
        # on the loop's own class, which overrides it for signals on Unix)
        counted(type(self.loop), "_process_self_data", "n_self_pipe_wakeups")
        real_tick = GossipCore.tick

        def tick(core: Any, now: float, *a: Any, **k: Any) -> Any:
            p, ctx = core._p, core._ctx
            timers: dict[str, list[float | None]] = {
                "anti_entropy": [p.ae.next_round] if core._conns else [],
                "membership": [p.members.next_exchange] if core._conns else [],
                "members": list(p.members.deadlines()),
                "dialer": list(p.dialer.deadlines()),
                "relay": [p.relay.deadline()],
                "repairs": list(p.repairs.deadlines()),
                "acks": list(p.acks.deadlines()),
                "send_window": [ctx.flush_at],
                "paced_reply": [p.replies.paced_deadline()],
                "coalescer": [p.pushes.coalescer.due],
            }
            for service in core._services:
                timers[f"service_{type(service).__name__}"] = [service.next_deadline()]
            due = [
                name
                for name, times in sorted(timers.items())
                if any(t is not None and t <= now for t in times)
            ]
            key = "n_ticks_due_" + ("_and_".join(due) or "nothing")
            c[key] = c.get(key, 0) + 1
            return real_tick(core, now, *a, **k)

        GossipCore.tick = tick  # type: ignore[method-assign,assignment]

    def segments(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Also time (thread CPU, inclusive) the steps of a receive: a diagnostic, it adds
        a clock read around each (``--segments``). With ``loop`` (not uvloop), the event
        loop's own steps too: each iteration (``_run_once``), its ``select`` (the epoll
        wait, kernel time included), and the callbacks it runs (``Handle._run``); an
        iteration minus those two is asyncio's own bookkeeping."""
        from crdtsync.transports._ws_effects import _Effects
        from crdtsync.transports._ws_inline import InlineFrames
        from crdtsync.transports._ws_links import _LinkRunner

        from crdtsync.durability import GroupCommitter
        from crdtsync.gossip import GossipCore

        clock = time.thread_time_ns
        c = self.c

        def timed(owner: Any, attr: str, key: str) -> None:
            real = getattr(owner, attr)
            c[key] = 0

            def wrapper(*a: Any, **k: Any) -> Any:
                t = clock()
                try:
                    return real(*a, **k)
                finally:
                    c[key] += clock() - t

            setattr(owner, attr, wrapper)

        # (crdtsync's connections' own entry point: a read of one binary frame does not
        # reach websockets' data_received, transports/_ws_inline.py)
        timed(InlineFrames, "data_received", "ns_ws_data_received")
        timed(_LinkRunner, "_handle", "ns_handle")
        timed(GossipCore, "receive", "ns_core_receive")
        timed(_Effects, "_pump", "ns_pump")
        timed(GossipCore, "tick", "ns_tick")
        timed(GroupCommitter, "_commit_in_worker", "ns_commit_worker")
        timed(GroupCommitter, "_commit_once", "ns_commit_loop_first_step")
        selector = getattr(loop, "_selector", None)
        if loop is not None and selector is not None and hasattr(loop, "_run_once"):
            from asyncio import events

            timed(loop, "_run_once", "ns_loop_iteration")
            timed(selector, "select", "ns_loop_select")
            timed(events.Handle, "_run", "ns_loop_callbacks")


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import crdtsync.transports.websocket  # noqa: F401  (imports outside the timings)

    from crdtsync import Agent

    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role",
        "writer",
        "--port",
        str(port),
        "--others",
        str(args.others),
        "--tmp",
        str(tmp),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    events = _lines(proc)
    assert (await events.__anext__())["event"] == "ready"
    url = f"ws://127.0.0.1:{port}"
    receivers = [
        Agent(f"r{i}", data_dir=tmp / f"r{i}", peers=[url], seed=99 + i) for i in range(args.local)
    ]
    loop = asyncio.get_running_loop()
    arrived: dict[tuple[int, str], int] = {}
    target: list[Any] = [None, 0, None]  # prefix, n (arrivals: writes x local receivers), future

    def observer(i: int) -> Any:
        def on_change(event: Any) -> None:
            for key in event.keys:
                arrived[i, key] = 1
            prefix, n, fut = target
            if fut is not None and not fut.done() and len(arrived) >= n:
                fut.set_result(None)

        return on_change

    for i, receiver in enumerate(receivers):
        await receiver.start()
        (await receiver.shard(SHARD)).crdt.observe(observer(i))
    deadline = time.monotonic() + 60
    while min(len(r.peers) for r in receivers) < args.others + args.local:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the mesh did not form: {[r.peers for r in receivers]}")
        await asyncio.sleep(0.1)
    await asyncio.sleep(args.settle)
    counts = _Counts(loop)
    if args.segments:
        counts.segments(loop)
    if args.handoffs:
        counts.handoffs()
    assert proc.stdin is not None

    async def phase(prefix: str, n: int) -> dict[str, Any]:
        arrived.clear()
        fut = loop.create_future()
        target[:] = [prefix, n * args.local, fut]
        c0, r0, t0 = counts.snapshot(), resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
        w0 = time.monotonic()
        proc.stdin.write(json.dumps({"prefix": prefix, "n": n, "rate": args.rate}).encode() + b"\n")
        await asyncio.wait_for(fut, n / args.rate + 60)
        await asyncio.sleep(args.tail)  # the trailing group commit and ack
        t1, r1, c1 = time.thread_time(), resource.getrusage(resource.RUSAGE_SELF), counts.snapshot()
        wall = time.monotonic() - w0
        ev = await events.__anext__()
        assert ev["event"] == "wrote", ev
        writer_cpu = round(ev["writer_cpu_us_per_update"], 1)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        n *= args.local  # per received update: each write reaches every local receiver
        out: dict[str, Any] = {
            "cpu_us_per_update": round(1e6 * cpu / n, 1),
            "loop_thread_cpu_us_per_update": round(1e6 * (t1 - t0) / n, 1),
            "writer_cpu_us_per_update": writer_cpu,
            "wall_s": round(wall, 2),
            "load_1min": round(os.getloadavg()[0], 2),
        }
        for k in c1:
            c0.setdefault(k, 0)  # (a tick's timer first seen in this phase)
            if k.startswith("ns_"):
                out[f"us_{k[3:]}_per_update"] = round((c1[k] - c0[k]) / n / 1000, 1)
            else:
                out[f"{k}_per_update"] = round((c1[k] - c0[k]) / n, 3)
        return out

    await phase("warm", args.warmup)
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    rounds = [await phase(f"m{i}-", args.writes) for i in range(args.rounds)]
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    proc.stdin.close()
    for receiver in receivers:
        await receiver.close()
    await proc.wait()
    keys = list(dict.fromkeys(k for r in rounds for k in r))  # (--handoffs: ticks vary)
    return {
        "benchmark": "ws_receive_cost",
        "writes": args.writes,
        "rate": args.rate,
        "local": args.local,
        "others": args.others,
        "median": {k: statistics.median(r.get(k, 0) for r in rounds) for k in keys},
        "rounds": rounds,
        "crdtsync": str(Path(sys.modules["crdtsync"].__file__ or "").parent),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=2000)
    p.add_argument("--rate", type=float, default=200.0, help="writes per second")
    p.add_argument("--others", type=int, default=0, help="more receivers in the writer's process")
    p.add_argument("--local", type=int, default=1, help="receivers in this (measured) process")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--tail", type=float, default=0.2)
    p.add_argument(
        "--uvloop",
        action="store_true",
        help="the receiver on uvloop's event loop (uvloop is not a dependency: install it first)",
    )
    p.add_argument("--cprofile", default="", help="cProfile the measured rounds into FILE")
    p.add_argument("--segments", action="store_true", help="time the steps (diagnostic)")
    p.add_argument(
        "--handoffs",
        action="store_true",
        help="count timers, thread hand-offs and wake-ups per update (diagnostic)",
    )
    p.add_argument("--role", default="receiver", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "writer":
        asyncio.run(run_writer(args.port, args.others, Path(args.tmp)))
        return 0
    if args.role == "others":
        asyncio.run(run_others(args.port, args.others, Path(args.tmp)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-ws-receive-"))
    try:
        if args.uvloop:
            import uvloop

            report = uvloop.run(measure(args, tmp))
        else:
            report = asyncio.run(measure(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
