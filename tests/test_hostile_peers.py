"""Hostile peers against an authenticated mesh, over real websockets on 127.0.0.1.

A mesh CA and certificates are made by ``crdtsync keys`` in a tmp dir: ``alpha`` and ``beta``
(honest, full members), ``mallory`` (a full member that lies: forged acks and membership) and
``reader`` (may read ``tasks/*`` only, write nothing). Each attack of issue 10 speaks the
protocol correctly, frame by frame, from a raw client authenticated with mutual TLS; each test
checks that the attack is refused, that nothing of it is applied or stored, and that the honest
pair alpha-beta keeps replicating meanwhile. (The stranger, wrong-secret, replayed-handshake,
expired/revoked-certificate cases are in ``test_security_ws.py``.)
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pycrdt
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Agent, wire
from crdtsync.cli import main
from crdtsync.errors import CloseCode, ReplicationTimeout
from crdtsync.gossip import GossipConfig, GossipCore
from crdtsync.messages import (
    PROTOCOL_VERSION,
    Ack,
    Diff,
    Hello,
    Message,
    PeerEntry,
    PeerList,
    Push,
    ReadReply,
    ReadRequest,
    RelayedAck,
    ShardState,
    SyncRequest,
)
from crdtsync.security.ca import agent_paths
from crdtsync.security.credentials import Credentials
from crdtsync.yjs.state import decode_state_vector, encode_delete_set

CFG = GossipConfig(
    push_interval=0.02,
    backoff_base=0.05,
    backoff_max=0.5,
    dial_grace=0.2,
    anti_entropy_interval=0.3,
)
MESH = "orchard"
TASK = "tasks/a"
SECRET = "secrets/plan"
EMPTY_SV = b"\x00"


def cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    cli("keys", "init-mesh", "--dir", str(d), "--mesh", MESH)
    for name in ("alpha", "beta", "mallory"):
        cli("keys", "issue", name, "--dir", str(d))
    cli("keys", "issue", "reader", "--dir", str(d), "--read", "tasks/*")
    return d


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@dataclass
class Pair:
    alpha: Agent
    beta: Agent
    keys: Path

    @property
    def core(self) -> GossipCore:
        core = self.alpha.core
        assert core is not None
        return core

    async def still_replicating(self, value: str) -> None:
        """The honest pair goes on: a write on alpha reaches beta, one on beta reaches alpha."""
        (await self.alpha.shard(TASK))["honest"] = value
        b = await self.beta.shard(TASK)
        await _until(lambda: b.snapshot().get("honest") == value)
        b["back"] = value
        a = await self.alpha.shard(TASK)
        await _until(lambda: a.snapshot().get("back") == value)


@pytest.fixture
async def pair(keys: Path, tmp_path: Path) -> AsyncIterator[Pair]:
    async with Agent(
        "alpha",
        tmp_path / "alpha",
        listen="wss://127.0.0.1:0",
        gossip=CFG,
        credentials=Credentials.from_dir(keys, "alpha"),
    ) as alpha:
        (await alpha.shard(TASK))["k"] = "v"
        (await alpha.shard(SECRET))["balance"] = 100
        assert alpha.address is not None
        async with Agent(
            "beta",
            tmp_path / "beta",
            peers=[alpha.address],
            gossip=CFG,
            credentials=Credentials.from_dir(keys, "beta"),
        ) as beta:
            await _until(lambda: {TASK, SECRET} <= set(beta.shard_names()))
            b = await beta.shard(TASK)
            await _until(lambda: b.snapshot().get("k") == "v")
            yield Pair(alpha, beta, keys)


def _tls(keys: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(keys / "ca.pem")
    if name is not None:
        ctx.load_cert_chain(*agent_paths(keys, name))
    return ctx


class Raw:
    """A hand-driven peer: mutual TLS as ``name``, then Hellos, then whatever it sends."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[bytes] = []
        self.messages: list[Message] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.ws.recv()
                assert isinstance(data, bytes)
                self.frames.append(data)
                if not data.startswith(b"CSI1"):
                    self.messages.append(wire.decode(data))
        except ConnectionClosed:
            pass

    async def send(self, *msgs: Message) -> None:
        for msg in msgs:
            await self.ws.send(wire.encode(msg))

    def received(self, kind: type) -> list:
        return [m for m in self.messages if isinstance(m, kind)]

    @property
    def close_code(self) -> int | None:
        rcvd = self.ws.protocol.close_rcvd
        return rcvd.code if rcvd is not None else None


