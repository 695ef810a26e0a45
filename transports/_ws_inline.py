"""Frames handled without a task wake-up: received in websockets' own callback, sent at once.

websockets' asyncio connection parses the bytes of the socket in ``data_received`` and puts
each data frame into a queue (its ``Assembler``) that ``recv()`` reads from: for every frame
the connection's reader task is woken (a future, a task step, the coroutine chain of ``recv``),
and the transport's reader then yields once more so that a peer that keeps sending cannot hold
the event loop. In a receiver that gets one small frame at a time (a paced writer), those
wake-ups were most of the CPU spent outside crdtsync's own code (issue 17/18,
benchmarks/README.md, branch h-recv2).

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

Sending is the mirror image: each connection has a writer task that sends its queued frames in
order with ``await send()``; a writer woke once per frame, and a writer agent sends one frame
per peer and write (7 to 31 in the fanout benchmark). :meth:`InlineFrames.send_now` writes a
frame at once when ``send()`` would not wait (the connection open, no fragmented message under
way, the socket below its high-water mark); the transport uses it only while the link's writer
is idle with nothing queued, so the order of frames holds, and queues the frame otherwise
(back-pressure unchanged: a paused socket makes ``send_now`` refuse).
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Event

__all__ = ["InlineClientConnection", "InlineFrames"]

#: The sink of a connection: takes a frame's payload, True if it handled it.
FrameSink = Callable[[bytes], bool]


class InlineFrames:
    """Mixin of a websockets asyncio connection: offer complete binary frames to
    :attr:`frame_sink` in ``process_event`` (see the module docstring)."""

    #: Set by the transport while its reader waits in ``recv()``; None: websockets' own path.
    frame_sink: FrameSink | None = None
    #: Frames that may still be taken inline in the current ``data_received`` call.
    _inline_left: int = 0

    @staticmethod
    def supported(connection: object) -> bool:
        """Whether ``connection`` has the websockets internals this relies on (its frame
        queue ``recv_messages.frames``; ``send_in_progress``, ``paused``, ``send_data``,
        as in websockets 14-17); if not, the transport never sets a sink nor sends at once,
        and every frame takes websockets' own path."""
        queue = getattr(getattr(connection, "recv_messages", None), "frames", None)
        return (
            queue is not None
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
        self._inline_left = 1
        try:
            super().data_received(data)  # type: ignore[misc]
        finally:
            self._inline_left = 0

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
            data = event.data
            if sink(data if type(data) is bytes else bytes(data)):
                return
        super().process_event(event)  # type: ignore[misc]


class InlineClientConnection(InlineFrames, ClientConnection):
    """The client connection of an outbound dial (``connect(create_connection=...)``)."""
