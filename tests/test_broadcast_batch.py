"""Broadcasts handed to the core together (issue 14): ``GossipCore.receive_broadcasts``
applies the Pushes of one driver turn per shard in one pycrdt transaction, yet every
update is still validated alone, garbage among them is refused alone, and every change
record names its writer; over a real broker, change records name the writer too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from mqttbroker import MOSQUITTO, Mosquitto

from crdtsync import Agent, Change
from crdtsync.errors import ProtocolError
from crdtsync.messages import Push

WS = "ws://127.0.0.1:0"  # (a listening agent has a gossip core; no peer ever connects)


async def _updates(tmp_path: Path, writers: list[str]) -> dict[str, bytes]:
    """One write of shard "s" by each of ``writers`` (offline agents), as update bytes."""
    out = {}
    for name in writers:
        async with Agent(name, tmp_path / name) as w:
            shard = await w.shard("s")
            shard[f"by-{name}"] = name
            out[name] = shard.doc.get_update()
    return out


async def test_one_turns_pushes_are_one_transaction_and_garbage_is_refused_alone(
    tmp_path: Path,
) -> None:
    ups = await _updates(tmp_path, ["w1", "w2", "w3"])
    async with Agent("r", tmp_path / "r", listen=WS) as r:
        shard = await r.shard("s")
        transactions: list[object] = []
        shard.doc.observe(transactions.append)
        assert r.core is not None
        got = r.core.receive_broadcasts(
            [
                ("w1", Push("s", (ups["w1"],), None, 1, authors=("w1",))),
                ("w2", Push("s", (b"\x07garbage",), None, 1, authors=("w2",))),
                ("w3", Push("s", (ups["w3"],), None, 1, authors=("w3",))),
            ],
            time.monotonic(),
        )
        assert got[0] is True and got[2] is True
        assert isinstance(got[1], ProtocolError)  # refused alone, nothing of it applied
        assert shard.get("by-w1") == "w1" and shard.get("by-w3") == "w3"
        assert "by-w2" not in shard
        assert len(transactions) == 1  # both good updates in one transaction


async def test_with_a_listener_each_writer_gets_its_own_change_record(tmp_path: Path) -> None:
    ups = await _updates(tmp_path, ["w1", "w2"])
    async with Agent("r", tmp_path / "r", listen=WS) as r:
        shard = await r.shard("s")
        seen: list[Change] = []
        shard.on_change(seen.append)
        assert r.core is not None
        got = r.core.receive_broadcasts(
            [
                ("w1", Push("s", (ups["w1"],), None, 1, authors=("w1",))),
                ("w2", Push("s", (ups["w2"],), None, 1, authors=("w2",))),
            ],
            time.monotonic(),
        )
        assert got == [True, True]
        remote = [(c.origin, c.author, c.paths) for c in seen if not c.local]
        assert remote == [("w1", "w1", (("by-w1",),)), ("w2", "w2", (("by-w2",),))]


async def test_a_refused_update_in_a_batch_leaves_the_others_applied(tmp_path: Path) -> None:
    # An update deleting clocks of the receiver's own client it has not reached (a "mute"
    # attack) passes the parser but is refused by the shard: the batch falls back to one by
    # one, and only that Push is refused.
    ups = await _updates(tmp_path, ["w1", "w2"])
    async with Agent("r", tmp_path / "r", listen=WS) as r:
        shard = await r.shard("s")
        own = shard.doc.client_id
        mute = _delete_only_update(own, clock=10, length=5)
        assert r.core is not None
        got = r.core.receive_broadcasts(
            [
                ("w1", Push("s", (ups["w1"],), None, 1, authors=("w1",))),
                ("x", Push("s", (mute,), None, 1, authors=("x",))),
                ("w2", Push("s", (ups["w2"],), None, 1, authors=("w2",))),
            ],
            time.monotonic(),
        )
        assert got[0] is True and got[2] is True and isinstance(got[1], ProtocolError)
        assert shard.get("by-w1") == "w1" and shard.get("by-w2") == "w2"


def _delete_only_update(client: int, clock: int, length: int) -> bytes:
    """A Yjs v1 update with no structs and one delete range of ``client``."""

    def uint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            if n:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                return bytes(out)

    return b"\x00" + b"\x01" + uint(client) + b"\x01" + uint(clock) + uint(length)


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
async def test_over_the_broker_a_change_names_its_writer(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    agents = [
        Agent(n, data_dir=tmp_path / n, broker=broker.url, mesh="m1") for n in ("a", "b", "c")
    ]
    try:
        for agent in agents:
            await agent.start()
        sa, sb, sc = [await agent.shard("s") for agent in agents]
        seen: list[Change] = []
        sb.on_change(seen.append)
        await asyncio.sleep(0.3)
        sa["from-a"] = 1
        sc["from-c"] = 2
        deadline = time.monotonic() + 10
        while sb.get("from-a") != 1 or sb.get("from-c") != 2:
            assert time.monotonic() < deadline, "the writes did not arrive"
            await asyncio.sleep(0.02)
        writers = {c.paths: c.author for c in seen if not c.local and c.author is not None}
        # Broadcast Pushes carry their writer (before, every broadcast's author was None).
        assert writers.get((("from-a",),)) == "a"
        assert writers.get((("from-c",),)) == "c"
    finally:
        for agent in agents:
            await agent.close()
        broker.stop()


def test_a_batch_is_priced_update_after_update_against_the_history() -> None:
    # Each update within the cap at one place, together over it: refused, as apply_batch
    # prices a batch (on a copy of the history); the work counts the earlier ones' items.
    from types import SimpleNamespace

    from crdtsync._registry_replicas import _RegistryReplicas
    from crdtsync.errors import UpdateOverLimit
    from crdtsync.yjs.limits import PlaceHistory

    def info(n: int) -> SimpleNamespace:
        return SimpleNamespace(work=1, places={b"p": n}, places_most=n)

    history = PlaceHistory(max_items=5, max_places=16)
    history.record({b"p": 1}, 1)
    assert _RegistryReplicas._batch_cost(history, [info(2), info(2)]) == 2 + 1 * 2 + (1 + 2) * 2
    with pytest.raises(UpdateOverLimit):
        _RegistryReplicas._batch_cost(history, [info(2), info(2), info(1)])
    assert history.count(b"p") == 1  # pricing records nothing