async def _raw(pair: Pair, cert: str, hello_name: str | None = None) -> Raw:
    assert pair.alpha.address is not None
    ws = await connect(pair.alpha.address, ssl=_tls(pair.keys, cert), proxy=None)
    raw = Raw(ws)
    await raw.send(Hello(PROTOCOL_VERSION, MESH, hello_name or cert, None))
    await _until(lambda: raw.received(Hello) or raw.close_code is not None)
    return raw


def _update(base: bytes, change: Callable[[pycrdt.Map], None]) -> bytes:
    """A Yjs update on top of ``base`` (a shard's full state) made by ``change`` on its root."""
    doc: pycrdt.Doc = pycrdt.Doc()
    doc.apply_update(base)
    root = doc.get("root", type=pycrdt.Map)
    sv = doc.get_state()
    change(root)
    return doc.get_update(sv)


def _state(pair: Pair, shard: str) -> bytes:
    return pair.core.replicas.diff(shard, EMPTY_SV)


async def _settle() -> None:
    await asyncio.sleep(0.3)


# -- writes by a peer that may not write -----------------------------------------------------


async def test_read_only_peer_cannot_write_or_delete_by_push_relay_or_diff(pair: Pair) -> None:
    raw = await _raw(pair, "reader")
    assert raw.close_code is None
    base = _state(pair, TASK)
    write = _update(base, lambda m: m.__setitem__("k", "forged"))
    delete = _update(base, lambda m: m.__delitem__("k"))
    await raw.send(
        Push(TASK, (write,)),
        Push(TASK, (delete,), seq=1),
        Push(TASK, (write,), relay=True),  # as if it were this window's relay
        Push(TASK, (write,), forward=True),  # as if flooding through a tree
        Diff(TASK, write),  # an anti-entropy diff
        Diff(TASK, delete, EMPTY_SV),
    )
    await _settle()
    a = await pair.alpha.shard(TASK)
    b = await pair.beta.shard(TASK)
    assert a.snapshot().get("k") == "v" and b.snapshot().get("k") == "v"
    counters = pair.alpha.counters
    assert counters["forbidden.Push"] == 4 and counters["forbidden.Diff"] == 2
    assert raw.close_code is None  # dropped and counted: an honest reader is not cut off
    await pair.still_replicating("after-reader")
    await raw.ws.close()
    # and nothing of it was stored: after a restart alpha still has the honest value
    assert _state(pair, TASK) == pair.core.replicas.diff(TASK, EMPTY_SV)


async def test_read_only_agent_writing_locally_sends_nothing(pair: Pair, tmp_path: Path) -> None:
    assert pair.alpha.address is not None
    async with Agent(
        "reader",
        tmp_path / "reader",
        peers=[pair.alpha.address],
        gossip=CFG,
        credentials=Credentials.from_dir(pair.keys, "reader"),
    ) as reader:
        await _until(lambda: TASK in reader.shard_names())
        r = await reader.shard(TASK)
        await _until(lambda: r.snapshot().get("k") == "v")  # it may read
        r["k"] = "from-reader"  # a local change only
        del r["k"]  # and a delete
        await asyncio.sleep(1.0)  # > 3 anti-entropy rounds
        assert (await pair.alpha.shard(TASK)).snapshot().get("k") == "v"
        assert SECRET not in reader.shard_names()  # never sent the shard it may not read
        assert reader.counters.get("unsent", 0) >= 1
        await pair.still_replicating("reader-connected")


# -- reading what it may not read ------------------------------------------------------------


async def test_read_of_everything_returns_only_readable_shards(pair: Pair) -> None:
    raw = await _raw(pair, "reader")
    await raw.send(
        ReadRequest(1, (), prefix=""),  # "every shard", the 5-byte request of the issue
        ReadRequest(2, ((SECRET, EMPTY_SV),)),
        SyncRequest(((SECRET, EMPTY_SV), (TASK, EMPTY_SV))),
    )
    await _settle()
    await asyncio.sleep(0.7)  # anti-entropy rounds: Summary and Digests too
    replies = raw.received(ReadReply)
    assert replies and all(
        s == TASK or s.startswith("tasks/") for r in replies for s, _ in r.shards
    )
    assert any(s == TASK for r in replies for s, _ in r.shards)
    blob = b"".join(raw.frames)
    assert SECRET.encode() not in blob and b"balance" not in blob
    await pair.still_replicating("after-scan")
    await raw.ws.close()


