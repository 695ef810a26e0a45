"""The floor of a paced receiver's CPU per update: ``python benchmarks/receive_floor.py VARIANT``.

fanout.py's 200/s row charges each of its 7 receiving processes for every update it gets alone,
5 ms after the last, on a machine where 8 processes share 2 cores (benchmarks/history/fanout-receive.md,
h-recv3 to h-recv5: most of a crdtsync receiver's cost is a cold wake-up per update, not its
Python calls). This measures what a receiver costs per update when it does *less* than a
crdtsync agent, under the same shape of load: ``--receivers`` processes (7), one sender
process sending one small pycrdt update (a map set, ~30 bytes, 2-byte length prefix) to
each of them over its own TCP connection every ``1 / --rate`` s (200/s), so that nearly
every update is one socket read. Each receiver is a bare :class:`asyncio.Protocol` whose
``data_received`` does what its variant says, nothing else:

* ``null``: read and split the message (the event loop's wake-up, ``select``, the socket
  read: the floor of any asyncio receiver);
* ``apply``: + ``Doc.apply_update`` in a transaction, with a doc observer that keeps
  ``event.update`` (what crdtsync's shard observer reads) and a map observer that reads
  ``event.keys`` (what fanout.py's receivers do);
* ``validate``: + crdtsync's strict update parser (``crdtsync.updates.validate_update``)
  before the apply;
* ``store``: + the doc observer appends the update to a crdtsync :class:`~crdtsync.store.Store`
  (LMDB) and announces it to a :class:`~crdtsync.durability.GroupCommitter` with
  ``received_interval=0.2`` (an agent's default for received updates): the real commit
  thread and its fsync;
* ``quotas``: + the quotas a crdtsync core takes per received Push of one update, with its
  own :class:`~crdtsync.gossip.guard.Guard` (default quotas): ``read_delay``,
  ``admit_message``, ``admit_update`` before the apply, ``applied`` after it (six per-peer
  and per-shard buckets, each in its own LRU table, and three global ones);
* ``wire``: + each update comes as crdtsync's wire frame of a paced Push (one update, its
  sequence number, its author), decoded by ``crdtsync.wire.decode`` first.

What none of them has: websockets' framing, the gossip core (its Push handling past the
quotas, relay, ack records, forwarding), the driver's pump and timers, acks. A crdtsync receiver's figure (fanout.py's
``cpu_ms_per_update_by_process``) minus ``store`` is what those cost in place.

``--also PYTHON`` runs every second receiver with that interpreter instead (another tree's
venv): an A/B of two trees within one run, both halves under the same load at the same
moment; each half is then reported on its own (``a``: this interpreter, ``b``: ``--also``).

Each receiver reports its process CPU (user + system, all threads) from the first update after
a 200-update warm-up and a 0.5 s pause until the sender closes, divided by ``--n``; the
reads per update show how often two updates shared a read (coalesced under load). Prints one
JSON line: the receivers' figures sorted, their median, the 1-minute load.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

VARIANTS = ("null", "apply", "validate", "store", "quotas", "wire")
WARM = 200


def _updates(n: int) -> list[bytes]:
    import pycrdt

    doc: Any = pycrdt.Doc()
    m = doc.get("m", type=pycrdt.Map)
    out: list[bytes] = []
    doc.observe(lambda e: out.append(e.update))
    for i in range(n):
        m[f"k{i}"] = i
    return [len(u).to_bytes(2, "big") + u for u in out]


async def _receiver(port: int, variant: str, n: int, tmp: str) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    st: dict[str, Any] = {"reads": 0, "t0": None, "last": None, "reads0": 0}
    handle: Any = None  # (None: the null variant)
    if variant != "null":
        import pycrdt

        from crdtsync import updates as cu

        doc: Any = pycrdt.Doc()
        m = doc.get("m", type=pycrdt.Map)
        kept: list[bytes] = []
        if variant in ("store", "quotas", "wire"):
            from crdtsync.durability import GroupCommitter
            from crdtsync.store import Store

            store = Store(tempfile.mkdtemp(dir=tmp))
            committer = GroupCommitter(store, received_interval=0.2)
            await committer.start()

            def on_tx(e: Any) -> None:
                store.append("bench", e.update)
                committer.notify_remote()

            doc.observe(on_tx)
        else:
            doc.observe(lambda e: kept.append(e.update))
        seen: dict[str, int] = {}

        def on_map(e: Any) -> None:
            for k in e.keys:
                seen[k] = 1

        m.observe(on_map)
        check = variant in ("validate", "store", "quotas", "wire")
        guard = None
        if variant == "wire":
            from crdtsync import wire

            decode = wire.decode
        if variant in ("quotas", "wire"):
            from crdtsync.gossip.guard import Guard

            guard = Guard(None, 2000.0, 10000.0)

        def handle(update: bytes) -> None:
            if variant == "wire":
                update = decode(update).updates[0]  # type: ignore[union-attr]
            if guard is not None:
                now = loop.time()
                guard.read_delay("writer", now)
                guard.admit_message("writer", now)
                info = cu.validate_update(update)
                if not guard.admit_update("writer", len(update), now, "bench"):
                    raise RuntimeError("a quota refused a paced update")
                with doc.transaction():
                    doc.apply_update(update)
                guard.applied("writer", "bench", info.work, now)
                return
            if check:
                cu.validate_update(update)
            with doc.transaction():
                doc.apply_update(update)

    class Receiver(asyncio.Protocol):
        def connection_lost(self, exc: BaseException | None) -> None:
            if not done.done():
                done.set_result(None)

        def data_received(self, data: bytes) -> None:
            now = time.monotonic()
            if st["t0"] is None and st["last"] is not None and now - st["last"] > 0.25:
                st["t0"] = resource.getrusage(resource.RUSAGE_SELF)
                st["reads0"] = st["reads"]
            st["last"] = now
            st["reads"] += 1
            pos = 0
            while pos < len(data):
                size = int.from_bytes(data[pos : pos + 2], "big")
                update = data[pos + 2 : pos + 2 + size]
                pos += 2 + size
                if handle is not None:
                    handle(update)

    server = await loop.create_server(Receiver, "127.0.0.1", port)
    print(json.dumps({"ready": port}), flush=True)
    await done
    r1, r0 = resource.getrusage(resource.RUSAGE_SELF), st["t0"]
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if variant in ("store", "quotas", "wire"):
        await committer.close()
    server.close()
    print(
        json.dumps(
            {
                "us_per_update": round(1e6 * cpu / n, 1),
                "reads_per_update": round((st["reads"] - st["reads0"]) / n, 3),
            }
        ),
        flush=True,
    )


async def _sender(ports: list[int], n: int, rate: float, variant: str) -> None:
    updates = _updates(n + WARM)
    if variant == "wire":  # each as the frame of a paced Push
        from crdtsync import wire
        from crdtsync.messages import Push

        frames = [
            wire.encode(Push(shard="bench", updates=(u[2:],), seq=i + 1, authors=("writer",)))
            for i, u in enumerate(updates)
        ]
        updates = [len(f).to_bytes(2, "big") + f for f in frames]
    writers = []
    for port in ports:
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writers.append(w)
    for u in updates[:WARM]:
        for w in writers:
            w.write(u)
        await asyncio.sleep(1 / rate)
    await asyncio.sleep(0.5)  # the receivers start measuring at the first update after this
    start = time.monotonic()
    for i, u in enumerate(updates[WARM:]):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        for w in writers:
            w.write(u)
    await asyncio.sleep(0.2)
    for w in writers:
        w.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", choices=VARIANTS)
    p.add_argument("--receivers", type=int, default=7)
    p.add_argument("--n", type=int, default=2000, help="measured updates")
    p.add_argument("--rate", type=float, default=200.0, help="updates per second")
    p.add_argument(
        "--also", default="", help="run every second receiver with this Python (an A/B in one run)"
    )
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.port:
        asyncio.run(_receiver(args.port, args.variant, args.n, args.tmp))
        return 0
    ports = []
    for _ in range(args.receivers):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="crdtsync-floor-") as tmp:
        pythons = [args.also if args.also and i % 2 else sys.executable for i in range(len(ports))]
        procs = [
            subprocess.Popen(
                [python, __file__, args.variant, "--n", str(args.n)]
                + ["--port", str(port), "--tmp", tmp],
                stdout=subprocess.PIPE,
                text=True,
            )
            for python, port in zip(pythons, ports, strict=True)
        ]
        for proc in procs:
            proc.stdout.readline()  # type: ignore[union-attr]
        asyncio.run(_sender(ports, args.n, args.rate, args.variant))
        outs = [json.loads(proc.stdout.readline()) for proc in procs]  # type: ignore[union-attr]
        for proc in procs:
            proc.wait()
    report: dict[str, Any] = {
        "benchmark": "receive_floor",
        "variant": args.variant,
        "receivers": args.receivers,
        "n": args.n,
        "rate": args.rate,
        "load_1min": round(os.getloadavg()[0], 2),
    }
    halves = {"a": outs[0::2], "b": outs[1::2]} if args.also else {"": outs}
    for half, group in halves.items():
        prefix = f"{half}_" if half else ""
        figures = sorted(o["us_per_update"] for o in group)
        report[f"{prefix}us_per_update"] = figures
        report[f"{prefix}median"] = statistics.median(figures)
        report[f"{prefix}reads_per_update"] = sorted(o["reads_per_update"] for o in group)
    if args.also:
        report["b_python"] = args.also
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
