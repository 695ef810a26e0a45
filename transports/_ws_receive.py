"""The receive side of a websocket connection: frames read, decoded and handed to the core.

The reader task of one connection (:meth:`_LinkReceive._reader`) and the frames websockets'
callback offers while it waits (:meth:`_LinkReceive._frame_inline`, :mod:`._ws_inline`), fair
reading's wait before a frame is decoded, the decoding and validation of a frame, the first
frame handed to the core's handshake (:meth:`_LinkReceive._accept`, which settles duplicate
connections), a refusal closing the connection with its code, and one pump per event-loop
iteration however many frames came.

A mixin, the base of :class:`~crdtsync.transports._ws_links._LinkRunner` (so the methods
still resolve through it), split from :mod:`crdtsync.transports._ws_links` so opening and
running a connection and receiving on it each read in one module of a few hundred lines; the
state is the transport's (set in its ``__init__``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from crdtsync.transports._ws_inline import InlineFrames
from websockets.exceptions import ConnectionClosed

from crdtsync import wire
from crdtsync.errors import CloseCode, InvalidShardName, InvalidUpdate, ProtocolError
from crdtsync.gossip import GossipCore
from crdtsync.messages import Hello, Message
from crdtsync.quotas import ConnectionCap

if TYPE_CHECKING:
    from crdtsync.transports._ws_links import _Link

__all__: list[str] = []

#: The transport's logger: log lines keep the name of the module users configure.
logger = logging.getLogger("crdtsync.transports.websocket")


class _LinkReceive:
    """Mixin of :class:`~crdtsync.transports._ws_links._LinkRunner`: receive on connections.

    The attributes and methods declared below belong to the transport (set in its
    ``__init__``, defined in it, in :class:`~crdtsync.transports._ws_effects._Effects` or in
    :class:`~crdtsync.transports._ws_links._LinkRunner`).
    """

    core: GossipCore
    _clock: Callable[[], float]
    _on_activity: Callable[[], None] | None
    _max_frame: int
    _loop: asyncio.AbstractEventLoop | None
    _by_peer: dict[str, _Link]
    _after_receive_pending: bool
    _conn_cap: ConnectionCap

    if TYPE_CHECKING:

        def _pump(self) -> None: ...

        def _refuse(self, link: _Link, code: CloseCode, reason: str) -> None: ...

        def _queue_handshake(self, link: _Link) -> None: ...

    async def _reader(self, link: _Link) -> None:
        """Receive, validate and hand to the core every frame of ``link`` until it closes.

        While this task waits in ``recv()``, a frame that arrives alone is handled in
        websockets' callback instead (:meth:`_frame_inline`, :mod:`._ws_inline`); this task
        handles the others (a burst read in one go, anything fair reading holds back), in
        order."""
        ws = link.ws
        inline = isinstance(ws, InlineFrames) and InlineFrames.supported(ws)
        sink = partial(self._frame_inline, link)
        while True:
            if inline:
                ws.frame_sink = sink  # type: ignore[attr-defined]
            try:
                data = await ws.recv()
            except ConnectionClosed:
                return
            finally:
                if inline:
                    ws.frame_sink = None  # type: ignore[attr-defined]
            if link.closing:
                continue  # draining until the peer's close frame, which the queue may hold up
            if link.peer is not None:
                # Fair reading (issue #11), the cheapest check: beyond the agent's frame rate
                # a peer over its share waits here, before its frame is decoded; its next
                # frames stay in the socket buffers (the sender blocks). Light peers go on.
                delay, link.read_wait = link.read_wait, None
                if delay is None:
                    delay = self.core.read_delay(link.peer, self._clock())
                while delay > 0.0 and not link.closing:
                    await asyncio.sleep(delay)
                    delay = self.core.read_delay(link.peer, self._clock())
                if link.closing:
                    continue
            self._dispatch(link, data)
            # Yield after each frame: ``recv`` returns without suspending while frames are
            # buffered, so a peer that keeps sending would hold the event loop (measured: 9.6 s
            # of lag for 4 flooders, benchmarks/hostile.py) and starve honest peers and timers.
            await asyncio.sleep(0)

    def _frame_inline(self, link: _Link, data: bytes | bytearray) -> bool:
        """A frame of ``link`` that arrived while its reader waits, offered from websockets'
        callback: handle it now (True), or leave it to the reader (False: before the
        handshake, while closing, or when fair reading makes the peer wait)."""
        if link.closing or link.peer is None:
            return False
        delay = self.core.read_delay(link.peer, self._clock())
        if delay > 0.0:
            link.read_wait = delay  # the reader waits it out with the frame, as before
            return False
        self._dispatch(link, data, at_once=True)
        return True

    def _dispatch(
        self, link: _Link, data: bytes | bytearray | str, *, at_once: bool = False
    ) -> None:
        """Handle one frame of an accepted (or handshaking) connection: a protocol error
        closes it with its code, any other error with INTERNAL_ERROR; then the pump is due.

        ``at_once`` (a frame handled inline, in websockets' callback): pump now unless a pump
        is already due in this iteration, rather than in one more event-loop iteration (a
        receiver of a paced stream made two iterations per update, the second only for the
        pump: its ``select`` and the loop's bookkeeping)."""
        try:
            self._handle(link, data)
        except ProtocolError as exc:
            self._protocol_error(link, exc.code, str(exc))
        except InvalidUpdate as exc:  # a ReplicaSet that did not go through the core's checks
            self._protocol_error(link, CloseCode.INVALID_UPDATE, str(exc))
        except InvalidShardName as exc:
            self._protocol_error(link, CloseCode.INVALID_SHARD, str(exc))
        except Exception:
            logger.exception(
                "%s: internal error handling a frame from %s", self.core.name, link.label()
            )
            self._refuse(link, CloseCode.INTERNAL_ERROR, "internal error")
        if at_once and not self._after_receive_pending:
            self._after_receive()
        else:
            self._after_receive_soon()

    def _protocol_error(self, link: _Link, code: CloseCode, reason: str) -> None:
        logger.warning(
            "%s: closing connection %s: %s (%d): %s",
            self.core.name,
            link.label(),
            code.name,
            code,
            reason,
        )
        self._refuse(link, code, reason)

    def _handle(self, link: _Link, data: str | bytes | bytearray) -> None:
        if isinstance(data, str):
            raise ProtocolError("text frame; crdtsync frames are binary", CloseCode.MALFORMED_FRAME)
        msg = wire.decode(data, max_size=self._max_frame)
        now = self._clock()
        if link.peer is None:
            self._accept(link, msg, now)
        elif link.identity is None:
            self.core.receive(link.peer, msg, now)
        else:
            refusals = self.core.refusals
            self.core.receive(link.peer, msg, now)
            if self.core.refusals != refusals:  # the gate dropped or cut it: one line
                logger.warning("%s: from %s: %s", self.core.name, link.peer, self.core.last_refusal)

    def _accept(self, link: _Link, msg: Message, now: float) -> None:
        """Hand the first frame to the core's handshake (core.connection_made), which settles
        duplicate connections, then queue what the handshake says (our Hello if dialled)."""
        if link.identity is not None and isinstance(msg, Hello) and msg.name != link.identity.name:
            raise ProtocolError(
                f"Hello names {msg.name!r}, authenticated as {link.identity.name!r}",
                CloseCode.IDENTITY_MISMATCH,
            )
        hs = link.handshake
        assert hs is not None
        try:
            peer = hs.receive(msg, now)
        except ProtocolError as exc:
            self._queue_handshake(link)  # a concurrent dial gets our Hello before the Close
            if hs.duplicate:
                # A concurrent dial: the core keeps the other connection. Not a fault.
                logger.info("%s: closing a second connection: %s", self.core.name, exc)
                self._refuse(link, exc.code, str(exc))
                return
            raise
        old = self._by_peer.pop(peer, None)  # popped: its end is not reported lost
        if old is not None:
            logger.info("%s: a newer connection replaces the one with %s", self.core.name, peer)
            self._refuse(old, CloseCode.DUPLICATE_NAME, "replaced by a newer connection")
        assert isinstance(msg, Hello)
        link.peer, link.hello, link.accepted_at = peer, msg, now
        self._by_peer[peer] = link
        self._conn_cap.handshaken(id(link.ws))
        # Only now does an inbound connection get our Hello: ahead of whatever the core queued
        # for the peer in connection_made, which the next _pump hands to the writer.
        self._queue_handshake(link)

    def _after_receive_soon(self) -> None:
        # One pump per event-loop iteration however many frames arrived in it.
        if not self._after_receive_pending:
            self._after_receive_pending = True
            assert self._loop is not None
            self._loop.call_soon(self._after_receive)

    def _after_receive(self) -> None:
        self._after_receive_pending = False
        self._pump()
        if self._on_activity is not None:
            try:
                self._on_activity()
            except Exception:
                logger.exception("%s: on_activity callback failed", self.core.name)
