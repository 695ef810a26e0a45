"""Revocation while connected, over real websockets on 127.0.0.1 with a mesh CA made by
`crdtsync keys` in a tmp dir: a running agent that sees a new revoked.pem closes the open
connections of the revoked agent with CERT_REVOKED (4016) within a bounded time, counts it,
refuses its redials and stops counting its acks; an honest peer keeps syncing; nothing the
revoked agent writes after the revocation is applied or persisted. The same for a Yjs client
whose token is revoked.

The revoked agent keeps a copy of the keys dir made before the revocation (as on another
machine that never gets the new list): only the others learn of it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from crdtsync.transports._ws_admission import CappedConnection
from meshkeys import cli, make_keys
from polling import until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Agent, wire
from crdtsync.errors import CloseCode
from crdtsync.gossip import GossipConfig
from crdtsync.security.acl import Permissions
from crdtsync.security.ca import MeshCA
from crdtsync.security.credentials import Credentials
from crdtsync.security.tokens import issue_token
from crdtsync.yjs import sync

CFG = GossipConfig(
    push_interval=0.02,
    backoff_base=0.05,
    backoff_max=0.5,
    dial_grace=0.2,
    anti_entropy_interval=1.0,
)
MESH = "orchard"
SHARD = "tasks/plan"
#: How long a revocation may take to close a connection: the agent looks every second.
BOUND = 5.0


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return make_keys(tmp_path / "keys", MESH, "alpha", "beta", "mallory")


class _Closes:
    """An observer in front of the agent's own: records each peer connection's close code."""

    def __init__(self, then: Any) -> None:
        self.then = then
        self.codes: list[tuple[int, str]] = []

    def closed(self, code: int, by: str) -> None:
        self.codes.append((code, by))
        self.then.closed(code, by)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.then, name)


def _record_closes(agent: Agent) -> _Closes:
    transport: Any = agent._transport  # (the websocket transport the agent started)
    rec = _Closes(transport.observer)
    transport.observer = rec
    return rec


def _connected(agent: Agent) -> set[str]:
    return {p.name for p in agent.peers if p.state == "connected"}


async def test_revocation_closes_the_open_connections_of_the_revoked_agent(
    keys: Path, tmp_path: Path
) -> None:
    stale = tmp_path / "mallory-keys"  # mallory's copy: it never sees the new list
    shutil.copytree(keys, stale)
    alpha = Agent(
        "alpha",
        tmp_path / "alpha",
        listen="wss://127.0.0.1:0",
        gossip=CFG,
        credentials=Credentials.from_dir(keys, "alpha"),
    )
    async with alpha:
        assert alpha.address is not None
        (await alpha.shard(SHARD))["from"] = "alpha"
        async with (
            Agent(
                "beta",
                tmp_path / "beta",
                listen="wss://127.0.0.1:0",
                peers=[alpha.address],
                gossip=CFG,
                credentials=Credentials.from_dir(keys, "beta"),
            ) as beta,
            Agent(
                "mallory",
                tmp_path / "mallory",
                listen="wss://127.0.0.1:0",
                peers=[alpha.address],
                gossip=CFG,
                credentials=Credentials.from_dir(stale, "mallory"),
            ) as mallory,
        ):
            closes = _record_closes(mallory)
            await until(lambda: _connected(mallory) == {"alpha", "beta"})
            await until(lambda: _connected(alpha) == {"beta", "mallory"})
            m_shard = await mallory.shard(SHARD)
            m_shard["m"] = "before"
            a_shard = await alpha.shard(SHARD)
            b_shard = await beta.shard(SHARD)
            await until(lambda: a_shard.snapshot().get("m") == "before")
            await until(lambda: b_shard.snapshot().get("m") == "before")
            gate: Any = alpha.core.gate if alpha.core is not None else None
            assert gate.counts_as_replica("mallory", SHARD)  # its acks count, until...

            cli("keys", "revoke", "mallory", "--dir", str(keys))
            t0 = time.monotonic()
            await until(
                lambda: (
                    (CloseCode.CERT_REVOKED, "peer") in closes.codes
                    and "alpha" not in _connected(mallory)
                    and "beta" not in _connected(mallory)
                ),
                timeout=BOUND,
            )
            took = time.monotonic() - t0
            assert took < BOUND
            assert alpha.counters["revoked_closed"] == 1
            assert beta.counters["revoked_closed"] == 1
            assert not gate.counts_as_replica("mallory", SHARD)  # ...its acks stop counting

            # What mallory writes now reaches nobody; its redials are refused (4016).
            m_shard["m"] = "after"
            m_shard["late"] = 1
            refused = alpha.counters.get("auth_failed.cert_revoked", 0)
            await until(lambda: alpha.counters.get("auth_failed.cert_revoked", 0) > refused)
            # The honest peer keeps syncing, both ways.
            b_shard["b"] = "after"
            a_shard["a"] = "after"
            await until(lambda: a_shard.snapshot().get("b") == "after")
            await until(lambda: b_shard.snapshot().get("a") == "after")
            await asyncio.sleep(1.0)  # (anti-entropy rounds; mallory keeps redialling)
            for shard in (a_shard, b_shard):
                assert shard.snapshot().get("m") == "before"
                assert "late" not in shard.snapshot()
            assert _connected(alpha) == {"beta"}
    # Nothing of it was persisted either: alpha's store, reopened alone.
    async with Agent("alpha", tmp_path / "alpha") as reopened:
        snap = (await reopened.shard(SHARD)).snapshot()
        assert snap.get("m") == "before" and "late" not in snap and snap.get("b") == "after"


async def test_reload_revocations_closes_at_once(
    keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent.reload_revocations(): no wait for the timer (one second between looks). A Push
    the revoked agent sends right after it, before it can have read the close, reaches the
    agent's socket (checked: it is read there) and is not applied."""
    read_after: list[str] = []
    armed = False
    recv = CappedConnection.recv

    async def counting_recv(self: CappedConnection, *args: Any, **kwargs: Any) -> Any:
        data = await recv(self, *args, **kwargs)
        if armed and isinstance(data, bytes):
            read_after.append(type(wire.decode(data)).__name__)
        return data

    monkeypatch.setattr(CappedConnection, "recv", counting_recv)
    stale = tmp_path / "mallory-keys"
    shutil.copytree(keys, stale)
    async with Agent(
        "alpha",
        tmp_path / "alpha",
        listen="wss://127.0.0.1:0",
        gossip=CFG,
        credentials=Credentials.from_dir(keys, "alpha"),
    ) as alpha:
        transport: Any = alpha._transport
        transport.revocation_interval = 3600.0  # the timer would not help here
        assert alpha.address is not None
        async with Agent(
            "mallory",
            tmp_path / "mallory",
            peers=[alpha.address],
            gossip=CFG,
            credentials=Credentials.from_dir(stale, "mallory"),
        ) as mallory:
            closes = _record_closes(mallory)
            await until(lambda: _connected(alpha) == {"mallory"})
            assert alpha.reload_revocations() == 0  # nothing revoked yet: nothing closed
            m_shard = await mallory.shard(SHARD)
            m_shard["m"] = "before"
            a_shard = await alpha.shard(SHARD)
            await until(lambda: a_shard.snapshot().get("m") == "before")
            MeshCA.load(keys).revoke("mallory")
            armed = True
            assert alpha.reload_revocations() == 1
            # Written and pushed at once (its window forced), before mallory can have read
            # alpha's close: what arrives on the closing link is not handed to the core.
            m_shard["m"] = "after"
            mallory._send_outgoing(closing=True)  # type: ignore[attr-defined]
            assert mallory.core is not None
            mallory.core.tick(time.monotonic() + 1.0)  # (past its push window)
            mallory._transport.kick()  # type: ignore[attr-defined,union-attr]
            await until(lambda: (CloseCode.CERT_REVOKED, "peer") in closes.codes, timeout=BOUND)
            assert alpha.counters["revoked_closed"] == 1
            await asyncio.sleep(0.5)
            assert "Push" in read_after  # it did arrive...
            assert a_shard.snapshot().get("m") == "before"  # ...and was not applied


