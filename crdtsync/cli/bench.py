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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench_summary import summary_markdown, summary_rows, summary_table

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
        "1 writer -> 7 agents (then 31, 63) over websockets vs the strongest hub "
        "(pycrdt-websocket, @y/websocket-server, Hocuspocus)",
        {"tiny": 60, "quick": 240, "full": 900},
    ),
    "catchup": Scenario(
        "catchup.py",
        "a new agent joins a big shard vs floor and the strongest hub",
        {"tiny": 25, "quick": 40, "full": 60},
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
    "stream": Scenario(
        "stream.py",
        "1 agent streams the automerge-paper trace live, 3 follow vs its local replay and the hub",
        {"tiny": 15, "quick": 60, "full": 240},
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
    "broker": Scenario(
        "broker.py",
        "8 agents via one MQTT broker vs the websocket mesh and the hub; N=8..128 on one broker",
        {"tiny": 80, "quick": 240, "full": 420},
    ),
    "hostile": Scenario(
        "hostile.py",
        "an honest peer's p99 before vs during floods, silent connections and poison (issue #11)",
        {"tiny": 25, "quick": 50, "full": 110},
    ),
    "join": Scenario(
        "join.py",
        "a new agent joins a mesh of 1,000/5,000 small shards vs the local-apply floor",
        {"tiny": 8, "quick": 15, "full": 60},
    ),
    "yjs": Scenario(
        "yjs.py",
        "8 Node Yjs clients and a 200k-map sync: Yjs door vs the strongest hub (needs node + npm)",
        {"tiny": 20, "quick": 40, "full": 120},
    ),
}

#: The order of ``all``: the comparisons with the peer first.
ORDER = [
    "local",
    "fanout",
    "catchup",
    "join",
    "idle",
    "restart",
    "stream",
    "trace",
    "glomers",
    "http",
    "yjs",
    "broker",
    "hostile",
]


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
