"""Catch-up: a new agent joins a big shard; crdtsync next to its floor and pycrdt-websocket.

Two states, each served by one process and fetched by a newly started one on 127.0.0.1:

* ``map``: a shard of 200,000 map entries (``k<i> = "v<i>"``, written in transactions of
  1,000);
* ``paper``: the automerge-paper editing trace (259,778 single-character edits, one author)
  replayed into a ``pycrdt.Text`` under the key ``text``.

For each state, the same Yjs document is fetched three ways:

* ``floor``: in one process, ``Doc.get_update()`` then ``Doc().apply_update()`` of the
  result: the least work any Yjs sync of this state can do (no network, no validation,
  no disk). Best of 3. ``floor_fresh`` (reported, not a target): the apply in a fresh
  process, as a joiner meets it, plus the encode; best of 3 processes. ``floor_validated``
  (reported, not a target): the in-process floor with crdtsync's strict ``validate_update``
  between the encode and the apply (the hubs validate nothing): crdtsync above it is what is
  left besides validation, and its ``validate_s`` is what validation costs (the gap between the
  two floors' best runs also holds the apply's spread from call to call); best of 3.
* ``crdtsync``: an agent process holds the shard in its LMDB store; a new agent process with
  an empty store is started with the holder as its seed. Timed in the new process from just
  before ``Agent.start()`` until the shard is complete in memory (``visible_s``: checked after
  every transaction), and until it is also durable in its own store (``durable_s``).
* ``pycrdt-websocket``: its ``WebsocketServer`` holds the state in a room; a new process
  connects a ``pycrdt.Provider``. Timed from just before connecting until the document is
  complete (the hub keeps nothing on disk, so there is no durable figure).

Bytes are TCP payload bytes over the connection (``ss``), messages are websocket messages
sent by both ends. Python start-up and imports are outside every timing, alike. Prints one JSON
object.

Rounds (``--rounds``, 3 unless ``--tiny``): crdtsync and every hub join ``rounds`` times,
interleaved (crdtsync, hub, hub, ..., crdtsync, hub, ...), each crdtsync round from a fresh copy
of the holder's store. Each system's reported run is its median by ``visible_s`` (with every
round's times in ``*_runs``), and the ratios are taken between those medians; the floor stays
the best of 3. ``ratios_by_round`` keeps each round's ratios taken alone (one run against one
run, as with ``--rounds 1``). On the shared 2-core machine one run of the same code moved 2-4x
from run to run (benchmarks/history/catchup-restart.md, issue 17), so a single pair said little.

``--states map|paper`` runs one state only. Every joiner also reports ``first_send_s``: from
its t0 to its first message on the wire (crdtsync's Hello, the hub client's SyncStep1), i.e.
its start-up and connect alone (issue 17, fifth pass).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt
from benchlib import (
    Child,
    Progress,
    cache_dir,
    children,
    common_args,
    finish,
    free_ports,
    machine,
    pyplot,
    ratio,
    size_of,
    tcp_counters,
    traces_dir,
)
from peers import NODE_HUBS, PEERS, describe, start_clients, start_hub, strongest

MAP_SIZES = {"full": 200_000, "quick": 50_000, "tiny": 2_000}
PAPER_EDITS = {"full": None, "quick": None, "tiny": 5_000}  # None: the whole trace


# ---------------------------------------------------------------------------------------------
# preparing the states


def build_map_store(path: Path, entries: int, batch: int = 1000) -> bytes:
    """An agent store holding shard ``map`` with ``entries`` keys; returns the encoded state."""
    from crdtsync import Agent

    async def go() -> bytes:
        async with Agent("holder", data_dir=path) as agent:
            shard = await agent.shard("map")
            for start in range(0, entries, batch):
                with shard.transaction():
                    for i in range(start, min(entries, start + batch)):
                        shard[f"k{i}"] = f"v{i}"
            await shard.flush()
            return shard.doc.get_update()

    return asyncio.run(go())


def replay_sequential(trace: Path, edits: int | None) -> tuple[bytes, str, bool]:
    """Replay a sequential trace into a Text at root['text'] (cached); returns the encoded
    state, the final text and whether it equals the trace's endContent."""
    key = hashlib.sha256(f"{trace.name}:{trace.stat().st_size}:{edits}:v1".encode()).hexdigest()[
        :16
    ]
    cached = cache_dir() / f"{trace.stem}-{key}.ystate"
    meta = cached.with_suffix(".json")
    if cached.exists() and meta.exists():
        m = json.loads(meta.read_text())
        return cached.read_bytes(), m["text"], m["matches_end"]
    data = json.load(gzip.open(trace))
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    root["text"] = text = pycrdt.Text()
    done = 0
    for txn in data["txns"]:
        with doc.transaction():
            for pos, n_del, ins in txn["patches"]:
                if n_del:
                    del text[pos : pos + n_del]
                if ins:
                    text.insert(pos, ins)
                done += 1
        if edits is not None and done >= edits:
            break
    content = str(text)
    matches = edits is None and content == data["endContent"]
    state = doc.get_update()
    cached.write_bytes(state)
    meta.write_text(json.dumps({"text": content, "matches_end": matches, "edits": done}))
    return state, content, matches


