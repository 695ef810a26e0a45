"""Sharp edges a new user hit (issue 16), one test each: port in use, addresses, unreachable
seeds, read_many completeness, inspecting a live store, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from crdtsync import Agent, GossipConfig, run_until_signal
from crdtsync.errors import (
    CrdtSyncError,
    InvalidAddress,
    ListenFailed,
    ReplicationTimeout,
)
from crdtsync.testing import LocalHub

CLI = [sys.executable, "-m", "crdtsync.cli"]


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_port_in_use_is_a_crdtsync_error_and_releases_the_lock(tmp_path: Path) -> None:
    with _busy_port() as sock:
        port = sock.getsockname()[1]
        agent = Agent("a", tmp_path / "a", listen=f"ws://127.0.0.1:{port}")
        with pytest.raises(ListenFailed, match=f"cannot listen on ws://127.0.0.1:{port}") as info:
            await agent.start()
        assert isinstance(info.value, CrdtSyncError) and isinstance(info.value.__cause__, OSError)
        # the data directory is free again: the same Agent (or a new one) can start
        async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0") as again:
            (await again.shard("s"))["ok"] = True
        await agent.close()  # harmless on a failed start


def test_cli_port_in_use_prints_one_line(tmp_path: Path) -> None:
    with _busy_port() as sock:
        port = sock.getsockname()[1]
        out = subprocess.run(
            [
                *CLI,
                "agent",
                "--name",
                "a",
                "--data",
                str(tmp_path / "a"),
                "--listen",
                f"ws://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: agent 'a' cannot listen on"), out.stderr


@pytest.mark.parametrize(
    "kwargs",
    [
        {"peers": ["localhost:1"]},
        {"peers": "ws://127.0.0.1:1"},
        {"peers": ["http://127.0.0.1:1"]},
        {"peers": ["ws://127.0.0.1"]},
        {"peers": ["ws://127.0.0.1:0"]},
        {"listen": "127.0.0.1:8000"},
        {"listen": "ws://127.0.0.1:99999"},
    ],
)
def test_addresses_are_validated(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidAddress, match="ws://127.0.0.1:8765|scheme|port|Port|a list"):
        Agent("a", tmp_path / "a", **kwargs)  # type: ignore[arg-type]


async def test_unreachable_seed_warns_once_and_shows_in_seeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        cfg = GossipConfig.lan(backoff_max=0.1)
        caplog.set_level(logging.INFO, logger="crdtsync")
        async with Agent("a", tmp_path / "a", peers=[dead], gossip=cfg) as agent:
            for _ in range(100):
                failures = [r for r in caplog.records if dead in r.getMessage()]
                if len(failures) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert agent.seeds[dead].startswith("unreachable: ")
    warnings = [r for r in failures if r.levelno == logging.WARNING]
    assert len(failures) >= 3 and len(warnings) == 1, [r.getMessage() for r in failures]
    assert "seed peer" in warnings[0].getMessage()


async def test_read_many_says_what_is_unreachable(tmp_path: Path) -> None:
    hub = LocalHub()
    cfg = GossipConfig.lan(anti_entropy_interval=0.2, backoff_max=0.2)
    a = Agent("a", tmp_path / "a", listen="hub://a", transport=hub.transport, gossip=cfg)
    b = Agent(
        "b",
        tmp_path / "b",
        listen="hub://b",
        peers=["hub://a"],
        transport=hub.transport,
        gossip=cfg,
    )
    await a.start()
    await b.start()
    try:
        (await a.shard("t/a"))["x"] = 1
        for _ in range(200):
            if any(p.state == "connected" for p in a.peers):
                break
            await asyncio.sleep(0.02)
        full = await a.read_many(prefix="t/", complete=True)
        assert full.complete and full.unreachable == ()
        await b.close()
        for _ in range(200):
            if any(p.state in ("suspect", "dead") for p in a.peers):
                break
            await asyncio.sleep(0.02)
        part = await a.read_many(prefix="t/")
        assert "t/a" in part and part.unreachable == ("b",) and not part.complete
        with pytest.raises(ReplicationTimeout, match="b cannot be reached") as info:
            await a.read_many(prefix="t/", complete=True)
        assert info.value.lagging == ("b",)
    finally:
        await a.close()
        await b.close()


async def test_inspect_reads_a_live_store(tmp_path: Path) -> None:
    long_name = "tasks/" + "a-long-shard-name-" * 4 + "end"  # 81 characters
    async with Agent("live", tmp_path / "live") as agent:
        shard = await agent.shard(long_name)
        shard["task"] = {"title": "docs", "n": 3}
        shard.counter("hits").increment(2)
        await shard.flush()

        async def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [*CLI, "inspect", str(tmp_path / "live"), *args],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**os.environ, "COLUMNS": "100"},
            )

        listing = await cli()
        assert listing.returncode == 0, listing.stderr
        assert long_name in listing.stdout, listing.stdout  # whole, on one line
        rows = json.loads((await cli("--json")).stdout)
        assert [r["shard"] for r in rows] == [long_name]
        dump = await cli("--dump", long_name)
        assert dump.returncode == 0, dump.stderr
        assert json.loads(dump.stdout) == {"task": {"title": "docs", "n": 3}, "hits": 2}
        missing = await cli("--dump", "nope")
        assert missing.returncode == 1 and "Traceback" not in missing.stderr
        shard["after"] = True  # the agent still writes: inspect took no lock
        await shard.flush()


async def test_run_until_signal_flushes_and_closes(tmp_path: Path) -> None:
    agent = Agent("a", tmp_path / "a", durability_interval=60)
    await agent.start()
    (await agent.shard("s"))["k"] = "v"  # not flushed yet (interval 60 s)
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    assert await run_until_signal(agent) == signal.SIGTERM
    async with Agent("a", tmp_path / "a") as again:
        assert (await again.shard("s")).snapshot() == {"k": "v"}


def test_tune_for_serving_freezes_what_start_up_made() -> None:
    # In a child: gc.freeze() is process-wide.
    code = (
        "import gc\n"
        "from crdtsync import tune_for_serving\n"
        "junk = [[i] for i in range(1000)]\n"
        "assert gc.get_freeze_count() == 0\n"
        "tune_for_serving()\n"
        "print(gc.get_freeze_count() >= 1000)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["True"]


def test_help_shard_shows_the_api_not_the_internals() -> None:
    import pydoc

    from crdtsync import Shard

    text = pydoc.render_doc(Shard, renderer=pydoc.plaintext)
    for internal in (
        "apply_remote",
        "apply_remote_batch",
        "capture",
        "mark_durable",
        "mark_dirty",
        "durable_state",
    ):
        assert internal not in text
    for public in ("snapshot", "transaction", "flush", "replicated", "subscribe", "counter", "map"):
        assert f"{public}(" in text
    assert callable(Shard.apply_remote)  # still there for the agent and its registry
