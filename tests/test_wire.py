"""The envelope codec: exact round trips, the right close code for each fault, and nothing but
ProtocolError on arbitrary input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync import messages, wire
from crdtsync.errors import CloseCode, ProtocolError
from crdtsync.messages import (
    PROTOCOL_VERSION,
    Ack,
    Certificates,
    Close,
    Diff,
    DiffChunk,
    Digests,
    Hello,
    Holdings,
    Offer,
    PeerEntry,
    PeerList,
    Push,
    ReadReply,
    ReadRequest,
    RelayedAck,
    ShardState,
    Summary,
    SyncRequest,
)

SV = b"\x01\x05\x03"  # one client (5) at clock 3
DS = b"\x00"
ROOT = bytes(range(16))

EXAMPLES = [
    Hello(
        PROTOCOL_VERSION, "default", "planner", "ws://127.0.0.1:8765", ("a", "b/c"), 7, 2**63 - 1
    ),
    Hello(PROTOCOL_VERSION, "mesh-2", "x", None, (), 0),
    Push("board", (b"\x00\x00",)),
    Push("board", (b"\x01\x02", b"\x03"), (SV, DS), 42),
    Push(
        "board",
        (b"\x00\x00",),
        None,
        7,
        (
            RelayedAck("a", ShardState("board", SV, DS), 2),
            RelayedAck("a", ShardState("c", SV, DS)),
            RelayedAck("b", ShardState("a", SV, DS)),
        ),
        True,
        SV,
        False,
    ),
    Push("board", (b"\x00\x00",), relay=True),
    Summary(ROOT, 1000),
    Digests((("a", b"\x01" * 16), ("b", b"\x02" * 16))),
    Digests(()),
    SyncRequest((("a", SV), ("z", b"\x00"))),
    Diff("a", b"\x00\x00", SV),
    Diff("a", b"\x00\x00", None),
    Ack((ShardState("a", SV, DS), ShardState("b", b"\x00", DS))),
    Ack((), (RelayedAck("x", ShardState("a", SV, DS), 3),), forward=True),
    DiffChunk("a/b", 12, 0, 3, b"\x01\x02"),
    DiffChunk("a/b", 12, 2, 3, b"\x03", SV),
    DiffChunk("a/b", 12, 2, 3, b"\x03", SV, "writer-1"),
    messages.DiffBatch((Diff("a", b"\x00\x00"), Diff("b", b"\x00\x00", SV))),
    Push("board", (b"\x01\x02", b"\x03"), authors=("w1", None)),
    Push("board", (b"\x01\x02", b"\x03"), authors=("w1", "w1")),
    Certificates((b"\x30\x01", b"\x30\x02")),
    Push("board", (b"\x00\x00",), (SV, DS), 3, durable_signature=b"v" * 64),
    Ack(
        (ShardState("a", SV, DS, b"s" * 64),),
        (RelayedAck("x", ShardState("a", SV, DS, b"t" * 64)),),
    ),
    PeerList((PeerEntry("x", "ws://127.0.0.1:1", 3, True, b"u" * 64),)),
    PeerList((PeerEntry("a", "ws://a", 0, True), PeerEntry("b", None, 3, False)), full=True),
    PeerList(()),
    Close(CloseCode.NORMAL, "pruned"),
    Close(CloseCode.FLOODING, ""),
    Holdings(3, ("a", "b/c")),
    Holdings(0, ()),
    Offer(("a", "b")),
    ReadRequest(7, (("a", SV), ("b", b"\x00"))),
    ReadRequest(8, (), "sensors/"),
    ReadReply(7, (("a", b"\x00\x00"), ("b", None)), True),
    ReadReply(8, (), False),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: messages.Message) -> None:
    assert wire.decode(wire.encode(msg)) == msg


def test_every_message_type_has_a_tag_and_an_example() -> None:
    assert set(wire.TAGS) == {type(m) for m in EXAMPLES}
    assert sorted(wire.TAGS.values()) == list(range(1, len(wire.TAGS) + 1))


def test_diff_batch_must_be_sorted_and_non_empty() -> None:
    unsorted = messages.DiffBatch((Diff("b", b"\x00\x00"), Diff("a", b"\x00\x00")))
    with pytest.raises(ProtocolError):
        wire.decode(wire.encode(unsorted))
    with pytest.raises(ProtocolError):
        wire.decode(wire.encode(messages.DiffBatch(())))


def test_authors_survive_the_wire() -> None:
    for authors in (("w1", None), ("w1", "w1")):
        msg = Push("board", (b"\x01\x02", b"\x03"), authors=authors)
        assert wire.decode(wire.encode(msg)).authors == authors
    one = Push("board", (b"\x01\x02", b"\x03"), authors=("w1", "w1"))
    mixed = Push("board", (b"\x01\x02", b"\x03"), authors=("w1", "w2"))
    assert len(wire.encode(one)) < len(wire.encode(mixed))  # one name for one writer
    nobody = Push("board", (b"\x01",), authors=(None,))
    assert wire.encode(nobody) == wire.encode(Push("board", (b"\x01",)))  # nothing on the wire
    chunk = DiffChunk("a/b", 12, 2, 3, b"\x03", SV, "writer-1")
    assert wire.decode(wire.encode(chunk)).author == "writer-1"


def test_push_authors_must_match_the_updates() -> None:
    bad = Push("board", (b"\x01", b"\x02", b"\x03"), authors=("w1", "w2"))
    with pytest.raises(ProtocolError):
        wire.decode(wire.encode(bad))
    with pytest.raises(ProtocolError):
        wire.decode(wire.encode(Push("board", (b"\x01",), authors=("bad name!",))))


def test_public_names_import() -> None:
    from crdtsync.transports import memory

    from crdtsync import gossip

    for module in (messages, wire, gossip, memory):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_frames_are_compact() -> None:
    # An idle anti-entropy round is one frame of a few dozen bytes whatever the shard count.
    assert len(wire.encode(Summary(ROOT, 10**6))) < 30


def _raw(*items: object) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"", CloseCode.MALFORMED_FRAME),
        (b"\xc1", CloseCode.MALFORMED_FRAME),  # never used msgpack byte
        (_raw(3, ROOT, 1) + b"\x00", CloseCode.MALFORMED_FRAME),  # trailing bytes
        (msgpack.packb({"t": 1}), CloseCode.MALFORMED_FRAME),  # map, not envelope
        (msgpack.packb([]), CloseCode.MALFORMED_FRAME),
        (_raw("3", ROOT, 1), CloseCode.MALFORMED_FRAME),  # tag not an int
        (_raw(99, 1), CloseCode.UNKNOWN_MESSAGE),
        (_raw(0), CloseCode.UNKNOWN_MESSAGE),
        (_raw(3, ROOT), CloseCode.MALFORMED_FRAME),  # wrong arity
        (_raw(3, ROOT, 1, 2), CloseCode.MALFORMED_FRAME),
        (_raw(3, ROOT[:15], 1), CloseCode.MALFORMED_FRAME),  # root length
        (_raw(3, ROOT, -1), CloseCode.MALFORMED_FRAME),
        (_raw(3, ROOT, True), CloseCode.MALFORMED_FRAME),  # bool is not an int here
        (_raw(3, "x" * 16, 1), CloseCode.MALFORMED_FRAME),  # str is not bytes
        (
            _raw(2, "board", [], None, 1, [], False, None, False),
            CloseCode.MALFORMED_FRAME,
        ),  # Push without updates
        (
            _raw(2, "board", [b""], None, 1, [], False, None, False),
            CloseCode.MALFORMED_FRAME,
        ),  # empty update
        (
            _raw(2, "bad name", [b"\x00\x00"], None, 1, [], False, None, False),
            CloseCode.INVALID_SHARD,
        ),
        (_raw(2, "", [b"\x00\x00"], None, 1, [], False, None, False), CloseCode.INVALID_SHARD),
        (_raw(2, "a//b", [b"\x00\x00"], None, 1, [], False, None, False), CloseCode.INVALID_SHARD),
        (_raw(2, 5, [b"\x00\x00"], None, 1, [], False, None, False), CloseCode.INVALID_SHARD),
        (
            _raw(2, "board", [b"\x00\x00"], [SV], 1, [], False, None, False),
            CloseCode.MALFORMED_FRAME,
        ),
        (
            _raw(2, "board", [b"\x00\x00"], None, 1),
            CloseCode.MALFORMED_FRAME,
        ),  # a Push of old: arity
        (
            _raw(2, "board", [b"\x00\x00"], None, 1, [], 1, None, False),
            CloseCode.MALFORMED_FRAME,
        ),  # forward
        (
            _raw(2, "board", [b"\x00\x00"], None, 1, [["a", "s", SV, DS, 0]], False, None, False),
            CloseCode.MALFORMED_FRAME,
        ),
        (
            _raw(
                2,
                "board",
                [b"\x00\x00"],
                None,
                1,
                [["b", "s", SV, DS, 1], ["a", "s", SV, DS, 1]],
                False,
                None,
                False,
            ),
            CloseCode.MALFORMED_FRAME,
        ),  # relayed acks not sorted
        (
            _raw(
                2,
                "board",
                [b"\x00\x00"],
                None,
                1,
                [["a", "s", SV, DS, 1], ["a", "s", SV, DS, 2]],
                False,
                None,
                False,
            ),
            CloseCode.MALFORMED_FRAME,
        ),  # duplicate
        (
            _raw(
                2,
                "board",
                [b"\x00\x00"],
                None,
                1,
                [["a", "bad name", SV, DS, 1]],
                False,
                None,
                False,
            ),
            CloseCode.INVALID_SHARD,
        ),
        (_raw(14, "s", 1, 3, 3, b"x", None), CloseCode.MALFORMED_FRAME),  # chunk index >= total
        (_raw(14, "s", 1, 0, 0, b"x", None), CloseCode.MALFORMED_FRAME),  # no pieces
        (_raw(14, "s", 1, 0, 2, b"", None), CloseCode.MALFORMED_FRAME),  # empty piece
        (_raw(14, "s", 1, 0, wire.MAX_CHUNKS + 1, b"x", None), CloseCode.MALFORMED_FRAME),
        (
            _raw(2, "board", [b"\x00\x00"], None, -1, [], False, None, False),
            CloseCode.MALFORMED_FRAME,
        ),
        (_raw(4, [["b", b"\x01"], ["a", b"\x01"]]), CloseCode.MALFORMED_FRAME),  # unsorted
        (_raw(4, [["a", b"\x01"], ["a", b"\x02"]]), CloseCode.MALFORMED_FRAME),  # duplicate
        (_raw(4, [["a", b"\x01" * 65]]), CloseCode.MALFORMED_FRAME),  # digest too long
        (_raw(7, [], [], False), CloseCode.MALFORMED_FRAME),  # Ack without states
        (_raw(8, [["a", None, 0, 1]], False), CloseCode.MALFORMED_FRAME),  # int is not a bool
        (_raw(8, [["a", "", 0, True]], False), CloseCode.MALFORMED_FRAME),  # empty address
        (_raw(8, [["a b", None, 0, True]], False), CloseCode.MALFORMED_FRAME),  # agent name
        (_raw(8, [["a", None, 2**63, True]], False), CloseCode.MALFORMED_FRAME),
        (_raw(9, 1234, ""), CloseCode.MALFORMED_FRAME),  # unknown close code
        (_raw(9, 4009, "x" * 2000), CloseCode.MALFORMED_FRAME),
        (msgpack.packb([3, msgpack.ExtType(1, b"x"), 1]), CloseCode.MALFORMED_FRAME),
        (b"\x91" * 5000 + b"\x00", CloseCode.MALFORMED_FRAME),  # deep nesting
    ],
)
def test_refusals_carry_the_right_code(frame: bytes, code: CloseCode) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.decode(frame)
    assert info.value.code == code


def test_hello_version_is_checked_first() -> None:
    # A future Hello may have more (or other) fields: it is still a version mismatch.
    with pytest.raises(ProtocolError) as info:
        wire.decode(_raw(1, PROTOCOL_VERSION + 1, "default", "a", None, [], 0, "new field"))
    assert info.value.code == CloseCode.PROTOCOL_VERSION
    with pytest.raises(ProtocolError) as info:
        wire.decode(_raw(1, "1", "default", "a", None, [], 0))
    assert info.value.code == CloseCode.PROTOCOL_VERSION
    with pytest.raises(ProtocolError) as info:
        wire.decode(_raw(1))
    assert info.value.code == CloseCode.BAD_HANDSHAKE
    with pytest.raises(ProtocolError) as info:  # right version, wrong arity
        wire.decode(_raw(1, PROTOCOL_VERSION, "default", "a", None, []))
    assert info.value.code == CloseCode.MALFORMED_FRAME


def test_oversize_is_refused_before_parsing() -> None:
    frame = wire.encode(Push("a", (b"\x00" * 1000,)))
    assert wire.decode(frame, max_size=len(frame)) == Push("a", (b"\x00" * 1000,))
    with pytest.raises(ProtocolError) as info:
        wire.decode(frame, max_size=len(frame) - 1)
    assert info.value.code == CloseCode.OVERSIZE
    with pytest.raises(ProtocolError) as info:  # even garbage: size first
        wire.decode(b"\xc1" * 100, max_size=10)
    assert info.value.code == CloseCode.OVERSIZE


def test_decode_accepts_only_bytes_like() -> None:
    assert wire.decode(bytearray(wire.encode(EXAMPLES[2]))) == EXAMPLES[2]
    with pytest.raises(ProtocolError):
        wire.decode("not bytes")  # type: ignore[arg-type]


def test_encode_refuses_non_messages() -> None:
    with pytest.raises((TypeError, KeyError)):
        wire.encode(object())  # type: ignore[arg-type]


# -- properties ------------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,20}", fullmatch=True)
blobs = st.binary(min_size=1, max_size=40)


def _sorted_unique(pairs: list[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    return tuple(sorted(dict(pairs).items()))


valid_messages = st.one_of(
    st.builds(
        Hello,
        st.just(PROTOCOL_VERSION),
        names,
        names,
        st.none() | st.from_regex(r"ws://[a-z0-9.]{1,20}:[0-9]{1,5}", fullmatch=True),
        st.lists(names, max_size=5, unique=True).map(lambda xs: tuple(sorted(xs))),
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**63 - 1),
    ),
    st.builds(
        Push,
        names,
        st.lists(blobs, min_size=1, max_size=4).map(tuple),
        st.none() | st.tuples(blobs, blobs),
        st.integers(0, 2**63 - 1),
        st.lists(st.tuples(names, names, blobs, blobs, st.integers(1, 255)), max_size=3).map(
            lambda xs: tuple(
                RelayedAck(a, ShardState(s, sv, ds), h)
                for (a, s), (sv, ds, h) in sorted({(x[0], x[1]): x[2:] for x in xs}.items())
            )
        ),
        st.booleans(),
        st.none() | blobs,
        st.booleans(),
    ),
    st.integers(1, 50).flatmap(
        lambda total: st.builds(
            DiffChunk,
            names,
            st.integers(0, 2**63 - 1),
            st.integers(0, total - 1),
            st.just(total),
            blobs,
            st.none() | blobs,
        )
    ),
    st.builds(Summary, st.binary(min_size=16, max_size=16), st.integers(0, 2**40)),
    st.builds(
        Digests, st.lists(st.tuples(names, st.binary(min_size=1, max_size=64))).map(_sorted_unique)
    ),
    st.builds(SyncRequest, st.lists(st.tuples(names, blobs)).map(_sorted_unique)),
    st.builds(Diff, names, blobs, st.none() | blobs),
    st.builds(
        Ack,
        st.lists(st.tuples(names, blobs, blobs), min_size=1, max_size=4).map(
            lambda xs: tuple(ShardState(*x) for x in sorted({x[0]: x for x in xs}.values()))
        ),
    ),
    st.builds(
        PeerList,
        st.lists(
            st.builds(
                PeerEntry, names, st.none() | st.just("ws://h:1"), st.integers(0, 99), st.booleans()
            ),
            max_size=5,
        ).map(lambda ps: tuple(sorted({p.name: p for p in ps}.values(), key=lambda p: p.name))),
        st.booleans(),
    ),
    st.builds(Close, st.sampled_from(list(CloseCode)), st.text(max_size=50)),
)


@given(valid_messages)
def test_round_trip_property(msg: messages.Message) -> None:
    assert wire.decode(wire.encode(msg)) == msg


@given(st.binary(max_size=300))
def test_garbage_raises_only_protocol_error(frame: bytes) -> None:
    try:
        msg = wire.decode(frame, max_size=200)
    except ProtocolError as exc:
        assert isinstance(exc.code, CloseCode)
    else:  # whatever decodes must be a valid message that re-encodes to itself
        assert wire.decode(wire.encode(msg)) == msg


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(st.integers(-2, 12), st.lists(msgpack_values, max_size=8))
def test_structured_garbage_raises_only_protocol_error(tag: int, fields: list[object]) -> None:
    frame = msgpack.packb([tag, *fields], use_bin_type=True)
    try:
        msg = wire.decode(frame)
    except ProtocolError as exc:
        assert isinstance(exc.code, CloseCode)
    else:
        assert wire.decode(wire.encode(msg)) == msg


@given(valid_messages, st.data())
def test_mutated_frames_raise_only_protocol_error(
    msg: messages.Message, data: st.DataObject
) -> None:
    frame = bytearray(wire.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        decoded = wire.decode(bytes(frame[:cut]))
    except ProtocolError:
        pass
    else:
        assert wire.decode(wire.encode(decoded)) == decoded


def _outcome(frame: bytes | bytearray) -> object:
    try:
        return wire.decode(frame, max_size=1 << 16, max_items=64)
    except ProtocolError as exc:
        return (exc.code, str(exc))


@given(valid_messages, st.data())
def test_a_bytearray_frame_decodes_as_its_bytes(msg: messages.Message, data: st.DataObject) -> None:
    """websockets hands an assembled frame over as a bytearray, which the transport now passes
    to ``decode`` without a copy (issue 17, h-vfloor): valid or mutated, it gives what the same
    bytes give (the message, or the same refusal and code), small budgets included."""
    frame = bytearray(wire.encode(msg))
    for _ in range(data.draw(st.integers(0, 3))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    frame = frame[: data.draw(st.integers(0, len(frame)))]
    assert _outcome(frame) == _outcome(bytes(frame))


def test_a_bytearray_frame_leaves_nothing_decoded_tied_to_it() -> None:
    """Every bytes field of a message decoded from a bytearray is its own bytes: the frame
    can be changed or resized afterwards (websockets reuses its buffer) and the message holds."""
    piece = bytes(range(256)) * 4096  # a 1 MiB DiffChunk piece, as a catch-up's
    msg = DiffChunk("s", 7, 0, 2, piece, None)
    frame = bytearray(wire.encode(msg))
    got = wire.decode(frame)
    assert got == msg and type(got.data) is bytes  # type: ignore[attr-defined]
    frame[:] = b"\x00" * len(frame)
    del frame[10:]
    assert got.data == piece  # type: ignore[attr-defined]
    assert wire.decode(memoryview(wire.encode(msg))) == msg
