"""Admission of inbound websocket connections, before the upgrade (issue #11).

The :class:`~crdtsync.quotas.ConnectionCap` (connections in all and per remote host) is
applied in websockets' ``process_request`` hook, that is on the HTTP upgrade request and
before any 101 answer. A connection over the cap gets a plain HTTP answer and is never
upgraded:

* ``503 Service Unavailable`` when the agent holds ``max_total`` connections;
* ``429 Too Many Requests`` when the remote host holds ``max_per_address``;

both with ``Retry-After`` and the reason as text. The refused client sees the HTTP status
(websockets raises ``InvalidStatus`` in the client), and the agent spends no upgrade answer,
handler task, websocket close handshake or close timeout on it. The refusal is counted as
before (``refused.connections`` / ``refused.connections-per-address``, in the transport's
counters) and logged at most once per ten seconds (:meth:`Admission.process_request`).

A TCP connection that has not sent its upgrade request yet holds no slot but is counted as
*unrequested* from the moment it is accepted (:meth:`Admission.tcp_opened`): at most
``max_per_address`` per host and a quarter of ``max_total`` in all. Beyond that it is aborted
at once, before any byte is read (counted as ``refused.unrequested``), so connections that
never send a request cannot hold more file descriptors than that while they wait for
websockets' open timeout. Honest clients send their request within milliseconds.

A slot is taken in the hook, so that many upgrade requests arriving together cannot all pass
a check made before any of them is counted. It is given back when the TCP connection ends
(:class:`CappedConnection`'s ``connection_lost``), whatever ended it: the handler's return,
an upgrade that failed after the hook (a malformed request), websockets' open timeout, or a
reset. The handshake deadline (no Hello in time) stays with the connection handler.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable
from typing import Any

from crdtsync.transports._ws_inline import InlineFrames
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from crdtsync.quotas import ConnectionCap, QuotaExceeded

__all__ = ["Admission", "CappedConnection", "STATUS_OF_QUOTA"]

#: The HTTP status answered to an upgrade request refused by each quota of the cap.
STATUS_OF_QUOTA: dict[str, http.HTTPStatus] = {
    "connections": http.HTTPStatus.SERVICE_UNAVAILABLE,
    "connections-per-address": http.HTTPStatus.TOO_MANY_REQUESTS,
}

#: Seconds a refused client is told to wait (``Retry-After``); crdtsync's dialer backs off
#: on its own schedule, this is for other clients.
RETRY_AFTER = 1


def host_of(addr: object) -> str:
    """The remote host of a socket address (what per-address connection limits count)."""
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return str(addr)


class CappedConnection(InlineFrames, ServerConnection):
    """A websockets server connection that is counted from its TCP accept and gives its
    :class:`ConnectionCap` slot back when its TCP connection ends (a subclass bound to one
    :class:`Admission`, from :meth:`Admission.connection_class`, is passed to ``serve`` as
    ``create_connection``). Its frames may be handed to the transport inline
    (:class:`~crdtsync.transports._ws_inline.InlineFrames`)."""

    admission: Admission | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Frees the slot taken in ``process_request`` (None: none taken, or freed).
        self.release_slot: Callable[[], None] | None = None
        #: The remote host while the connection is counted as unrequested (see the module).
        self.unrequested: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.admission is not None and not self.admission.tcp_opened(self):
            transport.abort()  # over the unrequested limit: nothing read, no fd held

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if self.admission is not None:
                self.admission.tcp_requested(self)
            release, self.release_slot = self.release_slot, None
            if release is not None:
                release()


class Admission:
    """The ``process_request`` hook of a transport's listener (see the module docstring).

    Args:
        cap: the transport's connection cap (slots in all and per host).
        clock: the transport's clock (the cap stamps each connection's admission).
        count: adds one to a transport counter by name.
        warn: logs a refusal of a kind, rate limited (``warn(kind, msg, *args)``).
        name: the agent's name, for log lines.
    """

    def __init__(
        self,
        cap: ConnectionCap,
        clock: Callable[[], float],
        count: Callable[[str], None],
        warn: Callable[..., None],
        name: Callable[[], str],
    ) -> None:
        self._cap = cap
        self._clock = clock
        self._count = count
        self._warn = warn
        self._name = name

    def connection_class(self) -> type[CappedConnection]:
        """The :class:`CappedConnection` subclass to pass to ``serve`` as
        ``create_connection``: its connections are counted by this admission."""
        return type("CappedConnection", (CappedConnection,), {"admission": self})

    def tcp_opened(self, connection: CappedConnection) -> bool:
        """Count a just-accepted TCP connection as unrequested
        (:meth:`ConnectionCap.tcp_accepted`); False if it is over the limit."""
        host = host_of(connection.remote_address)
        try:
            self._cap.tcp_accepted(host)
        except QuotaExceeded as exc:
            self._count(f"refused.{exc.quota}")
            self._warn("refused", "%s: aborting a connection from %s: %s", self._name(), host, exc)
            return False
        connection.unrequested = host
        return True

    def tcp_requested(self, connection: CappedConnection) -> None:
        """The connection sent its request (or ended): it no longer counts as unrequested."""
        host, connection.unrequested = connection.unrequested, None
        if host is not None:
            self._cap.tcp_requested(host)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Take a slot for ``connection`` or answer its upgrade request with 503 / 429.

        Returns None (go on with the upgrade) once a slot is taken; the slot is freed when
        the connection ends (the connection must be a :class:`CappedConnection`).
        """
        if isinstance(connection, CappedConnection):
            self.tcp_requested(connection)
        host = host_of(connection.remote_address)
        key = id(connection)
        try:
            self._cap.accept(key, host, self._clock())
        except QuotaExceeded as exc:
            self._count(f"refused.{exc.quota}")
            self._warn(
                "refused",
                "%s: refusing a connection from %s before the upgrade: %s",
                self._name(),
                host,
                exc,
            )
            status = STATUS_OF_QUOTA.get(exc.quota, http.HTTPStatus.SERVICE_UNAVAILABLE)
            response = connection.respond(status, f"{exc}\n")
            response.headers["Retry-After"] = str(RETRY_AFTER)
            return response
        cap = self._cap

        def release() -> None:
            cap.closed(key, host)

        if isinstance(connection, CappedConnection):
            connection.release_slot = release
        else:  # pragma: no cover - serve() is always given CappedConnection
            release()
            raise TypeError("Admission needs serve(create_connection=CappedConnection)")
        return None
