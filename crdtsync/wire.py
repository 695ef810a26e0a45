"""The envelope codec: protocol messages to msgpack frames and back.

A frame is one msgpack array ``[tag, field, ...]``; the tag names the message type and the
fields follow in the order of the dataclass in :mod:`crdtsync.messages`. Nested records
(:class:`~crdtsync.messages.ShardState`, :class:`~crdtsync.messages.PeerEntry`, a piggybacked
ack) are arrays too. Arrays rather than maps keep frames small and leave no room for unknown
keys.

:func:`decode` is the trust boundary for everything a peer sends: it never raises anything but
:class:`~crdtsync.errors.ProtocolError`, whose ``code`` says how to close the connection:

* ``OVERSIZE``: the frame is longer than ``max_size`` (checked before parsing anything), or it
  holds more than ``max_items`` msgpack array elements and arrays in all (counted while it is
  unpacked, so a frame of millions of tiny containers is cut off early);
* ``MALFORMED_FRAME``: not msgpack, trailing bytes, wrong arity, wrong field types, lengths
  out of range, lists not strictly sorted (which also rules out duplicates), any msgpack map
  (the protocol has none; refused at the first one), nesting deeper than msgpack's stack;
* ``UNKNOWN_MESSAGE``: a well-formed envelope with a tag this version does not know;
* ``INVALID_SHARD``: a shard name outside :mod:`crdtsync.names`;
* ``PROTOCOL_VERSION``: a Hello of another protocol version (checked before its other
  fields, so a future Hello with more fields is still refused with the right code).

CRDT payloads (updates, state vectors, delete sets) are only checked to be non-empty bytes
here; their structure is checked by :mod:`crdtsync.updates` before anything is applied.

The field checkers, the decoder of each message type and the field limits are
:mod:`crdtsync._wire_decoders` (the limits re-exported here); this module holds the tags,
encoding, and the unpacking of a frame within its budget.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from ._wire_decoders import (
    _DECODERS,
    MAX_ADDRESS,
    MAX_CERTIFICATE,
    MAX_CERTIFICATES,
    MAX_CHUNKS,
    MAX_DIGEST,
    MAX_REASON,
    MAX_SIGNATURE,
    ROOT_SIZE,
    _bad,
)
from .errors import CloseCode, ProtocolError
from .messages import (
    Ack,
    Certificates,
    Close,
    Diff,
    DiffBatch,
    DiffChunk,
    Digests,
    Hello,
    Holdings,
    Message,
    Offer,
    PeerList,
    Push,
    ReadReply,
    ReadRequest,
    RelayedAck,
    Summary,
    SyncRequest,
)

__all__ = [
    "encode",
    "decode",
    "DEFAULT_MAX_FRAME",
    "ROOT_SIZE",
    "MAX_DIGEST",
    "MAX_ADDRESS",
    "MAX_REASON",
    "MAX_CHUNKS",
    "MAX_FRAME_ITEMS",
    "MAX_SIGNATURE",
    "MAX_CERTIFICATE",
    "MAX_CERTIFICATES",
    "TAGS",
]

#: Default frame limit for :func:`decode` (16 MiB): room for a large shard's diff.
DEFAULT_MAX_FRAME = 16 << 20
#: Most msgpack array elements plus arrays one frame may hold (see :func:`decode`). The largest
#: honest frames list shards: a Digests of N shards holds 3N + 3, so this admits ~350,000
#: shards. Bounds what unpacking costs whatever the bytes: before it, a 16 MiB frame of empty
#: maps took 1.3 GiB and 1.5 s; now the worst is ~60 MB (a million 1-element tuples), briefly.
MAX_FRAME_ITEMS = 1 << 20


class _TooMany(Exception):
    pass


def _no_maps(_: object) -> NoReturn:
    raise ValueError("the protocol has no msgpack maps")


#: Message type -> envelope tag. Tags are part of the protocol: never reuse or renumber one.
TAGS: dict[type, int] = {
    Hello: 1,
    Push: 2,
    Summary: 3,
    Digests: 4,
    SyncRequest: 5,
    Diff: 6,
    Ack: 7,
    PeerList: 8,
    Close: 9,
    Holdings: 10,
    Offer: 11,
    ReadRequest: 12,
    ReadReply: 13,
    DiffChunk: 14,
    Certificates: 15,
    DiffBatch: 16,
}


# -- encoding ------------------------------------------------------------------------------------


def _fields(msg: Message) -> list[Any]:
    if isinstance(msg, Hello):
        return [
            msg.version,
            msg.mesh,
            msg.name,
            msg.address,
            list(msg.shards),
            msg.incarnation,
            msg.instance,
        ]
    if isinstance(msg, Push):
        durable = None if msg.durable is None else list(msg.durable)
        fields = [
            msg.shard,
            list(msg.updates),
            durable,
            msg.seq,
            _relayed_fields(msg.relayed),
            msg.forward,
            msg.hint,
            msg.relay,
        ]
        if msg.authors and any(a is not None for a in msg.authors):
            # Authors ride after the (possibly nil) signature, as one name when every update
            # has the same writer (the common case: a batch of one agent's deltas).
            authors = list(msg.authors)
            compact = authors[:1] if len(set(authors)) == 1 else authors
            return [*fields, msg.durable_signature, compact]
        return fields if msg.durable_signature is None else [*fields, msg.durable_signature]
    if isinstance(msg, Summary):
        return [msg.root, msg.shards]
    if isinstance(msg, Digests):
        return [[[s, d] for s, d in msg.digests]]
    if isinstance(msg, SyncRequest):
        return [[[s, sv] for s, sv in msg.state_vectors]]
    if isinstance(msg, Diff):
        return [msg.shard, msg.update, msg.state_vector]
    if isinstance(msg, DiffBatch):
        return [[[d.shard, d.update, d.state_vector] for d in msg.diffs]]
    if isinstance(msg, Ack):
        return [
            [
                _signed([st.shard, st.state_vector, st.delete_set], st.signature)
                for st in msg.states
            ],
            _relayed_fields(msg.relayed),
            msg.forward,
        ]
    if isinstance(msg, DiffChunk):
        fields = [msg.shard, msg.transfer, msg.index, msg.total, msg.data, msg.state_vector]
        return fields if msg.author is None else [*fields, msg.author]
    if isinstance(msg, PeerList):
        return [
            [_signed([p.name, p.address, p.incarnation, p.alive], p.signature) for p in msg.peers],
            msg.full,
        ]
    if isinstance(msg, Close):
        return [int(msg.code), msg.reason]
    if isinstance(msg, Certificates):
        return [list(msg.certificates)]
    if isinstance(msg, Holdings):  # (the flag only when set: a single piece is as before)
        return (
            [msg.version, list(msg.shards), True] if msg.more else [msg.version, list(msg.shards)]
        )
    if isinstance(msg, Offer):
        return [list(msg.shards)]
    if isinstance(msg, ReadRequest):
        return [msg.id, [[s, sv] for s, sv in msg.shards], msg.prefix]
    if isinstance(msg, ReadReply):
        return [msg.id, [[s, u] for s, u in msg.shards], msg.last]
    raise TypeError(f"not a protocol message: {type(msg).__name__}")


def _signed(fields: list[Any], signature: bytes | None) -> list[Any]:
    # A record's signature is one more item at its end, only when there is one: meshes without
    # credentials keep the exact frames of before (and their golden traces).
    return fields if signature is None else [*fields, signature]


def _relayed_fields(relayed: tuple[RelayedAck, ...]) -> list[list[Any]]:
    return [
        _signed(
            [r.agent, r.state.shard, r.state.state_vector, r.state.delete_set, r.hops],
            r.state.signature,
        )
        for r in relayed
    ]


def encode(msg: Message) -> bytes:
    """Encode ``msg`` as one frame.

    Encoding trusts its input (messages are built by the core); :func:`decode` on the other
    side checks everything.

    Raises:
        TypeError: ``msg`` is not a protocol message.
    """
    frame: bytes = msgpack.packb([TAGS[type(msg)], *_fields(msg)], use_bin_type=True)
    return frame


def decode(
    frame: bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_FRAME,
    max_items: int = MAX_FRAME_ITEMS,
) -> Message:
    """Decode and validate one frame received from a peer.

    Args:
        frame: the bytes of one websocket message (or simulated frame): bytes, or a bytearray
            or memoryview of them.
        max_size: refuse frames longer than this with ``OVERSIZE``.
        max_items: refuse frames with more msgpack array elements and arrays than this, all
            arrays together, with ``OVERSIZE`` (maps are refused outright).

    Returns:
        The message, every field checked.

    Raises:
        ProtocolError: anything wrong, with the close code to use (see the module docstring).
            Nothing else is ever raised, whatever the input.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        _bad(f"a frame must be bytes, not {type(frame).__name__}")
    if len(frame) > max_size:
        _bad(f"frame of {len(frame)} bytes exceeds the limit of {max_size}", CloseCode.OVERSIZE)
    left = [max_items]

    def count(seq: tuple[Any, ...]) -> tuple[Any, ...]:
        left[0] -= len(seq) + 1
        if left[0] < 0:
            raise _TooMany
        return seq

    try:
        # use_list=False: arrays become tuples, so the dataclasses stay immutable and hashable.
        # The hooks bound the work: every array is counted as it completes (the budget stops a
        # frame of millions of small arrays part-way), no single array may be longer than the
        # budget (checked before it is allocated), and the first map ends the frame.
        envelope = msgpack.unpackb(
            # bytes and bytearray as they are: msgpack reads either through the buffer
            # protocol (a bytearray cannot be resized while it reads) and copies every bin
            # and str out of it, so nothing decoded refers to the frame. A bytearray is what
            # websockets assembles a frame in (transports/_ws_inline.py): copying it first
            # was a second copy of every received frame (issue 17, h-vfloor). A memoryview
            # (any shape or format) is made plain bytes first, as before.
            frame if type(frame) is bytes or type(frame) is bytearray else bytes(frame),
            raw=False,
            use_list=False,
            strict_map_key=True,
            # A frame of b bytes holds fewer than b objects, so the count (elements plus
            # arrays) stays under 2 * b: below the budget nothing needs counting (the
            # per-array callback was a tenth of decoding a Push, issue 17/18).
            list_hook=count if 2 * len(frame) > max_items else None,
            object_hook=_no_maps,
            max_map_len=0,
            max_array_len=max_items,
        )
    except _TooMany:
        raise ProtocolError(
            f"frame holds more than {max_items} msgpack items", CloseCode.OVERSIZE
        ) from None
    except ValueError as exc:
        # One array header longer than the budget: msgpack refuses it before allocating, with
        # a ValueError ("N exceeds max_array_len(M)") that names no class of its own. It is
        # the same limit as above, so the same code (it was MALFORMED_FRAME; found by the
        # frame generator of tests/test_hostile_fuzz.py).
        if "exceeds max_array_len" in str(exc):
            raise ProtocolError(
                f"frame holds an array of more than {max_items} msgpack items",
                CloseCode.OVERSIZE,
            ) from None
        raise ProtocolError(
            f"frame is not msgpack: {type(exc).__name__}", CloseCode.MALFORMED_FRAME
        ) from None
    except Exception as exc:  # msgpack raises ValueError subclasses, TypeError, OverflowError...
        raise ProtocolError(
            f"frame is not msgpack: {type(exc).__name__}", CloseCode.MALFORMED_FRAME
        ) from None
    if type(envelope) is not tuple or not envelope or type(envelope[0]) is not int:
        _bad("frame is not an envelope [tag, fields...]")
    decoder = _DECODERS.get(envelope[0])
    if decoder is None:
        _bad(f"unknown message tag {envelope[0]}", CloseCode.UNKNOWN_MESSAGE)
    try:
        return decoder(envelope[1:])
    except ProtocolError:
        raise
    except Exception as exc:  # a checker bug must still refuse the frame, never crash the agent
        raise ProtocolError(f"invalid frame: {exc!r:.200}", CloseCode.MALFORMED_FRAME) from exc
