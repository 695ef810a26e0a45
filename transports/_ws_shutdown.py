"""The websocket transport's shutdown: :meth:`WebsocketTransport.close
<crdtsync.transports.websocket.WebsocketTransport.close>`.

The order matters, and is why this is one method: stop accepting (the server keeps the
connections it has), cancel dials under way and end pending authentications, close the Yjs
door's clients, then ask every link to close (accepted peers get a ``Close(code)`` message
first, so their cores take this agent out of the overlay at once instead of suspecting it,
then the websocket close frame with the same code); wait for their closing handshakes, abort
the sockets of peers that ignored it (``close_timeout``), and only then stop the dial tasks,
the core's timer and the server. Concurrent callers all wait for the same end.

A mixin of :class:`~crdtsync.transports.websocket.WebsocketTransport` (:class:`_Shutdown`),
split from :mod:`crdtsync.transports.websocket` so that the transport's set-up and its
shutdown each read in a module of a few hundred lines; the state is the transport's (set in
its ``__init__``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from crdtsync import wire
from crdtsync.errors import CloseCode
from crdtsync.messages import Close

if TYPE_CHECKING:
    from crdtsync.transports.yjsdoor import YjsDoor
    from websockets.asyncio.server import Server

    from crdtsync.gossip import GossipCore

__all__: list[str] = []  # (the mixin _Shutdown only)

#: The transport's logger (the same name as before the split: log filters keep working).
logger = logging.getLogger("crdtsync.transports.websocket")


class _Shutdown:
    """Mixin of :class:`~crdtsync.transports.websocket.WebsocketTransport`: its shutdown."""

    core: GossipCore
    _server: Server | None
    _connecting: set[asyncio.Task[Any]]
    _dial_tasks: set[asyncio.Task[None]]
    _links: set[Any]  # (_ws_links._Link)
    _yjs: YjsDoor | None
    _closing: bool
    _closed: asyncio.Event
    _stopping: asyncio.Event
    _close_timeout: float
    _timer: asyncio.TimerHandle | None
    _timer_off: bool
    _revocation_timer: asyncio.TimerHandle | None

    if TYPE_CHECKING:

        def _request_close(
            self,
            link: Any,
            code: int,
            reason: str,
            message: Close | None = None,
            *,
            frame: bytes | None = None,
        ) -> None: ...

        def _drop_early_dials(self) -> None: ...

    async def close(
        self, code: CloseCode = CloseCode.GOING_AWAY, reason: str = "agent stopping"
    ) -> None:
        """Close every connection with ``code``, stop the server and every task.

        Accepted peers get a ``Close(code)`` message, then a websocket close frame with the
        same code. Idempotent; concurrent callers all wait for the end of the shutdown.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._stopping.set()
        if self._revocation_timer is not None:  # (_ws_auth.py: no more revocation sweeps)
            self._revocation_timer.cancel()
        try:
            if self._server is not None:
                self._server.close(close_connections=False)  # stop accepting; handlers finish below
            for task in list(self._connecting):
                task.cancel()
            if self._yjs is not None:
                await asyncio.gather(*self._yjs.close_all(), return_exceptions=True)
            for link in list(self._links):
                message = Close(code, reason[: wire.MAX_REASON]) if link.peer is not None else None
                self._request_close(link, int(code), reason, message)
            await self._wait_links(self._close_timeout + 1.0)
            for link in list(self._links):  # a peer that ignored the close handshake
                link.ws.transport.abort()
            await self._wait_links(self._close_timeout + 1.0)
            self._drop_early_dials()
            if self._dial_tasks:
                await asyncio.gather(*self._dial_tasks, return_exceptions=True)
            self._timer_off = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._server is not None:
                await self._server.wait_closed()
        finally:
            self._closed.set()

    async def _wait_links(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self._links:
                    await next(iter(self._links)).finished.wait()
        except TimeoutError:
            logger.warning(
                "%s: %d connections did not close in time", self.core.name, len(self._links)
            )