# -- impersonation ---------------------------------------------------------------------------


async def test_a_member_cannot_take_another_members_name(pair: Pair) -> None:
    for _ in range(5):
        raw = await _raw(pair, "mallory", hello_name="beta")
        await _until(lambda raw=raw: raw.close_code is not None)
        assert raw.close_code == CloseCode.IDENTITY_MISMATCH
    assert "beta" in pair.core.connected()  # the authenticated one was never evicted
    await pair.still_replicating("after-impostors")


# -- forged acks -----------------------------------------------------------------------------


async def test_forged_relayed_acks_do_not_count_as_replicas(pair: Pair) -> None:
    raw = await _raw(pair, "mallory")
    a = await pair.alpha.shard(TASK)
    await pair.beta.close()  # beta is gone: nobody but alpha has what comes next
    a["only-on-alpha"] = 1
    await _until(
        lambda: pair.core.replicas.durable_state(TASK)[0] == pair.core.replicas.state_vector(TASK)
    )
    sv, ds = pair.core.replicas.durable_state(TASK)
    before = pair.core.replicated(TASK, sv, ds)
    assert "beta" not in before
    forged = ShardState(TASK, sv, ds, signature=b"\x01" * 64)
    await raw.send(
        Ack((), (RelayedAck("beta", ShardState(TASK, sv, ds)),)),  # unsigned
        Ack((), (RelayedAck("beta", forged),)),  # a made-up signature
        Push(TASK, (b"\x00\x00",), relayed=(RelayedAck("beta", forged),)),
    )
    await _settle()
    assert "beta" not in pair.core.replicated(TASK, sv, ds)
    assert pair.alpha.counters.get("unverified_acks", 0) >= 2
    with pytest.raises(ReplicationTimeout):
        await a.replicated(peers=2, timeout=0.5)  # mallory's own ack is one, beta's is forged
    await raw.ws.close()


async def test_signed_acks_relay_and_verify(pair: Pair) -> None:
    """The honest side of the same check: beta's acks carry its signature, which alpha
    verifies with beta's certified key (so relayed copies of them count too)."""
    core = pair.core
    b = await pair.beta.shard(TASK)
    b["signed"] = True
    a = await pair.alpha.shard(TASK)
    await _until(lambda: a.snapshot().get("signed") is True)
    await a.replicated(peers=1, timeout=5)
    assert "beta" in core.replicated(TASK, *core.replicas.durable_state(TASK))
    st = core._p.acks.acked["beta"][TASK]
    gate = core.gate
    assert gate is not None and st.signature is not None
    assert gate.verify_ack("beta", TASK, st.state_vector, st.delete_set, st.signature)
    assert not gate.verify_ack("beta", TASK, st.state_vector + b"\x00", st.delete_set, st.signature)


# -- forged membership -----------------------------------------------------------------------


async def test_forged_membership_cannot_redirect_or_overflow(pair: Pair) -> None:
    raw = await _raw(pair, "mallory")
    core = pair.core
    beta = next(p for p in core.peers() if p.name == "beta")
    evil = "wss://127.0.0.1:1"
    await raw.send(
        PeerList((PeerEntry("beta", evil, beta.incarnation + 1, True),)),  # unsigned
        PeerList((PeerEntry("beta", evil, beta.incarnation + 5, True, b"\x02" * 64),)),
        PeerList((PeerEntry("alpha", "wss://127.0.0.1:2", 1000, True),)),  # "alpha moved"
        PeerList((PeerEntry("alpha", None, 2**63 - 1, False),)),  # refute past the codec
        PeerList((PeerEntry("beta", None, 2**63 - 1, False),)),
    )
    await _settle()
    now_beta = next(p for p in core.peers() if p.name == "beta")
    assert now_beta.address == beta.address and now_beta.address != evil
    assert core.incarnation < 1000  # neither the forged "alive" nor the overflow moved it
    assert "beta" in core.connected()
    assert pair.alpha.counters.get("refused_members", 0) >= 5
    await pair.still_replicating("after-peerlist")
    await raw.ws.close()


