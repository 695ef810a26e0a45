"""The HTTP API of a real agent on 127.0.0.1: reads, writes, errors, auth, SSE, a small mesh."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from crdtsync import Agent, UsageError
from crdtsync.http import Access, HttpOptions
from crdtsync.jsonform import loads

PATCH = {"content-type": "application/merge-patch+json"}


@pytest.fixture
async def agent(tmp_path) -> AsyncIterator[Agent]:  # type: ignore[no-untyped-def]
    async with Agent(
        "a", data_dir=tmp_path / "a", http=HttpOptions("127.0.0.1:0", max_body=4096)
    ) as a:
        yield a


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    assert agent.http_url is not None and agent.http_url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=agent.http_url, timeout=10) as c:
        yield c


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["type"] == f"urn:crdtsync:problem:{slug}"
    assert body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


async def test_write_read_round_trip(client: httpx.AsyncClient, agent: Agent) -> None:
    body = (
        '{"tasks": {"t1": {"title": "crawl", "done": false}}, "big": {"$int": "9223372036854775807"},'
        ' "f": 3.0, "nan": {"$float": "NaN"}, "raw": {"$bytes": "AAH/"}, "notes": {"$text": "hi"}}'
    )
    r = await client.patch("/shards/board", content=body, headers=PATCH)
    assert r.status_code == 200 and r.json()["writes"] == 6
    r = await client.patch("/shards/board", json={"tasks": {"t1": {"done": True, "title": None}}})
    assert r.status_code == 200
    board = await agent.shard("board")
    snap = board.snapshot()
    assert snap["tasks"] == {"t1": {"done": True}} and snap["big"] == 2**63 - 1 and snap["f"] == 3.0
    assert type(snap["f"]) is float and math.isnan(snap["nan"]) and snap["raw"] == b"\x00\x01\xff"
    got = loads((await client.get("/shards/board")).content)
    assert got["big"] == {"$int": "9223372036854775807"} and got["notes"] == {"$text": "hi"}
    assert got["raw"] == {"$bytes": "AAH/"} and got["nan"] == {"$float": "NaN"}
    assert (await client.get("/shards/board", params={"path": "/tasks/t1/done"})).json() is True
    # list append, text edits, delete of a key
    assert (
        await client.post("/shards/board/append", json={"path": "/log", "values": [1, "x"]})
    ).status_code == 200
    assert (
        await client.post("/shards/board/append", json={"path": "/log", "values": [{"$int": "2"}]})
    ).status_code == 200
    assert board["log"] == [1, "x", 2]
    r = await client.post(
        "/shards/board/text", json={"path": "/notes", "index": 2, "insert": " there"}
    )
    assert r.status_code == 200
    r = await client.post(
        "/shards/board/text", json={"path": "/notes", "index": 0, "delete": 1, "insert": "H"}
    )
    assert str(board["notes"]) == "Hi there"
    assert (await client.delete("/shards/board", params={"path": "/tasks/t1"})).status_code == 200
    assert (await client.delete("/shards/board", params={"path": "/log/0"})).status_code == 200
    assert board["tasks"] == {} and board["log"] == ["x", 2]
    # names with '/' travel as %2F
    assert (await client.patch("/shards/sensors%2Fkitchen", json={"t": 21.5})).status_code == 200
    assert (await client.get("/shards/sensors%2Fkitchen")).json() == {"t": 21.5}
    names = [s["name"] for s in (await client.get("/shards")).json()["shards"]]
    assert names == ["board", "sensors/kitchen"]
    assert (await client.get("/health")).json()["ready"] is True


BAD = [
    ("invalid JSON", "PATCH", "/shards/board", b'{"a": ', PATCH, 400, "invalid-json"),
    ("NaN literal", "PATCH", "/shards/board", b'{"a": NaN}', PATCH, 400, "invalid-json"),
    ("duplicate key", "PATCH", "/shards/board", b'{"a": 1, "a": 2}', PATCH, 400, "invalid-json"),
    (
        "int beyond 64 bits",
        "PATCH",
        "/shards/board",
        b'{"a": 18446744073709551616}',
        PATCH,
        422,
        "unsupported-value",
    ),
    (
        "unknown tag",
        "PATCH",
        "/shards/board",
        b'{"a": {"$set": [1]}}',
        PATCH,
        422,
        "unsupported-value",
    ),
    ("array patch", "PATCH", "/shards/board", b"[1]", PATCH, 422, "unsupported-value"),
    (
        "not JSON type",
        "PATCH",
        "/shards/board",
        b"a=1",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported-media-type",
    ),
    (
        "too large",
        "PATCH",
        "/shards/board",
        b'{"a": "' + b"x" * 5000 + b'"}',
        PATCH,
        413,
        "body-too-large",
    ),
    ("bad shard name", "PATCH", "/shards/-bad", b"{}", PATCH, 400, "invalid-shard-name"),
    ("unencoded slash", "GET", "/shards/a/b", b"", {}, 404, "not-found"),
    ("unknown path", "GET", "/nope", b"", {}, 404, "not-found"),
    ("name not UTF-8", "GET", "/shards/%ff", b"", {}, 400, "invalid-shard-name"),
    ("wrong method", "PUT", "/shards/board", b"{}", PATCH, 405, "method-not-allowed"),
    ("bad quorum", "GET", "/shards/board?quorum=most", b"", {}, 400, "invalid-parameter"),
    (
        "bad replicated",
        "PATCH",
        "/shards/board?replicated=-1",
        b'{"a": 1}',
        PATCH,
        400,
        "invalid-parameter",
    ),
    (
        "bad timeout",
        "PATCH",
        "/shards/board?replicated=1&timeout=0",
        b'{"a": 1}',
        PATCH,
        400,
        "invalid-parameter",
    ),
    ("delete without path", "DELETE", "/shards/board", b"", {}, 400, "invalid-parameter"),
    ("delete absent key", "DELETE", "/shards/board?path=/nope", b"", {}, 404, "no-such-path"),
    (
        "append to a non-list",
        "POST",
        "/shards/board/append",
        b'{"path": "/keep", "values": [1]}',
        {"content-type": "application/json"},
        409,
        "not-a-list",
    ),
    (
        "append bad value",
        "POST",
        "/shards/board/append",
        b'{"path": "/l", "values": [1, {"$int": "x"}]}',
        {"content-type": "application/json"},
        422,
        "unsupported-value",
    ),
    (
        "text out of range",
        "POST",
        "/shards/board/text",
        b'{"path": "/txt", "index": 99, "insert": "x"}',
        {"content-type": "application/json"},
        422,
        "out-of-range",
    ),
    (
        "text on a non-text",
        "POST",
        "/shards/board/text",
        b'{"path": "/keep", "index": 0, "insert": "x"}',
        {"content-type": "application/json"},
        409,
        "not-a-text",
    ),
    (
        "replicated without peers",
        "PATCH",
        "/shards/board?replicated=1",
        b'{"z": 1}',
        PATCH,
        409,
        "conflict",
    ),
]


async def test_bad_input_is_4xx_problem_and_changes_nothing(
    client: httpx.AsyncClient, agent: Agent
) -> None:
    await client.patch("/shards/board", json={"keep": {"x": 1}, "txt": {"$text": "ab"}})
    board = await agent.shard("board")
    for name, method, url, body, headers, status, slug in BAD:
        await board.flush()
        before, n = board.snapshot(), board.stats().total_updates
        r = await client.request(method, url, content=body, headers=headers)
        try:
            _problem(r, status, slug)
        except AssertionError as exc:
            raise AssertionError(f"case {name!r}: {exc}") from None
        await board.flush()
        assert board.snapshot() == before and board.stats().total_updates == n, name


async def test_sse_changes_with_origin_paths_and_resume(client: httpx.AsyncClient) -> None:
    await client.patch("/shards/board", json={"a": 1})
    events: list[tuple[str, str, dict[str, Any]]] = []

    async def read(headers: dict[str, str], want: int) -> None:
        async with client.stream(
            "GET", "/shards/board/events", params={"snapshot": "true"}, headers=headers
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith(
                "text/event-stream"
            )
            msg: dict[str, str] = {}
            async for line in r.aiter_lines():
                if line == "":
                    if "event" in msg:
                        events.append((msg["event"], msg.get("id", ""), json.loads(msg["data"])))
                        if sum(1 for e in events if e[0] != "ping") >= want:
                            return
                    msg = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    msg[field] = value

    task = asyncio.create_task(read({}, 3))
    while not events:
        await asyncio.sleep(0.01)
    assert events[0][0] == "snapshot" and events[0][2]["value"] == {"a": 1}
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await client.patch("/shards/board", json={"b": {"c": 2}})
    await client.patch("/shards/board", json={"a": None})
    await asyncio.wait_for(task, 5)
    assert loop.time() - t0 < 1.0
    (_, id1, e1), (_, id2, e2) = events[1], events[2]
    assert e1["origin"] is None and e1["local"] is True and ["b"] in e1["paths"]
    assert e1["author"] is not None  # a local change names this agent
    assert e1["value"] == {"a": 1, "b": {"c": 2}} and e2["value"] == {"b": {"c": 2}}
    # resume after the first change: exactly the second is replayed
    await client.patch("/shards/board", json={"d": 4})
    events.clear()
    await asyncio.wait_for(read({"Last-Event-ID": id1}, 2), 5)
    assert [e[0] for e in events] == ["change", "change"]
    assert events[0][1] == id2 and events[1][2]["value"]["d"] == 4
    # an id from another server epoch cannot resume: a reset with the whole shard
    events.clear()
    await asyncio.wait_for(read({"Last-Event-ID": "00000000:3"}, 1), 5)
    assert events[0][0] == "reset" and events[0][2]["value"] == {"b": {"c": 2}, "d": 4}


async def test_refuses_non_loopback_without_authorizer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # (nothing is bound: the check comes first)
    with pytest.raises(UsageError, match="refusing to serve HTTP"):
        await Agent("a", data_dir=tmp_path / "a", http="0.0.0.0:0").start()
    async with Agent(
        "a", data_dir=tmp_path / "a", http="127.0.0.1:0"
    ) as agent:  # the store was released
        assert agent.http_url


async def test_authorizer_hook(tmp_path) -> None:  # type: ignore[no-untyped-def]
    grants = {"reader": Access(read=("pub*",)), "writer": Access(read=("*",), write=("pub*",))}

    async def authorize(token: str | None) -> Access | None:
        return grants.get(token or "")

    opts = HttpOptions("127.0.0.1:0", authorize=authorize)
    async with (
        Agent("a", data_dir=tmp_path / "a", http=opts) as agent,
        httpx.AsyncClient(base_url=agent.http_url or "") as c,
    ):

        def auth(token: str) -> dict[str, str]:
            return {"authorization": f"Bearer {token}"}

        body = _problem(await c.get("/shards/pub"), 401, "unauthorized")
        assert "Bearer" in (await c.get("/shards/pub")).headers["www-authenticate"] and body
        _problem(await c.get("/shards/pub", headers=auth("forged")), 401, "unauthorized")
        _problem(
            await c.patch("/shards/pub", json={"a": 1}, headers=auth("reader")), 403, "forbidden"
        )
        _problem(
            await c.patch("/shards/secret", json={"a": 1}, headers=auth("writer")), 403, "forbidden"
        )
        assert (
            await c.patch("/shards/pub", json={"a": 1}, headers=auth("writer"))
        ).status_code == 200
        assert (await c.get("/shards/pub", headers=auth("reader"))).json() == {"a": 1}
        _problem(await c.get("/shards/secret", headers=auth("reader")), 403, "forbidden")
        assert (await c.get("/health")).status_code == 200  # open, for probes
        schema = (await c.get("/openapi.json")).json()
        assert schema["security"] == [{"bearer": []}]
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert (await c.get("/shards", params={"access_token": "reader"})).status_code == 200
        # the dashboard's EventSource cannot send headers: the token rides in the query
        r = await c.get("/shards/pub/events", params={"access_token": "reader", "wait": "0.1"})
        assert r.status_code == 200 and "event: snapshot" in r.text
        _problem(await c.get("/shards/pub/events", params={"wait": "0.1"}), 401, "unauthorized")


async def test_mesh_replicated_holders_lag_metrics_and_504(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with Agent(
        "a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http="127.0.0.1:0"
    ) as a:
        b = Agent(
            "b",
            data_dir=tmp_path / "b",
            listen="ws://127.0.0.1:0",
            peers=[a.address or ""],
            http="127.0.0.1:0",
        )
        await b.start()
        async with (
            httpx.AsyncClient(base_url=a.http_url or "", timeout=10) as ca,
            httpx.AsyncClient(base_url=b.http_url or "", timeout=10) as cb,
        ):
            for _ in range(200):
                if any(p["state"] == "connected" for p in (await ca.get("/peers")).json()["peers"]):
                    break
                await asyncio.sleep(0.025)
            r = await ca.patch("/shards/board?replicated=1&timeout=5", json={"x": {"y": 1}})
            assert r.status_code == 200 and r.json()["replicated"] == 1
            assert (await cb.get("/shards/board")).json() == {"x": {"y": 1}}
            # b's event stream tells a remote change by its origin
            async with cb.stream("GET", "/shards/board/events", params={"wait": "3"}) as stream:
                lines = stream.aiter_lines()
                async for line in lines:
                    if line.startswith("event: snapshot"):
                        break
                await ca.patch("/shards/board?replicated=1", json={"x": {"w": 3}})
                event = ""
                async for line in lines:
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "change":
                        change = json.loads(line[6:])
                        break
            assert (
                change["origin"] == "a"
                and change["local"] is False
                and ["x", "w"] in change["paths"]
            )
            assert change["author"] in ("a", None)  # None: it came by an anti-entropy diff
            infos = (await ca.get("/shards")).json()["shards"]
            assert infos[0]["holders"] == ["a", "b"] and infos[0]["lag"] == {"b": 0}
            text = (await ca.get("/metrics")).text
            assert 'crdtsync_shard_updates_total{shard="board"}' in text
            assert 'crdtsync_replication_lag_updates{peer="b",shard="board"} 0.0' in text
            assert "crdtsync_open_connections 1.0" in text
            figures = a.metrics()
            assert (
                figures["peers"]["b"]["lag"]["board"]["updates"] == 0
                and figures["connections"] == 1
            )
            await b.close()
            r = await ca.patch("/shards/board?replicated=1&timeout=0.3", json={"x": {"z": 2}})
            body = _problem(r, 504, "replication-timeout")
            assert body["lagging"] == ["b"] and "b" in body["detail"]


async def test_idle_follower_stops_and_numbering_continues(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from crdtsync.http import events

    monkeypatch.setattr(events, "IDLE", 0.0)
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("board")
        hub = events.EventHub()
        stream = hub.stream(shard, None, snapshot=False, wait=0.2)
        assert b"event: snapshot" in await stream.__anext__()
        shard["a"] = 1
        assert b"id: %s:1" % hub.epoch.encode() in await stream.__anext__()
        await stream.aclose()  # the subscriber leaves
        shard["b"] = 2  # numbered (2), then the idle follower stops
        await asyncio.sleep(0.05)
        follow = hub.follow(shard)  # a new follower carries the numbering on
        assert follow.seq == 2 and not follow.buffer
        await asyncio.sleep(0)
        # an id from before the gap cannot resume (records 2.. are gone): reset
        stream = hub.stream(shard, f"{hub.epoch}:1", snapshot=False, wait=0.2)
        assert b"event: reset" in await stream.__anext__()
        shard["c"] = 3
        assert b"id: %s:3" % hub.epoch.encode() in await stream.__anext__()
        await stream.aclose()
        await hub.close()


async def test_mesh_credentials_guard_the_http_door_with_ca_tokens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The same credentials guard every door: an agent with mesh (TLS) credentials and a plain
    # `http="HOST:PORT"` takes bearer tokens issued by the mesh CA, scoped per shard.
    from click.testing import CliRunner

    from crdtsync.cli import main
    from crdtsync.security.credentials import Credentials

    def cli(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output.strip()

    keys = tmp_path / "keys"
    cli("keys", "init-mesh", "--dir", str(keys), "--mesh", "m1")
    cli("keys", "issue", "a", "--dir", str(keys))
    reader = cli("keys", "token", "dash", "--dir", str(keys), "--read", "pub*", "--days", "1")
    writer = cli("keys", "token", "svc", "--dir", str(keys), "--write", "pub*", "--days", "1")
    creds = Credentials.from_dir(keys, "a")
    async with (
        Agent("a", data_dir=tmp_path / "a", credentials=creds, http="127.0.0.1:0") as agent,
        httpx.AsyncClient(base_url=agent.http_url or "") as c,
    ):

        def auth(token: str) -> dict[str, str]:
            return {"authorization": f"Bearer {token}"}

        _problem(await c.get("/shards/pub"), 401, "unauthorized")
        _problem(
            await c.get("/shards/pub", headers=auth(reader[:-4] + "AAAA")), 401, "unauthorized"
        )
        _problem(
            await c.patch("/shards/pub", json={"a": 1}, headers=auth(reader)), 403, "forbidden"
        )
        assert (
            await c.patch("/shards/pub", json={"a": 1}, headers=auth(writer))
        ).status_code == 200
        assert (await c.get("/shards/pub", headers=auth(reader))).json() == {"a": 1}
        _problem(await c.get("/shards/other", headers=auth(reader)), 403, "forbidden")
    # nothing of the refused writes was stored
    async with Agent("a", data_dir=tmp_path / "a") as again:
        assert (await again.shard("pub")).snapshot() == {"a": 1}
