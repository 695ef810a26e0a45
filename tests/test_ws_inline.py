"""Frames handed to the websocket transport in websockets' callback, and frames written at once
by an idle link (transports/_ws_inline.py).

A frame that arrives alone while the connection's reader waits is handled at once in
``process_event``; everything else (a burst read in one go, a frame while another is queued,
text and fragmented frames, a frame fair reading holds back) takes websockets' queue and the
reader, in order. Unit tests on the mixin over a stand-in connection, then real agents over
127.0.0.1: pushes handled inline, in order, and fair reading still pacing a heavy peer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

import pycrdt
import pytest
from crdtsync.transports._ws_effects import _Effects
from crdtsync.transports._ws_inline import InlineFrames
from crdtsync.transports._ws_links import _Link, _LinkRunner
from crdtsync.transports.memory import MemoryReplicas
from crdtsync.transports.websocket import WebsocketTransport
from websockets.frames import Frame, Opcode
from websockets.protocol import CLIENT, CLOSING, OPEN
from websockets.streams import StreamReader

from crdtsync.gossip import GossipConfig, GossipCore
from crdtsync.gossip.guard import QuotaSet
from crdtsync.messages import Push
from crdtsync.quotas import ReadPacer


class _Queue:
    def __init__(self) -> None:
        self.frames: deque[Frame] = deque()


class _Protocol:
    def __init__(self) -> None:
        self.state = OPEN
        self.out: list[bytes] = []
        # (what the one-frame read path checks; _Base never starts it: its reads are empty)
        self.side, self.current_size, self.debug = CLIENT, None, False
        self.extensions: list[Any] = []
        self.reader, self.parser = StreamReader(), None
        self.max_message_size = self.max_fragment_size = None

    def send_binary(self, data: bytes) -> None:
        self.out.append(data)


class _Transport:
    def __init__(self) -> None:
        self.closing = False
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing


class _Base:
    """Stands in for websockets' connection: data_received yields the frames given, what is
    sent is written to the transport's list."""

    def __init__(self) -> None:
        self.recv_messages = _Queue()
        self.pending: list[Frame] = []
        self.protocol = _Protocol()
        self.transport = _Transport()
        self.send_in_progress: Any = None
        self.paused = False

    def data_received(self, data: bytes) -> None:
        for frame in self.pending:
            self.process_event(frame)  # type: ignore[attr-defined]

    def process_event(self, event: Any) -> None:
        self.recv_messages.frames.append(event)

    def send_data(self) -> None:
        self.transport.written += self.protocol.out
        self.protocol.out.clear()

    def set_connection_exc(self, exc: BaseException) -> None:  # pragma: no cover - not reached
        raise AssertionError(exc)


class _Conn(InlineFrames, _Base):
    pass


def _binary(data: bytes, fin: bool = True) -> Frame:
    return Frame(Opcode.BINARY, data, fin=fin)


def _read(conn: _Conn, frames: list[Frame], sink: Any) -> None:
    conn.frame_sink = sink
    conn.pending = frames
    conn.data_received(b"")


def test_a_lone_frame_goes_to_the_sink_and_the_rest_of_a_burst_to_the_queue_in_order() -> None:
    conn, taken = _Conn(), []
    sink = lambda data: taken.append(data) or True  # noqa: E731
    _read(conn, [_binary(b"a"), _binary(b"b"), _binary(b"c")], sink)
    assert taken == [b"a"]
    assert [f.data for f in conn.recv_messages.frames] == [b"b", b"c"]
    # a later read while frames are still queued: queued too (never ahead of them)
    _read(conn, [_binary(b"d")], sink)
    assert taken == [b"a"] and [f.data for f in conn.recv_messages.frames] == [b"b", b"c", b"d"]
    conn.recv_messages.frames.clear()
    assembled = bytearray(b"e")  # what websockets' parser makes of a frame read in pieces
    _read(conn, [_binary(assembled)], sink)  # type: ignore[arg-type]
    assert taken == [b"a", b"e"] and taken[1] is assembled  # handed on, not copied


