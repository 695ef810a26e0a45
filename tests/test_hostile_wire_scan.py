"""What h-wire's scan of the gossip wire found (issue 17, fifteenth pass), over real websockets.

The scan (``/work/dbg/h-wire/scan.py``; ``benchmarks/history/hostile-and-misc.md``) sent every
message type and field of the protocol, with adversarial values, from a peer holding a valid
certificate. The codec refused every malformed one with its close code; what hurt were valid
frames naming things the receiver never had. Each test here fails on ``d855df6``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hostile as h
import pycrdt
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Agent, wire
from crdtsync.cli import main
from crdtsync.containers import plain_state
from crdtsync.gossip import GossipConfig
from crdtsync.gossip.repair import MAX_UNHELD_REPAIRS
from crdtsync.messages import PROTOCOL_VERSION, Ack, Hello, ShardState, SyncRequest
from crdtsync.security.ca import agent_paths
from crdtsync.security.credentials import Credentials
from crdtsync.shard import ROOT

CFG = GossipConfig(push_interval=0.02, backoff_base=0.05, backoff_max=0.5, dial_grace=0.2)
MESH = "orchard"


def _cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Agent, Agent, Path]]:
    """alpha (listens) and beta (dials it), with certificates; mallory may write everything."""
    keys = tmp_path / "keys"
    _cli("keys", "init-mesh", "--dir", str(keys), "--mesh", MESH)
    for name in ("alpha", "beta", "mallory"):
        _cli("keys", "issue", name, "--dir", str(keys))
    creds = {n: Credentials.from_dir(keys, n) for n in ("alpha", "beta")}
    async with Agent(
        "alpha", tmp_path / "a", listen="wss://127.0.0.1:0", gossip=CFG, credentials=creds["alpha"]
    ) as alpha:
        (await alpha.shard("doc"))["k"] = "v"
        assert alpha.address is not None
        async with Agent(
            "beta", tmp_path / "b", peers=[alpha.address], gossip=CFG, credentials=creds["beta"]
        ) as beta:
            b = await beta.shard("doc")
            await h.until(lambda: b.snapshot().get("k") == "v", "beta synced")
            yield alpha, beta, keys


async def _mallory(alpha: Agent, keys: Path) -> tuple[Any, list[bytes]]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(keys / "ca.pem")
    ctx.load_cert_chain(*agent_paths(keys, "mallory"))
    assert alpha.address is not None
    ws = await connect(alpha.address, ssl=ctx, proxy=None, max_size=None)
    frames: list[bytes] = []

    async def read() -> None:
        try:
            async for frame in ws:
                frames.append(frame)  # type: ignore[arg-type]
        except ConnectionClosed:
            pass

    ws.reader = asyncio.create_task(read())  # type: ignore[attr-defined]
    await ws.send(wire.encode(Hello(PROTOCOL_VERSION, MESH, "mallory", None, (), 0, 7)))
    await h.until(lambda: bool(frames), "alpha's Hello")
    return ws, frames


async def test_an_ack_of_shards_never_held_asks_a_bounded_number_of_repairs(
    pair: tuple[Agent, Agent, Path],
) -> None:
    # Before: one Ack of 2,000 names alpha never held made it ask a repair of each, again
    # every repair timeout (100,000 names: 19 MB of SyncRequests in 5 s, 15.7 s of CPU).
    alpha, beta, keys = pair
    ws, frames = await _mallory(alpha, keys)
    names = [f"never/{i:05d}" for i in range(2000)]
    await ws.send(wire.encode(Ack(tuple(ShardState(n, b"\x01\x01\x01", b"\x00") for n in names))))
    await asyncio.sleep(6 * CFG.repair_timeout)
    asked = [
        s
        for f in frames
        if not f.startswith(b"CSI1")
        for m in [wire.decode(f)]
        if isinstance(m, SyncRequest)
        for s, _ in m.state_vectors
        if s.startswith("never/")
    ]
    assert 0 < len(set(asked)) <= MAX_UNHELD_REPAIRS
    assert len(asked) <= 8 * MAX_UNHELD_REPAIRS
    assert ws.protocol.close_rcvd is None  # a valid frame: no reason to close
    assert alpha.shard_names() == ["doc"]  # nothing stored
    (await beta.shard("doc"))["honest"] = "ok"  # and the honest peer is served
    a = await alpha.shard("doc")
    await h.until(lambda: a.snapshot().get("honest") == "ok", "beta's write reached alpha")
    await ws.close()


def test_a_snapshot_reads_the_document_in_one_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: one transaction per key read, each commit costing time in the number of Yjs
    # clients: a map of 10,000 keys from 10,000 clients (one 308 KB Push) took 3.5 s to read.
    doc: pycrdt.Doc = pycrdt.Doc()
    for i in range(50):
        one: pycrdt.Doc = pycrdt.Doc()
        one.get(ROOT, type=pycrdt.Map)[f"k{i}"] = i
        doc.apply_update(one.get_update())
    opened = []
    real = pycrdt.Doc.transaction

    def counting(self: pycrdt.Doc, origin: Any = None) -> Any:
        if self._txn is None:
            opened.append(1)
        return real(self, origin)

    monkeypatch.setattr(pycrdt.Doc, "transaction", counting)
    assert plain_state(doc) == {f"k{i}": i for i in range(50)}
    assert len(opened) == 1
