"""The Yjs door under a burst: what one client sends back to back is validated frame by frame
and applied in batches (``transports/_yjsdoor_room.py``, ``YjsDoor._flush``). Whatever the
batching, the outcome is the one of applying the frames one by one: every valid update before
a bad one lands, nothing from the bad one on does, and a split surrogate pair is refused even
when the emoji arrived in the same burst.

Real agents on 127.0.0.1, real LMDB stores, raw websocket clients. A burst is written to the
socket in one write (``ws.transport``), so that the agent reads it in one reader turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from crdtsync import Agent
from crdtsync.errors import CloseCode
from crdtsync.yjs import sync
from crdtsync.yjs._lib0 import encode_uint


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def url(agent: Agent, room: str) -> str:
    assert agent.address is not None
    return f"{agent.address}/yjs/{room}"


def burst(ws: ClientConnection, frames: list[bytes]) -> None:
    """Write ``frames`` as websocket messages in one write to the socket."""
    ws.transport.write(
        b"".join(Frame(Opcode.BINARY, f).serialize(mask=True, extensions=[]) for f in frames)
    )


def map_updates(n: int, client_id: int = 4242) -> tuple[pycrdt.Doc[Any], list[bytes]]:
    """``n`` updates of one client, each setting key ``k<i>`` of map ``m``."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    m = doc.get("m", type=pycrdt.Map)
    for i in range(n):
        m[f"k{i}"] = i
    return doc, out


def delete_only(client: int, clock: int, length: int) -> bytes:
    """An update with no structs that deletes ``client``'s clocks ``[clock, clock+length)``."""
    out = bytearray((0,))  # no struct section
    for v in (1, client, 1, clock, length):  # one client, one range
        encode_uint(out, v)
    return bytes(out)


async def closed_code(ws: ClientConnection) -> int | None:
    """Read until the agent closes ``ws``; its close code."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    return info.value.rcvd.code if info.value.rcvd is not None else None


def upd(update: bytes) -> bytes:
    return sync.encode_sync(sync.UPDATE, update)


async def test_a_burst_lands_whole_and_reaches_the_other_client(tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0") as a:
        shard = await a.shard("board")
        src, ups = map_updates(200)
        async with connect(url(a, "board")) as writer, connect(url(a, "board")) as reader:
            await reader.recv()  # the agent's step 1
            burst(writer, [upd(u) for u in ups])
            got: pycrdt.Doc[Any] = pycrdt.Doc()
            frames = 0
            while len(got.get("m", type=pycrdt.Map)) < 200:
                msg = sync.decode(await asyncio.wait_for(reader.recv(), 20))
                if msg.kind == sync.SYNC and msg.sub == sync.UPDATE:
                    got.apply_update(msg.payload)
                    frames += 1
        assert dict(shard.doc.get("m", type=pycrdt.Map)) == dict(src.get("m", type=pycrdt.Map))
        assert dict(got.get("m", type=pycrdt.Map)) == dict(src.get("m", type=pycrdt.Map))
        assert a.counters["yjs.updates"] == 200
        assert frames < 200  # batched: fewer frames than updates reached the other client


async def test_a_bad_frame_in_a_burst_keeps_what_came_before_it(tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0") as a:
        shard = await a.shard("board")
        _, ups = map_updates(8)
        async with connect(url(a, "board")) as ws:
            await ws.recv()
            bad = sync.encode_sync(sync.UPDATE, b"\x03\x01\x02\x03")  # not an update
            burst(ws, [*map(upd, ups[:5]), bad, *map(upd, ups[5:])])
            assert await closed_code(ws) == CloseCode.INVALID_UPDATE
        assert sorted(shard.doc.get("m", type=pycrdt.Map).keys()) == [f"k{i}" for i in range(5)]
        assert a.counters["yjs.updates"] == 5


async def test_a_batch_the_shard_refuses_lands_up_to_the_refused_update(tmp_path: Path) -> None:
    """The third update deletes clocks of the agent's own client it has not reached (valid
    bytes, refused by the shard, not the parser): the batch is applied one by one, the two
    before it land, it and the one after it do not."""
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0") as a:
        shard = await a.shard("board")
        shard["mine"] = "x"  # the agent's own client has clocks now
        _, ups = map_updates(3)
        future = delete_only(shard.doc.client_id, 0, 1000)
        async with connect(url(a, "board")) as ws:
            await ws.recv()
            burst(ws, [upd(ups[0]), upd(ups[1]), upd(future), upd(ups[2])])
            assert await closed_code(ws) == CloseCode.INVALID_UPDATE
        m = shard.doc.get("m", type=pycrdt.Map)
        assert sorted(m.keys()) == ["k0", "k1"]
        assert shard["mine"] == "x"
        assert a.counters["yjs.updates"] == 2
        assert a.counters["yjs.refused.INVALID_UPDATE"] == 1


async def test_an_emoji_and_its_split_in_one_burst_are_told_apart(tmp_path: Path) -> None:
    """The emoji's update is applied before the next frame is checked, so the delete of its
    low surrogate (UTF-16 unit 2 of "x😀y") that follows in the same burst is refused."""
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0") as a:
        shard = await a.shard("emoji")
        src: pycrdt.Doc[Any] = pycrdt.Doc(client_id=777)
        text = src.get("text", type=pycrdt.Text)
        text += "x😀y"
        insert = src.get_update()
        split = delete_only(777, 2, 1)
        async with connect(url(a, "emoji")) as ws:
            await ws.recv()
            burst(ws, [upd(insert), upd(split)])
            assert await closed_code(ws) == CloseCode.INVALID_UPDATE
        assert str(shard.doc.get("text", type=pycrdt.Text)) == "x😀y"
        assert a.counters["yjs.updates"] == 1


def test_writers_behind_together_merge_a_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients queued the same update objects (one observer call per change): the second
    client's writer takes the run merged for the first from the cache, not merging again; a
    run of other objects with the same bytes is merged anew; both decode to the same doc."""
    from crdtsync.transports import _yjsdoor_client as client_side

    _, ups = map_updates(5)
    queued = [(upd(u), u) for u in ups]
    merges = 0
    real = pycrdt.merge_updates

    def counting(*updates: bytes) -> bytes:
        nonlocal merges
        merges += 1
        return real(*updates)

    monkeypatch.setattr(client_side.pycrdt, "merge_updates", counting)
    cache: client_side._MergeCache = client_side.OrderedDict()
    first = client_side._coalesced(list(queued), cache)
    second = client_side._coalesced(list(queued), cache)
    assert merges == 1 and len(first) == 1 and second[0] is first[0]
    copies = [(f, bytes(bytearray(u))) for f, u in queued]  # equal bytes, other objects
    assert client_side._coalesced(copies, cache) == first and merges == 2
    for _ in range(client_side._MERGED_KEPT + 2):  # bounded
        client_side._coalesced([(f, bytes(bytearray(u))) for f, u in queued], cache)
    assert len(cache) == client_side._MERGED_KEPT