def build_state_store(path: Path, shard: str, state: bytes) -> None:
    """An agent store holding ``state`` in shard ``shard``."""
    from crdtsync import Agent

    async def go() -> None:
        async with Agent("holder", data_dir=path) as agent:
            s = await agent.shard(shard)
            s.apply_remote(state, "prep")
            await s.flush()

    asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# the three ways


def floor(state: bytes, repeat: int = 3, *, validate: bool = False) -> dict[str, Any]:
    """The issue's floor: ``Doc.get_update()`` then ``Doc().apply_update()`` of it, in one
    process, best of ``repeat``. With ``validate``, :func:`floor_validated`'s floor."""
    from crdtsync.updates import validate_update

    src = pycrdt.Doc()
    src.apply_update(state)
    best: dict[str, float] | None = None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        update = src.get_update()
        t1 = time.perf_counter()
        info = validate_update(update) if validate else None
        t2 = time.perf_counter()
        dst = pycrdt.Doc()
        dst.apply_update(update)
        c3, t3 = time.process_time(), time.perf_counter()
        del info  # freed outside the timing, as the joiner frees it after its apply
        run = {"encode_s": t1 - t0, "apply_s": t3 - t2, "seconds": t3 - t0, "cpu_s": c3 - c0}
        if validate:
            run["validate_s"] = t2 - t1
        if best is None or run["seconds"] < best["seconds"]:
            best = run
    assert best is not None
    return {**{k: round(v, 5) for k, v in best.items()}, "bytes": len(update)}


def floor_validated(state: bytes, repeat: int = 3) -> dict[str, Any]:
    """The floor plus crdtsync's strict validation: ``Doc.get_update()``, then
    :func:`crdtsync.updates.validate_update` of the result with the defaults a joiner's
    first apply uses (``DEFAULT_LIMITS``, no size cap; what ``ShardRegistry.apply`` calls
    for a shard it does not hold yet), then ``Doc().apply_update()``; in one process, best of
    ``repeat`` like :func:`floor`. Reported, not a target: the hubs do not validate, so
    crdtsync against this floor shows what is left above pycrdt *besides* validation, and
    ``validate_s`` what validation costs; ``seconds`` minus the floor's also holds the apply's
    spread (tens of ms between best-of-3 runs of the map: issue 17, h-vfloor)."""
    return floor(state, repeat, validate=True)


_FRESH = """
import sys, time, pycrdt
state = open(sys.argv[1], "rb").read()
pycrdt.Doc()
t0 = time.perf_counter()
dst = pycrdt.Doc()
dst.apply_update(state)
t1 = time.perf_counter()
dst.get_update()
t2 = time.perf_counter()
print(t2 - t1, t1 - t0)
"""


def floor_fresh(state_file: Path, repeat: int = 3) -> dict[str, Any]:
    """The floor as the joiner and the hubs' clients meet it: the apply in a *fresh* process
    (nothing applied there before; a warm process reuses the memory of its earlier applies,
    and the in-process floor above is the best of 3 in one process), plus the encode. Best of
    ``repeat`` processes. Reported next to the issue's floor, which stays the target's."""
    best: dict[str, float] | None = None
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", _FRESH, str(state_file)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        encode_s, apply_s = float(out[0]), float(out[1])
        run = {"encode_s": encode_s, "apply_s": apply_s, "seconds": encode_s + apply_s}
        if best is None or run["seconds"] < best["seconds"]:
            best = run
    assert best is not None
    return {k: round(v, 5) for k, v in best.items()}


def _stats(kids: list[Child]) -> list[dict[str, Any]]:
    for k in kids:
        k.send(cmd="stats")
    return [k.wait("stats", 60) for k in kids]


