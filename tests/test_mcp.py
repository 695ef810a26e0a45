"""``crdtsync mcp`` driven by the official MCP SDK's own client.

In process (fast): every tool, the JSON form of values, and that bad input is a readable tool
error with nothing written; two agents in one process, each with its own MCP server: counter
increments through both converge to the sum, and concurrent claims of a task end with exactly
one winner. Over real transports: two ``crdtsync mcp`` processes on two agents of a mesh, a
write through one is readable through the other and triggers the resource-updated notification
there, over stdio and over streamable HTTP (2026-07-28 ``subscriptions/listen``,
and 2025-era ``resources/subscribe`` for older clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from crdtsync import Agent
from crdtsync.mcp import CrdtMcp, serve

pytestmark = pytest.mark.timeout(60)


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if getattr(c, "text", None))


@contextlib.asynccontextmanager
async def solo(tmp_path: Path) -> AsyncIterator[Client]:
    """One agent with its MCP server and an in-process SDK client (entered in the test's own
    task: anyio cancel scopes must exit where they were entered, which fixtures do not do)."""
    async with Agent("solo", data_dir=tmp_path / "solo") as agent:
        server = CrdtMcp(agent)
        async with server.watching(), Client(server.server) as c:
            yield c


async def call(client: Client, tool: str, **args: Any) -> Any:
    result = await client.call_tool(tool, args)
    assert not result.is_error, _text(result)
    return result.structured_content


async def error(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result
    text = _text(result)
    assert "Traceback" not in text
    return text


# -- tools in process --------------------------------------------------------------------------


async def test_tools_write_read_append_text_and_json_form(tmp_path: Path) -> None:
    async with solo(tmp_path) as client:
        await _tools_round_trip(client)


async def _tools_round_trip(client: Client) -> None:
    names = {t.name for t in (await client.list_tools()).tools}
    assert names == {
        "list_shards",
        "read",
        "write",
        "append",
        "insert_text",
        "wait_until_replicated",
        "increment_counter",
        "claim_task",
        "complete_task",
        "release_task",
    }
    await call(
        client,
        "write",
        shard="board",
        patch={"tasks": {"t1": {"n": 3, "f": 3.0, "big": {"$int": str(2**60)}}}},
    )
    await call(client, "write", shard="board", path="/tasks/t1", patch={"done": True, "n": None})
    await call(client, "append", shard="board", path="/log", value="started")
    await call(client, "append", shard="board", path="/log", value={"$bytes": "AAE="})
    await call(client, "insert_text", shard="board", path="/notes", text="hello")
    await call(client, "insert_text", shard="board", path="/notes", text=" world")
    await call(client, "insert_text", shard="board", path="/notes", text=">", index=0)
    value = (await call(client, "read", shard="board"))["value"]
    assert value == {
        "tasks": {"t1": {"f": 3.0, "big": {"$int": str(2**60)}, "done": True}},
        "log": ["started", {"$bytes": "AAE="}],
        "notes": {"$text": ">hello world"},
    }
    assert (await call(client, "read", shard="board", path="/tasks/t1/f"))["value"] == 3.0
    assert (await call(client, "read", shard="board", path="/log/1"))["value"] == {"$bytes": "AAE="}
    assert (await call(client, "list_shards"))["shards"] == [
        {"name": "board", "uri": "crdtsync://shard/board"}
    ]
    contents = (await client.read_resource("crdtsync://shard/board")).contents[0]
    assert json.loads(contents.text)["tasks"]["t1"]["done"] is True  # type: ignore[union-attr]
    assert '"f":3.0' in contents.text  # type: ignore[union-attr]  # a float stays a float


async def test_bad_input_is_a_readable_error_and_writes_nothing(tmp_path: Path) -> None:
    async with solo(tmp_path) as client:
        await _bad_inputs(client)


async def _bad_inputs(client: Client) -> None:
    await call(client, "write", shard="board", patch={"tasks": {"t1": {"n": 1}}, "log": []})
    before = (await call(client, "read", shard="board"))["value"]
    cases = [
        ("read", {"shard": "board", "path": "/tasks/t9"}, "no key 't9'"),
        ("read", {"shard": "board", "path": "tasks"}, "JSON Pointer"),
        ("read", {"shard": "nope"}, "no shard named 'nope'"),
        ("write", {"shard": "bad name!", "patch": {"a": 1}}, "invalid shard name"),
        ("write", {"shard": "board", "patch": {"ok": 1, "x": {"$nope": 1}}}, "reserved for tags"),
        ("write", {"shard": "board", "patch": {"ok": 1, "x": {"$int": str(2**64)}}}, "64-bit"),
        ("write", {"shard": "board", "patch": [1, 2]}, "patch"),
        ("write", {"shard": "board", "path": "/log", "patch": {"a": 1}}, "maps only"),
        ("append", {"shard": "board", "path": "/tasks", "value": 1}, "append needs a list"),
        ("append", {"shard": "board", "path": "/log", "value": {"$float": "x"}}, "$float"),
        ("insert_text", {"shard": "board", "path": "/tasks", "text": "x"}, "not a Text"),
        ("wait_until_replicated", {"shard": "board", "timeout": 1000}, "timeout must be"),
        # refused calls on a shard that does not exist yet do not create it
        ("write", {"shard": "fresh", "patch": {"ok": 1, "x": {"$bytes": "!!"}}}, "base64"),
        ("append", {"shard": "fresh", "path": "/a/b", "value": 1}, "does not exist yet"),
        ("insert_text", {"shard": "fresh", "path": "/t", "text": "x", "index": 3}, "only index 0"),
    ]
    for tool, args, expected in cases:
        message = await error(client, tool, **args)
        assert expected in message, (tool, args, message)
    await call(client, "insert_text", shard="board", path="/notes", text="ab")
    assert "use 0..2" in await error(
        client, "insert_text", shard="board", path="/notes", text="x", index=9
    )
    after = (await call(client, "read", shard="board"))["value"]
    assert after == {**before, "notes": {"$text": "ab"}}  # none of the refused calls wrote anything
    assert (await call(client, "list_shards"))["shards"] == [
        {"name": "board", "uri": "crdtsync://shard/board"}
    ]
    with pytest.raises(MCPError, match="no shard named 'fresh'"):
        await client.read_resource("crdtsync://shard/fresh")


async def test_counter_and_claim_tools(tmp_path: Path) -> None:
    async with solo(tmp_path) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        by = tools["increment_counter"].input_schema["properties"]["by"]
        assert by["type"] == "integer" and by["default"] == 1
        assert tools["claim_task"].input_schema["required"] == ["shard", "task", "members"]
        for args, total in (({}, 1), ({"by": 5}, 6), ({"by": -2}, 4)):
            got = await call(client, "increment_counter", shard="board", key="done", **args)
            assert got["value"] == total and got["added"] == args.get("by", 1)
        assert (await call(client, "read", shard="board"))["value"] == {"done": 4}
        assert (await call(client, "read", shard="board", path="/done"))["value"] == 4
        won = await call(client, "claim_task", shard="work", task="t1", members=1)
        assert won["won"] is True and won["already_held"] is False
        assert won["quorum"] == 1 and "Do the task" in won["meaning"]
        again = await call(client, "claim_task", shard="work", task="t1", members=1, timeout=2)
        assert again["won"] is True and again["already_held"] is True  # this agent holds it


async def test_complete_and_release_a_claimed_task(tmp_path: Path) -> None:
    async with solo(tmp_path) as client:
        assert (await call(client, "claim_task", shard="work", task="t1", members=1))["won"]
        assert (await call(client, "claim_task", shard="work", task="t2", members=1))["won"]
        before = (await call(client, "read", shard="work"))["value"]
        refused = [
            ("complete_task", {"shard": "work", "task": "t9"}, "does not hold task 't9'"),
            ("release_task", {"shard": "work", "task": "t9"}, "nobody claims it"),
            ("complete_task", {"shard": "nope", "task": "t1"}, "no shard named 'nope'"),
            ("complete_task", {"shard": "work", "task": ""}, "non-empty"),
            ("complete_task", {"shard": "work", "task": "t1", "members": 0}, "members"),
            ("complete_task", {"shard": "work", "task": "t1", "members": 2}, "no peers"),
            ("complete_task", {"shard": "work", "task": "t1", "timeout": 999}, "timeout must be"),
            (
                "complete_task",
                {"shard": "work", "task": "t1", "result": {"x": {"$nope": 1}}},
                "nothing written",
            ),
        ]
        for tool, args, expected in refused:
            message = await error(client, tool, **args)
            assert expected in message, (tool, args, message)
        assert (await call(client, "read", shard="work"))["value"] == before  # nothing written

        done = await call(client, "complete_task", shard="work", task="t1", result={"n": 3})
        assert done["done"] is True and done["replicated"] is True
        state = (await call(client, "read", shard="work"))["value"]
        assert state["done"]["t1"]["result"] == {"n": 3}
        claims = state.get("claims", {})
        assert [k for k in claims if k.startswith("t1")] == []  # the claim is dropped
        again = await error(client, "complete_task", shard="work", task="t1")
        assert "already done" in again and "nothing written" in again
        assert (await call(client, "read", shard="work"))["value"] == state

        released = await call(client, "release_task", shard="work", task="t2")
        assert released["released"] is True
        state = (await call(client, "read", shard="work"))["value"]
        assert [
            k for k in state.get("claims", {}) if k.startswith("t2")
        ] == [] and "t2" not in state["done"]
        assert "nobody claims it" in await error(client, "release_task", shard="work", task="t2")
        # Released, the task can be claimed again.
        assert (await call(client, "claim_task", shard="work", task="t2", members=1))["won"]


async def test_counter_and_claim_bad_input_writes_nothing(tmp_path: Path) -> None:
    async with solo(tmp_path) as client:
        await call(client, "write", shard="board", patch={"n": 5, "log": [1]})
        await call(client, "increment_counter", shard="board", key="done", by=2)
        before = (await call(client, "read", shard="board"))["value"]
        cases = [
            ("increment_counter", {"shard": "bad name!", "key": "c"}, "invalid shard name"),
            ("increment_counter", {"shard": "board", "key": "done", "by": 1.5}, "by"),
            ("increment_counter", {"shard": "board", "key": "done", "by": "2"}, "by"),
            ("increment_counter", {"shard": "board", "key": "done", "by": True}, "by"),
            ("increment_counter", {"shard": "board", "key": "done", "by": 2**63}, "64-bit"),
            ("increment_counter", {"shard": "board", "key": "n"}, "plain number 5, not a counter"),
            ("increment_counter", {"shard": "board", "key": "log"}, "a list, not a counter"),
            ("increment_counter", {"shard": "board", "key": "/done"}, "not a JSON Pointer"),
            ("increment_counter", {"shard": "board", "key": ""}, "non-empty"),
            ("claim_task", {"shard": "bad name!", "task": "t", "members": 1}, "invalid shard name"),
            ("claim_task", {"shard": "board", "task": "", "members": 1}, "non-empty"),
            ("claim_task", {"shard": "board", "task": "t", "members": 0}, "members"),
            (
                "claim_task",
                {"shard": "board", "task": "t", "members": 1, "timeout": 1000},
                "timeout must be",
            ),
            ("claim_task", {"shard": "fresh", "task": "t", "members": "two"}, "members"),
            ("claim_task", {"shard": "board", "task": "t", "members": 1}, "separate shard"),
            ("claim_task", {"shard": "board", "task": "t", "members": 2}, "no peers"),
        ]
        for tool, args, expected in cases:
            message = await error(client, tool, **args)
            assert expected in message, (tool, args, message)
        plain = await error(client, "increment_counter", shard="board", key="n")
        assert '{"n": null}' in plain and "by=5" in plain  # says how to fix it
        assert (await call(client, "read", shard="board"))["value"] == before
        assert [s["name"] for s in (await call(client, "list_shards"))["shards"]] == ["board"]


async def test_two_servers_counter_sum_and_one_claim_winner(tmp_path: Path) -> None:
    async with (
        Agent("ca", data_dir=tmp_path / "ca", listen="ws://127.0.0.1:0") as a,
        Agent("cb", data_dir=tmp_path / "cb", peers=[a.address]) as b,
    ):
        sa, sb = CrdtMcp(a), CrdtMcp(b)
        async with sa.watching(), sb.watching(), Client(sa.server) as ca, Client(sb.server) as cb:
            await call(ca, "write", shard="work", patch={"seed": 1})
            for _ in range(200):  # both agents hold the shard before anyone counts or claims
                if "work" in b.shard_names():
                    break
                await asyncio.sleep(0.05)
            await call(cb, "read", shard="work")

            async def bump(client: Client, by: int, times: int) -> None:
                for _ in range(times):
                    await call(client, "increment_counter", shard="work", key="hits", by=by)

            await asyncio.gather(bump(ca, 3, 5), bump(cb, -1, 4), bump(ca, 2, 2))
            for client in (ca, cb):
                await call(client, "wait_until_replicated", shard="work", timeout=10)
            for _ in range(200):
                values = [
                    (await call(c, "read", shard="work", path="/hits"))["value"] for c in (ca, cb)
                ]
                if values == [15, 15]:
                    break
                await asyncio.sleep(0.05)
            assert values == [15, 15]  # 5*3 - 4 + 2*2: no increment lost on either side

            async def worker(client: Client, task: str) -> list[dict[str, Any]]:
                """Claim like an agent would: on contention retry after a random pause."""
                tries = []
                for _ in range(30):
                    tries.append(
                        await call(
                            client, "claim_task", shard="work", task=task, members=2, timeout=10
                        )
                    )
                    if tries[-1]["won"] or not tries[-1]["reason"].startswith("contended"):
                        break
                    await asyncio.sleep(random.uniform(0.01, 0.3))
                return tries

            for task in ("t1", "t2", "t3"):  # both servers claim each task at the same moment
                tries_a, tries_b = await asyncio.gather(worker(ca, task), worker(cb, task))
                first = [(r["agent"], r["won"], r.get("reason")) for r in (tries_a[0], tries_b[0])]
                ends = [tries_a[-1], tries_b[-1]]
                winners = [r["agent"] for r in ends if r["won"]]
                assert len(winners) == 1, (first, ends)  # exactly one winner in the end
                assert sum(r["won"] for r in tries_a + tries_b) == 1  # and never a second one
                loser = next(r for r in ends if not r["won"])
                assert loser["reason"].startswith("taken by"), loser  # it saw the winner
                late = await call(
                    cb if winners == ["ca"] else ca,
                    "claim_task",
                    shard="work",
                    task=task,
                    members=2,
                )
                assert late["won"] is False and "taken by" in late["reason"], late
            # members=5 but two agents: no majority (3) can confirm it; lost, and withdrawn
            short = await call(ca, "claim_task", shard="work", task="t9", members=5, timeout=0.3)
            assert short["won"] is False and short["reason"].startswith("no quorum"), short
            claims = (await call(ca, "read", shard="work", path="/claims"))["value"]
            assert not [k for k in claims if k.startswith("t9|")], claims
            assert len(claims) == 3  # one winner's claim per task t1..t3
            # Only the holder completes or releases: the other agent is refused, writing nothing.
            holder = {k.rpartition("|")[2] for k in claims if k.startswith("t1|")}.pop()
            win, lose = (ca, cb) if holder == "ca" else (cb, ca)

            async def t1(client: Client) -> tuple[list[str], object]:
                """The claims and completion of t1 as ``client``'s agent sees them (other keys
                may still change as replication settles)."""
                value = (await call(client, "read", shard="work"))["value"]
                keys = sorted(k for k in value.get("claims", {}) if k.startswith("t1|"))
                return keys, value.get("done", {}).get("t1")

            before = await t1(lose)
            for tool in ("complete_task", "release_task"):
                message = await error(lose, tool, shard="work", task="t1")
                assert f"claimed by {holder}" in message and "nothing written" in message
            assert await t1(lose) == before == ([f"t1|{holder}"], None)
            done = await call(win, "complete_task", shard="work", task="t1", members=2, result=7)
            assert done["replicated"] is True and done["quorum"] == 2
            # The majority holds it: a claim from the other agent now sees it done.
            late = await call(lose, "claim_task", shard="work", task="t1", members=2)
            assert late["won"] is False and late["reason"] == "done", late


# -- two crdtsync mcp processes on a mesh ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(name: str, data: Path, listen: str | None, peer: str | None, transport: str) -> list[str]:
    args = [
        "-m",
        "crdtsync.cli",
        "mcp",
        "--name",
        name,
        "--data",
        str(data),
        "--transport",
        transport,
    ]
    if listen:
        args += ["--listen", listen]
    if peer:
        args += ["--peer", peer]
    return args


async def _write_then_observe(writer: Client, reader: Client, shard: str) -> None:
    """Write through ``writer``; ``reader`` (another agent) must see it and be notified."""
    uri = f"crdtsync://shard/{shard}"
    await call(writer, "write", shard=shard, patch={"seed": 1})  # the shard exists everywhere
    for _ in range(100):
        if any(s["name"] == shard for s in (await call(reader, "list_shards"))["shards"]):
            break
        await asyncio.sleep(0.05)
    async with reader.listen(resource_subscriptions=[uri]) as sub:
        await call(writer, "write", shard=shard, patch={"tasks": {"t1": {"owner": "a", "n": 7}}})
        await call(writer, "wait_until_replicated", shard=shard, peers=1, timeout=10)
        event = await asyncio.wait_for(anext(aiter(sub)), 10)
        assert event == ResourceUpdated(uri=uri)
    got = await call(reader, "read", shard=shard, path="/tasks/t1")
    assert got["value"] == {"owner": "a", "n": 7}


async def test_two_servers_over_stdio(tmp_path: Path) -> None:
    listen = f"ws://127.0.0.1:{_free_port()}"
    a = StdioServerParameters(
        command=sys.executable, args=_args("ma", tmp_path / "a", listen, None, "stdio")
    )
    b = StdioServerParameters(
        command=sys.executable, args=_args("mb", tmp_path / "b", None, listen, "stdio")
    )
    with open(tmp_path / "stderr.log", "w") as log:  # noqa: ASYNC230 (servers' stderr)
        async with (
            Client(stdio_client(a, errlog=log)) as ca,
            Client(stdio_client(b, errlog=log)) as cb,
        ):
            await _write_then_observe(ca, cb, "board")


def _spawn_http(
    name: str, data: Path, listen: str | None, peer: str | None
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    child = subprocess.Popen(
        [sys.executable, *_args(name, data, listen, peer, "http")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert child.stderr is not None
    for line in child.stderr:
        if line.startswith("{"):
            return child, json.loads(line)
    raise AssertionError(f"{name} exited before it was ready")


async def test_two_servers_over_http_modern_and_legacy_subscriptions(tmp_path: Path) -> None:
    a, ready_a = _spawn_http("ha", tmp_path / "a", "ws://127.0.0.1:0", None)
    b, ready_b = _spawn_http("hb", tmp_path / "b", None, ready_a["address"])
    try:
        assert ready_a["mcp"].startswith("http://127.0.0.1:")
        async with Client(ready_a["mcp"]) as ca, Client(ready_b["mcp"]) as cb:
            await _write_then_observe(ca, cb, "board")
        # A 2025-era client (initialize handshake) subscribes with resources/subscribe.
        seen: list[str] = []

        async def on_message(message: Any) -> None:
            root = getattr(message, "root", message)
            if getattr(root, "method", None) == "notifications/resources/updated":
                seen.append(str(root.params.uri))

        uri = "crdtsync://shard/board"
        async with (
            Client(ready_a["mcp"]) as ca,
            Client(ready_b["mcp"], mode="legacy", message_handler=on_message) as cb,
        ):
            with pytest.warns(MCPDeprecationWarning):  # the SDK marks it as the 2025-era path
                await cb.session.subscribe_resource(uri)
            await call(ca, "write", shard="board", patch={"legacy": True})
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.05)
            assert seen and seen[0] == uri
            assert (await call(cb, "read", shard="board", path="/legacy"))["value"] is True
    finally:
        for child in (a, b):
            child.send_signal(signal.SIGTERM)
        for child in (a, b):
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
            assert child.stderr is not None
            child.stderr.close()


async def test_http_refuses_non_loopback_hosts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        await serve({"name": "x", "data_dir": tmp_path / "x"}, transport="http", host="0.0.0.0")
    assert not (tmp_path / "x").exists()  # refused before the agent started
