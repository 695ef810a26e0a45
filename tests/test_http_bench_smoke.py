"""`crdtsync bench http --tiny` runs and reports PATCH requests/s and SSE p99 next to its baseline."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from crdtsync import bench


def test_http_bench_tiny(tmp_path: Path) -> None:
    out = tmp_path / "results"
    with open(tmp_path / "console.txt", "w") as log:
        results = bench.run(["http"], "tiny", out, Console(file=log, width=200))
    res = results["http"]
    assert "error" not in res, "\n".join(res.get("log_tail", []))
    assert res["http"]["patch_requests_per_s"] > 0 and res["in_process"]["writes_per_s"] > 0
    assert res["http"]["sse_latency_ms"]["n"] == res["sse_writes"]  # every write was delivered
    assert res["in_process"]["feed_latency_ms"]["n"] == res["sse_writes"]
    assert all(Path(p).stat().st_size > 5000 for p in res["plots"])
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert {r["figure"] for r in rows} == {
        "PATCH requests/s (4 clients)",
        "SSE delivery latency p99 ms",
    }
