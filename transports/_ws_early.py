"""Early dials: a starting agent's seed connections opened before its store and core exist.

A joining agent's first message waits for its start-up (the LMDB open, the shard registry, the
gossip core: 2-3 ms of CPU) and then for its dial (the TCP connect and the websocket upgrade:
one or two round trips, mostly idle on this side). :func:`dial_early` starts the dial first, so
the two overlap: the agent calls it (through its transport factory's optional ``dial_early``)
before it opens its store, and hands the result to the transport it builds afterwards
(:meth:`_EarlyDialing.adopt_early_dials`). When the core asks for a seed, the transport's
``_dial`` takes the connection already under way instead of opening a new one; everything after
the connect is the same path as before (seed tracking, a failed dial reported to the core with
its backoff, the handshake, the link).

What this does not change: nothing is read from, or sent on, an early connection before the
core has it. The dialer speaks first (its Hello, queued by the core's handshake only once the
link runs) and the acceptor says nothing before it has validated that Hello, so no message can
reach the agent before its core and registry exist; an early connection the core does not ask
for at its first turn is closed.

Only plain ``ws://`` seeds of an agent without credentials are dialled early (a ``wss://`` dial
needs the transport's TLS context, an authenticated one its credentials), and only with the
transport's default client options: a transport built with other options (timeouts, frame
limit, compression) discards the early connections and dials as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from crdtsync.transports._ws_inline import InlineClientConnection
from websockets.asyncio.client import ClientConnection, connect

__all__ = ["EarlyDials", "client_options", "dial_early"]  # (and the mixin _EarlyDialing)

_log = logging.getLogger("crdtsync.transports.websocket")


def client_options(
    *,
    max_frame: int,
    compression: str | None = None,
    open_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    close_timeout: float = 10.0,
    max_queue: int = 4,
    ssl: Any = None,
) -> dict[str, Any]:
    """The keyword arguments of websockets' ``connect`` for a peer dial (the defaults are
    :class:`~crdtsync.transports.websocket.WebsocketTransport`'s; a test holds them equal)."""
    return {
        "compression": compression,
        "proxy": None,  # peers are dialled directly, whatever HTTP(S)_PROXY says
        "open_timeout": open_timeout,
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "close_timeout": close_timeout,
        "max_size": 2 * max_frame,
        "max_queue": max_queue,
        "ssl": ssl,
        "create_connection": InlineClientConnection,
    }


async def _connect(address: str, options: dict[str, Any]) -> ClientConnection:
    return await connect(address, **options)


class EarlyDials:
    """Connections to seed addresses under way before the transport that will run them exists.

    Each address gets one task running websockets' ``connect`` with :attr:`options`; the
    transport takes a task with :meth:`take` (at most once per address) and awaits it as its
    own dial. :meth:`close` ends those never taken.
    """

    def __init__(self, addresses: Iterable[str], options: dict[str, Any]) -> None:
        self.options = options
        self._tasks: dict[str, asyncio.Task[ClientConnection]] = {
            a: asyncio.create_task(_connect(a, options), name=f"crdtsync-early-dial-{a}")
            for a in dict.fromkeys(addresses)
            if a.startswith("ws://")
        }
        #: addresses whose early connection a transport took (for tests and inspection).
        self.taken: list[str] = []

    def __len__(self) -> int:
        return len(self._tasks)

    def take(self, address: str) -> asyncio.Task[ClientConnection] | None:
        """The connection under way to ``address``, handed out once (None: not dialled early)."""
        task = self._tasks.pop(address, None)
        if task is not None:
            self.taken.append(address)
        return task

    async def close(self) -> None:
        """Cancel the dials not taken, or close their connections if already open."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()  # (no effect on a finished one)
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, ClientConnection):
                try:
                    await result.close()
                except Exception:  # noqa: BLE001 (an unused connection: nothing to report)
                    _log.debug("closing an unused early dial failed", exc_info=True)


def dial_early(addresses: Iterable[str], *, max_frame: int) -> EarlyDials:
    """Start dialling ``addresses`` now, with the transport's default client options.

    Call it from a running event loop; the connects go out at the loop's next turn."""
    return EarlyDials(addresses, client_options(max_frame=max_frame))


class _EarlyDialing:
    """Mixin of :class:`~crdtsync.transports.websocket.WebsocketTransport`: early dials."""

    _early_dials: EarlyDials | None
    _loop: asyncio.AbstractEventLoop | None
    _dial_tasks: set[asyncio.Task[None]]
    _connecting: set[asyncio.Task[Any]]
    _links: set[Any]  # (_ws_links._Link: not imported, it imports this module)

    if TYPE_CHECKING:

        def _client_options(self) -> dict[str, Any]: ...

    def adopt_early_dials(self, early: EarlyDials) -> bool:
        """Run ``early``'s connections as this transport's seed dials (call before
        :meth:`start`). Returns False, and closes them, if they were opened with other client
        options than this transport's (then its seeds are dialled as usual)."""
        if early.options != self._client_options():
            self._close_early(early)
            return False
        self._early_dials = early
        return True

    def hellos_pending(self) -> bool:
        """Whether a dial is under way or a link we dialled has not written our Hello yet
        (``Agent.start()`` gives its early-dialled seeds a few loop turns to send it)."""
        return bool(self._connecting) or any(
            link.outbound and not link.hello_sent for link in self._links
        )

    def _take_early(self, address: str) -> asyncio.Task[ClientConnection] | None:
        early = self._early_dials
        return early.take(address) if early is not None else None

    def _drop_early_dials(self) -> None:
        """Close the early connections the core did not ask for (its first dials have taken
        theirs by now: they were scheduled before this call)."""
        early, self._early_dials = self._early_dials, None
        if early is not None and len(early):
            self._close_early(early)

    def _close_early(self, early: EarlyDials) -> None:
        task = asyncio.get_running_loop().create_task(early.close(), name="crdtsync-early-close")
        self._dial_tasks.add(task)  # (close() waits for it)
        task.add_done_callback(self._dial_tasks.discard)
