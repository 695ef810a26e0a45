"""The benchmarks' peers (benchmarks/peers.py) run for real at the smallest size: the Node hubs
``@y/websocket-server`` and Hocuspocus (each a real ``node`` process, installed by ``npm ci``
from the committed lockfile in ``benchmarks/peers``), pycrdt-websocket with non-echoing clients,
clients as tasks in a few processes, and the strongest-peer column of the summary.

Nothing here asserts speed: every update must reach every receiver, every joiner must get the
whole state, and each Node hub must report the Node version it ran on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("pycrdt.websocket")

from rich.console import Console  # noqa: E402

from crdtsync.cli import bench  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PEERS_DIR = REPO / "benchmarks" / "peers"
JS = REPO / "tests" / "js"
NODE_HUBS = ("y-websocket-server", "hocuspocus")


@pytest.fixture(scope="module")
def node_peers() -> Path:
    """``benchmarks/peers/node_modules`` (and ``tests/js``'s), installed by ``npm ci`` if missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: the Node hubs need Node >= 18 and npm")
    for d, probe in ((PEERS_DIR, "@hocuspocus/provider"), (JS, "y-websocket")):
        if not (d / "node_modules" / probe).is_dir():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=d, check=True, timeout=300)
    return PEERS_DIR


def _run(name: str, extra: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("CRDTSYNC_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CRDTSYNC_TRACES", raising=False)  # the copies shipped in benchmarks/data
    out = tmp_path / "results"
    with open(tmp_path / "console.txt", "w") as log:
        results = bench.run([name], "tiny", out, Console(file=log, width=200), extra={name: extra})
    res = results[name]
    assert "error" not in res, "\n".join(res.get("log_tail", []))
    summary = (out / "summary.md").read_text()
    assert "| strongest peer (ratio) |" in summary.splitlines()[0]
    return res


def test_fanout_against_every_peer(
    node_peers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peers = "pycrdt-websocket-noecho,y-websocket-server,hocuspocus"
    res = _run(
        "fanout",
        [
            *("--agents", "3", "--updates", "60", "--low-updates", "40"),
            *("--systems", f"crdtsync,{peers}"),
            *("--scale", "5", "--scale-systems", f"crdtsync,{peers}", "--procs", "2"),
        ],
        tmp_path,
        monkeypatch,
    )
    for system, figures in res["systems"].items():
        for phase in ("burst", "paced", "paced_low"):
            fig = figures[phase]
            assert fig["latency_ms"]["n"] == 2 * fig["updates"], (system, phase)
            assert fig["msgs_per_update"] > 0, (system, phase)
    for kind in NODE_HUBS:
        hub = res["systems"][kind]["hub_process"]
        assert hub["kind"] == kind and hub["node"].startswith("v"), hub
    # The non-echoing clients send each update once: no message comes back per receiver.
    noecho = res["systems"]["pycrdt-websocket-noecho"]["burst"]["msgs_per_update"]
    assert noecho < 2 + 3  # 1 in, <= 3 out (with pings and the sync), never 2 x 3
    strong = res["vs_strongest"]
    assert set(strong) == {
        "burst_updates_per_s_ratio",
        "burst_p99_ratio",
        "paced_p99_ratio",
        "paced_low_p99_ratio",
    }
    assert all(v["peer"] in peers.split(",") for v in strong.values())
    scale = res["scale"]["5"]
    assert scale["agents"] == 5
    for system, figures in scale["systems"].items():
        assert figures["client_processes"] == 3, system  # the writer + 2 processes of 2
        for phase in ("burst", "paced_low"):
            fig = figures[phase]
            assert fig["latency_ms"]["n"] == 4 * fig["updates"], (system, phase)
    assert set(scale["vs_strongest"]) == {
        "burst_updates_per_s_ratio",
        "burst_p99_ratio",
        "paced_low_p99_ratio",
    }


def test_catchup_against_every_peer(
    node_peers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = _run(
        "catchup",
        ["--peers", "pycrdt-websocket,pycrdt-websocket-noecho,y-websocket-server,hocuspocus"],
        tmp_path,
        monkeypatch,
    )
    for state in res["states"].values():
        for kind in ("pycrdt-websocket-noecho", *NODE_HUBS):
            got = state[kind]
            assert got["visible_s"] > 0
            assert got["wire_bytes"] >= 0.9 * state["state_bytes"], kind
        for kind in NODE_HUBS:
            assert state[kind]["hub_process"]["node"].startswith("v")
        assert state["vs_strongest"]["peer"] in state


def test_yjs_door_against_node_hubs(
    node_peers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = _run("yjs", ["--peers", "y-websocket-server,hocuspocus"], tmp_path, monkeypatch)
    for kind in NODE_HUBS:
        got = res["peers"][kind]
        assert got["hub_process"]["kind"] == kind and got["hub_process"]["node"].startswith("v")
        assert got["fanout"]["ok"] and got["sync"]["ok"], got
        assert got["sync"]["size"] == res["map_entries"]
    assert {"updates_per_s", "p99_ms", "sync_seconds"} == set(res["vs_strongest"])
    assert json.dumps(res["vs_strongest"])  # plain JSON
