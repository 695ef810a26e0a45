"""Every example in examples/ runs and does what its README says (offline, on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph.store.base")
pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters, stdio_client

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.timeout(90)


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )


def test_langgraph_graphs_in_two_processes_share_memory(tmp_path: Path) -> None:
    out = _run("langgraph_shared_memory.py", "--data", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "alice stored: ['alice likes green tea', 'the deploy window is friday']" in out.stdout
    assert "bob answered: From what I remember: alice likes green tea." in out.stdout


def test_planner_and_workers_share_a_task_board_through_mcp(tmp_path: Path) -> None:
    out = _run("mcp_task_board.py", "--workers", "2", "--data", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    tasks = result["board"]["tasks"]
    assert len(tasks) == 5 and all(t["status"] == "done" for t in tasks.values())
    assert sorted(result["board"]["log"]) == sorted(f"{t['by']} did {k}" for k, t in tasks.items())
    assert result["done_per_worker"] == {"worker-1": 3, "worker-2": 2}


async def test_desktop_client_config_starts_a_working_server(tmp_path: Path) -> None:
    config = json.loads((EXAMPLES / "mcp_desktop_config.json").read_text())["mcpServers"][
        "crdtsync"
    ]
    command = (
        shutil.which(config["command"], path=str(Path(sys.executable).parent)) or config["command"]
    )
    env = {**os.environ, "CRDTSYNC_HOME": str(tmp_path)}  # the default data dir, kept in tmp
    params = StdioServerParameters(command=command, args=config["args"], env=env)
    with open(tmp_path / "stderr.log", "w") as log:  # noqa: ASYNC230 (the server's stderr)
        async with Client(stdio_client(params, errlog=log)) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"list_shards", "read", "write", "append", "insert_text"} <= tools
            shards = (await client.call_tool("list_shards", {})).structured_content
            assert shards["agent"] == "desktop"  # type: ignore[index]
            assert [s["name"] for s in shards["shards"]] == ["notes"]  # type: ignore[index]
            await client.call_tool(
                "insert_text", {"shard": "notes", "path": "/today", "text": "hi"}
            )
            read = await client.call_tool("read", {"shard": "notes"})
            assert read.structured_content["value"] == {"today": {"$text": "hi"}}  # type: ignore[index]
    assert (tmp_path / "desktop").is_dir()  # the store landed where the README says
