"""Bearer tokens on the Yjs door of an agent with TLS credentials (made by ``crdtsync keys`` in a
tmp dir), over real ``wss://`` on 127.0.0.1 with raw y-protocols frames: no token, a bad token
and a token without the shard are refused before anything of the shard is sent; a read-only
token syncs but its change is refused (permission-denied message, then FORBIDDEN) and nothing
is applied; a write token's change lands; a mesh-secret agent (no CA to verify tokens) refuses.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Agent
from crdtsync.cli import main
from crdtsync.errors import CloseCode
from crdtsync.security.credentials import Credentials
from crdtsync.yjs import sync

MESH = "orchard"
SHARD = "tasks/board"


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    cli("keys", "init-mesh", "--dir", str(d), "--mesh", MESH)
    cli("keys", "issue", "alpha", "--dir", str(d))
    return d


@pytest.fixture
async def agent(keys: Path, tmp_path: Path) -> AsyncIterator[Agent]:
    creds = Credentials.from_dir(keys, "alpha")
    async with Agent(
        "alpha", tmp_path / "alpha", listen="wss://127.0.0.1:0", credentials=creds
    ) as a:
        shard = await a.shard(SHARD)
        shard["secret"] = "plan"
        yield a


def _client_tls(keys: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the door certificate names nobody
    ctx.load_verify_locations(keys / "ca.pem")
    return ctx


def _url(agent: Agent, shard: str = SHARD, token: str | None = None) -> str:
    assert agent.address is not None
    return f"{agent.address}/yjs/{shard}" + (f"?token={token}" if token else "")


async def _refused(ws: ClientConnection) -> tuple[list[bytes | str], int | None]:
    frames: list[bytes | str] = []
    try:
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 5))
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd is not None else None


def _an_update() -> bytes:
    doc: pycrdt.Doc[pycrdt.Map[str]] = pycrdt.Doc()
    doc.get("root", type=pycrdt.Map)["intruder"] = "x"
    return doc.get_update()


async def test_without_a_valid_token_nothing_is_sent(agent: Agent, keys: Path) -> None:
    other = cli("keys", "token", "dash", "--dir", str(keys), "--read", "other/*")
    for url, code in (
        (_url(agent), CloseCode.UNAUTHENTICATED),
        (_url(agent, token="not-a-jwt"), CloseCode.UNAUTHENTICATED),
        (_url(agent, token=other), CloseCode.FORBIDDEN),
    ):
        async with connect(url, ssl=_client_tls(keys)) as ws:
            frames, got = await _refused(ws)
        assert (frames, got) == ([], code)


async def test_read_only_token_syncs_but_cannot_write(agent: Agent, keys: Path) -> None:
    token = cli("keys", "token", "dash", "--dir", str(keys), "--read", "tasks/*")
    async with connect(_url(agent, token=token), ssl=_client_tls(keys)) as ws:
        first = sync.decode(bytes(await ws.recv()))
        assert (first.kind, first.sub) == (sync.SYNC, sync.STEP1)
        await ws.send(sync.encode_sync(sync.STEP1, b"\x00"))
        step2 = sync.decode(bytes(await ws.recv()))
        assert step2.sub == sync.STEP2
        doc: pycrdt.Doc[pycrdt.Map[str]] = pycrdt.Doc()
        doc.apply_update(step2.payload)
        assert doc.get("root", type=pycrdt.Map)["secret"] == "plan"
        await ws.send(sync.encode_sync(sync.STEP2, b"\x00\x00"))  # an empty answer is fine
        await ws.send(sync.encode_sync(sync.UPDATE, _an_update()))
        frames, code = await _refused(ws)
    assert code == CloseCode.FORBIDDEN
    assert frames and bytes(frames[-1])[0] == sync.AUTH  # permission denied, with the reason
    shard = await agent.shard(SHARD)
    assert "intruder" not in shard.snapshot()


async def test_write_token_changes_land(agent: Agent, keys: Path) -> None:
    token = cli("keys", "token", "ed", "--dir", str(keys), "--write", "tasks/*")
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(_url(agent), ssl=_client_tls(keys), additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(sync.encode_sync(sync.UPDATE, _an_update()))
        shard = await agent.shard(SHARD)
        for _ in range(100):
            if "intruder" in shard.snapshot():
                break
            await asyncio.sleep(0.02)
        assert shard.snapshot()["intruder"] == "x"


async def test_mesh_secret_agent_cannot_verify_tokens(keys: Path, tmp_path: Path) -> None:
    token = cli("keys", "token", "ed", "--dir", str(keys), "--write", "tasks/*")
    creds = Credentials.from_dir(keys, "alpha", mode="secret")
    async with Agent("alpha", tmp_path / "s", listen="ws://127.0.0.1:0", credentials=creds) as a:
        async with connect(_url(a, token=token)) as ws:
            frames, code = await _refused(ws)
        assert (frames, code) == ([], CloseCode.UNAUTHENTICATED)