def test_no_sink_text_fragments_and_refusals_take_the_queue() -> None:
    conn, taken = _Conn(), []
    _read(conn, [_binary(b"a")], None)
    assert not taken and len(conn.recv_messages.frames) == 1
    for frame in (Frame(Opcode.TEXT, b"t"), _binary(b"x", fin=False)):
        conn.recv_messages.frames.clear()
        _read(conn, [frame], lambda data: taken.append(data) or True)
        assert not taken and list(conn.recv_messages.frames) == [frame]
    conn.recv_messages.frames.clear()
    _read(conn, [_binary(b"r")], lambda data: False)  # the sink leaves it to the reader
    assert [f.data for f in conn.recv_messages.frames] == [b"r"]
    assert conn._inline_left == 0  # outside data_received nothing is taken inline


def test_a_connection_without_the_frame_queue_is_not_offered_inline() -> None:
    assert InlineFrames.supported(_Conn())
    assert not InlineFrames.supported(object())  # (another websockets' internals)


def test_send_now_writes_only_when_send_would_not_wait() -> None:
    conn = _Conn()
    assert conn.send_now(b"a") and conn.transport.written == [b"a"]
    for blocked in ("paused", "fragmenting", "closing", "not open"):
        conn = _Conn()
        if blocked == "paused":
            conn.paused = True  # the socket's buffer is over its high-water mark
        elif blocked == "fragmenting":
            conn.send_in_progress = object()
        elif blocked == "closing":
            conn.transport.closing = True
        else:
            conn.protocol.state = CLOSING
        assert not conn.send_now(b"x"), blocked
        assert conn.transport.written == [] and conn.protocol.out == [], blocked


class _Buffered(_Transport):
    """A socket whose peer reads nothing: every byte written stays in its buffer."""

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.written))


class _Effecting(_Effects):
    """The transport's effects mixin over stand-ins: its core only records pauses."""

    def __init__(self, high_water: int) -> None:
        self._high_water, self._max_send_buffer = high_water, 64 * high_water
        self.paused: list[str] = []
        self.core = SimpleNamespace(pause_writing=self.paused.append)  # type: ignore[assignment]


def test_a_frame_that_would_take_an_idle_link_over_high_water_goes_to_its_writer() -> None:
    # A link is resumed by its writer task alone, once a send() that waited for the socket
    # returns. A frame written at once (send_now) that paused the link left that task asleep
    # with nothing queued: the link stayed paused for good, and the core held its pushes
    # (issue 17, h-wanburst2). Such a frame goes to the writer; smaller ones still go at once.
    effects, conn = _Effecting(high_water=1000), _Conn()
    conn.transport = _Buffered()
    link = _Link(ws=conn, outbound=False, dialled=None, peer="b", writer_idle=True)  # type: ignore[arg-type]
    effects._enqueue(link, b"a" * 500)
    assert conn.transport.written == [b"a" * 500] and not link.queue and not link.paused
    effects._enqueue(link, b"b" * 600)  # 1,100 bytes with the first: over high_water
    assert conn.transport.written == [b"a" * 500]
    assert list(link.queue) == [b"b" * 600] and link.wake.is_set()  # the writer's to send
    assert link.paused and effects.paused == ["b"]


# -- real agents over 127.0.0.1 ------------------------------------------------------------

CFG = GossipConfig(push_interval=0.0, anti_entropy_interval=60.0, suspect_timeout=30.0)


