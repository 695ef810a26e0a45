"""A write's Pushes to every peer encoded and framed once (issue 17/18, h-send).

A writer's local write goes to each peer holding the shard as its own Push (its own sequence
number per link, sometimes an ack riding on it): 7 Pushes per write at 8 agents, each encoded
with msgpack and framed by websockets. At 200 writes/s that send path was ~40 % of the writer's
CPU per write (benchmarks/README.md, h-send). Those Pushes differ at most in ``seq`` and
``durable``, and the links of a writer that started with its peers are usually in step (the
same ``seq`` on every link), so:

* :class:`PushFrames` encodes the first Push of a run of such Pushes in two pieces around its
  ``seq`` (:func:`crdtsync.wire.push_parts`) and the next ones as ``head + seq + tail``; a
  Push with the same ``seq`` as the one before it reuses its payload bytes outright;
* :func:`server_frame` is the websocket frame of a payload on a link where we are the server
  (unmasked, RFC 6455 5.2), built once per payload and written as it is to every link that
  takes it unchanged (:func:`send_framed_now`, next to ``InlineFrames.send_now``).

The bytes on the wire are those of before, frame for frame (``wire.encode`` and websockets'
own framing; tests/test_ws_frames.py checks it). Anything else (an ack, relayed acks, a hint,
a signature, any other message) is encoded by :func:`crdtsync.wire.encode` as before.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from websockets.protocol import OPEN, SERVER

from crdtsync import wire
from crdtsync.messages import Message, Push

__all__ = ["PushFrames", "send_framed_now", "server_frame"]


def server_frame(payload: bytes) -> bytes:
    """The unmasked, final, binary websocket frame of ``payload`` (what websockets writes
    for ``send(payload)`` on a server connection without extensions)."""
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x82, 126, n) + payload
    return struct.pack("!BBQ", 0x82, 127, n) + payload


class PushFrames:
    """The frames of one pump of the core's effects (see the module docstring); call
    :meth:`reset` after it, so nothing of one pump's messages is kept."""

    __slots__ = ("_like", "_head", "_tail", "_seq", "_payload", "_frame")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the last Push (its pieces, payload and frame)."""
        self._like: Push | None = None
        self._head = self._tail = b""
        self._seq = -1
        self._payload = b""
        self._frame: bytes | None = None

    def encode(self, msg: Message) -> bytes:
        """``wire.encode(msg)``, sharing the work with the Push encoded before it when the
        two differ at most in ``seq``."""
        if (
            type(msg) is not Push
            or msg.durable is not None
            or msg.relayed
            or msg.hint is not None
            or msg.durable_signature is not None
        ):
            return wire.encode(msg)
        like = self._like
        if (
            like is None
            or msg.updates != like.updates  # (the same bytes objects: compared by identity)
            or msg.shard != like.shard
            or msg.authors != like.authors
            or msg.forward is not like.forward
            or msg.relay is not like.relay
        ):
            self._head, self._tail = wire.push_parts(msg)
            self._like = msg
            self._seq = -1
        if msg.seq != self._seq:
            self._seq = msg.seq
            self._payload = wire.join_push(self._head, msg.seq, self._tail)
            self._frame = None
        return self._payload

    def frame(self, payload: bytes) -> bytes:
        """:func:`server_frame` of ``payload``, built once for the payload :meth:`encode`
        returned last (every link that takes it unchanged writes the same bytes)."""
        if payload is not self._payload:
            return server_frame(payload)
        if self._frame is None:
            self._frame = server_frame(payload)
        return self._frame


def send_framed_now(conn: Any, payload: bytes, framed: Callable[[bytes], bytes]) -> bool:
    """``conn.send_now(payload)`` (an :class:`~crdtsync.transports._ws_inline.InlineFrames`
    connection), with the unmasked frame ``framed(payload)`` (:meth:`PushFrames.frame`,
    built once for every link a write goes to) written as it is where websockets would write
    those very bytes: a server connection without extensions or debug logging, open, nothing
    of websockets' own waiting to be written and no fragmented message under way, not paused.
    Else ``send_now`` frames it as websockets does (a client masks each frame with a key of
    its own). False: nothing was written (as ``send_now``: use ``send()``)."""
    protocol = conn.protocol
    if (
        protocol.side is not SERVER
        or protocol.extensions
        or protocol.debug
        or getattr(protocol, "writes", True)  # (another websockets' internals: its own path)
        or getattr(protocol, "expect_continuation_frame", True)
    ):
        return bool(conn.send_now(payload))
    if (
        protocol.state is not OPEN
        or conn.send_in_progress is not None
        or conn.paused
        or conn.transport.is_closing()
    ):
        return False
    try:
        conn.transport.write(framed(payload))
    except Exception as exc:  # (OSError; as send_now and websockets' send: the connection is over)
        conn.set_connection_exc(exc)
        conn.transport.abort()
    return True
