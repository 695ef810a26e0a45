"""A bearer token's end ends the long-lived connections it opened: an HTTP event stream
(``GET /shards/NAME/events``) and a Yjs door client, over a real agent with TLS credentials made
by ``crdtsync keys`` in a tmp dir, its HTTP server and Yjs door on 127.0.0.1, real clients
(httpx, websockets).

* A stream whose token expires gets a last ``error`` event (problem ``token-expired``) at the
  token's end (its ``exp`` plus the 60 s verification leeway), is closed, logged and counted;
  changes before the end were delivered.
* A stream whose token is revoked (``crdtsync keys revoke``) ends within the bound with
  ``token-revoked``; a stream of another token goes on.
* A Yjs client whose token expires is closed with ``CERT_EXPIRED`` (4015); another is served.
* A quorum read that outlasts its token is refused (401), not answered (its wait for other
  holders is stood in for by a slow ``read_json``: this agent has no other holder).

Short-lived tokens: ``crdtsync keys token --days`` cannot backdate a token, so those are
issued with :func:`issue_token` with ``now`` about a minute in the past: the token is still
within the leeway when the connection opens (accepted, as it would be by a verifier whose clock
is that far behind), and its end comes a few seconds later. The leeway is the real one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from meshkeys import cli, make_keys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Agent
from crdtsync.errors import CloseCode
from crdtsync.http.access import Access
from crdtsync.http.ends import StreamEnds
from crdtsync.security.acl import Permissions
from crdtsync.security.ca import MeshCA
from crdtsync.security.credentials import Credentials
from crdtsync.security.tokens import _LEEWAY, issue_token, token_deadline
from crdtsync.yjs import sync

MESH = "orchard"
SHARD = "board"
LIFE = 4.0  # seconds a short-lived token has left when the test opens its connection
BOUND = 5.0  # seconds allowed past the end (the revocation sweep looks every second)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return make_keys(tmp_path / "keys", MESH, "alpha")


@pytest.fixture
async def agent(keys: Path, tmp_path: Path) -> AsyncIterator[Agent]:
    creds = Credentials.from_dir(keys, "alpha")
    async with Agent(
        "alpha",
        tmp_path / "alpha",
        listen="wss://127.0.0.1:0",
        credentials=creds,
        http="127.0.0.1:0",
    ) as a:
        (await a.shard(SHARD))["n"] = 0
        yield a


def short_token(keys: Path, name: str, life: float = LIFE) -> str:
    """A token (read and write everything) that verification stops accepting in ``life`` s."""
    days = 1.0 / 86400  # one second of validity...
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=_LEEWAY + 1 - life)  # ...a minute ago
    token = issue_token(MeshCA.load(keys), name, Permissions(("**",), ("**",)), days=days, now=now)
    left = token_deadline(token) - time.time()
    assert life - 2 < left <= life + 1, left
    return token


async def read_events(r: httpx.Response, into: list[tuple[str, dict[str, Any]]]) -> None:
    """Append every (event, data) of an SSE response until the server ends it."""
    msg: dict[str, str] = {}
    async for line in r.aiter_lines():
        if line == "":
            if "event" in msg:
                into.append((msg["event"], json.loads(msg["data"])))
            msg = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            msg[key] = value


async def until(cond: Any, timeout: float = BOUND) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_an_event_stream_ends_when_its_token_expires(
    agent: Agent, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = short_token(keys, "dash")
    end = token_deadline(token)
    events: list[tuple[str, dict[str, Any]]] = []
    shard = await agent.shard(SHARD)
    caplog.set_level(logging.WARNING, "crdtsync.http")
    async with (
        httpx.AsyncClient(base_url=agent.http_url or "", timeout=30) as c,
        c.stream("GET", f"/shards/{SHARD}/events", headers=auth(token)) as r,
    ):
        assert r.status_code == 200
        reader = asyncio.create_task(read_events(r, events))
        await until(lambda: events)
        shard["n"] = 1
        await until(lambda: len(events) >= 2)
        assert [e for e, _ in events] == ["snapshot", "change"]  # delivered while valid
        async with asyncio.timeout(end - time.time() + BOUND):
            await reader  # the server ends the stream
        ended = time.time()
    print(f"stream ended {ended - end:+.3f} s after the token's end")
    assert ended >= end - 0.05  # not before the token's end...
    kind, problem = events[-1]
    assert kind == "error"  # ...and with a last event saying why
    assert problem["type"] == "urn:crdtsync:problem:token-expired" and problem["status"] == 401
    assert problem["instance"] == f"/shards/{SHARD}/events"
    assert [e for e, _ in events] == ["snapshot", "change", "error"]
    assert agent.counters["http.stream_ended.expired"] == 1
    assert sum("ended: its token expired" in rec.getMessage() for rec in caplog.records) == 1
    # a new request with the same token is refused: the stream did not outlive the token
    async with httpx.AsyncClient(base_url=agent.http_url or "") as c:
        assert (await c.get(f"/shards/{SHARD}/events", headers=auth(token))).status_code == 401


async def test_an_event_stream_ends_when_its_token_is_revoked(agent: Agent, keys: Path) -> None:
    token = cli("keys", "token", "dash", "--dir", str(keys), "--read", "**", "--days", "1")
    other = cli("keys", "token", "ops", "--dir", str(keys), "--read", SHARD, "--days", "1")
    mine: list[tuple[str, dict[str, Any]]] = []
    theirs: list[tuple[str, dict[str, Any]]] = []
    shard = await agent.shard(SHARD)
    async with (
        httpx.AsyncClient(base_url=agent.http_url or "", timeout=30) as c,
        c.stream("GET", f"/shards/{SHARD}/events", headers=auth(token)) as r,
        c.stream("GET", f"/shards/{SHARD}/events", params={"access_token": other}) as r2,
    ):
        assert r.status_code == 200 and r2.status_code == 200
        reader = asyncio.create_task(read_events(r, mine))
        reader2 = asyncio.create_task(read_events(r2, theirs))
        try:
            await until(lambda: mine and theirs)
            shard["n"] = 1
            await until(lambda: len(mine) >= 2 and len(theirs) >= 2)
            t0 = time.monotonic()
            cli("keys", "revoke", "dash", "--dir", str(keys))
            async with asyncio.timeout(BOUND):
                await reader
            took = time.monotonic() - t0
            assert [e for e, _ in mine] == ["snapshot", "change", "error"]
            assert mine[-1][1]["type"] == "urn:crdtsync:problem:token-revoked"
            assert agent.counters["http.stream_ended.revoked"] == 1
            # the stream of another token goes on
            shard["n"] = 2
            await until(lambda: len(theirs) >= 3)
            assert [e for e, _ in theirs] == ["snapshot", "change", "change"]
            assert not reader2.done()
            # (a guard, not new: a stream is of one shard, refused unless the token reads it)
            denied = await c.get("/shards/other/events", params={"access_token": other})
            assert denied.status_code == 403
        finally:
            for task in (reader, reader2):
                task.cancel()
            await asyncio.gather(reader, reader2, return_exceptions=True)
    print(f"revocation to end of stream: {took:.2f} s")


async def test_a_yjs_client_is_closed_when_its_token_expires(agent: Agent, keys: Path) -> None:
    token = short_token(keys, "editor")
    end = token_deadline(token)
    honest = cli("keys", "token", "viewer", "--dir", str(keys), "--read", "**", "--days", "1")
    assert agent.address is not None
    url = agent.address + f"/yjs/{SHARD}?token="
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname = False
    tls.load_verify_locations(keys / "ca.pem")
    async with (
        connect(url + token, ssl=tls, proxy=None) as ws,
        connect(url + honest, ssl=tls, proxy=None) as other,
    ):
        assert isinstance(await ws.recv(), bytes)  # admitted and synced
        assert isinstance(await other.recv(), bytes)
        try:
            async with asyncio.timeout(end - time.time() + BOUND):
                while True:
                    await ws.recv()
        except ConnectionClosed:
            pass
        closed = time.time()
        print(f"yjs client closed {closed - end:+.3f} s after the token's end")
        assert closed >= end - 0.05
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == CloseCode.CERT_EXPIRED
        assert agent.counters["yjs.expired_closed"] == 1
        # the other client is still served
        await other.send(sync.encode_sync(sync.STEP1, b"\x00"))
        assert isinstance(await asyncio.wait_for(other.recv(), BOUND), bytes)


async def test_a_quorum_read_that_outlasts_its_token_is_refused(
    agent: Agent, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A quorum read waits for other holders (up to its timeout); this agent has none, so the
    # wait is stood in for: the read answers after 2 s, past the token's end (1 s).
    answered: list[float] = []

    async def slow_read(name: str, **kw: Any) -> Any:
        await asyncio.sleep(2.0)
        answered.append(time.time())
        return {"n": 0}

    monkeypatch.setattr(agent, "read_json", slow_read)
    token = short_token(keys, "dash", life=1.0)
    end = token_deadline(token)
    async with httpx.AsyncClient(base_url=agent.http_url or "", timeout=30) as c:
        r = await c.get(f"/shards/{SHARD}", params={"quorum": "2"}, headers=auth(token))
    assert answered and answered[0] > end  # the read did answer, after the token's end
    assert r.status_code == 401, r.text
    assert r.json()["type"] == "urn:crdtsync:problem:token-expired"
    assert "n" not in r.json()


async def test_a_stream_whose_token_is_revoked_while_it_opens_ends_at_once(keys: Path) -> None:
    # The token was checked when the request arrived; the list changed before the stream was
    # held (the shard was opening): the stream ends at once, not never.
    creds = Credentials.from_dir(keys, "alpha")
    token = cli("keys", "token", "dash", "--dir", str(keys), "--read", "**", "--days", "1")
    identity = creds.verify_token(token)
    cli("keys", "revoke", "dash", "--dir", str(keys))
    ends = StreamEnds(creds)
    wake = asyncio.Event()
    access = Access(read=("**",), serial=identity.serial, expires=token_deadline(token))
    ticket = ends.hold(access, wake, "/shards/board/events")
    try:
        assert ticket is not None and ticket.ended == "revoked" and wake.is_set()
        assert ends.counters == {"http.stream_ended.revoked": 1}
    finally:
        ends.close()


async def test_reload_revocations_ends_a_revoked_stream_at_once(agent: Agent, keys: Path) -> None:
    """``Agent.reload_revocations()`` ends the event streams of a revoked token in the call
    (not at the HTTP door's next look), and counts them in what it returns."""
    token = cli("keys", "token", "dash", "--dir", str(keys), "--read", "**", "--days", "1")
    mine: list[tuple[str, dict[str, Any]]] = []
    await agent.shard(SHARD)
    async with (
        httpx.AsyncClient(base_url=agent.http_url or "", timeout=30) as c,
        c.stream("GET", f"/shards/{SHARD}/events", headers=auth(token)) as r,
    ):
        assert r.status_code == 200
        reader = asyncio.create_task(read_events(r, mine))
        try:
            await until(lambda: mine)
            cli("keys", "revoke", "dash", "--dir", str(keys))
            assert agent.reload_revocations() == 1
            assert agent.counters["http.stream_ended.revoked"] == 1
            async with asyncio.timeout(BOUND):
                await reader
            assert mine[-1][1]["type"] == "urn:crdtsync:problem:token-revoked"
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