class _Node:
    def __init__(self, name: str, seeds: tuple[str, ...] = (), **core: Any) -> None:
        self.replicas = MemoryReplicas(random.Random(name))
        self.core = GossipCore(
            name, self.replicas, rng=random.Random(name), config=CFG, mesh="t", seeds=seeds, **core
        )
        self.transport = WebsocketTransport(self.core, listen="ws://127.0.0.1:0")

    def put(self, key: str, value: Any) -> None:
        delta = self.replicas.change(
            "doc", lambda d: d.get("m", type=pycrdt.Map).__setitem__(key, value)
        )
        assert delta is not None
        self.core.local_update("doc", delta, time.monotonic())
        self.transport.kick()

    def keys(self) -> list[str]:
        doc = self.replicas.docs.get("doc")
        return [] if doc is None else list(doc.get("m", type=pycrdt.Map).keys())


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def inline_counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"inline": 0, "left": 0, "sent_now": 0}
    real = _LinkRunner._frame_inline
    real_send_now = InlineFrames.send_now

    def counted(self: Any, link: Any, data: bytes) -> bool:
        handled = real(self, link, data)
        counts["inline" if handled else "left"] += 1
        return handled

    def counted_send_now(self: Any, data: bytes) -> bool:
        sent = real_send_now(self, data)
        counts["sent_now"] += sent
        return sent

    monkeypatch.setattr(_LinkRunner, "_frame_inline", counted)
    monkeypatch.setattr(InlineFrames, "send_now", counted_send_now)
    return counts


async def _pair(**receiver: Any) -> tuple[_Node, _Node]:
    a = _Node("a")
    await a.transport.start()
    assert a.transport.address is not None
    b = _Node("b", seeds=(a.transport.address,), **receiver)
    await b.transport.start()
    await _until(lambda: b.transport.connections() and a.transport.connections())
    return a, b


def _record_pushes(node: _Node) -> list[int]:
    """The sequence numbers of the Pushes ``node``'s core receives, in order."""
    seqs: list[int] = []
    real = node.core.receive

    def receive(peer: str, msg: Any, now: float) -> None:
        if isinstance(msg, Push):
            seqs.append(msg.seq)
        real(peer, msg, now)

    node.core.receive = receive  # type: ignore[method-assign]
    return seqs


async def test_pushes_that_arrive_one_at_a_time_are_handled_inline_in_order(
    inline_counts: dict[str, int],
) -> None:
    a, b = await _pair()
    seqs = _record_pushes(b)
    try:
        before, sent_before = inline_counts["inline"], inline_counts["sent_now"]
        for i in range(30):
            a.put(f"k{i}", i)
            if i % 3:
                await asyncio.sleep(0.005)  # (every third write follows the last at once)
        await _until(lambda: len(b.keys()) == 30)
        assert inline_counts["inline"] - before >= 10  # most pushes: none was queued behind
        assert inline_counts["sent_now"] - sent_before >= 10  # written by an idle link at once
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert sorted(b.keys()) == sorted(a.keys())
    finally:
        await a.transport.close()
        await b.transport.close()


async def test_fair_reading_still_holds_back_a_peer_over_its_share(
    inline_counts: dict[str, int],
) -> None:
    # 20 frames a second in all, a burst of 4: most of 40 pushes must wait for the reader
    pacer = ReadPacer(total_rate=20.0, total_burst=4.0, share=0.25)
    a, b = await _pair(quotas=QuotaSet(reads=pacer))
    try:
        for i in range(40):
            a.put(f"k{i}", i)
            await asyncio.sleep(0.002)
        await _until(lambda: len(b.keys()) == 40, timeout=30.0)
        assert b.core.quota_counters.get("quota.read-paced", 0) >= 1
        assert inline_counts["left"] >= 1  # handed to the reader, which waited
        assert sorted(b.keys()) == sorted(a.keys())
    finally:
        await a.transport.close()
        await b.transport.close()


# -- a read that holds exactly one binary frame: taken without websockets' parser ------------