async def test_a_revoked_token_closes_its_open_yjs_connection(keys: Path, tmp_path: Path) -> None:
    ca = MeshCA.load(keys)
    token = issue_token(ca, "editor", Permissions(read=("**",), write=("**",)))
    honest = issue_token(ca, "viewer", Permissions(read=("**",), write=()))
    async with Agent(
        "alpha",
        tmp_path / "alpha",
        listen="wss://127.0.0.1:0",
        gossip=CFG,
        credentials=Credentials.from_dir(keys, "alpha"),
    ) as alpha:
        assert alpha.address is not None
        url = alpha.address + f"/yjs/{SHARD}?token="
        ssl_ctx = _client_ssl(keys)
        async with (
            connect(url + token, ssl=ssl_ctx, proxy=None) as ws,
            connect(url + honest, ssl=ssl_ctx, proxy=None) as other,
        ):
            first = await ws.recv()
            assert isinstance(first, bytes)
            assert isinstance(await other.recv(), bytes)
            cli("keys", "revoke", "editor", "--dir", str(keys))
            try:
                async with asyncio.timeout(BOUND):
                    while True:
                        await ws.recv()
            except ConnectionClosed:
                pass
            assert ws.protocol.close_rcvd is not None
            assert ws.protocol.close_rcvd.code == CloseCode.CERT_REVOKED
            assert alpha.counters["yjs.revoked_closed"] == 1
            # the other client is still served
            await other.send(sync.encode_sync(sync.STEP1, b"\x00"))
            assert isinstance(await asyncio.wait_for(other.recv(), BOUND), bytes)


