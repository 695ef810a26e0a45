"""The receive path's diagnostic benchmarks run and report what they claim (issue 17/18,
h-recv5): ``benchmarks/receive_floor.py`` (every variant, one receiver, a few updates) and
``benchmarks/ws_receive_cost.py --handoffs`` (its counts per update). Counts and shapes
only: no timing is asserted."""

from __future__ import annotations

import json
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
