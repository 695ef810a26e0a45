"""A write's Pushes to several links encoded and framed once (transports/_ws_frames.py, h-send).

The bytes must be those of before, frame for frame: ``wire.push_parts`` against
``wire.encode`` over sequence numbers at every msgpack width, ``PushFrames`` against
``wire.encode`` over a pump's mix of messages, ``server_frame`` against websockets' own
serialization, ``send_framed_now`` against websockets' send over real connections.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import msgpack
import pycrdt
import pytest
from crdtsync.transports import _ws_frames
from crdtsync.transports._ws_frames import PushFrames, server_frame
from crdtsync.transports.memory import MemoryReplicas
from crdtsync.transports.websocket import WebsocketTransport
from websockets.frames import Frame, Opcode

from crdtsync import wire
from crdtsync.gossip import GossipConfig, GossipCore
from crdtsync.messages import Ack, Push, RelayedAck, ShardState, Summary

SEQS = (0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**40)


def _pushes() -> list[Push]:
    rng = random.Random(7)
    small, big = bytes(range(40)), rng.randbytes(70_000)
    state = ShardState("s", b"\x01\x02", b"\x00")
    return [
        Push("s", (small,)),
        Push("bench", (small,), authors=("a0",)),
        Push("bench", (small, big), authors=("a0", "a1"), forward=True),
        Push("bench", (small, small), authors=("a0", None), relay=True),
        Push("x" * 200, (big,), None, 3, (), True, None, False, authors=("w",)),
        Push("s", (small,), (b"\x01\x02", b"\x00"), 9, authors=("a0",)),
        Push("s", (small,), None, 9, (RelayedAck("b", state, 2),), authors=("a0",)),
        Push("s", (small,), None, 9, hint=b"\x01\x05"),
    ]


@pytest.mark.parametrize("msg", _pushes())
def test_push_parts_around_any_seq_give_encode(msg: Push) -> None:
    for seq in SEQS:
        m = Push(
            msg.shard,
            msg.updates,
            msg.durable,
            seq,
            msg.relayed,
            msg.forward,
            msg.hint,
            msg.relay,
            msg.durable_signature,
            authors=msg.authors,
        )
        head, tail = wire.push_parts(m)
        assert head + msgpack.packb(seq) + tail == wire.encode(m), seq


def test_push_frames_encode_as_wire_over_a_pump() -> None:
    small = bytes(range(30))
    other = bytes(range(31))
    state = ShardState("s", b"\x01\x02", b"\x00")
    pump: list[Any] = []
    for seq in (5, 5, 5, 6, 5, 1000):  # one write to six links, one a Push behind, one ahead
        pump.append(Push("s", (small,), None, seq, authors=("a0",)))
    pump += [
        Push("s", (small,), (b"\x01\x02", b"\x00"), 5, authors=("a0",)),  # an ack rides
        Push("s", (small,), None, 5, authors=("a1",)),  # another writer
        Push("s", (other,), None, 5, authors=("a0",)),  # another update
        Push("t", (small,), None, 5, authors=("a0",)),  # another shard
        Push("s", (small,), None, 5, forward=True, authors=("a0",)),
        Push("s", (small,), None, 5, relay=True, authors=("a0",)),
        Summary(b"\x00" * 32, 3),
        Ack((state,)),
        Push("s", (small,), None, 5, authors=("a0",)),
        Push("s", (small,), None, 5),
    ]
    frames = PushFrames()
    for msg in pump:
        assert frames.encode(msg) == wire.encode(msg), msg


def test_push_frames_share_one_payload_and_one_frame() -> None:
    frames = PushFrames()
    u = (bytes(range(30)),)
    one = frames.encode(Push("s", u, None, 4, authors=("a0",)))
    two = frames.encode(Push("s", u, None, 4, authors=("a0",)))
    assert two is one  # the same seq: the same bytes object
    assert frames.frame(two) is frames.frame(one)  # framed once
    three = frames.encode(Push("s", u, None, 5, authors=("a0",)))
    assert three == wire.encode(Push("s", u, None, 5, authors=("a0",)))
    assert frames.frame(three) == server_frame(three)
    assert frames.frame(b"other") == server_frame(b"other")  # not the last payload: framed anew


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_server_frame_is_websockets_own(size: int) -> None:
    payload = random.Random(size).randbytes(size)
    assert server_frame(payload) == Frame(Opcode.BINARY, payload).serialize(
        mask=False, extensions=[]
    )


# -- real connections: what the server writes, and the client's own path ------------------

CFG = GossipConfig(push_interval=0.0, anti_entropy_interval=60.0, suspect_timeout=30.0)


async def _until(cond: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_framed_sends_write_websockets_bytes_and_clients_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three agents: a (listens), b and c dial it. What a writes as its own frames to b
    and c is byte for byte what websockets' send would write, the client side (b, c
    writing to a) still masks, and every write arrives."""
    written: list[tuple[str, bytes, bytes]] = []  # (side, payload, bytes written)
    framed_calls: list[str] = []  # the side of each frame written as built here
    real = _ws_frames.send_framed_now

    def spy(conn: Any, payload: bytes, framed: Any) -> bool:
        side = conn.protocol.side.name
        before = len(written)
        t = conn.transport
        orig = t.write

        def write(data: bytes) -> None:
            written.append((side, payload, bytes(data)))
            orig(data)

        t.write = write

        def counted(p: bytes) -> bytes:
            framed_calls.append(side)
            return framed(p)

        try:
            sent = real(conn, payload, counted)
        finally:
            del t.write
        assert sent and len(written) == before + 1
        return sent

    from crdtsync.transports import _ws_effects

    monkeypatch.setattr(_ws_effects, "send_framed_now", spy)
    nodes = []
    for name in ("a", "b", "c"):
        replicas = MemoryReplicas(random.Random(name))
        seeds = () if not nodes else (nodes[0][2].address,)
        core = GossipCore(
            name, replicas, rng=random.Random(name), config=CFG, mesh="t", seeds=seeds
        )
        transport = WebsocketTransport(core, listen="ws://127.0.0.1:0")
        await transport.start()
        nodes.append((replicas, core, transport))
    try:
        await _until(lambda: len(nodes[0][2].connections()) >= 2)
        (ra, ca, ta), (rb, cb, tb) = nodes[0], nodes[1]
        for i in range(20):
            delta = ra.change(
                "doc", lambda d, i=i: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i)
            )
            ca.local_update("doc", delta, time.monotonic())
            ta.kick()
            delta = rb.change(
                "doc", lambda d, i=i: d.get("m", type=pycrdt.Map).__setitem__(f"b{i}", i)
            )
            cb.local_update("doc", delta, time.monotonic())
            tb.kick()
            await asyncio.sleep(0.005)

        def keys(r: MemoryReplicas) -> set[str]:
            doc = r.docs.get("doc")
            return set() if doc is None else set(doc.get("m", type=pycrdt.Map).keys())

        want = {f"k{i}" for i in range(20)} | {f"b{i}" for i in range(20)}
        await _until(lambda: all(keys(n[0]) >= want for n in nodes))
        server = [(p, w) for side, p, w in written if side == "SERVER"]
        client = [(p, w) for side, p, w in written if side == "CLIENT"]
        assert server and client
        assert set(framed_calls) == {"SERVER"}  # the server wrote its own frames; clients not
        assert len(framed_calls) == len(server)
        for payload, data in server:  # websockets' own bytes for send(payload)
            assert data == Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
        for _payload, data in client:  # masked by websockets, as before
            assert data[1] & 0x80 and data[0] == 0x82
    finally:
        for _, _, t in reversed(nodes):
            await t.close()
