"""Concurrent editing traces replayed by one agent per author over websockets.

The traces (clownschool, friendsforever; josephg/editing-traces) record several people typing
into one document at the same time: every transaction names its author and its parents (the
transactions it was typed on top of). Replaying one needs the document *as the author saw it*,
i.e. exactly the parents' version, which a live replica that keeps receiving the others'
edits no longer is. So the edits are turned into Yjs updates once, in one process, and the
agents then exchange those:

1. ``single_process``: pycrdt, one Doc per author (fixed client id per author): before each
   transaction the author's Doc merges the updates of every transaction in its parents'
   history it lacks (so it holds exactly the parents' version), applies the patches and
   keeps the resulting update. Timed: this is the single-process replay the figure is
   compared with. Also ``floor_apply_all``: applying all those updates, in order, to one Doc.
2. ``crdtsync``: one agent process per author, full mesh on 127.0.0.1, with the Agent's
   default gossip settings (``crdtsync-wan``: the WAN settings, ``GossipConfig()``). Each agent applies
   its author's updates in order, each only once its shard holds everything that update was
   typed on top of (its parents' state vector); what it needs from the other authors comes
   from them over gossip, so the causal chains of the trace (an author answering what another
   just typed) cross the network as often as they did when the trace was recorded. Timed from
   a common start instant until every agent's text is complete; each agent's final text is
   compared with the trace's ``endContent``.

Positions in the traces are Unicode code points and pycrdt's Text offsets UTF-8 bytes; both
traces are pure ASCII, which is checked. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt
from benchlib import (
    Child,
    Progress,
    children,
    common_args,
    finish,
    free_ports,
    machine,
    pyplot,
    ratio,
    size_of,
    traces_dir,
    wait_mesh,
)

from crdtsync import updates

TRACES = ["clownschool", "friendsforever"]
PREFIX = {"full": None, "quick": 3000, "tiny": 300}
GENESIS_CLIENT = 1
AUTHOR_CLIENT = 1000  # + author index
SYSTEMS = {"crdtsync": {}, "crdtsync-wan": {"preset": "wan"}}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def genesis() -> bytes:
    """The shared starting point: an empty Text at root['text'], created once by one client."""
    doc = pycrdt.Doc(client_id=GENESIS_CLIENT)
    doc.get("root", type=pycrdt.Map)["text"] = pycrdt.Text()
    return doc.get_update()


def precompute(path: Path, limit: int | None) -> dict[str, Any]:
    """Turn a concurrent trace into per-author Yjs updates with their causal needs (timed)."""
    data = json.load(gzip.open(path))
    txns = data["txns"] if limit is None else data["txns"][:limit]
    authors = sorted({t["agent"] for t in txns})
    for t in txns:
        for _, _, ins in t["patches"]:
            if not ins.isascii():
                raise NotImplementedError(
                    "non-ASCII trace: code-point positions would need mapping to UTF-8"
                )
    gen = genesis()
    t0 = time.perf_counter()
    docs, texts = {}, {}
    for a in authors:
        d = pycrdt.Doc(client_id=AUTHOR_CLIENT + a)
        d.apply_update(gen)
        docs[a], texts[a] = d, d.get("root", type=pycrdt.Map)["text"]
    seq: list[int] = []  # index of each txn within its author's chain
    count = {a: 0 for a in authors}
    version: list[dict[int, int]] = []  # per txn: how many txns of each author it includes
    by_author: dict[int, list[bytes]] = {a: [] for a in authors}  # updates of each author's txns
    clock_end: dict[int, list[int]] = {a: [] for a in authors}
    have = {a: {b: 0 for b in authors} for a in authors}  # txns of b integrated in a's doc
    steps: dict[int, list[dict[str, Any]]] = {a: [] for a in authors}
    for i, t in enumerate(txns):
        a = t["agent"]
        v = {b: 0 for b in authors}
        for p in t["parents"]:
            pv = version[p]
            for b in authors:
                v[b] = max(v[b], pv[b])
            v[txns[p]["agent"]] = max(v[txns[p]["agent"]], seq[p] + 1)
        if v[a] != count[a]:
            raise ValueError(f"txn {i}: author {a}'s transactions do not form a chain")
        doc, text = docs[a], texts[a]
        for b in authors:
            if b == a:
                continue
            if have[a][b] > v[b]:
                raise ValueError(f"txn {i}: author {a} already holds more of {b} than its parents")
            for k in range(have[a][b], v[b]):
                doc.apply_update(by_author[b][k])
            have[a][b] = v[b]
        before = doc.get_state()
        with doc.transaction():
            for pos, n_del, ins in t["patches"]:
                if n_del:
                    del text[pos : pos + n_del]
                if ins:
                    text.insert(pos, ins)
        update = doc.get_update(before)
        by_author[a].append(update)
        clock_end[a].append(_own_clock(doc))
        needs = {
            str(AUTHOR_CLIENT + b): clock_end[b][v[b] - 1] for b in authors if b != a and v[b] > 0
        }
        steps[a].append({"needs": needs, "update": update.hex()})
        seq.append(count[a])
        count[a] += 1
        version.append(v)
    replay_s = time.perf_counter() - t0
    # Everything, merged: the converged document.
    t1 = time.perf_counter()
    final = pycrdt.Doc(client_id=GENESIS_CLIENT + 1)
    final.apply_update(gen)
    for i, t in enumerate(txns):
        final.apply_update(by_author[t["agent"]][seq[i]])
    apply_all_s = time.perf_counter() - t1
    content = str(final.get("root", type=pycrdt.Map)["text"])
    end = data["endContent"] if limit is None else None
    return {
        "authors": authors,
        "txns": len(txns),
        "patches": sum(len(t["patches"]) for t in txns),
        "single_process_s": round(replay_s, 4),
        "floor_apply_all_s": round(apply_all_s, 4),
        "final_len": len(content),
        "final_sha": _sha(content),
        "matches_endContent": None if end is None else content == end,
        "genesis": gen,
        "steps": steps,
        "critical_path_hops": _critical_hops(txns),
    }


def _own_clock(doc: pycrdt.Doc) -> int:
    return updates.decode_state_vector(doc.get_state()).get(doc.client_id, 0)


def _critical_hops(txns: list[dict[str, Any]]) -> int:
    """Longest chain of transactions where the author changes from parent to child: how many
    times, at least, a replay must wait for an edit to cross from one agent to another."""
    hops = [0] * len(txns)
    for i, t in enumerate(txns):
        hops[i] = max((hops[p] + (txns[p]["agent"] != t["agent"]) for p in t["parents"]), default=0)
    return max(hops, default=0)


def run_crdtsync(
    label: str, overrides: dict[str, Any], pre: dict[str, Any], tmp: Path, prog: Progress, name: str
) -> dict[str, Any]:
    authors = pre["authors"]
    ports = free_ports(len(authors))
    tmp.mkdir(parents=True, exist_ok=True)
    gen_file = tmp / "genesis.bin"
    gen_file.write_bytes(pre["genesis"])
    plans = {}
    for a in authors:
        plans[a] = tmp / f"plan-{a}.json"
        plans[a].write_text(json.dumps({"steps": pre["steps"][a]}))
    total = sum(len(pre["steps"][a]) for a in authors)
    with children() as kids:
        for i, (a, port) in enumerate(zip(authors, ports, strict=False)):
            args = [
                "--name",
                f"author{a}",
                "--data",
                str(tmp / label / f"a{a}"),
                "--listen",
                f"ws://127.0.0.1:{port}",
                "--gossip",
                json.dumps(overrides),
                "--seed",
                str(i),
            ]
            if i:
                args += ["--peer", f"ws://127.0.0.1:{ports[0]}"]
            kids.append(Child("crdtsync", args, name=f"{name}/{label}/author{a}"))
        effective = [k.wait("ready", 60).get("gossip") for k in kids][0]
        for k in kids:
            k.send(cmd="genesis", shard="trace", file=str(gen_file))
        for k in kids:
            k.wait("genesis", 30)
        wait_mesh(kids, len(authors) - 1)
        time.sleep(0.5)
        start_ns = time.time_ns() + 500_000_000
        for a, k in zip(authors, kids, strict=False):
            k.send(
                cmd="replay",
                shard="trace",
                plan=str(plans[a]),
                start_ns=start_ns,
                final_len=pre["final_len"],
            )
        task = prog.task(f"{name}: {label}, {len(authors)} authors", total)
        done = {}
        replayed = {}
        deadline = time.monotonic() + 1800
        progress = {k.name: 0 for k in kids}
        while len(done) < len(kids):
            for k in kids:
                if k.name in done:
                    continue
                ev = k.poll(0.05)
                if ev is None:
                    continue
                if ev.get("event") == "replay-progress":
                    progress[k.name] = ev["steps"]
                    prog.update(task, sum(progress.values()))
                elif ev.get("event") == "replayed":
                    replayed[k.name] = ev
                    progress[k.name] = ev["steps"]
                    prog.update(task, sum(progress.values()))
                elif ev.get("event") == "final":
                    done[k.name] = ev
            if time.monotonic() > deadline:
                raise TimeoutError(f"trace replay did not finish: {progress}")
    end = max(e["at_ns"] for e in done.values())
    shas = {e["sha"] for e in done.values()}
    return {
        "config": overrides or "Agent default",
        "gossip": effective,
        "seconds": round((end - start_ns) / 1e9, 3),
        "own_edits_done_s": round((max(e["at_ns"] for e in replayed.values()) - start_ns) / 1e9, 3),
        "waits_for_remote": sum(e["waits"] for e in replayed.values()),
        "agents_equal": len(shas) == 1,
        "agents_match_single_process": shas == {pre["final_sha"]},
    }


def plot(results: dict[str, Any]) -> Any:
    plt = pyplot()
    names = list(results)
    fig, ax = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for a, name in zip(ax[0], names, strict=False):
        r = results[name]
        labels = ["pycrdt\nsingle process", "floor: apply\nall updates"]
        vals = [r["single_process_s"], r["floor_apply_all_s"]]
        colors = ["tab:gray", "tab:gray"]
        for label, v in r["systems"].items():
            labels.append(f"{label}\n{len(r['authors'])} agents")
            vals.append(v["seconds"])
            colors.append("tab:blue" if label == "crdtsync" else "tab:cyan")
        bars = a.bar(labels, vals, color=colors)
        a.bar_label(bars, fmt="%.3g", fontsize=8)
        a.set_yscale("log")
        a.set_ylabel("seconds (log)")
        a.set_title(
            f"{name}: {r['txns']:,} txns, {r['critical_path_hops']} cross-author hops", fontsize=9
        )
        a.tick_params(axis="x", labelsize=7)
    fig.suptitle(
        "concurrent traces: one agent per author over websockets vs one pycrdt process", fontsize=10
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p)
    p.add_argument("--traces", default=",".join(TRACES))
    p.add_argument("--txns", type=int, default=None, help="replay only the first N transactions")
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS)
    )
    args = p.parse_args(argv)
    size = size_of(args)
    limit = args.txns or PREFIX[size]
    prog = Progress("trace")
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-trace-"))
    results: dict[str, Any] = {}
    try:
        for name in args.traces.split(","):
            task = prog.task(f"{name}: single-process pycrdt replay", 1)
            pre = precompute(traces_dir() / f"{name}.json.gz", limit)
            prog.update(task, 1)
            r = {k: v for k, v in pre.items() if k not in ("genesis", "steps")}
            r["systems"] = {}
            for label in args.systems.split(","):
                r["systems"][label] = run_crdtsync(
                    label, SYSTEMS[label], pre, tmp / name, prog, name
                )
                r["systems"][label]["vs_single_process"] = ratio(
                    r["systems"][label]["seconds"], pre["single_process_s"]
                )
                r["systems"][label]["seconds_per_hop"] = ratio(
                    r["systems"][label]["seconds"], max(pre["critical_path_hops"], 1), 4
                )
            results[name] = r
    finally:
        prog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "benchmark": "trace",
        "size": size,
        "machine": machine(),
        "txns_limit": limit,
        "traces": results,
    }
    finish(report, args.out, plot_dir=args.plot_dir, plots={"trace.png": lambda: plot(results)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
