"""Executing the core's effects and running its timer, for
:class:`~crdtsync.transports.websocket.WebsocketTransport` (a mixin, split from it).

After every batch of received frames, every timer tick and every ``kick()``, the transport
asks the core what to do (:meth:`_Effects._pump`): frames go to each connection's queue (with
its back-pressure: ``pause_writing`` above ``high_water``, ``FLOODING`` above
``max_send_buffer``), ``Close`` messages close their connection after what was queued, dials
start as tasks, and the timer (an event-loop timer handle, :meth:`_Effects._arm`) fires at the
core's next deadline, ticks it and pumps again. No protocol decision is made here.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crdtsync.transports._ws_links import _close_reason, _CloseRequest, _Link
from crdtsync.transports.yjsdoor import PATH_PREFIX

from crdtsync import wire
from crdtsync.errors import CloseCode
from crdtsync.gossip import GossipCore
from crdtsync.messages import Close, Push

__all__: list[str] = []

logger = logging.getLogger("crdtsync.transports.websocket")

#: Where a client whose first frame is not ours (e.g. y-protocols) is pointed in the close reason.
_YJS_HINT = f"ws://HOST:PORT{PATH_PREFIX}<shard>"
#: Shortest wait of the timer task when the core reports a deadline that tick() did not clear
#: (a core bug): the loop must not spin.
_MIN_TIMER_WAIT = 0.001
#: Bytes a websocket frame header adds to its payload at most (RFC 6455: 2 + 8 + a 4-byte mask).
_FRAME_HEADER = 14


class _Effects:
    """Mixin of :class:`~crdtsync.transports.websocket.WebsocketTransport`: execute the
    core's effects and run its timer. The attributes and methods declared below belong to
    the transport (set in its ``__init__``, defined in it or in its other mixins)."""

    core: GossipCore
    _by_peer: dict[str, _Link]
    _closing: bool
    _max_frame: int
    _high_water: int
    _max_send_buffer: int
    _dial_tasks: set[asyncio.Task[None]]
    _connecting: set[asyncio.Task[Any]]
    _armed: float | None
    _timer: asyncio.TimerHandle | None
    _timer_off: bool
    _ticked_at: float
    _loop: asyncio.AbstractEventLoop | None
    _close_timeout: float
    _clock: Callable[[], float]

    if TYPE_CHECKING:

        async def _dial(self, address: str) -> None: ...

        def _protocol_error(self, link: _Link, code: CloseCode, reason: str) -> None: ...

    # -- effects -------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Execute the core's effects: queue its frames, start its dials, re-arm the timer."""
        try:
            self._execute_effects()
        except Exception:  # a core bug must not kill the task that happened to call us
            logger.exception("%s: executing the core's effects failed", self.core.name)

    def _execute_effects(self) -> None:
        core = self.core
        # The frame of the last Push encoded: a window's Push to each of its peers is most
        # often the same message (same deltas, objects and all, same sequence number, no ack
        # riding), one after the other: encoded once (issue 17, h-burst9).
        last: Push | None = None
        last_frame = b""
        for peer, msg in core.data_to_send():
            link = self._by_peer.get(peer)
            if link is None or link.closing or self._closing:
                continue  # the connection is gone or going: the core learns it from connection_lost
            if type(msg) is Push and msg == last:
                frame = last_frame
            else:
                try:
                    frame = wire.encode(msg)
                except Exception:
                    logger.exception(
                        "%s: cannot encode %s for %s", core.name, type(msg).__name__, peer
                    )
                    continue
                if type(msg) is Push:
                    last, last_frame = msg, frame
            if isinstance(msg, Close):
                self._request_close(link, int(msg.code), msg.reason, frame=frame)
            elif len(frame) > self._max_frame:
                logger.error(
                    "%s: dropping a %s of %d bytes for %s: over max_frame (%d)",
                    core.name,
                    type(msg).__name__,
                    len(frame),
                    peer,
                    self._max_frame,
                )
            else:
                self._enqueue(link, frame)
        for address in core.dials():
            if self._closing:
                continue
            task = asyncio.create_task(self._dial(address), name=f"crdtsync-dial-{address}")
            self._dial_tasks.add(task)
            self._connecting.add(task)
            task.add_done_callback(self._dial_tasks.discard)
            task.add_done_callback(self._connecting.discard)
        self._arm()

    def _enqueue(self, link: _Link, frame: bytes) -> None:
        if link.closing:
            return
        buffered = self._buffered(link)
        if (
            link.writer_idle
            and not link.queue
            and not link.paused
            and buffered + len(frame) + _FRAME_HEADER <= self._high_water
            and link.ws.send_now(frame)  # type: ignore[attr-defined]
        ):
            # Nothing queued before it and the socket takes it: written now, as the writer
            # task would have, without waking it (7-31 sends per write at the writer, one
            # task step and one send() coroutine each: issue 17/18, benchmarks/history/fanout-writer.md).
            # Only a frame that cannot take the link over high_water: the link is resumed
            # by its writer task alone, after a send() that waited for the socket to drain.
            # A frame written here that paused the link left that task asleep with nothing
            # queued, and nothing ever resumed it: pushes stayed held for good once the peer
            # read again (issue 17, h-wanburst2: one 400 KB Push a window to a slow reader).
            link.hello_sent = True
            return  # (at most high_water buffered: nothing to pause)
        link.queue.append(frame)
        link.queued_bytes += len(frame)
        link.wake.set()
        buffered += len(frame)
        if buffered > self._max_send_buffer:
            self._protocol_error(
                link, CloseCode.FLOODING, f"{buffered} bytes queued for a peer that does not read"
            )
        elif link.peer is not None and not link.paused and buffered > self._high_water:
            link.paused = True
            self.core.pause_writing(link.peer)

    def _buffered(self, link: _Link) -> int:
        transport = link.ws.transport
        size = 0
        if transport is not None and not transport.is_closing():
            size = transport.get_write_buffer_size()
        return link.queued_bytes + size

    def _request_close(
        self,
        link: _Link,
        code: int,
        reason: str,
        message: Close | None = None,
        *,
        frame: bytes | None = None,
    ) -> None:
        """Close ``link`` after its queued frames: the Close message (if any), then the close frame."""
        if link.closing:
            return
        link.closing = True
        if frame is None and message is not None:
            frame = wire.encode(message)
        if frame is not None:
            link.queue.append(frame)
            link.queued_bytes += len(frame)
        link.queue.append(_CloseRequest(code, _close_reason(reason)))
        link.wake.set()
        # websockets bounds the closing handshake (close_timeout), not a send stuck on a peer
        # that does not read: abort the socket if the connection outlives both.
        assert self._loop is not None
        link.watchdog = self._loop.call_later(2 * self._close_timeout, self._abort, link)

    def _refuse(self, link: _Link, code: CloseCode, reason: str) -> None:
        """Close ``link`` now because of a protocol error: drop what it had queued.

        A connection we accepted whose Hello was not validated (an unknown client: it sent
        nothing valid, garbage, or another mesh's Hello) gets only the websocket close frame
        with the code and its name as reason: no Close message, no Hello, nothing that names
        this mesh or agent (the full reason is in our log line).
        """
        if link.closing:
            return
        keep: list[bytes | _CloseRequest] = []
        if link.hello_queued and not link.hello_sent and link.queue:
            keep.append(link.queue[0])  # our Hello still goes first
        link.queue.clear()
        link.queue.extend(keep)
        link.queued_bytes = sum(len(f) for f in keep if isinstance(f, bytes))
        if not link.outbound and not link.hello_queued:
            reason = f"{code.name}: handshake refused"
            if code == CloseCode.MALFORMED_FRAME:  # likely a Yjs client at the wrong path
                reason += f"; Yjs clients connect to {_YJS_HINT}"
            self._request_close(link, int(code), reason)
            return
        self._request_close(link, int(code), reason, Close(code, reason[: wire.MAX_REASON]))

    @staticmethod
    def _abort(link: _Link) -> None:
        if not link.finished.is_set():
            logger.info("aborting connection %s: close did not complete", link.label())
            link.ws.transport.abort()

    # -- timer ---------------------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        try:
            return self.core.next_deadline()
        except Exception:
            logger.exception("%s: core.next_deadline failed", self.core.name)
            return self._clock() + 1.0  # retry later rather than stop the timer

    def _arm(self) -> None:
        """(Re-)arm the timer for the core's next deadline, if it moved.

        The timer is one event-loop timer handle (``call_later``), cancelled and made again
        when the deadline moves: no task to wake for a re-arm, and a tick runs in the timer's
        own callback. (It was a task sleeping on an event with a timeout: each re-arm and
        tick cost a task step and a timeout context; 9 % of a paced receiver's CPU,
        benchmarks/history/fanout-receive.md, h-recv2.)

        A timer armed for a time already past is never moved: the core reports an overdue
        deadline as "now" (:meth:`GossipCore.next_deadline`), a value that moves with every
        call into the core, and an agent writing in a tight loop (a kick at every loop turn)
        cancelled and re-made the due timer at every turn, before the loop ran it: its
        coalescing window never closed, nothing was pushed for as long as the loop wrote
        (issue 17's stream burst: seconds, benchmarks/history/fanout-writer.md, h-stream second pass)."""
        deadline = self._next_deadline()
        if deadline == self._armed:
            return
        if self._timer is not None:
            if self._armed is not None and self._armed <= self._clock():
                # Armed for a time already past: it fires in this loop turn (or the next),
                # ticks the core and re-arms for whatever is next, so it is left alone.
                return
            self._timer.cancel()
            self._timer = None
        self._armed = deadline
        if deadline is None or self._timer_off or self._loop is None:
            return
        delay = deadline - self._clock()
        if deadline <= self._ticked_at:
            # tick() left this deadline due: do not spin on it
            delay = max(delay, _MIN_TIMER_WAIT)
        self._timer = self._loop.call_later(max(delay, 0.0), self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        """The timer fired: tick the core at its deadline, execute the effects (re-arms)."""
        self._timer = None
        self._armed = math.nan  # (whatever the deadline now is, it is armed again)
        now = self._ticked_at = max(self._clock(), deadline)
        try:
            self.core.tick(now)
        except Exception:
            logger.exception("%s: core.tick failed", self.core.name)
        self._pump()
        if self._timer is None and not self._timer_off:  # the pump failed before re-arming
            self._arm()