def _client_ssl(keys: Path) -> Any:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(keys / "ca.pem")
    return ctx


def test_the_revocation_list_is_read_once_per_change(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    creds = Credentials.from_dir(keys, "alpha")
    r0 = creds.revision
    serials = MeshCA.load(keys).revoke("mallory")
    assert set(serials) <= creds.revoked() and creds.revision == r0 + 1
    assert creds.revoked() and creds.revision == r0 + 1  # unchanged file: nothing re-read
    good = creds.revoked()
    (keys / "revoked.pem").write_bytes(b"not a CRL")
    with caplog.at_level("ERROR"):
        for _ in range(3):  # the transport looks every second: one line, not one a second
            assert creds.revoked() == good  # a bad list keeps the previous one
    assert sum("keeping the previous revocation list" in r.message for r in caplog.records) == 1


def test_the_gate_forgets_a_revoked_agent(keys: Path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from crdtsync.security.ca import agent_paths, load_certificate
    from crdtsync.security.gate import CredentialGate

    creds = Credentials.from_dir(keys, "alpha")
    gate = CredentialGate(creds)
    der = load_certificate(agent_paths(keys, "mallory")[0]).public_bytes(Encoding.DER)
    identity = creds.verify_peer(der)
    gate.learn(identity)
    assert gate.counts_as_replica("mallory", SHARD)
    assert der in gate.certificates()
    assert gate.forget_revoked(creds.revoked()) == []  # nothing revoked yet
    MeshCA.load(keys).revoke("mallory")
    assert gate.forget_revoked(creds.revoked()) == ["mallory"]
    assert not gate.counts_as_replica("mallory", SHARD)  # its acks stop counting
    assert der not in gate.certificates()  # not passed on any more
    # an announcement about it is refused, not taken unchecked as for an unknown agent
    assert not gate.verify_announcement("mallory", "wss://127.0.0.1:1", 5, None)
    assert gate.verify_announcement("stranger", "wss://127.0.0.1:1", 5, None)
    assert gate.learn_certificates((der,)) == ()  # passed on by a peer that does not know yet
