"""A planner and workers share a task board through crdtsync's MCP tools.

    python examples/mcp_task_board.py [--workers 3] [--data DIR]

Every participant is an LLM-style agent that only talks MCP: each has its own ``crdtsync mcp``
server (its own crdtsync agent and disk), and the servers form a mesh over websockets on
127.0.0.1. The planner's (stub) LLM splits a goal into tasks and writes them to the ``board``
shard with the ``write`` tool (a merge patch); each worker reads the board through its *own*
server, does the tasks assigned to it, marks them done with ``write`` and records what it did
with ``append`` (concurrent appends all survive). The planner follows the board through the
``crdtsync://shard/board`` resource subscription and stops when every task is done.

Prints the final board as JSON; exits 0 when every task was done exactly by its assignee.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import Client

SHARD = "board"
URI = f"crdtsync://shard/{SHARD}"


def plan(goal: str, workers: list[str]) -> dict[str, dict[str, Any]]:
    """The planner's stub LLM: one task per comma-separated step, assigned round robin."""
    steps = [s.strip() for s in goal.split(",") if s.strip()]
    return {
        f"t{n}": {"title": step, "assignee": workers[n % len(workers)], "status": "todo"}
        for n, step in enumerate(steps)
    }


def work(title: str) -> str:
    """A worker's stub LLM: 'do' the task."""
    return f"{title}: done ({len(title.split())} words of work)"


async def tool(client: Client, name: str, **args: Any) -> Any:
    result = await client.call_tool(name, args)
    if result.is_error:
        raise RuntimeError(f"{name} failed: {result.content[0].text}")  # type: ignore[union-attr]
    return result.structured_content


def start_server(name: str, data: Path, peer: str | None) -> subprocess.Popen[bytes]:
    """Start ``crdtsync mcp --transport http`` (its stderr goes to DATA/NAME.log)."""
    args = [
        sys.executable,
        "-m",
        "crdtsync.cli",
        "mcp",
        "--name",
        name,
        "--data",
        str(data / name),
        "--transport",
        "http",
    ]
    args += ["--peer", peer] if peer else ["--listen", "ws://127.0.0.1:0"]
    with open(data / f"{name}.log", "wb") as err:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)


def wait_ready(name: str, data: Path, child: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The server's JSON ready line: its agent's address and its MCP URL."""
    log = data / f"{name}.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and '"ready"' in line:
                return json.loads(line)  # type: ignore[no-any-return]
        if child.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()}")
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start")


async def planner(url: str, workers: list[str], goal: str) -> dict[str, Any]:
    async with Client(url) as client:
        tasks = plan(goal, workers)
        async with client.listen(resource_subscriptions=[URI]) as updates:
            # The planner creates the shared containers once ("log" too): two agents that both
            # create the same missing list or map at once each make their own, and one wins.
            await tool(
                client, "write", shard=SHARD, patch={"goal": goal, "tasks": tasks, "log": []}
            )
            await tool(client, "wait_until_replicated", shard=SHARD, peers=len(workers), timeout=20)
            async for _event in updates:  # each change to the board, from any agent
                board = (await tool(client, "read", shard=SHARD))["value"]
                if all(t["status"] == "done" for t in board["tasks"].values()):
                    return board  # type: ignore[no-any-return]
    raise RuntimeError("the subscription ended before the board was done")


async def worker(name: str, url: str) -> int:
    done = 0
    async with Client(url) as client:
        while True:
            board = (
                (await tool(client, "read", shard=SHARD))["value"]
                if await _has_board(client)
                else {}
            )
            mine = {k: t for k, t in board.get("tasks", {}).items() if t["assignee"] == name}
            if mine and all(t["status"] == "done" for t in mine.values()):
                return done
            for task_id, task in sorted(mine.items()):
                if task["status"] != "done":
                    # Log first, then mark done: whoever sees the task done sees the log line
                    # too (one agent's changes arrive in the order it made them).
                    await tool(
                        client, "append", shard=SHARD, path="/log", value=f"{name} did {task_id}"
                    )
                    await tool(
                        client,
                        "write",
                        shard=SHARD,
                        path=f"/tasks/{task_id}",
                        patch={"status": "done", "by": name, "result": work(task["title"])},
                    )
                    done += 1
            await asyncio.sleep(0.1)


async def _has_board(client: Client) -> bool:
    shards = (await tool(client, "list_shards"))["shards"]
    return any(s["name"] == SHARD for s in shards)


async def run(data: Path, n_workers: int) -> dict[str, Any]:
    goal = "collect the logs, find the slow query, write the fix, add a test, update the docs"
    names = [f"worker-{i}" for i in range(1, n_workers + 1)]
    children = []
    try:
        children.append(start_server("planner", data, None))
        ready = wait_ready("planner", data, children[0])
        children += [start_server(name, data, ready["address"]) for name in names]
        urls = {
            name: wait_ready(name, data, child)["mcp"]
            for name, child in zip(names, children[1:], strict=True)
        }
        board, *counts = await asyncio.wait_for(
            asyncio.gather(
                planner(ready["mcp"], names, goal), *(worker(n, urls[n]) for n in names)
            ),
            60,
        )
        return {"board": board, "done_per_worker": dict(zip(names, counts, strict=True))}
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--data", default=None, help="where the agents keep their stores")
    args = parser.parse_args()
    data = Path(args.data or tempfile.mkdtemp(prefix="crdtsync-taskboard-"))
    data.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(data, args.workers))
    print(json.dumps(result, indent=2))
    tasks = result["board"]["tasks"].values()
    ok = all(t["status"] == "done" and t["by"] == t["assignee"] for t in tasks)
    ok = ok and len(result["board"].get("log", [])) == len(tasks)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
