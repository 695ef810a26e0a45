"""Frames handled without a task wake-up: received in websockets' own callback, sent at once.

websockets' asyncio connection parses the bytes of the socket in ``data_received`` and puts
each data frame into a queue (its ``Assembler``) that ``recv()`` reads from: for every frame
the connection's reader task is woken (a future, a task step, the coroutine chain of ``recv``),
and the transport's reader then yields once more so that a peer that keeps sending cannot hold
the event loop. In a receiver that gets one small frame at a time (a paced writer), those
wake-ups were most of the CPU spent outside crdtsync's own code (issue 17/18,
benchmarks/history/fanout-receive.md, branch h-recv2).

:class:`InlineFrames` (a mixin of the websockets connection classes the transport creates)
offers each complete binary frame to ``frame_sink`` first, from ``process_event``, while:

* a sink is set: the transport sets it only while its reader task waits in ``recv()``, so the
  frame the reader holds is always handled before a later one;
* websockets' queue is empty (an earlier frame still queued goes first: the order of frames is
  never changed);
* no frame was taken inline yet in this ``data_received`` call: of a burst read in one go the
  first is handled at once, the rest go through the queue and the reader, which yields between
  frames as before (fair to other peers and timers).

The sink returns False to leave the frame to the queue (the reader then handles it exactly as
before: e.g. when fair reading wants the peer to wait). Fragmented and text frames, control
frames and the opening handshake always take websockets' own path.

A socket read that holds exactly one whole binary frame (a paced peer's frame arrives alone)
is offered to the sink before websockets parses it (:func:`_lone_binary_frame`, under the same
conditions, and only while websockets' parser waits between frames with nothing buffered):
its generator parser, the ``Frame`` and the event list were a tenth of such a receiver's CPU
per update (issue 17/18, branch h-recv3). A read that is anything else, and a frame the sink
leaves, go to websockets' ``data_received`` as before.

Sending is the mirror image: each connection has a writer task that sends its queued frames in
order with ``await send()``; a writer woke once per frame, and a writer agent sends one frame
per peer and write (7 to 31 in the fanout benchmark). :meth:`InlineFrames.send_now` writes a
frame at once when ``send()`` would not wait (the connection open, no fragmented message under
way, the socket below its high-water mark); the transport uses it only while the link's writer
is idle with nothing queued, so the order of frames holds, and only for a frame that keeps the
link below the transport's ``high_water`` (a link is resumed by its writer task alone, after a
``send()`` that waited for the socket to drain), and queues the frame otherwise (back-pressure
unchanged: a paused socket makes ``send_now`` refuse).
"""

from __future__ import annotations

from collections.abc import Callable

import websockets.frames
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, Event
from websockets.streams import StreamReader

__all__ = ["InlineClientConnection", "InlineFrames"]

#: The sink of a connection: takes a frame's payload, True if it handled it. The payload is
#: websockets' own buffer as its parser made it (a ``bytearray`` for a frame it assembled, the
#: read's bytes for a lone frame), handed on without a copy: the sink decodes it at once and
#: keeps nothing of it (a catch-up's 1 MiB pieces were copied once more here for nothing).
FrameSink = Callable[[bytes | bytearray], bool]


class InlineFrames:
    """Mixin of a websockets asyncio connection: offer complete binary frames to
    :attr:`frame_sink` in ``process_event`` (see the module docstring)."""

    #: Set by the transport while its reader waits in ``recv()``; None: websockets' own path.
    frame_sink: FrameSink | None = None
    #: Frames that may still be taken inline in the current ``data_received`` call.
    _inline_left: int = 0
    #: websockets' parser (its generator object) as :func:`_lone_binary_frame` last found it,
    #: waiting between frames, with nothing fed to websockets since (a read taken whole
    #: feeds it nothing): still there, so the walk of its generator chain is not repeated.
    #: None after any read or end of stream websockets' own path gets.
    _boundary: object = None

    @staticmethod
    def supported(connection: object) -> bool:
        """Whether ``connection`` has the websockets internals this relies on (its frame
        queue ``recv_messages.frames``; ``send_in_progress``, ``paused``, ``send_data``,
        as in websockets 14-17); if not, the transport never sets a sink nor sends at once,
        and every frame takes websockets' own path."""
        queue = getattr(getattr(connection, "recv_messages", None), "frames", None)
        protocol = getattr(connection, "protocol", None)
        return (
            queue is not None
            and all(hasattr(protocol, name) for name in _PROTOCOL_FIELDS)
            and hasattr(queue, "__len__")
            and all(
                hasattr(connection, name)
                for name in ("send_in_progress", "paused", "send_data", "set_connection_exc")
            )
        )

    def send_now(self, data: bytes) -> bool:
        """Write ``data`` as one binary frame at once, without awaiting, when nothing could
        make ``send()`` wait: the connection is open, no fragmented message is being sent and
        the socket is not paused (its write buffer below the transport's high-water mark).
        This is what ``send()`` does then, minus its coroutine; False: nothing was written,
        use ``send()``. An error writing closes the connection as ``send()`` would."""
        if (
            self.protocol.state is not OPEN  # type: ignore[attr-defined]
            or self.send_in_progress is not None  # type: ignore[attr-defined]
            or self.paused  # type: ignore[attr-defined]
            or self.transport.is_closing()  # type: ignore[attr-defined]
        ):
            return False
        self.protocol.send_binary(data)  # type: ignore[attr-defined]
        try:
            self.send_data()  # type: ignore[attr-defined]
        except Exception as exc:  # (OSError; as send_context: the connection is over)
            self.set_connection_exc(exc)  # type: ignore[attr-defined]
            self.transport.abort()  # type: ignore[attr-defined]
        return True

    def data_received(self, data: bytes) -> None:
        sink = self.frame_sink
        if sink is not None and not len(self.recv_messages.frames):  # type: ignore[attr-defined]
            protocol = self.protocol  # type: ignore[attr-defined]
            payload = _lone_binary_frame(protocol, data, self._boundary)
            if payload is not None:
                if sink(payload):
                    self._boundary = protocol.parser  # (not fed: still between frames)
                    return
                # Left to the reader: websockets parses and queues it, as it would have
                # (the sink is not offered it again).
                self._boundary = None
                super().data_received(data)  # type: ignore[misc]
                return
        self._boundary = None
        self._inline_left = 1
        try:
            super().data_received(data)  # type: ignore[misc]
        finally:
            self._inline_left = 0

    def eof_received(self) -> bool | None:
        self._boundary = None  # (websockets' parser is fed the end of the stream)
        return super().eof_received()  # type: ignore[misc,no-any-return]

    def process_event(self, event: Event) -> None:
        sink = self.frame_sink
        if (
            sink is not None
            and self._inline_left
            and type(event) is Frame
            and event.opcode is Opcode.BINARY
            and event.fin
            and not len(self.recv_messages.frames)  # type: ignore[attr-defined]
        ):
            self._inline_left = 0
            if sink(event.data):  # bytes or websockets' bytearray, not copied (FrameSink)
                return
        super().process_event(event)  # type: ignore[misc]