class _RealBase:
    """websockets' asyncio ``Connection.data_received`` over a real sans-I/O protocol, with
    its frame queue (what the one-frame path must agree with)."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.recv_messages = _Queue()
        self.parsed = 0

    def data_received(self, data: bytes) -> None:
        self.parsed += 1
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            self.process_event(event)

    def process_event(self, event: Any) -> None:
        if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self.recv_messages.frames.append(event)


class _RealConn(InlineFrames, _RealBase):
    pass


def _protocol(side: Any) -> Any:
    from websockets.client import ClientProtocol
    from websockets.server import ServerProtocol

    return ClientProtocol(None, state=OPEN) if side is CLIENT else ServerProtocol(state=OPEN)  # type: ignore[arg-type]


def _deliver(conn: Any, chunks: list[bytes], refuse: set[int]) -> list[Any]:
    """Feed ``chunks``; what reached the application, in order: payloads the sink took, and
    the queue's frames (drained after each read, as the reader would)."""
    out: list[Any] = []
    calls = [0]

    def sink(data: bytes) -> bool:
        calls[0] += 1
        if calls[0] in refuse:
            return False
        out.append(("binary", data))
        return True

    for chunk in chunks:
        conn.frame_sink = sink
        conn.data_received(chunk)
        frames = conn.recv_messages.frames
        while frames:
            f = frames.popleft()
            out.append(
                ("binary" if f.opcode is Opcode.BINARY else f.opcode.name, bytes(f.data), f.fin)
            )
    return [o[:2] if len(o) == 3 and o[0] == "binary" and o[2] else o for o in out]


