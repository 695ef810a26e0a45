"""The receive path's diagnostic benchmarks run and report what they claim (issue 17/18,
h-recv5): ``benchmarks/receive_floor.py`` (every variant, one receiver, a few updates) and
``benchmarks/ws_receive_cost.py --handoffs`` (its counts per update). Counts and shapes
only: no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(*args: str, timeout: float = 120) -> dict:
    out = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", ["null", "apply", "validate", "store", "quotas", "wire"])
def test_receive_floor_variant(variant: str) -> None:
    report = _run(
        str(BENCH / "receive_floor.py"), variant, "--receivers", "2", "--n", "40", "--rate", "400"
    )
    assert report["variant"] == variant
    assert len(report["us_per_update"]) == 2
    assert all(cpu > 0 for cpu in report["us_per_update"])
    # every measured update reached each receiver (a read holds one update or more)
    assert all(0 < reads <= 1.0 for reads in report["reads_per_update"])


def test_ws_receive_cost_counts_handoffs() -> None:
    report = _run(
        str(BENCH / "ws_receive_cost.py"),
        "--writes",
        "200",
        "--warmup",
        "20",
        "--settle",
        "0.5",
        "--tail",
        "0.5",
        "--handoffs",
        timeout=180,
    )
    med = report["median"]
    for key in (
        "n_timer_handles_per_update",
        "n_timer_cancels_per_update",
        "n_executor_handoffs_per_update",
        "n_self_pipe_wakeups_per_update",
        "n_futures_per_update",
    ):
        assert key in med, key
    # the group commit's worker gets one hand-off per commit, and a commit ran (the tail
    # outlasts the received-update bound)
    assert med["commits_per_update"] > 0
    assert med["n_executor_handoffs_per_update"] >= med["commits_per_update"]
    assert med["n_self_pipe_wakeups_per_update"] > 0  # the worker woke the loop
    ticks = sum(v for k, v in med.items() if k.startswith("n_ticks_due_"))
    assert ticks == pytest.approx(med["ticks_per_update"], abs=0.011)


def test_receive_floor_reports_each_half_of_an_ab_run() -> None:
    report = _run(
        str(BENCH / "receive_floor.py"),
        "store",
        "--receivers",
        "2",
        "--n",
        "40",
        "--rate",
        "400",
        "--also",
        sys.executable,
    )
    assert len(report["a_us_per_update"]) == len(report["b_us_per_update"]) == 1
    assert report["b_python"] == sys.executable


def test_also_python_picks_the_matching_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CRDTSYNC_BENCH_ALSO_PYTHON`` / ``_MATCH`` / ``CRDTSYNC_BENCH_PYTHON`` (benchlib, h-recv6):
    the children whose name ends with a listed suffix get the other interpreter, the rest
    ``CRDTSYNC_BENCH_PYTHON`` or this one; nothing set: this one for all."""
    sys.path.insert(0, str(BENCH))
    try:
        import benchlib
    finally:
        sys.path.remove(str(BENCH))
    for var in ("CRDTSYNC_BENCH_ALSO_PYTHON", "CRDTSYNC_BENCH_ALSO_MATCH", "CRDTSYNC_BENCH_PYTHON"):
        monkeypatch.delenv(var, raising=False)
    assert benchlib._python_for("crdtsync/a1") == sys.executable
    monkeypatch.setenv("CRDTSYNC_BENCH_ALSO_PYTHON", "/other/python")
    assert benchlib._python_for("crdtsync/a1") == sys.executable  # (no match list: nobody)
    monkeypatch.setenv("CRDTSYNC_BENCH_ALSO_MATCH", "/a1,/a3")
    assert benchlib._python_for("crdtsync/a1") == "/other/python"
    assert benchlib._python_for("crdtsync/a3") == "/other/python"
    assert benchlib._python_for("crdtsync/a13") == sys.executable  # (a suffix, not a prefix)
    assert benchlib._python_for("crdtsync/a2") == sys.executable
    monkeypatch.setenv("CRDTSYNC_BENCH_PYTHON", "/main/python")
    assert benchlib._python_for("crdtsync/a2") == "/main/python"
    assert benchlib._python_for("crdtsync/a1") == "/other/python"


def test_fanout_runs_every_second_receiver_with_also_python(tmp_path: Path) -> None:
    """End to end: fanout.py's matching crdtsync children really start through the other
    interpreter (here a wrapper that leaves a mark, then runs this Python), the others not."""
    marks = tmp_path / "marks"
    marks.mkdir()
    wrapper = tmp_path / "also-python"
    wrapper.write_text(
        f'#!/bin/sh\nmktemp "{marks}/run.XXXXXX" > /dev/null\nexec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "CRDTSYNC_BENCH_ALSO_PYTHON": str(wrapper),
        "CRDTSYNC_BENCH_ALSO_MATCH": "/a1",
    }
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "fanout.py"),
            "--tiny",
            "--scale",
            "",
            "--systems",
            "crdtsync",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    )
    res = json.loads(out.stdout[out.stdout.index("{") :])
    assert res["systems"]["crdtsync"]["paced_low"]["latency_ms"]["n"] > 0
    assert len(list(marks.iterdir())) == 1  # a1 only (one run of one system)