class InlineClientConnection(InlineFrames, ClientConnection):
    """The client connection of an outbound dial (``connect(create_connection=...)``)."""


#: What :func:`_lone_binary_frame` reads of websockets' ``Protocol`` (as in websockets 14-17).
_PROTOCOL_FIELDS = (
    "state",
    "side",
    "current_size",
    "extensions",
    "debug",
    "reader",
    "parser",
    "max_message_size",
    "max_fragment_size",
)

#: websockets' unmasking (its C speedup when built), as its frame parser uses it.
_apply_mask: Callable[[bytes, bytes], bytes] = websockets.frames.apply_mask  # type: ignore[attr-defined]

#: The code of websockets' ``StreamReader.at_eof``: where its frame parser waits between frames.
_AT_EOF = StreamReader.at_eof.__code__


def _lone_binary_frame(protocol: object, data: bytes, boundary: object = None) -> bytes | None:
    """The payload if ``data`` (the bytes of one socket read) is exactly one complete, final,
    binary frame that websockets would take as it is, else None.

    A paced peer's frame arrives alone in its own read; this takes it without websockets'
    generator parser (``receive_data``: the frame's header read in steps through its
    ``StreamReader``, a ``Frame``, the event list), a tenth of a paced receiver's CPU per
    update (issue 17/18, benchmarks/history/fanout-receive.md, h-recv3). Only when websockets' parser waits
    between two frames with nothing buffered (so ``data`` starts a frame), the connection is
    open with no fragmented message under way, no extension negotiated and debug logging
    off, and the frame's header is one websockets accepts as it is (no reserved bit, masked
    if and only if we are the server, within the size limits); anything else, valid or not,
    is None: websockets' own path, unchanged. ``boundary``: the parser generator this found
    waiting between frames last time, if nothing was fed to websockets since (then it still
    waits there and its generator chain is not walked again).
    """
    if (
        type(data) is not bytes
        or len(data) < 2
        or data[0] != 0x82  # FIN, no reserved bit, BINARY
        or protocol.state is not OPEN  # type: ignore[attr-defined]
        or protocol.current_size is not None  # type: ignore[attr-defined]
        or protocol.extensions  # type: ignore[attr-defined]
        or protocol.debug  # type: ignore[attr-defined]
        or protocol.reader.buffer  # type: ignore[attr-defined]
    ):
        return None
    masked = protocol.side is SERVER  # type: ignore[attr-defined]
    head = data[1]
    if bool(head & 0x80) is not masked:
        return None
    length, start = head & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(data[2:10], "big"), 10
    end = start + 4 * masked + length
    if end != len(data):
        return None  # part of a frame, or more than one: websockets' parser
    limit = protocol.max_message_size  # type: ignore[attr-defined]
    fragment = protocol.max_fragment_size  # type: ignore[attr-defined]
    if (limit is not None and length > limit) or (fragment is not None and length > fragment):
        return None
    parser = protocol.parser  # type: ignore[attr-defined]
    if parser is not boundary:  # (the same generator, not fed since: still between frames)
        for _ in range(4):  # (the client's and the server's parse wrap Protocol.parse)
            parser = getattr(parser, "gi_yieldfrom", None)
            if parser is None:
                return None
            if getattr(parser, "gi_code", None) is _AT_EOF:
                break
        else:
            return None
    if masked:
        return _apply_mask(data[start + 4 :], data[start : start + 4])
    return data[start:]
