"""Shared helpers of the crdtsync benchmark scripts (not part of the library).

Each scenario script in ``benchmarks/`` imports this module (it sits next to them, so
``python benchmarks/<script>.py`` finds it): child processes that speak JSON lines, wire
counters read from the kernel (``ss``), percentiles, progress reporting, plots and the
machine description that every result carries.

Progress: with ``CRDTSYNC_BENCH_EVENTS=1`` in the environment (set by ``crdtsync bench``),
progress goes to stderr as JSON lines ``{"bench-progress": {...}}`` that the driver turns
into rich progress bars; run by hand, a script draws its own rich bars on stderr. Either way
stdout carries exactly one JSON object: the result.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
NODES = BENCH_DIR / "nodes.py"


#: The editing traces shipped with the repository (CC BY 4.0, see the README beside them).
SHIPPED_TRACES = BENCH_DIR / "data" / "editing-traces"


def traces_dir() -> Path:
    """Where the editing traces are: ``$CRDTSYNC_TRACES`` if set, else the copies shipped in
    ``benchmarks/data/editing-traces`` (so a fresh clone runs every benchmark)."""
    env = os.environ.get("CRDTSYNC_TRACES")
    if env:
        return Path(env)
    return SHIPPED_TRACES


def cache_dir() -> Path:
    """Prepared inputs (replayed traces) kept between runs: ``$CRDTSYNC_BENCH_CACHE`` or
    ``~/.cache/crdtsync-bench``."""
    d = Path(os.environ.get("CRDTSYNC_BENCH_CACHE") or Path.home() / ".cache" / "crdtsync-bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------------------------
# the machine


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1e6, 1)
    versions = {}
    for mod in ("pycrdt", "websockets", "lmdb", "msgpack"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[mod] = version(mod)
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["pycrdt-websocket"] = version("pycrdt-websocket")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "code": code_version(),
        "cpu": model,
        "load_avg_1_5_15": [round(x, 2) for x in load] if load else None,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "mem_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
    }


def code_version() -> dict[str, Any]:
    """Which library code was measured: git HEAD, and a hash of uncommitted library changes."""
    import hashlib

    def git(*args: str) -> str:
        res = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return res.stdout if res.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD").strip()
    diff = git("diff", "HEAD", "--", "crdtsync", "transports")
    untracked = git(
        "ls-files", "--others", "--exclude-standard", "--", "crdtsync", "transports"
    ).split()
    h = hashlib.sha256(diff.encode())
    for f in sorted(untracked):
        with contextlib.suppress(OSError):
            h.update(f.encode() + (REPO / f).read_bytes())
    return {
        "git_head": head or None,
        "library_uncommitted": bool(diff or untracked),
        "library_diff_sha": h.hexdigest()[:12] if (diff or untracked) else None,
    }


# ---------------------------------------------------------------------------------------------
# statistics


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def summary(values: Iterable[float], digits: int = 2) -> dict[str, float | int]:
    """n, p50, p90, p99, max and mean of ``values`` (rounded)."""
    v = sorted(values)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "p50": round(pct(v, 50), digits),
        "p90": round(pct(v, 90), digits),
        "p99": round(pct(v, 99), digits),
        "max": round(v[-1], digits),
        "mean": round(sum(v) / len(v), digits),
    }


def cdf_points(values: Iterable[float], points: int = 200) -> list[list[float]]:
    """A downsampled CDF, ``[[value, fraction], ...]``, small enough to keep in the JSON."""
    v = sorted(values)
    if not v:
        return []
    n = len(v)
    idx = sorted({min(n - 1, round(i * (n - 1) / (points - 1))) for i in range(points)})
    return [[round(v[i], 4), round((i + 1) / n, 5)] for i in idx]


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return round(a / b, digits)


# ---------------------------------------------------------------------------------------------
# the wire, as the kernel counts it


_SS_FIELD = re.compile(r"\b(bytes_sent|bytes_received|data_segs_out|segs_out):(\d+)")


def tcp_counters(ports: Iterable[int]) -> dict[str, int]:
    """Sum of TCP counters over every established 127.0.0.1 socket with an end on ``ports``.

    ``bytes_sent`` summed over both ends of every connection is every payload byte put on
    the wire (websocket framing included, TCP/IP headers not); ``data_segs_out`` the data
    segments. Read with ``ss -tin`` (Linux), so both systems are counted the same way.
    Connections closed before the call are not seen: call it while they are open.
    """
    ports = sorted(set(ports))
    out = {"bytes_sent": 0, "data_segs_out": 0, "sockets": 0}
    if not ports or shutil.which("ss") is None:
        return out
    # ss filters take a bounded expression; chunk the port list.
    for i in range(0, len(ports), 40):
        chunk = ports[i : i + 40]
        expr = " or ".join(f"sport = :{p} or dport = :{p}" for p in chunk)
        res = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( {expr} )"],
            capture_output=True,
            text=True,
            check=False,
        )
        seen = set()
        lines = res.stdout.splitlines()
        for j in range(0, len(lines) - 1, 2):
            head, info = lines[j], lines[j + 1]
            if head in seen:
                continue
            seen.add(head)
            fields = dict((k, int(v)) for k, v in _SS_FIELD.findall(info))
            out["bytes_sent"] += fields.get("bytes_sent", 0)
            out["data_segs_out"] += fields.get("data_segs_out", 0)
            out["sockets"] += 1
    return out


def counter_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if k != "sockets"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    import socket

    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def dir_bytes(path: Path) -> dict[str, int]:
    """Apparent size and allocated bytes of every file under ``path``."""
    size = blocks = 0
    for p in Path(path).rglob("*"):
        if p.is_file():
            st = p.stat()
            size += st.st_size
            blocks += st.st_blocks * 512
    return {"apparent_bytes": size, "allocated_bytes": blocks}


# ---------------------------------------------------------------------------------------------
# child processes speaking JSON lines


def _python_for(name: str) -> str:
    """The interpreter of the child ``name``: ``sys.executable``, or ``CRDTSYNC_BENCH_ALSO_PYTHON``
    for the children whose name ends with one of the comma-separated
    ``CRDTSYNC_BENCH_ALSO_MATCH`` (e.g. ``/a1,/a3,/a5,/a7``: every second crdtsync receiver of
    fanout.py). Another tree's venv there is an A/B of two trees inside one run: both halves
    take the same updates under the same load at the same moment, and each process's CPU is
    reported on its own (``cpu_ms_per_update_by_process``; issue 17/18, benchmarks/history/fanout-receive.md,
    h-recv6). ``CRDTSYNC_BENCH_PYTHON``: the interpreter of the other children (default
    ``sys.executable``), so that both halves can be started the same way (a wrapper script
    each: how a child is started moved its CPU by ~4 % in an A/A, h-recv6). Unset: every
    child runs this interpreter, as before."""
    other = os.environ.get("CRDTSYNC_BENCH_ALSO_PYTHON")
    match = [m for m in os.environ.get("CRDTSYNC_BENCH_ALSO_MATCH", "").split(",") if m]
    if other and any(name.endswith(m) for m in match):
        return other
    return os.environ.get("CRDTSYNC_BENCH_PYTHON") or sys.executable


class Child:
    """A benchmark child process (``benchmarks/nodes.py ROLE ...`` or another ``program``): commands go to its stdin
    as JSON lines, events come back on its stdout as JSON lines, stderr is kept for errors."""

    def __init__(
        self,
        role: str,
        args: Sequence[str],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
        program: Sequence[str] | None = None,
    ) -> None:
        self.name = name or role
        # ``program``: another command than ``python benchmarks/nodes.py`` (benchmarks/groups.py,
        # a Node hub) that speaks the same JSON lines.
        cmd = [*(program or [_python_for(self.name), str(NODES)]), role, *args]
        # Profiling on demand: CRDTSYNC_BENCH_PYSPY=DIR runs the children whose name contains
        # one of the comma-separated CRDTSYNC_BENCH_PYSPY_MATCH (default: all) under
        # `py-spy record --gil` (raw, 500 Hz: samples holding the GIL, i.e. Python CPU), one
        # file per child.
        spy_dir = os.environ.get("CRDTSYNC_BENCH_PYSPY")
        spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        match = os.environ.get("CRDTSYNC_BENCH_PYSPY_MATCH", "").split(",")
        if spy_dir and spy and any(m in self.name for m in match):
            Path(spy_dir).mkdir(parents=True, exist_ok=True)
            out = Path(spy_dir) / (self.name.replace("/", "-") + ".txt")
            cmd = [spy, "record", "--gil", "-r", "500", "-f", "raw", "-o", str(out), "--", *cmd]
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self._backlog: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.events.put(json.loads(raw))
            except ValueError:
                self.log.append(raw.decode(errors="replace").rstrip())
        self.events.put({"event": "_eof"})

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.log.append(raw.decode(errors="replace").rstrip())
            del self.log[:-200]

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise RuntimeError(f"{self.name} is gone: {self.tail()}") from exc

    def wait(self, event: str, timeout: float = 60.0, **match: Any) -> dict[str, Any]:
        """The next event named ``event`` (with these field values); earlier others are kept."""
        for i, ev in enumerate(self._backlog):
            if ev.get("event") == event and all(ev.get(k) == v for k, v in match.items()):
                return self._backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.name}: no {event!r} within {timeout}s; stderr: {self.tail()}"
                )
            try:
                ev = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if ev.get("event") == "_eof":
                self.events.put(ev)
                time.sleep(0.2)  # let stderr drain
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.poll()}) waiting for {event!r}: {self.tail()}"
                )
            if ev.get("event") == "error":
                raise RuntimeError(f"{self.name}: {ev.get('message')}")
            if ev.get("event") == event and all(ev.get(k) == v for k, v in match.items()):
                return ev
            self._backlog.append(ev)

    def poll(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """The next event (backlog first), or None if none comes within ``timeout``."""
        if self._backlog:
            return self._backlog.pop(0)
        try:
            ev = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return None
        if ev.get("event") == "_eof":
            self.events.put(ev)
            time.sleep(0.2)
            raise RuntimeError(f"{self.name} exited ({self.proc.poll()}): {self.tail()}")
        if ev.get("event") == "error":
            raise RuntimeError(f"{self.name}: {ev.get('message')}")
        return ev

    def request(self, cmd: str, reply: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        self.send(cmd=cmd, **fields)
        return self.wait(reply, timeout)

    def tail(self, n: int = 15) -> str:
        return " | ".join(self.log[-n:])

    def stop(self, timeout: float = 20.0) -> int | None:
        """Ask it to quit (clean close), then SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.send(cmd="quit")
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    return self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    return self.proc.wait()
        return self.proc.returncode


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """A list to put children in; every one still running is stopped on the way out."""
    kids: list[Child] = []
    try:
        yield kids
    finally:
        for k in kids:
            if k.proc.poll() is None:
                with contextlib.suppress(Exception):
                    k.send(cmd="quit")
        deadline = time.monotonic() + 20
        for k in kids:
            try:
                k.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                k.proc.kill()
                k.proc.wait()


