"""What the doors say when they refuse (the h-walk2 walk): the refusal names what to do.

``crdtsync agent --http 0.0.0.0:8080`` used to answer "configure authorize=, or pass
insecure=True", Python-API advice a command-line user cannot follow (and ``--insecure`` does not
open the HTTP door). The message now names ``--keys`` and ``crdtsync keys token`` as well.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from crdtsync import Agent, ReplicationTimeout, UsageError
from crdtsync.cli import main as cli_main

pytestmark = pytest.mark.timeout(60)


async def test_http_beyond_loopback_says_what_to_do(tmp_path: Path) -> None:
    agent = Agent("a", data_dir=tmp_path / "a", http="0.0.0.0:0")
    with pytest.raises(UsageError) as refused:
        await agent.start()  # refused before anything is bound: no traffic
    message = str(refused.value)
    assert "refusing to serve HTTP on '0.0.0.0'" in message
    assert "--keys" in message and "crdtsync keys token" in message, message
    assert "insecure=True" in message and "--insecure` does not open the HTTP door" in message


def test_agent_help_says_insecure_is_not_for_http() -> None:
    result = CliRunner().invoke(cli_main, ["agent", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "not --http, which serves beyond loopback only with --keys" in text, text


async def test_quorum_read_without_peers_is_refused(tmp_path: Path) -> None:
    """An agent with no peers read ``quorum=2`` as its own state (HTTP ``?quorum=99``: 200),
    though such a quorum can never be met; it is now a ``UsageError`` saying what to do, as
    ``replicated()`` without peers is (HTTP 409, as ``?replicated=1`` on such an agent)."""
    async with Agent("a", data_dir=tmp_path / "a", http="127.0.0.1:0") as agent:
        (await agent.shard("board"))["k"] = 1
        assert await agent.read("board", quorum=1) == {"k": 1}
        assert await agent.read("board", quorum="all") == {"k": 1}  # all holders: itself
        with pytest.raises(UsageError, match=r"read\(quorum=2\) needs peers: create the Agent"):
            await agent.read("board", quorum=2)
        assert agent.http_url is not None
        async with httpx.AsyncClient(base_url=agent.http_url, timeout=10) as client:
            r = await client.get("/shards/board", params={"quorum": "99", "timeout": "0.5"})
        assert r.status_code == 409 and "needs peers" in r.json()["detail"], r.text


def _fill(shard: Any) -> dict[str, Any]:
    """Values whose JSON form differs from their plain one; that form."""
    shard.text("notes").insert(0, "hello")
    shard["big"] = 2**60
    shard["raw"] = b"\x00\x01"
    shard["$odd"] = "dollar"
    shard.counter("hits").increment(3)
    return {
        "big": {"$int": str(2**60)},
        "raw": {"$bytes": "AAE="},
        "$$odd": "dollar",
        "notes": {"$text": "hello"},
        "hits": 3,
    }


async def test_quorum_read_keeps_the_json_form(tmp_path: Path) -> None:
    """``GET /shards/t?quorum=2`` answers the JSON form, as the local read does: a Text stays
    ``{"$text": ...}``. It went through ``Agent.read``'s plain dict (a Text as its ``str``),
    so writing the answer back turned the Text into a string (found by h-walk2)."""
    async with (
        Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", http="127.0.0.1:0") as a,
        Agent("b", tmp_path / "b", peers=[a.address or ""]) as b,
    ):
        shard = await a.shard("t")
        want = _fill(shard)
        await shard.replicated(peers=1, timeout=10)
        assert (await b.shard("t")).snapshot()["notes"] == "hello"
        assert a.http_url is not None
        async with httpx.AsyncClient(base_url=a.http_url, timeout=10) as client:
            local = (await client.get("/shards/t")).json()
            quorum = (await client.get("/shards/t", params={"quorum": "2"})).json()
            text = (await client.get("/shards/t", params={"quorum": "2", "path": "/notes"})).json()
        assert local == want
        assert quorum == want  # a's own state joined with b's answer
        assert text == {"$text": "hello"}


async def test_a_shard_not_held_here_is_read_in_the_json_form(tmp_path: Path) -> None:
    """``Agent.read_json`` and the MCP ``read`` tool of a shard held only elsewhere answer the
    JSON form (the MCP tool walked ``Agent.read``'s plain dict: a Text came as its ``str``)."""
    pytest.importorskip("mcp")
    from mcp import Client

    from crdtsync.mcp import CrdtMcp

    async with (
        Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", replication_factor=1) as a,
        # a client (no listen): it holds no placed shard and reads "t" from its holder
        Agent("b", tmp_path / "b", peers=[a.address or ""], replication_factor=1) as b,
    ):
        want = _fill(await a.shard("t"))
        for _ in range(100):  # b has met a (a read before asks nobody: ShardNotFound)
            if any(p.name == "a" for p in b.peers):
                break
            await asyncio.sleep(0.05)
        assert (await b.read("t", timeout=5))["notes"] == "hello"  # the plain form, as before
        assert await b.read_json("t", timeout=5) == want
        server = CrdtMcp(b)
        async with server.watching(), Client(server.server) as c:
            for path, value in (("", want), ("/notes", want["notes"]), ("/$odd", "dollar")):
                r = await c.call_tool("read", {"shard": "t", "path": path})
                assert not r.is_error, r.content
                assert r.structured_content == {"shard": "t", "path": path, "value": value}
        assert "t" not in b.shard_names()


async def test_inspect_mesh_through_nobody_is_an_error() -> None:
    """``crdtsync inspect --peer ws://...`` printed two empty tables and exited 0 when nothing
    answered (a wrong port or ``--mesh``), as if the mesh were empty; ``--peer http://`` fails."""
    from crdtsync.cli.meshview import inspect_mesh

    with pytest.raises(ReplicationTimeout, match="no agent of mesh 'default' answered"):
        await inspect_mesh(f"ws://127.0.0.1:{_free_port()}", timeout=1.0)


def test_inspect_command_through_nobody_exits_1() -> None:
    args = ["inspect", "--peer", f"ws://127.0.0.1:{_free_port()}", "--json"]
    result = CliRunner().invoke(cli_main, args, catch_exceptions=False)
    assert result.exit_code == 1 and "is --mesh its mesh?" in result.output, result.output


def _free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_text_insert_of_a_lone_surrogate_writes_nothing(tmp_path: Path) -> None:
    """``POST /text`` with ``"insert": "\\ud83d"`` answered 500 and left an empty Text at a new
    key (a delete in the same edit was kept); MCP ``insert_text`` failed without a reason and
    left the empty Text too. Both now refuse it first: 422 / a tool error, nothing written."""
    pytest.importorskip("mcp")
    from mcp import Client

    from crdtsync.mcp import CrdtMcp

    async with Agent("a", data_dir=tmp_path / "a", http="127.0.0.1:0") as agent:
        board = await agent.shard("board")
        board.text("notes").insert(0, "hello")
        before = board.snapshot()
        assert agent.http_url is not None
        async with httpx.AsyncClient(base_url=agent.http_url, timeout=10) as client:
            for body in (
                '{"path": "/fresh", "index": 0, "insert": "\\ud83d"}',
                '{"path": "/notes", "index": 0, "delete": 2, "insert": "\\ud83d"}',
            ):
                r = await client.post(
                    "/shards/board/text", content=body, headers={"content-type": "application/json"}
                )
                assert r.status_code == 422, r.text
                assert "lone surrogate" in r.json()["detail"]
        assert board.snapshot() == before
        server = CrdtMcp(agent)
        async with server.watching(), Client(server.server) as c:
            for path in ("/fresh", "/notes"):
                args = {"shard": "board", "path": path, "text": "\ud83d"}
                r = await c.call_tool("insert_text", args)
                text = "".join(getattr(part, "text", "") for part in r.content)
                assert r.is_error and "lone surrogate" in text and "nothing was written" in text
        assert board.snapshot() == before
