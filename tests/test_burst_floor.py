"""``benchmarks/burst_floor.py`` (issue 18, h-n64c) runs and reports the floor it claims: a
bare pycrdt writer loop and receivers that hold every key, and the least CPU of a burst at each
agent count as the writer plus (N - 1) batched receivers. Shapes and arithmetic only: no
timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_burst_floor_reports_writer_receivers_and_the_sum() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "burst_floor.py"),
            "--updates",
            "60",
            "--batches",
            "3",
            "--rounds",
            "1",
            "--agents",
            "4,8",
            "--peer-ups",
            "100,50",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    writer = float(
        re.search(r"writer loop, 60 sets: ([\d.]+) ms CPU \(best [\d.]+\)", out).group(1)
    )
    batched = re.search(r"batched \((\d+) applies\): ([\d.]+) ms CPU", out)
    assert batched is not None and batched.group(1) == "3"
    assert "one by one (60 applies)" in out
    for agents, target in ((4, 1000 * 60 / 500), (8, 1000 * 60 / 250)):
        m = re.search(
            rf"{agents} agents: least CPU ([\d.]+) ms .*best rounds: [\d.]+, [\d.]+\); .* allows ([\d.]+) ms",
            out,
        )
        assert m is not None
        assert abs(float(m.group(1)) - (writer + (agents - 1) * float(batched.group(2)))) < 0.2
        assert abs(float(m.group(2)) - target) < 0.1
