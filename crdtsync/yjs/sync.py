"""The y-protocols wire format that y-websocket clients speak: sync, awareness, auth messages.

Every websocket message of a y-websocket connection is one binary frame::

    varuint message type
      0 sync       varuint sync type, then varUint8Array payload
                     0 step 1    payload = the sender's state vector ("what I have")
                     1 step 2    payload = an update ("what you lack", answer to step 1)
                     2 update    payload = an update (a live edit)
      1 awareness  varUint8Array payload = an awareness update (see below)
      2 auth       varuint 0 (permission denied), varString reason      (server -> client)
      3 query awareness  (no payload: "send me every awareness state you know")

An awareness update is ``varuint count``, then per entry ``varuint clientID``, ``varuint
clock``, ``varString state`` where ``state`` is JSON (``"null"``: the client left).

Pure and strict, like the rest of :mod:`crdtsync.yjs`: :func:`decode` consumes the whole frame
and raises :class:`~crdtsync.errors.ProtocolError` (``MALFORMED_FRAME``) on anything else; the
update payloads are *not* validated here (the shard's one update path does that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import CloseCode, ProtocolError
from ._lib0 import MAX_SAFE, Malformed, bytes_span, encode_uint, read_str, read_uint

__all__ = [
    "AUTH",
    "AWARENESS",
    "QUERY_AWARENESS",
    "STEP1",
    "STEP2",
    "SYNC",
    "UPDATE",
    "AwarenessEntry",
    "YMessage",
    "decode",
    "decode_awareness",
    "encode_auth_denied",
    "encode_awareness",
    "encode_sync",
    "wrap_awareness",
]

SYNC, AWARENESS, AUTH, QUERY_AWARENESS = 0, 1, 2, 3
STEP1, STEP2, UPDATE = 0, 1, 2
#: Awareness entries accepted in one message (a browser tab has one; relays carry a room's).
MAX_AWARENESS_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class YMessage:
    """One decoded frame: ``kind`` (SYNC, AWARENESS, QUERY_AWARENESS), ``sub`` (the sync type,
    else 0) and ``payload`` (state vector, update or awareness bytes; empty for a query)."""

    kind: int
    sub: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state: its id, its clock, and its JSON state (``None``: left)."""

    client: int
    clock: int
    state: str

    @property
    def left(self) -> bool:
        """Whether this entry says the client is gone (state ``null``)."""
        return self.state == "null"


def _bad(msg: str) -> ProtocolError:
    return ProtocolError(f"bad y-protocols message: {msg}", CloseCode.MALFORMED_FRAME)


def decode(frame: bytes) -> YMessage:
    """Decode one client frame, consuming all of it.

    Raises:
        ProtocolError: ``MALFORMED_FRAME`` for anything that is not one whole message of a
            type a client may send (auth messages are server-to-client only).
    """
    try:
        kind, pos = read_uint(frame, 0, MAX_SAFE, "message type")
        if kind == SYNC:
            sub, pos = read_uint(frame, pos, MAX_SAFE, "sync type")
            if sub not in (STEP1, STEP2, UPDATE):
                raise _bad(f"unknown sync message type {sub}")
            start, end = bytes_span(frame, pos, "sync payload")
            payload = frame[start:end]
            pos = end
        elif kind == AWARENESS:
            start, end = bytes_span(frame, pos, "awareness payload")
            payload, sub, pos = frame[start:end], 0, end
            decode_awareness(payload)
        elif kind == QUERY_AWARENESS:
            payload, sub = b"", 0
        else:
            raise _bad(f"unknown message type {kind}")
    except Malformed as exc:
        raise _bad(str(exc)) from None
    if pos != len(frame):
        raise _bad(f"{len(frame) - pos} trailing bytes")
    return YMessage(kind, sub, bytes(payload))


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """The entries of an awareness update; every state must be JSON.

    Raises:
        ProtocolError: ``MALFORMED_FRAME``.
    """
    try:
        count, pos = read_uint(payload, 0, MAX_AWARENESS_ENTRIES, "awareness entry count")
        entries = []
        for _ in range(count):
            client, pos = read_uint(payload, pos, MAX_SAFE, "awareness client id")
            clock, pos = read_uint(payload, pos, MAX_SAFE, "awareness clock")
            state, pos = read_str(payload, pos, "awareness state")
            json.loads(state)
            entries.append(AwarenessEntry(client, clock, state))
    except Malformed as exc:
        raise _bad(str(exc)) from None
    except ValueError as exc:  # json.JSONDecodeError, and read_uint's limit
        raise _bad(f"awareness state is not JSON: {exc}") from None
    if pos != len(payload):
        raise _bad(f"{len(payload) - pos} trailing bytes in awareness update")
    return entries


def _with_bytes(out: bytearray, data: bytes) -> bytearray:
    encode_uint(out, len(data))
    out += data
    return out


def encode_sync(sub: int, payload: bytes) -> bytes:
    """A sync message (``STEP1`` with a state vector, ``STEP2``/``UPDATE`` with an update)."""
    out = bytearray((SYNC, sub))
    return bytes(_with_bytes(out, payload))


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    """An awareness message carrying ``entries``."""
    inner = bytearray()
    encode_uint(inner, len(entries))
    for entry in entries:
        encode_uint(inner, entry.client)
        encode_uint(inner, entry.clock)
        _with_bytes(inner, entry.state.encode("utf-8"))
    return bytes(_with_bytes(bytearray((AWARENESS,)), bytes(inner)))


def wrap_awareness(payload: bytes) -> bytes:
    """An awareness message carrying an awareness update as received (for relaying)."""
    return bytes(_with_bytes(bytearray((AWARENESS,)), payload))


def encode_auth_denied(reason: str) -> bytes:
    """The auth message y-websocket clients report as "permission denied" with ``reason``."""
    out = bytearray((AUTH, 0))
    return bytes(_with_bytes(out, reason.encode("utf-8")))
