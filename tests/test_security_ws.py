"""Authentication over real websockets on 127.0.0.1 with a mesh CA made by `crdtsync keys` in a
tmp dir: strangers, wrong secrets, replayed handshakes, expired and revoked certificates and
Hellos under another name are refused with their close code before learning anything; two
authenticated agents replicate over wss:// (mutual TLS) and over the mesh-secret handshake;
a non-loopback listen without credentials is refused before anything is bound."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from crdtsync import Agent, wire
from crdtsync.cli import main
from crdtsync.errors import CloseCode, InsecureListen
from crdtsync.gossip import GossipConfig
from crdtsync.messages import PROTOCOL_VERSION, Hello
from crdtsync.security.ca import MeshCA, agent_paths
from crdtsync.security.credentials import Credentials
from crdtsync.security.handshake import SecretHandshake

CFG = GossipConfig(
    push_interval=0.02,
    backoff_base=0.05,
    backoff_max=0.5,
    dial_grace=0.2,
    anti_entropy_interval=1.0,
)
MESH = "orchard"
SHARD = "secrets/plan"


def cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    cli("keys", "init-mesh", "--dir", str(d), "--mesh", MESH)
    for name in ("alpha", "beta"):
        cli("keys", "issue", name, "--dir", str(d))
    return d


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def secret_agent(keys: Path, tmp_path: Path) -> AsyncIterator[Agent]:
    creds = Credentials.from_dir(keys, "alpha", mode="secret")
    async with Agent(
        "alpha", tmp_path / "alpha", listen="ws://127.0.0.1:0", gossip=CFG, credentials=creds
    ) as agent:
        shard = await agent.shard(SHARD)
        shard["k"] = "v"
        yield agent


@pytest.fixture
async def tls_agent(keys: Path, tmp_path: Path) -> AsyncIterator[Agent]:
    creds = Credentials.from_dir(keys, "alpha")
    assert creds.tls
    async with Agent(
        "alpha", tmp_path / "alpha", listen="wss://127.0.0.1:0", gossip=CFG, credentials=creds
    ) as agent:
        await agent.shard(SHARD)
        yield agent


async def _drain(ws: ClientConnection) -> tuple[list[bytes | str], int | None]:
    """Every frame the server sends until it closes, and its close code."""
    frames: list[bytes | str] = []
    try:
        async with asyncio.timeout(10):
            while True:
                frames.append(await ws.recv())
    except ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    return frames, rcvd.code if rcvd is not None else None


def _learned_nothing(frames: list[bytes | str]) -> None:
    blob = b"".join(f if isinstance(f, bytes) else f.encode() for f in frames)
    for secret in (MESH, "alpha", SHARD, "127.0.0.1"):
        assert secret.encode() not in blob, secret


async def _send(ws: ClientConnection, frame: bytes) -> None:
    """Send unless the server already closed (it may refuse before reading anything)."""
    try:
        await ws.send(frame)
    except ConnectionClosed:
        pass


def _hello(name: str) -> bytes:
    return wire.encode(Hello(PROTOCOL_VERSION, MESH, name, None))


def _tls_client(keys: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(keys / "ca.pem")
    if name is not None:
        cert, key = agent_paths(keys, name)
        ctx.load_cert_chain(cert, key)
    return ctx


def beta_ring_name(keys: Path, der: bytes) -> str:
    return Credentials.from_dir(keys, "beta").keyring().add_certificate(der).name


# -- mesh-secret mode ------------------------------------------------------------------------


async def test_stranger_is_refused_and_learns_nothing(secret_agent: Agent) -> None:
    assert secret_agent.address is not None
    async with connect(secret_agent.address, proxy=None) as ws:
        await _send(ws, _hello("stranger"))  # a stranger speaking the protocol correctly
        frames, code = await _drain(ws)
    assert code == CloseCode.UNAUTHENTICATED
    assert frames == []
    _learned_nothing(frames)
    # a silent stranger gets nothing either (it does not even learn the server's nonce format)
    async with connect(secret_agent.address, proxy=None) as ws:
        await _send(ws, b"\x00")
        frames, code = await _drain(ws)
    assert code == CloseCode.UNAUTHENTICATED and frames == []
    await _until(lambda: secret_agent.counters.get("auth_failed.unauthenticated", 0) == 2)
    assert "auth_ok" not in secret_agent.counters


async def test_a_silent_stranger_does_not_delay_shutdown(keys: Path, tmp_path: Path) -> None:
    creds = Credentials.from_dir(keys, "alpha", mode="secret")
    agent = Agent(
        "alpha", tmp_path / "alpha", listen="ws://127.0.0.1:0", gossip=CFG, credentials=creds
    )
    await agent.start()
    try:
        assert agent.address is not None
        async with connect(agent.address, proxy=None) as ws:
            await asyncio.sleep(0.2)  # connected, says nothing
            t0 = time.monotonic()
            await agent.close()
            assert time.monotonic() - t0 < 3.0
            frames, code = await _drain(ws)
        assert code == CloseCode.GOING_AWAY and frames == []
        assert "auth_failed" not in agent.counters  # shutting down is not a failed authentication
    finally:
        await agent.close()


async def _client_handshake(ws: ClientConnection, hs: SecretHandshake) -> list[bytes]:
    """Drive a client handshake over ``ws``; returns the frames the client sent."""
    sent = [hs.start()]
    await ws.send(sent[0])
    while hs.peer is None:
        reply = hs.receive(await ws.recv())
        if reply is not None:
            sent.append(reply)
            await ws.send(reply)
    return sent


async def test_wrong_secret_is_refused(secret_agent: Agent) -> None:
    assert secret_agent.address is not None
    async with connect(secret_agent.address, proxy=None) as ws:
        hs = SecretHandshake(b"w" * 32, MESH, "beta", client=True)
        await ws.send(hs.start())
        m3 = hs.receive(await ws.recv())
        assert m3 is not None
        await ws.send(m3)
        frames, code = await _drain(ws)
    assert code == CloseCode.UNAUTHENTICATED and frames == []
    assert secret_agent.counters["auth_failed.unauthenticated"] == 1


async def test_replayed_handshake_is_refused(secret_agent: Agent, keys: Path) -> None:
    assert secret_agent.address is not None
    secret = Credentials.from_dir(keys, "beta", mode="secret").secret
    assert secret is not None
    async with connect(secret_agent.address, proxy=None) as ws:
        sent = await _client_handshake(ws, SecretHandshake(secret, MESH, "beta", client=True))
        await ws.send(_hello("beta"))  # authenticated, and our Hello sent: now its Hello comes
        first = await ws.recv()
        assert isinstance(first, bytes) and isinstance(wire.decode(first), Hello)
    # replay of the recorded client transcript, frame by frame
    async with connect(secret_agent.address, proxy=None) as ws:
        await _send(ws, sent[0])
        frames, code = await _drain(ws)
    assert code == CloseCode.REPLAYED and frames == []
    # the recorded proof on a fresh nonce
    async with connect(secret_agent.address, proxy=None) as ws:
        fresh = SecretHandshake(secret, MESH, "beta", client=True)
        await ws.send(fresh.start())
        await ws.recv()  # the server's new nonce
        await _send(ws, sent[1])
        frames, code = await _drain(ws)
    assert code == CloseCode.UNAUTHENTICATED and frames == []
    assert secret_agent.counters["auth_failed.replayed"] == 1


async def test_hello_under_another_name_is_refused(secret_agent: Agent, keys: Path) -> None:
    assert secret_agent.address is not None
    secret = Credentials.from_dir(keys, "beta", mode="secret").secret
    assert secret is not None
    async with connect(secret_agent.address, proxy=None) as ws:
        await _client_handshake(ws, SecretHandshake(secret, MESH, "beta", client=True))
        await _send(ws, _hello("gamma"))
        _frames, code = await _drain(ws)
    assert code == CloseCode.IDENTITY_MISMATCH
    assert secret_agent.peers == () or all(p.name != "gamma" for p in secret_agent.peers)


async def test_two_agents_replicate_over_the_secret_handshake(
    secret_agent: Agent, keys: Path, tmp_path: Path
) -> None:
    creds = Credentials.from_dir(keys, "beta", mode="secret")
    assert secret_agent.address is not None
    async with Agent(
        "beta", tmp_path / "beta", peers=[secret_agent.address], gossip=CFG, credentials=creds
    ) as beta:
        await _until(lambda: SHARD in beta.shard_names())
        shard = await beta.shard(SHARD)
        await _until(lambda: shard.snapshot().get("k") == "v")
        info = beta._transport.connections()  # type: ignore[attr-defined,union-attr]
        assert info["alpha"].identity is not None and info["alpha"].identity.method == "secret"
    assert secret_agent.counters["auth_ok"] >= 1


# -- mutual TLS --------------------------------------------------------------------------------


async def test_two_agents_replicate_over_wss(tls_agent: Agent, keys: Path, tmp_path: Path) -> None:
    assert tls_agent.address is not None and tls_agent.address.startswith("wss://127.0.0.1:")
    (await tls_agent.shard(SHARD))["k"] = "tls"
    async with Agent(
        "beta",
        tmp_path / "beta",
        peers=[tls_agent.address],
        gossip=CFG,
        credentials=Credentials.from_dir(keys, "beta"),
    ) as beta:
        await _until(lambda: SHARD in beta.shard_names())
        shard = await beta.shard(SHARD)
        await _until(lambda: shard.snapshot().get("k") == "tls")
        ident = beta._transport.connections()["alpha"].identity  # type: ignore[attr-defined,union-attr]
        assert ident is not None and ident.name == "alpha" and ident.method == "tls"
        assert ident.certificate is not None  # the lead's KeyRing can take it from here
        assert beta_ring_name(keys, ident.certificate) == "alpha"
    assert tls_agent.counters["auth_ok"] >= 1


async def test_tls_client_without_certificate_is_refused(tls_agent: Agent, keys: Path) -> None:
    assert tls_agent.address is not None
    async with connect(tls_agent.address, ssl=_tls_client(keys, None), proxy=None) as ws:
        await _send(ws, _hello("stranger"))
        frames, code = await _drain(ws)
    assert code == CloseCode.UNAUTHENTICATED and frames == []
    assert tls_agent.counters["auth_failed.unauthenticated"] == 1


async def test_hello_names_only_shards_the_peer_may_read(tls_agent: Agent, keys: Path) -> None:
    assert tls_agent.address is not None
    await tls_agent.shard("tasks/a")
    cli("keys", "issue", "reader", "--dir", str(keys), "--read", "tasks/*")
    async with connect(tls_agent.address, ssl=_tls_client(keys, "reader"), proxy=None) as ws:
        ident = await ws.recv()
        assert isinstance(ident, bytes) and ident.startswith(b"CSI1")  # the agent's certificate
        await ws.send(_hello("reader"))  # the agent's Hello answers ours
        hello = wire.decode(await ws.recv())  # type: ignore[arg-type]
    assert isinstance(hello, Hello) and hello.name == "alpha"
    assert hello.shards == ()  # no shard at all (issue #11), so never secrets/plan
    assert set(tls_agent.shard_names()) == {"tasks/a", SHARD}


async def test_tls_stranger_learns_no_name_from_the_server_certificate(
    tls_agent: Agent, keys: Path
) -> None:
    assert tls_agent.address is not None
    async with connect(tls_agent.address, ssl=_tls_client(keys, None), proxy=None) as ws:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        server_cert = ssl_object.getpeercert(binary_form=True)
        frames, code = await _drain(ws)
    assert server_cert and code == CloseCode.UNAUTHENTICATED and frames == []
    _learned_nothing([server_cert])  # the door certificate names neither agent nor mesh


async def test_a_member_cannot_pass_off_another_members_certificate(keys: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from crdtsync.errors import ProtocolError
    from crdtsync.security.ca import door_path
    from crdtsync.security.tls import IDENTITY_MAGIC

    me = Credentials.from_dir(keys, "beta")
    beta_door = x509.load_pem_x509_certificate(door_path(keys, "beta").read_bytes()).public_bytes(
        Encoding.DER
    )
    alpha_cert = x509.load_pem_x509_certificate(agent_paths(keys, "alpha")[0].read_bytes())
    beta_cert = x509.load_pem_x509_certificate(agent_paths(keys, "beta")[0].read_bytes())
    # beta's TLS key, alpha's name: refused
    with pytest.raises(ProtocolError) as err:
        me.verify_server(beta_door, IDENTITY_MAGIC + alpha_cert.public_bytes(Encoding.DER))
    assert err.value.code is CloseCode.UNAUTHENTICATED
    assert (
        me.verify_server(beta_door, IDENTITY_MAGIC + beta_cert.public_bytes(Encoding.DER)).name
        == "beta"
    )


async def test_certificate_of_another_ca_fails_tls(tls_agent: Agent, tmp_path: Path) -> None:
    other = tmp_path / "other"
    cli("keys", "init-mesh", "--dir", str(other), "--mesh", MESH)
    cli("keys", "issue", "alpha", "--dir", str(other))
    ctx = _tls_client(other, "alpha")
    ctx.verify_mode = ssl.CERT_NONE  # even if the stranger does not check us, we check it
    assert tls_agent.address is not None
    with pytest.raises((ssl.SSLError, ConnectionClosed, InvalidHandshake, OSError)):
        async with connect(tls_agent.address, ssl=ctx, proxy=None, open_timeout=5) as ws:
            await _send(ws, _hello("alpha"))
            await ws.recv()  # TLS 1.3: the server's verdict on our certificate arrives here


async def test_expired_and_revoked_certificates_are_refused(tls_agent: Agent, keys: Path) -> None:
    assert tls_agent.address is not None
    MeshCA.load(keys).issue("old", days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    async with connect(tls_agent.address, ssl=_tls_client(keys, "old"), proxy=None) as ws:
        await _send(ws, _hello("old"))
        frames, code = await _drain(ws)
    assert code == CloseCode.CERT_EXPIRED and frames == []
    cli("keys", "issue", "gone", "--dir", str(keys))
    async with connect(tls_agent.address, ssl=_tls_client(keys, "gone"), proxy=None) as ws:
        assert isinstance(await ws.recv(), bytes)  # valid: it gets the agent's certificate
    cli("keys", "revoke", "gone", "--dir", str(keys))  # the agent re-reads revoked.pem
    async with connect(tls_agent.address, ssl=_tls_client(keys, "gone"), proxy=None) as ws:
        await _send(ws, _hello("gone"))
        frames, code = await _drain(ws)
    assert code == CloseCode.CERT_REVOKED and frames == []
    _learned_nothing(frames)
    assert tls_agent.counters["auth_failed.cert_expired"] == 1
    assert tls_agent.counters["auth_failed.cert_revoked"] == 1


async def test_tls_hello_under_another_name_is_refused(tls_agent: Agent, keys: Path) -> None:
    assert tls_agent.address is not None
    async with connect(tls_agent.address, ssl=_tls_client(keys, "beta"), proxy=None) as ws:
        await _send(ws, _hello("gamma"))
        _frames, code = await _drain(ws)
    assert code == CloseCode.IDENTITY_MISMATCH


async def test_a_revoked_agent_is_refused_by_the_mesh_and_knows_it(
    tls_agent: Agent, keys: Path, tmp_path: Path
) -> None:
    assert tls_agent.address is not None
    creds = Credentials.from_dir(keys, "beta")  # loaded before the revocation
    cli("keys", "revoke", "beta", "--dir", str(keys))
    async with Agent(
        "beta", tmp_path / "beta", peers=[tls_agent.address], gossip=CFG, credentials=creds
    ) as beta:
        await _until(lambda: beta.counters.get("auth_refused", 0) >= 1)
        assert SHARD not in beta.shard_names()
        assert all(p.state != "connected" for p in beta.peers)
    assert tls_agent.counters["auth_failed.cert_revoked"] >= 1


# -- secure by default -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "listen", ["ws://0.0.0.0:0", "ws://[::]:0", "ws://192.0.2.1:0", "ws://example.org:0"]
)
def test_non_loopback_listen_without_credentials_is_refused_before_binding(
    listen: str, tmp_path: Path
) -> None:
    with pytest.raises(InsecureListen, match="crdtsync keys init-mesh"):
        Agent("a", tmp_path / "a", listen=listen)  # raises in the constructor: nothing is bound
    assert not (tmp_path / "a").exists()  # not even the store was opened
    Agent("a", tmp_path / "a", listen=listen, insecure=True)  # allowed when asked; never started
    Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0")
    Agent("a", tmp_path / "a", listen="ws://localhost:0")


def test_cli_agent_refuses_non_loopback_listen_without_keys(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["agent", "--name", "a", "--data", str(tmp_path / "a"), "--listen", "ws://0.0.0.0:0"]
    )
    assert result.exit_code != 0
    assert "crdtsync keys init-mesh" in result.output and "--insecure" in result.output


# -- real processes ----------------------------------------------------------------------------


async def _next_event(
    proc: asyncio.subprocess.Process,
    want: Callable[[dict[str, object]], bool],
    timeout: float = 30.0,
) -> dict[str, object]:
    import json

    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"process {proc.pid} ended before the awaited event")
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if want(event):
                return event  # type: ignore[no-any-return]


async def test_two_agent_processes_replicate_over_wss_and_a_stranger_process_is_refused(
    keys: Path, tmp_path: Path
) -> None:
    import signal
    import sys

    other = tmp_path / "other"
    cli("keys", "init-mesh", "--dir", str(other), "--mesh", MESH)
    cli("keys", "issue", "mallory", "--dir", str(other))

    async def spawn(name: str, keys_dir: Path, *extra: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "crdtsync.cli",
            "agent",
            "--name",
            name,
            "--data",
            str(tmp_path / name),
            "--keys",
            str(keys_dir),
            "--shard",
            "board",
            "--status-interval",
            "0.2",
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    procs = []
    try:
        alpha = await spawn(
            "alpha", keys, "--listen", "wss://127.0.0.1:0", "--write", "5", "--write-rate", "100"
        )
        procs.append(alpha)
        ready = await _next_event(alpha, lambda e: e.get("event") == "ready")
        address = str(ready["address"])
        assert address.startswith("wss://127.0.0.1:")
        beta = await spawn("beta", keys, "--peer", address)
        procs.append(beta)
        mallory = await spawn("mallory", other, "--peer", address)
        procs.append(mallory)
        status = await _next_event(
            beta,
            lambda e: e.get("event") == "status" and e["shards"]["board"]["keys"] == 5,  # type: ignore[index]
        )
        assert status["connected"] == ["alpha"]
        seen = await _next_event(
            alpha, lambda e: e.get("event") == "status" and "beta" in e["connected"]
        )  # type: ignore[operator]
        assert "mallory" not in seen["known"]  # type: ignore[operator]
        for _ in range(10):  # two seconds of a process dialling with another CA's certificate
            late = await _next_event(mallory, lambda e: e.get("event") == "status")
            assert late["connected"] == [] and late["shards"]["board"]["keys"] == 0  # type: ignore[index]
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            await asyncio.wait_for(p.communicate(), 30)