def run_crdtsync(
    store: Path, shard: str, until: list[str], tmp: Path, gossip: str | None = None
) -> dict[str, Any]:
    (port,) = free_ports(1)
    extra = ["--gossip", gossip] if gossip else []
    with children() as kids:
        holder = Child(
            "crdtsync",
            [
                "--name",
                "holder",
                "--data",
                str(store),
                "--listen",
                f"ws://127.0.0.1:{port}",
                "--shard",
                shard,
                *extra,
            ],
            name="holder",
        )
        kids.append(holder)
        ready = holder.wait("ready", 300)
        joiner = Child(
            "crdtsync",
            [
                "--name",
                "joiner",
                "--data",
                str(tmp / "joiner"),
                "--peer",
                f"ws://127.0.0.1:{port}",
                "--join",
                shard,
                *until,
                *extra,
            ],
            name="joiner",
        )
        kids.append(joiner)
        synced = joiner.wait("synced", 600)
        wire = tcp_counters([port])
        stats = _stats(kids)
    return {
        "visible_s": round(synced["visible_s"], 4),
        "durable_s": round(synced["durable_s"], 4),
        "joiner_cpu_s": synced.get("cpu_s"),
        "first_send_s": synced.get("first_send_s"),
        "wire_bytes": wire["bytes_sent"],
        "msgs": sum(s["frames"] for s in stats),
        "msgs_by_type": {
            k: sum(s["by_type"].get(k, 0) for s in stats)
            for k in sorted({t for s in stats for t in s["by_type"]})
        },
        "holder_open_s": ready["start_s"],
        "gossip": ready.get("gossip"),
    }


def run_hub(kind: str, state_file: Path, until: list[str]) -> dict[str, Any]:
    """Hub ``kind`` (benchmarks/peers.py) holding the state; one new client joins."""
    with children() as kids:
        _hub, port, ready = start_hub(kind, kids, preload=state_file)
        extra = ["--join", *(["bench"] if kind == "pycrdt-websocket" else []), *until]
        (client,) = start_clients(kind, port, 1, 1, kids, extra)
        synced = client.wait("synced", 600)
        wire = tcp_counters([port])
        stats = _stats(kids)
    msgs = sum(s["frames"] for s in stats)
    if kind in NODE_HUBS:  # the hub's own sends, counted where they arrive
        msgs += sum(s.get("recv_frames", 0) for s in stats)
    return {
        "visible_s": round(synced["visible_s"], 4),
        "durable_s": None,
        "joiner_cpu_s": synced.get("cpu_s"),
        "first_send_s": synced.get("first_send_s"),
        "wire_bytes": wire["bytes_sent"],
        "msgs": msgs,
        "hub_process": {k: ready.get(k) for k in ("pid", "kind", "node")},
    }