# -- quorum read by one liar -----------------------------------------------------------------


def test_a_liar_answering_twice_is_one_answer() -> None:
    """quorum=2 from one liar answering in two frames: not a quorum (it times out), and
    nothing of the lie is returned as the read's result."""
    from crdtsync.query import OK, TIMEOUT, QueryTable

    doc: pycrdt.Doc = pycrdt.Doc()
    doc.get("root", type=pycrdt.Map)["balance"] = 1_000_000
    lie = doc.get_update()
    table = QueryTable()
    qid = table.read(
        "bank/acct",
        ["liar", "honest"],
        quorum=2,
        state_vector=EMPTY_SV,
        now=0.0,
        timeout=5.0,
        connected=["liar", "honest"],
    )
    table.sends(["liar", "honest"])
    table.receive("liar", ReadReply(qid, (("bank/acct", lie),), last=False), 0.1)
    table.receive("liar", ReadReply(qid, (("bank/acct", lie),), last=True), 0.2)
    assert table.result(qid) is None  # still waiting for a second agent
    table.tick(6.0)
    outcome = table.result(qid)
    assert outcome is not None and outcome.status == TIMEOUT != OK
    assert [p for p, _ in outcome.answers["bank/acct"]] == ["liar"]


# -- the wire stays the same without credentials ---------------------------------------------


def test_signatures_are_optional_on_the_wire() -> None:
    """Records carry a signature only with credentials; without, the frames are the bytes of
    before (so meshes without credentials, and the golden traces, do not change)."""
    st = ShardState(TASK, b"\x01\x02", b"\x00")
    plain = Ack((st,), (RelayedAck("beta", st),))
    assert wire.decode(wire.encode(plain)) == plain
    signed = Ack(
        (ShardState(TASK, b"\x01\x02", b"\x00", b"s" * 64),),
        (RelayedAck("beta", ShardState(TASK, b"\x01\x02", b"\x00", b"t" * 64)),),
    )
    assert wire.decode(wire.encode(signed)) == signed
    assert len(wire.encode(signed)) == len(wire.encode(plain)) + 2 * (64 + 2)
    entry = PeerList((PeerEntry("beta", "wss://127.0.0.1:9", 3, True, b"u" * 64),))
    assert wire.decode(wire.encode(entry)) == entry
    push = Push(TASK, (b"\x00\x00",), durable=(b"\x00", b"\x00"), durable_signature=b"v" * 64)
    assert wire.decode(wire.encode(push)) == push
    assert wire.encode(Push(TASK, (b"\x00\x00",))) == wire.encode(
        Push(TASK, (b"\x00\x00",), durable_signature=None)
    )
    from crdtsync.errors import ProtocolError

    with pytest.raises(ProtocolError):  # a signature longer than Ed25519's is malformed
        wire.decode(wire.encode(PeerList((PeerEntry("beta", None, 3, True, b"u" * 65),))))


# -- deletes ---------------------------------------------------------------------------------


def _delete_only(client: int, clock: int, length: int) -> bytes:
    """A Yjs v1 update without structs whose delete set is one range of ``client``."""
    return b"\x00" + encode_delete_set({client: [(clock, length)]})


async def test_a_writer_cannot_mute_a_replica_by_deleting_its_future_clocks(pair: Pair) -> None:
    """The mute: a delete range over the victim's own client id beyond its clock would make its
    next writes vanish on arrival. Refused by the victim (no honest peer can delete an item of
    ours we have not made); deletes over other clients' future clocks (honest out-of-order
    deletes) still pass."""
    a = await pair.alpha.shard(TASK)
    client = a.doc.client_id
    own = decode_state_vector(a.doc.get_state()).get(client, 0)
    raw = await _raw(pair, "mallory")  # a full member: it may write tasks/a
    await raw.send(Push(TASK, (_delete_only(12345, 0, 50),)))  # someone else's future: allowed
    await _settle()
    assert raw.close_code is None
    await raw.send(Push(TASK, (_delete_only(client, own, 1_000_000),), seq=2))
    await _until(lambda: raw.close_code is not None)
    assert raw.close_code == CloseCode.INVALID_UPDATE
    a["after-mute"] = "visible"  # alpha's next write is not muted, here or on beta
    b = await pair.beta.shard(TASK)
    await _until(lambda: b.snapshot().get("after-mute") == "visible")
    assert a.snapshot().get("after-mute") == "visible"
    await pair.still_replicating("after-mute")


