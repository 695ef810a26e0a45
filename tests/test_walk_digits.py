"""Numbers and list indexes from HTTP and MCP callers are ASCII decimals (the h-walk2 walk).

``str.isdigit()`` is true for ``"²"`` (on which ``int()`` raises), ``"١"`` (an Arabic-Indic
one, which ``int()`` reads as 1) and ``"01"`` (not an RFC 6901 array index). Before this pass
``?quorum=²``, ``?replicated=²``, ``DELETE ?path=/log/²``, ``{"$int": "²"}``, a
``Last-Event-ID`` ending in ``²`` and ``--http 127.0.0.1:²`` raised ``ValueError`` (a 500, a
stream cut off, a traceback) and MCP's ``read`` of ``/l/²`` failed without saying why, while
``/log/01`` and ``/log/١`` named element 1. Each is now refused as bad input, saying what is
allowed, with nothing written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdtsync import Agent, UsageError
from crdtsync.http import HttpOptions
from crdtsync.http.server import parse_bind
from crdtsync.jsonform import JsonFormError, from_json, list_index

pytestmark = pytest.mark.timeout(60)

BAD_INDEXES = ["\u00b2", "\u0661", "01", "00", "-1", "+1", "1.0", "", " 1"]


def test_list_index_is_rfc_6901() -> None:
    assert [list_index(t) for t in ("0", "1", "10", "907")] == [0, 1, 10, 907]
    assert [list_index(t) for t in BAD_INDEXES] == [None] * len(BAD_INDEXES)


@pytest.mark.parametrize("text", ["\u00b2", "\u0661", "1\u00b2"])
def test_int_tag_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(JsonFormError, match="decimal integer string"):
        from_json({"$int": text})
    assert from_json({"$int": "-12"}) == -12


def test_http_bind_port_is_ascii() -> None:
    with pytest.raises(UsageError, match="HOST:PORT"):
        parse_bind("127.0.0.1:\u00b2")
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[tuple[Agent, httpx.AsyncClient]]:
    async with Agent("a", data_dir=tmp_path / "a", http=HttpOptions("127.0.0.1:0")) as agent:
        assert agent.http_url is not None
        async with httpx.AsyncClient(base_url=agent.http_url, timeout=10) as client:
            r = await client.patch("/shards/board", json={"log": ["a", "b", "c"], "k": 1})
            assert r.status_code == 200
            yield agent, client


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()  # type: ignore[no-any-return]


async def test_http_query_numbers(http: tuple[Agent, httpx.AsyncClient]) -> None:
    agent, client = http
    for sup in ("\u00b2", "\u0661"):
        body = _problem(await client.get("/shards/board", params={"quorum": sup}), 400)
        assert "quorum must be an integer 1-1000" in body["detail"]
        r = await client.patch("/shards/board", params={"replicated": sup}, json={"k": 2})
        assert "replicated must be an integer 0-1000" in _problem(r, 400)["detail"]
        r = await client.patch("/shards/board", json={"k": {"$int": sup}})
        assert _problem(r, 422)["pointer"] == "/k/$int"
    assert (await agent.shard("board"))["k"] == 1  # nothing was written


async def test_http_list_paths(http: tuple[Agent, httpx.AsyncClient]) -> None:
    agent, client = http
    assert (await client.get("/shards/board", params={"path": "/log/1"})).json() == "b"
    for bad in BAD_INDEXES[:4]:
        path = f"/log/{bad}"
        r = await client.get("/shards/board", params={"path": path})
        assert _problem(r, 404)["detail"] == f"nothing at {path!r} in the shard"
        r = await client.delete("/shards/board", params={"path": path})
        assert _problem(r, 404)["detail"] == f"nothing at {path!r} in the shard"
    assert (await agent.shard("board"))["log"] == ["a", "b", "c"]


async def test_sse_resume_with_a_superscript_digit(http: tuple[Agent, httpx.AsyncClient]) -> None:
    _, client = http
    async with client.stream("GET", "/shards/board/events", params={"wait": "0.2"}) as r:
        first = [line async for line in r.aiter_lines()]
    event_id = next(line[4:] for line in first if line.startswith("id: "))
    epoch = event_id.partition(":")[0]
    headers = {"Last-Event-ID": f"{epoch}:".encode() + b"\xb2"}  # read as latin-1: "²"
    async with client.stream(
        "GET", "/shards/board/events", params={"wait": "0.2"}, headers=headers
    ) as r:
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines()]
    assert "event: reset" in lines, lines  # cannot resume from it: the whole shard again


async def test_mcp_list_paths(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from mcp import Client

    from crdtsync.mcp import CrdtMcp

    async with Agent("solo", data_dir=tmp_path / "solo") as agent:
        server = CrdtMcp(agent)
        async with server.watching(), Client(server.server) as c:
            r = await c.call_tool("write", {"shard": "b", "patch": {"l": [1, 2, 3]}})
            assert not r.is_error
            for bad in BAD_INDEXES[:3]:
                r = await c.call_tool("read", {"shard": "b", "path": f"/l/{bad}"})
                text = "".join(getattr(part, "text", "") for part in r.content)
                assert r.is_error and "use an index 0..2" in text, text
            r = await c.call_tool("write", {"shard": "b", "patch": {"x": {"$int": "\u00b2"}}})
            text = "".join(getattr(part, "text", "") for part in r.content)
            assert r.is_error and "decimal integer string" in text, text
            assert (await agent.shard("b")).snapshot() == {"l": [1, 2, 3]}
