"""``crdtsync bench``: run the benchmark scenarios in ``benchmarks/`` and gather their results.

Each scenario is a script in the checkout's ``benchmarks/`` directory that measures crdtsync
next to its physical floor or its closest peer (pycrdt-websocket) *in the same run*, prints
one JSON object and draws PNG plots. This module only runs them, one after the other, each in
its own process: it states the expected duration up front, turns their progress events into
rich progress bars, keeps going when one fails, and ends with one summary table of the figures
and their ratios. Results land in ``<out>/<scenario>.json`` and ``<out>/*.png``, with
``summary.json`` and ``summary.md`` (the table) beside them.

It is not part of the library API and imports nothing from the scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ORDER",
    "SCENARIOS",
    "Scenario",
    "find_bench_dir",
    "run",
    "summary_markdown",
    "summary_rows",
    "summary_table",
]


@dataclass(frozen=True)
class Scenario:
    """One benchmark script and what it measures."""

    script: str
    what: str
    #: Expected wall seconds per size on the reference machine (2 cores, shared), for the
    #: estimate (catchup adds ~15 s the first time, replaying the trace into its cache).
    seconds: dict[str, float]


SCENARIOS: dict[str, Scenario] = {
    "local": Scenario(
        "local_writes.py",
        "durable local writes vs the in-memory floor",
        {"tiny": 5, "quick": 10, "full": 30},
    ),
    "fanout": Scenario(
        "fanout.py",
        "1 writer -> 7 agents over websockets vs the pycrdt-websocket hub",
        {"tiny": 20, "quick": 45, "full": 200},
    ),
    "catchup": Scenario(
        "catchup.py",
        "a new agent joins a big shard vs floor and pycrdt-websocket",
        {"tiny": 6, "quick": 15, "full": 25},
    ),
    "idle": Scenario(
        "idle.py",
        "idle anti-entropy cost for 10/100/1000 shards on 8 agents",
        {"tiny": 30, "quick": 65, "full": 150},
    ),
    "restart": Scenario(
        "restart.py",
        "reopen a 1M-update log, compact, reopen vs floors",
        {"tiny": 4, "quick": 15, "full": 100},
    ),
    "trace": Scenario(
        "trace_replay.py",
        "concurrent editing traces, one agent per author",
        {"tiny": 20, "quick": 45, "full": 320},
    ),
    "glomers": Scenario(
        "glomers.py",
        "Gossip Glomers (simulated): loss and the scale curve vs floors",
        {"tiny": 5, "quick": 25, "full": 420},
    ),
    "http": Scenario(
        "http_api.py",
        "HTTP PATCH requests/s and SSE delivery p99 vs in-process writes",
        {"tiny": 8, "quick": 15, "full": 40},
    ),
    "yjs": Scenario(
        "yjs.py",
        "8 Node y-websocket clients and a 200k-map sync: Yjs door vs the hub (needs node + npm)",
        {"tiny": 10, "quick": 20, "full": 60},
    ),
}

#: The order of ``all``: the comparisons with the peer first.
ORDER = ["local", "fanout", "catchup", "idle", "restart", "trace", "glomers", "http", "yjs"]


def find_bench_dir(explicit: Path | None = None) -> Path:
    """The ``benchmarks/`` directory of this checkout (crdtsync must be installed editable)."""
    candidates = (
        [explicit]
        if explicit
        else [Path(__file__).resolve().parents[2] / "benchmarks", Path.cwd() / "benchmarks"]
    )
    for c in candidates:
        if c is not None and (c / "fanout.py").is_file():
            return c
    raise FileNotFoundError(
        "crdtsync bench runs the scripts in a source checkout's benchmarks/ directory; none found "
        f"(looked in {', '.join(str(c) for c in candidates if c)}). Install with `pip install -e .` "
        "from a checkout, or pass --bench-dir."
    )


def _estimate(names: Sequence[str], size: str) -> float:
    return sum(SCENARIOS[n].seconds[size] for n in names)


def run(
    names: Sequence[str],
    size: str,
    out_dir: Path,
    console: Any,
    *,
    bench_dir: Path | None = None,
    extra: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Run the named scenarios at ``size`` ("tiny", "quick" or "full"); return their results.

    A failed scenario is recorded as ``{"error": ...}`` and the next one still runs.
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    bdir = find_bench_dir(bench_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not console.is_terminal and console.width < 160:  # a log file: do not fold the table
        from rich.console import Console

        console = Console(width=180, file=console.file)
    est = _estimate(names, size)
    console.print(
        f"[bold]crdtsync bench[/] {' '.join(names)} ({size}): results in [cyan]{out_dir}[/]"
    )
    console.print(
        f"expected duration: about {_fmt_s(est)} on a 2-core machine "
        f"({', '.join(f'{n} ~{_fmt_s(SCENARIOS[n].seconds[size])}' for n in names)})"
    )
    results: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("[bold]all scenarios", total=len(names))
        for name in names:
            sc = SCENARIOS[name]
            args = [
                sys.executable,
                str(bdir / sc.script),
                "--out",
                str(out_dir / f"{name}.json"),
                "--plot-dir",
                str(out_dir),
            ]
            if size != "full":
                args.append(f"--{size}")
            args += (extra or {}).get(name, [])
            t0 = time.monotonic()
            rc, log = _run_one(args, name, progress)
            seconds = round(time.monotonic() - t0, 1)
            path = out_dir / f"{name}.json"
            if rc == 0 and path.is_file():
                results[name] = json.loads(path.read_text())
                results[name]["wall_s"] = seconds
                progress.console.print(f"[green]✓[/] {name} ({seconds} s)")
            else:
                results[name] = {
                    "error": f"exit code {rc}",
                    "log_tail": log[-40:],
                    "wall_s": seconds,
                }
                progress.console.print(
                    f"[red]✗ {name} failed[/] (exit {rc}):\n" + "\n".join(log[-15:])
                )
            progress.advance(overall)
    rows = summary_rows(results)
    (out_dir / "summary.json").write_text(
        json.dumps(
            {
                "size": size,
                "rows": rows,
                "scenarios": {
                    n: ({"error": r["error"]} if "error" in r else {"wall_s": r.get("wall_s")})
                    for n, r in results.items()
                },
            },
            indent=2,
        )
        + "\n"
    )
    (out_dir / "summary.md").write_text(summary_markdown(rows))
    console.print(summary_table(rows, size))
    return results


def _run_one(args: list[str], name: str, progress: Any) -> tuple[int, list[str]]:
    env = {**os.environ, "CRDTSYNC_BENCH_EVENTS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True
    )
    tasks: dict[str, Any] = {}
    log: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            if line.startswith('{"bench-progress"'):
                try:
                    ev = json.loads(line)["bench-progress"]
                except (ValueError, KeyError):
                    continue
                key = ev["task"]
                if key not in tasks:
                    tasks[key] = progress.add_task(
                        f"  {name}: {key}", total=ev.get("total") or None
                    )
                fields: dict[str, Any] = {"completed": ev.get("completed", 0)}
                if ev.get("total") is not None:
                    fields["total"] = ev["total"]
                progress.update(tasks[key], **fields)
            elif line.startswith('{"bench-note"'):
                try:
                    progress.console.print(
                        f"  [dim]{name}: {json.loads(line)['bench-note']['text']}"
                    )
                except (ValueError, KeyError):
                    pass
            else:
                log.append(line)
                del log[:-200]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    rc = proc.wait()
    reader.join(5)
    if proc.stderr is not None:
        proc.stderr.close()
    for t in tasks.values():
        progress.update(t, visible=False)
    return rc, log


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


# ---------------------------------------------------------------------------------------------
# the summary table


def _g(d: Any, *path: str | int) -> Any:
    for p in path:
        if isinstance(d, dict):
            d = d.get(p)  # type: ignore[call-overload]
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return None
    return d


def _r(a: Any, b: Any) -> float | None:
    try:
        return round(a / b, 2) if a is not None and b else None
    except TypeError:
        return None


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per headline figure: scenario, figure, crdtsync, reference, ratio, target, met."""
    rows: list[dict[str, Any]] = []

    def row(
        sc: str,
        figure: str,
        mine: Any,
        ref: Any,
        ref_name: str,
        *,
        target: str = "",
        met: bool | None = None,
        ratio: float | None | Callable[[], float | None] = None,
    ) -> None:
        r = ratio() if callable(ratio) else (ratio if ratio is not None else _r(mine, ref))
        rows.append(
            {
                "scenario": sc,
                "figure": figure,
                "crdtsync": mine,
                "reference": ref,
                "reference_is": ref_name,
                "ratio": r,
                "target": target,
                "met": met,
            }
        )

    for name, res in results.items():
        if "error" in res:
            rows.append(
                {
                    "scenario": name,
                    "figure": "FAILED",
                    "crdtsync": None,
                    "reference": None,
                    "reference_is": "",
                    "ratio": None,
                    "target": res["error"],
                    "met": False,
                }
            )
            continue
        if name == "local":
            v = res.get("group_commit_durable_ops_per_s")
            row(
                name,
                "durable map sets/s (group commit)",
                v,
                res.get("floor_in_memory_ops_per_s"),
                "bare pycrdt in memory",
                target=">= 100k/s and >= 0.3x floor",
                met=bool(
                    v and v >= 100_000 and (res.get("ratio_group_commit_to_floor") or 0) >= 0.3
                ),
            )
            row(
                name,
                "acknowledged writes/s (flush each)",
                res.get("acknowledged_ops_per_s"),
                res.get("per_op_commit_ops_per_s"),
                "one fsync per op",
            )
        elif name == "fanout":
            systems = res.get("systems", {})
            hub = systems.get("pycrdt-websocket", {})
            for label in ("crdtsync", "crdtsync-wan"):
                me = systems.get(label)
                if not me:
                    continue
                tag = "" if label == "crdtsync" else " [WAN config]"
                b, hb = me["burst"], hub.get("burst", {})
                p, hp = me["paced"], hub.get("paced", {})
                row(
                    name,
                    f"burst updates/s{tag}",
                    b["updates_per_s"],
                    hb.get("updates_per_s"),
                    "pycrdt-websocket hub",
                    target=">= 5x hub",
                    met=bool(hb and b["updates_per_s"] >= 5 * hb["updates_per_s"]),
                )
                row(
                    name,
                    f"burst latency p99 ms{tag}",
                    b["latency_ms"]["p99"],
                    _g(hb, "latency_ms", "p99"),
                    "pycrdt-websocket hub",
                    target="< hub",
                    met=bool(hb and b["latency_ms"]["p99"] < hb["latency_ms"]["p99"]),
                )
                row(
                    name,
                    f"paced {res['setting']['paced_rate']:g}/s latency p99 ms{tag}",
                    p["latency_ms"]["p99"],
                    _g(hp, "latency_ms", "p99"),
                    "pycrdt-websocket hub",
                    target="<= hub",
                    met=bool(hp and p["latency_ms"]["p99"] <= hp["latency_ms"]["p99"]),
                )
                row(
                    name,
                    f"paced latency p50 / max ms{tag}",
                    f"{p['latency_ms']['p50']} / {p['latency_ms']['max']}",
                    f"{_g(hp, 'latency_ms', 'p50')} / {_g(hp, 'latency_ms', 'max')}",
                    "pycrdt-websocket hub",
                    ratio=_r(p["latency_ms"]["p50"], _g(hp, "latency_ms", "p50")),
                )
                pl, hpl = me.get("paced_low"), hub.get("paced_low")
                if pl and hpl:
                    row(
                        name,
                        f"paced {res['setting'].get('low_rate', 0):g}/s latency p50 / p99 ms{tag}",
                        f"{pl['latency_ms']['p50']} / {pl['latency_ms']['p99']}",
                        f"{hpl['latency_ms']['p50']} / {hpl['latency_ms']['p99']}",
                        "pycrdt-websocket hub",
                        target="p99 <= hub",
                        met=pl["latency_ms"]["p99"] <= hpl["latency_ms"]["p99"],
                        ratio=_r(pl["latency_ms"]["p99"], hpl["latency_ms"]["p99"]),
                    )
                row(
                    name,
                    f"burst CPU ms per update, all processes{tag}",
                    b.get("cpu_ms_per_update"),
                    hb.get("cpu_ms_per_update"),
                    "pycrdt-websocket hub",
                )
                row(
                    name,
                    f"burst msgs per update{tag}",
                    b["msgs_per_update"],
                    hb.get("msgs_per_update"),
                    "pycrdt-websocket hub",
                )
                row(
                    name,
                    f"burst wire bytes per update{tag}",
                    b["wire_bytes_per_update"],
                    hb.get("wire_bytes_per_update"),
                    "pycrdt-websocket hub",
                )
        elif name == "catchup":
            for label, st in res.get("states", {}).items():
                c, h, f = st["crdtsync"], st["pycrdt-websocket"], st["floor"]
                row(
                    name,
                    f"{label}: s until synced",
                    c["visible_s"],
                    h["visible_s"],
                    "pycrdt-websocket",
                    ratio=_r(c["visible_s"], h["visible_s"]),
                )
                row(
                    name,
                    f"{label}: s until synced vs floor",
                    c["visible_s"],
                    f["seconds"],
                    "pycrdt encode+apply",
                )
                row(
                    name,
                    f"{label}: s until durable (crdtsync only)",
                    c["durable_s"],
                    f["seconds"],
                    "pycrdt encode+apply",
                )
                row(
                    name,
                    f"{label}: wire bytes",
                    c["wire_bytes"],
                    st["state_bytes"],
                    "encoded state",
                    ratio=_r(c["wire_bytes"], st["state_bytes"]),
                )
                row(
                    name,
                    f"{label}: wire bytes (hub)",
                    h["wire_bytes"],
                    st["state_bytes"],
                    "encoded state",
                )
        elif name == "idle":
            pts = res.get("by_shard_count", [])
            for p in pts:
                row(
                    name,
                    f"{p['shards']} shards: msgs / wire bytes per round",
                    f"{p['msgs_per_round']} / {p['wire_bytes_per_round']}",
                    "1 / -",
                    "one Summary per round",
                    ratio=p["msgs_per_round"],
                )
            if pts:
                g = res.get("growth", {})
                row(
                    name,
                    f"growth {pts[0]['shards']} -> {pts[-1]['shards']} shards (msgs, bytes per round)",
                    f"{g.get('msgs_per_round_ratio')}x, {g.get('wire_bytes_per_round_ratio')}x",
                    "1x",
                    "O(1)",
                    target="O(1) per round",
                    met=_g(res, "target_o1_per_round", "met"),
                    ratio=g.get("msgs_per_round_ratio"),
                )
        elif name == "restart":
            row(
                name,
                f"reopen with {res['updates']:,} logged updates, s",
                _g(res, "reopen_log", "reopen_s"),
                res.get("floor_replay_s"),
                "pycrdt replay of the log",
            )
            row(
                name,
                "compaction, s",
                _g(res, "compact", "compact_s"),
                res.get("floor_replay_s"),
                "pycrdt replay of the log",
            )
            row(
                name,
                "reopen after compaction, s",
                _g(res, "reopen_compacted", "reopen_s"),
                res.get("floor_reopen_s"),
                "pycrdt apply of the state",
            )
            row(
                name,
                "live bytes before compaction",
                _g(res, "disk", "before", "live_bytes"),
                res.get("state_bytes"),
                "encoded state",
            )
            row(
                name,
                "live bytes after compaction",
                _g(res, "disk", "after", "live_bytes"),
                res.get("state_bytes"),
                "encoded state",
            )
            row(
                name,
                "data dir allocated after compaction",
                _g(res, "disk", "after", "allocated_bytes"),
                res.get("state_bytes"),
                "encoded state",
            )
        elif name == "trace":
            for tname, t in res.get("traces", {}).items():
                for label, s in t.get("systems", {}).items():
                    tag = "" if label == "crdtsync" else " [WAN config]"
                    ok = (
                        s.get("agents_equal")
                        and s.get("agents_match_single_process")
                        and t.get("matches_endContent") is not False
                    )
                    row(
                        name,
                        f"{tname} ({t['txns']:,} txns, {t['critical_path_hops']} hops): s{tag}",
                        s["seconds"],
                        t["single_process_s"],
                        "pycrdt single process",
                        target="every agent = endContent"
                        if t.get("matches_endContent") is not None
                        else "agents equal",
                        met=bool(ok),
                    )
        elif name == "yjs":
            ours, hub = res.get("crdtsync", {}), res.get("hub", {})
            fo, fh = ours.get("fanout", {}), hub.get("fanout", {})
            row(
                name,
                "8 clients: updates/s",
                fo.get("updates_per_s"),
                fh.get("updates_per_s"),
                "pycrdt-websocket hub",
                target=">= 1x hub",
                met=bool(
                    fo.get("updates_per_s")
                    and fo["updates_per_s"] >= (fh.get("updates_per_s") or 0)
                ),
            )
            row(
                name,
                "8 clients: p99 ms",
                fo.get("p99_ms"),
                fh.get("p99_ms"),
                "pycrdt-websocket hub",
                target="<= 1x hub",
                met=bool(fo.get("p99_ms") is not None and fo["p99_ms"] <= (fh.get("p99_ms") or 0)),
            )
            so, sh = ours.get("sync", {}).get("seconds"), hub.get("sync", {}).get("seconds")
            row(
                name,
                f"initial sync of {res.get('map_entries')} entries (s)",
                so,
                sh,
                "pycrdt-websocket hub",
                target="<= 1.5x hub",
                met=bool(so and sh and so <= 1.5 * sh),
            )
        elif name == "glomers":
            d = res.get("gossip_sim_defaults", {})
            for key in ("lossless", "lossy"):
                run_ = d.get(key)
                if not run_:
                    continue
                verdict = d.get(f"{key}_vs_targets", {})
                loss = f"{run_.get('loss', 0) * 100:.0f}% loss"
                row(
                    name,
                    f"{run_['agents']} agents, {loss}: msgs/write",
                    run_["msgs_per_write"],
                    3.0,
                    "target 3",
                    target="<= 3",
                    met=_g(verdict, "msgs_per_write", "met"),
                )
                row(
                    name,
                    f"{run_['agents']} agents, {loss}: latency median / max ms",
                    f"{run_['latency_median_ms']} / {run_['latency_max_ms']}",
                    f"{run_.get('latency_floor_median_ms')} / -",
                    "overlay floor (hops x link)",
                    target="<= 400 / 600",
                    met=bool(
                        _g(verdict, "latency_median_ms", "met")
                        and _g(verdict, "latency_max_ms", "met")
                    ),
                    ratio=_r(run_["latency_median_ms"], run_.get("latency_floor_median_ms")),
                )
            pts = _g(res, "scale", "points") or []
            for p in pts[-1:] + pts[:1] if len(pts) > 1 else pts:
                row(
                    name,
                    f"N={p['agents']}: rounds (median)",
                    p.get("rounds_median"),
                    p.get("rounds_floor"),
                    "ceil(log_(1+f) N)",
                )
                row(
                    name,
                    f"N={p['agents']}: msgs/write",
                    p.get("msgs_per_write"),
                    p.get("msgs_floor_no_batching"),
                    "N-1 (no batching)",
                )
        elif name == "http":
            row(
                name,
                f"PATCH requests/s ({res.get('concurrency')} clients)",
                _g(res, "http", "patch_requests_per_s"),
                _g(res, "in_process", "writes_per_s"),
                "in-process shard writes, no HTTP",
            )
            row(
                name,
                "SSE delivery latency p99 ms",
                _g(res, "http", "sse_latency_ms", "p99"),
                _g(res, "in_process", "feed_latency_ms", "p99"),
                "in-process shard.changes()",
            )
    return rows


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def summary_table(rows: list[dict[str, Any]], size: str) -> Any:
    from rich.table import Table

    table = Table(title=f"crdtsync bench summary ({size})", show_lines=False)
    for col in ("scenario", "figure", "crdtsync", "reference", "ratio", "target", "met"):
        table.add_column(col, overflow="fold")
    for r in rows:
        met = "" if r["met"] is None else ("[green]yes" if r["met"] else "[red]no")
        table.add_row(
            r["scenario"],
            r["figure"],
            _cell(r["crdtsync"]),
            f"{_cell(r['reference'])} ({r['reference_is']})"
            if r["reference_is"]
            else _cell(r["reference"]),
            _cell(r["ratio"]),
            r["target"],
            met,
        )
    return table


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | figure | crdtsync | reference | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = (
            f"{_cell(r['reference'])} ({r['reference_is']})"
            if r["reference_is"]
            else _cell(r["reference"])
        )
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(
            f"| {r['scenario']} | {r['figure']} | {_cell(r['crdtsync'])} | {ref} "
            f"| {_cell(r['ratio'])} | {r['target']} | {met} |"
        )
    return "\n".join(lines) + "\n"