# -- placement hand-off ----------------------------------------------------------------------


async def test_forged_acks_of_outranking_names_do_not_make_holders_drop(
    keys: Path, tmp_path: Path
) -> None:
    """R=2, alpha and beta hold the shard. A member announces two made-up agents whose names
    outrank both holders, and relays acks "from" them copied from alpha's own durable state.
    The holders offer the shard to them but count their acks only with valid signatures, so
    neither holder drops its copy (issue 10: both deleted it from disk within 0.25 s)."""
    from crdtsync.placement import holders

    shard = "ledger"
    ghosts = next(
        (x, y)
        for i in range(200)
        for x, y in [(f"g{i}", f"h{i}")]
        if set(holders(shard, ["alpha", "beta", x, y], 2)) == {x, y}
    )
    async with Agent(
        "alpha",
        tmp_path / "alpha",
        listen="wss://127.0.0.1:0",
        gossip=CFG,
        replication_factor=2,
        credentials=Credentials.from_dir(keys, "alpha"),
    ) as alpha:
        assert alpha.address is not None
        async with Agent(
            "beta",
            tmp_path / "beta",
            listen="wss://127.0.0.1:0",
            gossip=CFG,
            peers=[alpha.address],
            replication_factor=2,
            credentials=Credentials.from_dir(keys, "beta"),
        ) as beta:
            s = await alpha.shard(shard)
            s["balance"] = 100
            await s.replicated(peers=1, timeout=5)
            await _until(lambda: shard in beta.shard_names())
            pair = Pair(alpha, beta, keys)
            raw = await _raw(pair, "mallory")
            core = pair.core
            sv, ds = core.replicas.durable_state(shard)
            await raw.send(
                PeerList(
                    tuple(
                        PeerEntry(g, f"wss://127.0.0.1:{9 + i}", 1, True)
                        for i, g in enumerate(ghosts)
                    )
                )
            )
            await asyncio.sleep(0.2)
            assert set(ghosts) <= set(core.members())  # unknown agents: taken (see README)
            forged = tuple(RelayedAck(g, ShardState(shard, sv, ds, b"\x03" * 64)) for g in ghosts)
            for _ in range(5):
                await raw.send(Ack((), forged))
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            assert not any(g in core.replicated(shard, sv, ds) for g in ghosts)
            assert shard in alpha.shard_names() and shard in beta.shard_names()
            assert core.sharding.drops == [] and beta.core.sharding.drops == []  # type: ignore[union-attr]
            assert (await alpha.shard(shard)).snapshot() == {"balance": 100}
            await raw.ws.close()


# -- certificates passed on ------------------------------------------------------------------


async def test_certificates_are_passed_on_and_forged_ones_refused(
    pair: Pair, tmp_path: Path
) -> None:
    """A new peer gets the certificates alpha knows (so it can verify records of agents it
    never meets); certificates a peer passes on count only if the mesh CA issued them."""
    from crdtsync.messages import Certificates

    raw = await _raw(pair, "mallory")
    await _until(lambda: bool(raw.received(Certificates)))
    certs = raw.received(Certificates)[0].certificates
    ring = Credentials.from_dir(pair.keys, "mallory").keyring()
    assert sorted(ring.add_certificate(c).name for c in certs) == ["alpha", "beta", "mallory"]
    other = tmp_path / "other"  # another mesh CA, with an agent named like a member
    cli("keys", "init-mesh", "--dir", str(other), "--mesh", MESH)
    cli("keys", "issue", "gamma", "--dir", str(other))
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    foreign = x509.load_pem_x509_certificate(agent_paths(other, "gamma")[0].read_bytes())
    await raw.send(Certificates((foreign.public_bytes(Encoding.DER), b"\x30\x03garbage")))
    await _settle()
    gate = pair.core.gate
    assert gate is not None
    assert len(gate.certificates()) == 3  # alpha, beta, mallory: neither forged one taken
    assert raw.close_code is None
    await pair.still_replicating("after-certificates")
    await raw.ws.close()
