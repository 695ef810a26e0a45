"""Restart: reopen a shard whose log holds 1,000,000 small updates, before and after compaction.

The shard is created by an ``Agent`` (as any agent's shard is, with its metadata), then its
log is written directly through ``crdtsync.store.Store`` (so that no automatic compaction
folds the log while it is built): ``updates`` map sets
``root["k<i % 1000>"] = i`` (crdtsync's value encoding), each its own pycrdt transaction and
its own log entry, committed in batches. Then, each in a fresh process (the page cache is
warm, alike for every figure):

* ``reopen_log``: ``Agent.start()`` + ``agent.shard()`` with the whole log to replay;
* ``compact``: ``await shard.compact()`` (fold the log into one snapshot);
* ``reopen_compacted``: the same reopen after compaction.

Next to them, in one process:

* ``floor_reopen``: ``Doc().apply_update(state)`` of the encoded state (what a reopen of a
  compacted shard cannot beat), best of 3 in the parent (warm); ``floor_reopen_fresh``: the
  same once in a fresh process (cold, like a reopen), just before and after the reopen;
* ``floor_replay``: applying every log entry to a bare ``pycrdt.Doc`` with no validation and
  no store (what replaying the log cannot beat).

Disk: the data directory's allocated bytes (``st_blocks``), and the store's own counts of
live log and snapshot bytes, each against the encoded state size (``len(doc.get_update())``).
LMDB by itself never gives pages back to the file system: compaction frees the log's pages
but the file keeps its high-water mark. Since issue 17 compaction then gives the space back
when the file is more than twice its live bytes (``Store.reclaim``: a compacted copy swapped in
atomically), inside the timed ``compact``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt
from benchlib import Progress, common_args, dir_bytes, finish, machine, pyplot, ratio, size_of

SIZES = {"full": 1_000_000, "quick": 200_000, "tiny": 5_000}
SHARD = "s"


def create_shard(path: Path) -> None:
    """Create the shard as an agent does (its metadata says it was checked against the work
    limits and holds crdtsync's value format), so that the timed reopen is a reopen, not the
    one-time check and migration of a store written before those existed."""
    from crdtsync import Agent

    async def go() -> None:
        async with Agent("restart", data_dir=path) as agent:
            await agent.shard(SHARD)

    asyncio.run(go())


def build(path: Path, n: int, prog: Progress, batch: int = 50_000) -> None:
    from crdtsync.store import Store
    from crdtsync.values import encode_value

    create_shard(path)
    task = prog.task(f"writing a log of {n:,} updates", n)
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    pending: list[bytes] = []
    doc.observe(lambda ev: pending.append(ev.update))
    with Store(path, compact_min_log_count=1 << 62) as store:
        for start in range(0, n, batch):
            for i in range(start, min(n, start + batch)):
                root[f"k{i % 1000}"] = encode_value(i)
            for u in pending:
                store.append(SHARD, u)
            pending.clear()
            store.commit()
            prog.update(task, min(n, start + batch))


def load_log(path: Path) -> tuple[bytes | None, list[bytes]]:
    from crdtsync.store import Store

    with Store(path) as store:
        loaded = store.load(SHARD)
        assert loaded is not None
        return loaded.snapshot, loaded.log


def floors(snapshot: bytes | None, log: list[bytes]) -> dict[str, Any]:
    t0 = time.perf_counter()
    doc = pycrdt.Doc()
    with doc.transaction():
        if snapshot:
            doc.apply_update(snapshot)
        for u in log:
            doc.apply_update(u)
    replay = time.perf_counter() - t0
    state = doc.get_update()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        d = pycrdt.Doc()
        d.apply_update(state)
        best = min(best, time.perf_counter() - t0)
    return {
        "state": state,
        "floor_replay_s": round(replay, 4),
        "floor_reopen_s": round(best, 5),
        "state_bytes": len(state),
        "log_entries": len(log),
    }


def child(op: str, path: Path) -> dict[str, Any]:
    """Run one timed operation in a fresh process (this script with --child)."""
    res = subprocess.run(
        [sys.executable, __file__, "--child", op, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"child {op} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_child(op: str, path: Path) -> None:
    from crdtsync import Agent

    # Imports stay outside the timing, as in every scenario (pycrdt's first Doc, made here
    # outside an event loop, loads no anyio backend; the reopen's own imports: see go()).
    pycrdt.Doc()
    if op == "floor-reopen":  # pycrdt applying the state once, in a fresh process like a reopen
        state = path.read_bytes()
        t0 = time.perf_counter()
        pycrdt.Doc().apply_update(state)
        print(json.dumps({"floor_reopen_fresh_s": round(time.perf_counter() - t0, 5)}))
        return

    async def go() -> dict[str, Any]:
        # Also outside the timing, as in catchup.py's child (and reported as ``imports_s``):
        # Agent.start() imports the metrics (prometheus-client, 30-140 ms here) on first use,
        # and a Doc made inside a running event loop imports anyio's asyncio backend (~15 ms;
        # the Doc above, outside the loop, did not). A process pays both once, not per reopen;
        # the floor's process pays neither inside its timing.
        ti = time.perf_counter()
        import crdtsync.metrics  # noqa: F401

        pycrdt.Doc()
        imports_s = time.perf_counter() - ti
        t0 = time.perf_counter()
        agent = Agent("restart", data_dir=path)
        await agent.start()
        t1 = time.perf_counter()
        shard = await agent.shard(SHARD)
        t2 = time.perf_counter()
        out: dict[str, Any] = {
            "start_s": round(t1 - t0, 4),
            "open_shard_s": round(t2 - t1, 4),
            "reopen_s": round(t2 - t0, 4),
            "imports_s": round(imports_s, 4),
            "keys": len(shard),
        }
        st = shard.stats()
        out["log_count"], out["log_bytes"], out["snapshot_bytes"] = (
            st.log_count,
            st.log_bytes,
            st.snapshot_bytes,
        )
        if op == "compact":
            t3 = time.perf_counter()
            st = await shard.compact()
            out["compact_s"] = round(time.perf_counter() - t3, 4)
            out["after"] = {
                "log_count": st.log_count,
                "log_bytes": st.log_bytes,
                "snapshot_bytes": st.snapshot_bytes,
            }
        t4 = time.perf_counter()
        await agent.close()
        out["close_s"] = round(time.perf_counter() - t4, 4)
        return out

    print(json.dumps(asyncio.run(go())))


def plot(r: dict[str, Any]) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    labels = [
        "reopen\n(log)",
        "floor: replay\nlog in pycrdt",
        "compact",
        "reopen\n(compacted)",
        "floor: apply\nstate",
    ]
    vals = [
        r["reopen_log"]["reopen_s"],
        r["floor_replay_s"],
        r["compact"]["compact_s"],
        r["reopen_compacted"]["reopen_s"],
        r["floor_reopen_s"],
    ]
    colors = ["tab:blue", "tab:gray", "tab:purple", "tab:blue", "tab:gray"]
    bars = ax[0].bar(labels, vals, color=colors)
    ax[0].bar_label(bars, fmt="%.3g", fontsize=8)
    ax[0].set_yscale("log")
    ax[0].set_ylabel("seconds (log)")
    ax[0].set_title(f"reopening a shard with {r['updates']:,} logged updates")
    d = r["disk"]
    labels = [
        "dir allocated\nbefore",
        "live log +\nsnapshot before",
        "dir allocated\nafter",
        "live log +\nsnapshot after",
        "encoded\nstate",
    ]
    vals = [
        d["before"]["allocated_bytes"],
        d["before"]["live_bytes"],
        d["after"]["allocated_bytes"],
        d["after"]["live_bytes"],
        r["state_bytes"],
    ]
    bars = ax[1].bar(
        labels,
        [v / 1e6 for v in vals],
        color=["tab:blue", "tab:cyan", "tab:blue", "tab:cyan", "tab:gray"],
    )
    ax[1].bar_label(bars, fmt="%.3g", fontsize=8)
    ax[1].set_yscale("log")
    ax[1].set_ylabel("MB (log)")
    ax[1].set_title("disk vs the encoded state, before and after compaction")
    return fig


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--child":
        run_child(sys.argv[2], Path(sys.argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument("--updates", type=int, default=None, help="log entries [1000000; quick 200000]")
    args = p.parse_args(argv)
    size = size_of(args)
    n = args.updates or SIZES[size]
    prog = Progress("restart")
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-restart-"))
    try:
        t0 = time.perf_counter()
        build(tmp / "store", n, prog)
        build_s = time.perf_counter() - t0
        task = prog.task("reopen, compact, reopen, floors", 4)
        stored = load_log(tmp / "store")
        fl = floors(*stored)
        prog.update(task, 1)
        disk_before = dir_bytes(tmp / "store")
        reopen_log = child("reopen", tmp / "store")
        prog.update(task, 2)
        compact = child("compact", tmp / "store")
        prog.update(task, 3)
        disk_after = dir_bytes(tmp / "store")
        (tmp / "state.bin").write_bytes(fl.pop("state"))
        fresh = [child("floor-reopen", tmp / "state.bin")["floor_reopen_fresh_s"]]
        reopen_compacted = child("reopen", tmp / "store")
        fresh.append(child("floor-reopen", tmp / "state.bin")["floor_reopen_fresh_s"])
        prog.update(task, 4)
        # The floors again, after the children: on a shared machine the load changes between
        # the two moments, and a floor is the best it can be (min of both).
        again = floors(*stored)
        again.pop("state")
        del stored
        for key in ("floor_replay_s", "floor_reopen_s"):
            fl[f"{key}_runs"] = [fl[key], again[key]]
            fl[key] = min(fl[key], again[key])
    finally:
        prog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    live_before = reopen_log["log_bytes"] + reopen_log["snapshot_bytes"]
    live_after = reopen_compacted["log_bytes"] + reopen_compacted["snapshot_bytes"]
    report: dict[str, Any] = {
        "benchmark": "restart",
        "size": size,
        "machine": machine(),
        "updates": n,
        "build_s": round(build_s, 2),
        "state_bytes": fl["state_bytes"],
        "keys": reopen_log["keys"],
        "reopen_log": reopen_log,
        "compact": compact,
        "reopen_compacted": reopen_compacted,
        "floor_replay_s": fl["floor_replay_s"],
        "floor_reopen_s": fl["floor_reopen_s"],
        "floor_runs": {k: fl[f"{k}_runs"] for k in ("floor_replay_s", "floor_reopen_s")},
        "floor_reopen_fresh_s": min(fresh),
        "floor_reopen_fresh_runs": fresh,
        "disk": {
            "before": {**disk_before, "live_bytes": live_before},
            "after": {**disk_after, "live_bytes": live_after},
        },
        "ratios": {
            "reopen_log_vs_floor_replay": ratio(reopen_log["reopen_s"], fl["floor_replay_s"]),
            "compact_vs_floor_replay": ratio(compact["compact_s"], fl["floor_replay_s"]),
            "reopen_compacted_vs_floor_reopen_fresh": ratio(
                reopen_compacted["reopen_s"], min(fresh), 1
            ),
            "reopen_compacted_vs_floor_reopen": ratio(
                reopen_compacted["reopen_s"], fl["floor_reopen_s"], 1
            ),
            "reopen_log_vs_reopen_compacted": ratio(
                reopen_log["reopen_s"], reopen_compacted["reopen_s"], 1
            ),
            "live_bytes_before_vs_state": ratio(live_before, fl["state_bytes"], 1),
            "live_bytes_after_vs_state": ratio(live_after, fl["state_bytes"], 3),
            "allocated_after_vs_state": ratio(disk_after["allocated_bytes"], fl["state_bytes"], 1),
        },
    }
    finish(report, args.out, plot_dir=args.plot_dir, plots={"restart.png": lambda: plot(report)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