def _frames(rng: random.Random, masked: bool) -> list[bytes]:
    """Serialized frames: binary most, text, fragmented, ping, pong; every size form."""
    out: list[bytes] = []
    for _ in range(rng.randrange(1, 6)):
        kind = rng.random()
        size = rng.choice([0, 1, 5, 125, 126, 127, 300, 70_000])
        payload = bytes(rng.randrange(256) for _ in range(min(size, 64))) * (size // 64 + 1)
        payload = payload[:size]
        if kind < 0.6:
            frame = Frame(Opcode.BINARY, payload)
        elif kind < 0.7:
            frame = Frame(Opcode.TEXT, payload.hex().encode()[:size])
        elif kind < 0.8:  # a fragmented binary message
            first = Frame(Opcode.BINARY, payload[:1], fin=False)
            out.append(first.serialize(mask=masked, extensions=[]))
            frame = Frame(Opcode.CONT, payload[1:])
        elif kind < 0.9:
            frame = Frame(Opcode.PING, payload[:100])
        else:
            frame = Frame(Opcode.PONG, payload[:100])
        out.append(frame.serialize(mask=masked, extensions=[]))
    return out


@pytest.mark.parametrize("side", [CLIENT, "server"])
def test_a_read_of_one_binary_frame_gives_what_websockets_parser_gives(side: Any) -> None:
    from websockets.protocol import SERVER

    side = CLIENT if side is CLIENT else SERVER
    rng = random.Random(17)
    fast_reads = 0
    for case in range(300):
        frames = _frames(rng, masked=side is SERVER)  # a client masks what it sends
        stream = b"".join(frames)
        if case % 2:  # one read per frame (a paced peer)
            chunks = frames
        else:  # reads cut anywhere: pieces of frames, several frames at once
            k = min(len(stream) - 1, rng.randrange(0, 6))
            cuts = sorted(rng.sample(range(1, len(stream)), k=k))
            chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        refuse = {rng.randrange(1, 4)} if case % 3 == 0 else set()
        fast, plain = _RealConn(_protocol(side)), _RealBase(_protocol(side))
        got = _deliver(fast, chunks, refuse)
        # the plain connection: every frame through websockets' queue, none refused
        want = _deliver(plain, chunks, set())
        assert got == want, case
        assert fast.protocol.current_size == plain.protocol.current_size
        assert fast.protocol.state is plain.protocol.state
        fast_reads += len(chunks) - fast.parsed
    assert fast_reads > 100  # (the one-frame path was taken: those reads skipped the parser)


def test_a_read_that_is_not_one_whole_binary_frame_goes_to_websockets() -> None:
    conn = _RealConn(_protocol(CLIENT))
    taken: list[bytes] = []
    sink = lambda data: taken.append(data) or True  # noqa: E731
    frame = Frame(Opcode.BINARY, b"abcdef").serialize(mask=False, extensions=[])
    conn.frame_sink = sink
    conn.data_received(frame[:3])  # half a frame: websockets buffers it
    assert conn.parsed == 1 and not taken
    conn.data_received(frame[3:])  # the rest: not a frame start, websockets' parser
    assert conn.parsed == 2 and taken == [b"abcdef"]
    conn.data_received(frame)  # a whole frame after a boundary: no parser
    assert conn.parsed == 2 and taken == [b"abcdef"] * 2
    masked = Frame(Opcode.BINARY, b"x").serialize(mask=True, extensions=[])
    conn.data_received(masked)  # a masked frame to a client: websockets refuses it
    assert conn.parsed == 3 and conn.protocol.parser_exc is not None


def test_a_payload_that_looks_like_a_frame_is_not_taken_for_one() -> None:
    # An outer frame whose payload is itself a whole binary frame, read as its header, then
    # its payload: the second read starts no frame (websockets waits for a payload).
    inner = Frame(Opcode.BINARY, b"inner").serialize(mask=False, extensions=[])
    outer = Frame(Opcode.BINARY, inner).serialize(mask=False, extensions=[])
    conn = _RealConn(_protocol(CLIENT))
    taken: list[bytes] = []
    conn.frame_sink = lambda data: taken.append(data) or True
    conn.data_received(outer[:2])
    conn.data_received(outer[2:])
    assert conn.parsed == 2 and taken == [inner]  # the outer frame's payload, whole
    # The same after lone frames were taken (h-recv4: the parser found between frames is
    # remembered until websockets is fed again, here by the outer frame's header).
    for _ in range(2):
        conn.data_received(inner)
    assert conn.parsed == 2 and taken == [inner, b"inner", b"inner"]  # no parser
    conn.data_received(outer[:2])
    conn.data_received(outer[2:])
    assert conn.parsed == 4 and taken == [inner, b"inner", b"inner", inner]
    # and a lone frame refused by the sink goes to websockets too: remembered no more
    conn.frame_sink = lambda data: False
    conn.data_received(outer[:2] + outer[2:3])  # (not whole: websockets' path)
    assert conn.parsed == 5 and conn.protocol.reader.buffer


def test_a_binary_frame_inside_a_fragmented_message_is_left_to_websockets() -> None:
    conn = _RealConn(_protocol(CLIENT))
    taken: list[bytes] = []
    conn.frame_sink = lambda data: taken.append(data) or True
    conn.data_received(Frame(Opcode.BINARY, b"a", fin=False).serialize(mask=False, extensions=[]))
    assert conn.protocol.current_size == 1
    conn.recv_messages.frames.clear()  # (the reader took the first fragment)
    conn.data_received(Frame(Opcode.BINARY, b"b").serialize(mask=False, extensions=[]))
    assert taken == [] and conn.parsed == 2  # websockets: "expected a continuation frame"
    assert conn.protocol.parser_exc is not None


async def test_pushes_read_one_frame_at_a_time_skip_the_parser_on_both_sides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # b dials a: what a writes reaches b's client side unmasked, what b writes reaches a's
    # server side masked; both are taken by the one-frame read when they arrive alone.
    import crdtsync.transports._ws_inline as ws_inline
    from websockets.protocol import SERVER

    taken = {CLIENT: 0, SERVER: 0}
    real = ws_inline._lone_binary_frame

    def counted(protocol: Any, data: bytes, boundary: object = None) -> bytes | None:
        payload = real(protocol, data, boundary)
        if payload is not None:
            taken[protocol.side] += 1
        return payload

    monkeypatch.setattr(ws_inline, "_lone_binary_frame", counted)
    a, b = await _pair()
    try:
        for i in range(20):
            a.put(f"a{i}", i)
            b.put(f"b{i}", i)
            await asyncio.sleep(0.005)
        await _until(lambda: len(a.keys()) == 40 and len(b.keys()) == 40)
        assert sorted(a.keys()) == sorted(b.keys())
        assert taken[CLIENT] >= 5 and taken[SERVER] >= 5, taken
    finally:
        await a.transport.close()
        await b.transport.close()