def catch_up(
    label: str,
    state: bytes,
    store: Path,
    shard: str,
    until: list[str],
    tmp: Path,
    prog: Progress,
    gossip: str | None = None,
    peers: tuple[str, ...] = PEERS,
    rounds: int = 1,
) -> dict[str, Any]:
    task = prog.task(f"{label}: floor, crdtsync, {', '.join(peers)}", 1 + rounds * (1 + len(peers)))
    state_file = tmp / f"{label}.ystate"
    state_file.write_bytes(state)
    out: dict[str, Any] = {"state_bytes": len(state), "floor": floor(state)}
    out["floor_validated"] = floor_validated(state)
    out["floor_fresh"] = floor_fresh(state_file)
    prog.update(task, 1)
    runs: dict[str, list[dict[str, Any]]] = {"crdtsync": [], **{kind: [] for kind in peers}}
    done = 1
    for r in range(rounds):
        # Interleaved: crdtsync, then each hub, per round. Each round starts from a copy of the
        # holder's store as built (the joiner's first write reaches the holder in a run).
        holder = tmp / f"{label}-holder-{r}"
        shutil.copytree(store, holder)
        runs["crdtsync"].append(run_crdtsync(holder, shard, until, tmp / f"{label}-{r}", gossip))
        shutil.rmtree(holder, ignore_errors=True)
        done += 1
        prog.update(task, done)
        for kind in peers:
            runs[kind].append(run_hub(kind, state_file, until))
            done += 1
            prog.update(task, done)
    for name, of in runs.items():
        out[name] = _median_run(of)
    if rounds > 1:
        out["rounds"] = rounds
        out["ratios_by_round"] = [
            _ratios({name: of[r] for name, of in runs.items()}, out["floor"], state)
            for r in range(rounds)
        ]
    out.update(_ratios(out, out["floor"], state))
    return out


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ``visible_s`` (the lower middle of an even count), with every
    run's times beside it (``*_runs``, in the order run)."""
    mid = sorted(runs, key=lambda run: run["visible_s"])[(len(runs) - 1) // 2]
    out = dict(mid)
    if len(runs) > 1:
        for key in ("visible_s", "durable_s", "joiner_cpu_s", "first_send_s", "msgs_by_type"):
            if key in mid:
                out[f"{key}_runs"] = [run.get(key) for run in runs]
    return out


def _ratios(out: dict[str, Any], f: dict[str, Any], state: bytes) -> dict[str, Any]:
    """The ratio fields of one state's result: ``ratios`` and ``vs_strongest``."""
    c = out["crdtsync"]
    h = out.get("pycrdt-websocket")
    fv = out.get("floor_validated")
    res: dict[str, Any] = {}
    res["ratios"] = {
        "crdtsync_visible_vs_floor": ratio(c["visible_s"], f["seconds"], 1),
        "crdtsync_durable_vs_floor": ratio(c["durable_s"], f["seconds"], 1),
        "crdtsync_bytes_vs_state": ratio(c["wire_bytes"], len(state), 3),
        # the joiner's CPU until complete against the floor's (the load moves it far less)
        "crdtsync_joiner_cpu_vs_floor_cpu": ratio(c["joiner_cpu_s"], f["cpu_s"], 2)
        if c.get("joiner_cpu_s")
        else None,
        # against the apply in a fresh process, as the joiner's (not the target's floor)
        "crdtsync_visible_vs_floor_fresh": ratio(c["visible_s"], out["floor_fresh"]["seconds"], 1)
        if "floor_fresh" in out
        else None,
        # against the floor with crdtsync's validation in it (reported, not a target): the
        # part of the gap that is not validation
        "crdtsync_visible_vs_floor_validated": ratio(c["visible_s"], fv["seconds"]) if fv else None,
        "floor_validated_vs_floor": ratio(fv["seconds"], f["seconds"]) if fv else None,
    }
    if h:
        res["ratios"].update(
            {
                "crdtsync_visible_vs_hub": ratio(c["visible_s"], h["visible_s"]),
                "crdtsync_durable_vs_hub": ratio(c["durable_s"], h["visible_s"]),
                "hub_bytes_vs_state": ratio(h["wire_bytes"], len(state), 3),
                "hub_visible_vs_floor": ratio(h["visible_s"], f["seconds"]),
                "hub_visible_vs_floor_validated": ratio(h["visible_s"], fv["seconds"])
                if fv
                else None,
            }
        )
    peer, best = strongest(out, lambda r: r["visible_s"], higher=False)
    if peer is not None:
        res["vs_strongest"] = {
            "peer": peer,
            "peer_visible_s": best,
            "crdtsync_visible_vs_strongest": ratio(c["visible_s"], best),
            "crdtsync_durable_vs_strongest": ratio(c["durable_s"], best),
            # the strongest hub against both floors (it validates nothing)
            "peer_visible_vs_floor": ratio(best, f["seconds"]),
            "peer_visible_vs_floor_validated": ratio(best, fv["seconds"]) if fv else None,
            "floor_target": "<= 1.5x floor",
            "met": c["visible_s"] <= 1.5 * f["seconds"],
        }
    return res


def plot(results: dict[str, Any]) -> Any:
    plt = pyplot()
    labels = list(results)
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.6))
    peer_colors = ("tab:orange", "tab:red", "tab:green", "tab:purple")
    present = [k for k in PEERS if all(k in results[x] for x in labels)]
    series = [
        ("floor (encode+apply)", lambda r: r["floor"]["seconds"], "tab:gray"),
        ("crdtsync visible", lambda r: r["crdtsync"]["visible_s"], "tab:blue"),
        ("crdtsync durable", lambda r: r["crdtsync"]["durable_s"], "tab:cyan"),
    ] + [
        (k, lambda r, k=k: r[k]["visible_s"], peer_colors[j % len(peer_colors)])
        for j, k in enumerate(present)
    ]
    width = 0.8 / len(series)
    for j, (name, get, color) in enumerate(series):
        vals = [get(results[k]) for k in labels]
        bars = ax[0].bar(
            [i + (j - (len(series) - 1) / 2) * width for i in range(len(labels))],
            vals,
            width,
            label=name,
            color=color,
        )
        ax[0].bar_label(bars, fmt="%.3g", fontsize=7)
    ax[0].set_yscale("log")
    ax[0].set_ylabel("seconds until synced (log; lower is better)")
    ax[0].set_xticks(
        range(len(labels)), [f"{k}\n{results[k]['state_bytes']:,} B state" for k in labels]
    )
    ax[0].set_title("time for a new replica to hold the whole state")
    ax[0].legend(fontsize=8)
    bseries = [
        ("encoded state (floor)", lambda r: r["state_bytes"], "tab:gray"),
        ("crdtsync wire", lambda r: r["crdtsync"]["wire_bytes"], "tab:blue"),
    ] + [
        (f"{k} wire", lambda r, k=k: r[k]["wire_bytes"], peer_colors[j % len(peer_colors)])
        for j, k in enumerate(present)
    ]
    bw = 0.8 / len(bseries)
    for j, (name, get, color) in enumerate(bseries):
        vals = [get(results[k]) / 1e6 for k in labels]
        bars = ax[1].bar(
            [i + (j - (len(bseries) - 1) / 2) * bw for i in range(len(labels))],
            vals,
            bw,
            label=name,
            color=color,
        )
        ax[1].bar_label(bars, fmt="%.3f", fontsize=7)
    ax[1].set_ylabel("MB on the wire (TCP payload)")
    ax[1].set_xticks(range(len(labels)), labels)
    ax[1].set_title("bytes to catch up")
    ax[1].legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument("--entries", type=int, default=None, help="map entries [200000; quick 50000]")
    p.add_argument("--trace", default=None, help="sequential trace [automerge-paper.json.gz]")
    p.add_argument(
        "--gossip", default=None, help="JSON object of GossipConfig overrides for both agents"
    )
    p.add_argument(
        "--peers", default=",".join(PEERS), help="hubs to compare with: " + ", ".join(PEERS)
    )
    p.add_argument(
        "--states",
        default="map,paper",
        help="which states to catch up: map, paper or both [map,paper]",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved rounds of crdtsync and every hub; medians reported [3; tiny 1]",
    )
    args = p.parse_args(argv)
    size = size_of(args)
    rounds = args.rounds or (1 if size == "tiny" else 3)
    peers = tuple(x for x in args.peers.split(",") if x)
    entries = args.entries or MAP_SIZES[size]
    trace = Path(args.trace) if args.trace else traces_dir() / "automerge-paper.json.gz"
    prog = Progress("catchup")
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-catchup-"))
    results: dict[str, Any] = {}
    prep: dict[str, Any] = {}
    states = {x.strip() for x in args.states.split(",") if x.strip()}
    if not states or states - {"map", "paper"}:
        p.error("--states takes map, paper or both")
    try:
        task = prog.task("preparing states", 2)
        if "map" in states:
            t0 = time.perf_counter()
            map_state = build_map_store(tmp / "map-holder", entries)
            prep["map_build_s"] = round(time.perf_counter() - t0, 2)
        prog.update(task, 1)
        if "paper" in states:
            t0 = time.perf_counter()
            paper_state, paper_text, matches = replay_sequential(trace, PAPER_EDITS[size])
            prep["paper_replay_s_or_cached"] = round(time.perf_counter() - t0, 2)
            build_state_store(tmp / "paper-holder", "paper", paper_state)
        prog.update(task, 2)
        if "map" in states:
            results[f"map {entries:,} entries"] = catch_up(
                "map",
                map_state,
                tmp / "map-holder",
                "map",
                ["--until-len", str(entries)],
                tmp,
                prog,
                args.gossip,
                peers,
                rounds,
            )
        if "paper" in states:
            label = "automerge-paper" + (
                "" if PAPER_EDITS[size] is None else f" (first {PAPER_EDITS[size]:,} edits)"
            )
            results[label] = catch_up(
                "paper",
                paper_state,
                tmp / "paper-holder",
                "paper",
                ["--until-text-len", str(len(paper_text))],
                tmp,
                prog,
                args.gossip,
                peers,
                rounds,
            )
            results[label]["text_chars"] = len(paper_text)
            results[label]["replay_matches_endContent"] = matches
    finally:
        prog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "benchmark": "catchup",
        "size": size,
        "machine": machine(),
        "prep": prep,
        "crdtsync_config": json.loads(args.gossip) if args.gossip else "defaults",
        "rounds": rounds,
        "states": results,
        "node_peers": describe(),
    }
    finish(report, args.out, plot_dir=args.plot_dir, plots={"catchup.png": lambda: plot(results)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