# ---------------------------------------------------------------------------------------------
# progress


class Progress:
    """Progress of one scenario: JSON events for ``crdtsync bench``, rich bars by hand."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self._events = os.environ.get("CRDTSYNC_BENCH_EVENTS") == "1"
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}
        if not self._events and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._rich.start()

    def task(self, label: str, total: float) -> str:
        if self._rich is not None:
            self._tasks[label] = self._rich.add_task(f"{self.scenario}: {label}", total=total)
        self._emit(label, 0, total)
        return label

    def update(self, label: str, completed: float, total: float | None = None) -> None:
        if self._rich is not None and label in self._tasks:
            self._rich.update(
                self._tasks[label],
                completed=completed,
                **({"total": total} if total is not None else {}),
            )
        self._emit(label, completed, total)

    def note(self, text: str) -> None:
        if self._events:
            sys.stderr.write(
                json.dumps({"bench-note": {"scenario": self.scenario, "text": text}}) + "\n"
            )
            sys.stderr.flush()
        elif self._rich is not None:
            self._rich.console.print(f"[dim]{self.scenario}: {text}")
        else:
            sys.stderr.write(f"{self.scenario}: {text}\n")

    def _emit(self, label: str, completed: float, total: float | None) -> None:
        if self._events:
            ev = {"scenario": self.scenario, "task": label, "completed": completed}
            if total is not None:
                ev["total"] = total
            sys.stderr.write(json.dumps({"bench-progress": ev}) + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


def wait_mesh(kids: list[Child], want: int, timeout: float = 60) -> None:
    """Wait until every child agent reports at least ``want`` connected peers."""
    deadline = time.monotonic() + timeout
    while True:
        for k in kids:
            k.send(cmd="status")
        counts = [len(k.wait("status", 30)["connected"]) for k in kids]
        if all(c >= want for c in counts):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"mesh not formed: connected counts {counts}")
        time.sleep(0.2)


def wait_with_progress(prog: Progress, label: str, seconds: float) -> None:
    """Sleep ``seconds`` while a bar fills (for fixed measurement windows)."""
    prog.task(label, seconds)
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        prog.update(label, elapsed)
        time.sleep(min(0.5, seconds - elapsed))
    prog.update(label, seconds)


# ---------------------------------------------------------------------------------------------
# output


def pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` (making its folder) and close it; ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def finish(
    result: dict[str, Any],
    out: str | None,
    *,
    plot_dir: str | None = None,
    plots: dict[str, Callable[[], Any]] | None = None,
) -> None:
    """The tail of every scenario script: with ``plot_dir`` (``--plot-dir``), draw ``plots``
    (file name -> a function returning a matplotlib figure) into it and list them in
    ``result["plots"]``; then print the result as one JSON object on stdout (and write it to
    ``out`` if given)."""
    if plot_dir and plots:
        folder = Path(plot_dir)
        result["plots"] = [str(save_figure(draw(), folder / name)) for name, draw in plots.items()]
    text = json.dumps(result, indent=2, default=_json_default)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def common_args(parser: Any) -> None:
    """--quick / --tiny / --out / --plot-dir, shared by every scenario script."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="smaller sizes: a few minutes for all scenarios"
    )
    size.add_argument(
        "--tiny", action="store_true", help="smallest sizes: proves the scenario works (tests)"
    )
    parser.add_argument("--out", default=None, help="also write the JSON result to this file")
    parser.add_argument("--plot-dir", default=None, help="draw PNG plots into this directory")


def size_of(args: Any) -> str:
    return "tiny" if args.tiny else "quick" if args.quick else "full"
