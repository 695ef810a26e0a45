"""Authentication of a websocket connection before either side's Hello.

The mixin :class:`_Authenticator` of :class:`~crdtsync.transports.websocket.WebsocketTransport`:
mutual TLS with the agent certificate in one frame, or the mesh-secret challenge-response of
:mod:`crdtsync.security.handshake`; refusals closed with their specific code, logged once and
counted (see "Authentication" in the :mod:`crdtsync.transports.websocket` docstring).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from crdtsync.transports._ws_links import _Link
from websockets.exceptions import ConnectionClosed

from crdtsync.errors import CloseCode, ProtocolError
from crdtsync.gossip import GossipCore
from crdtsync.security.acl import PeerIdentity, Permissions

if TYPE_CHECKING:
    from crdtsync.security.credentials import Credentials

__all__: list[str] = []

#: The transport's logger: log lines keep the name of the module users configure.
logger = logging.getLogger("crdtsync.transports.websocket")


class _Authenticator:
    """Mixin of :class:`~crdtsync.transports.websocket.WebsocketTransport`: authenticate a link.

    The attributes declared below belong to the transport (set in its ``__init__``).
    """

    core: GossipCore
    counters: dict[str, int]
    _credentials: Credentials | None
    _open_timeout: float
    _closing: bool
    _stopping: asyncio.Event

    async def _authenticate(self, link: _Link) -> bool:
        """Prove ourselves and authenticate the peer before any Hello; False if refused.

        On refusal the connection is closed with the specific code and a generic reason,
        logged once and counted. Nothing was queued for it yet, so nothing else is sent. A
        peer that stays silent is cut after ``open_timeout``, or at once when the transport
        closes (a silent stranger must not delay the agent's shutdown).
        """
        ws = link.ws
        exchange = asyncio.create_task(
            self._auth_exchange(link), name=f"crdtsync-auth-{link.label()}"
        )
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait(
                {exchange, stopping},
                timeout=self._open_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()
            if not exchange.done():
                exchange.cancel()
            await asyncio.gather(exchange, stopping, return_exceptions=True)
        code, reason = CloseCode.UNAUTHENTICATED, ""
        if self._closing:
            code, reason = CloseCode.GOING_AWAY, "agent stopping"
        elif exchange.cancelled():
            reason = "no authentication in time"
        elif isinstance(exchange.exception(), ProtocolError):
            exc = exchange.exception()
            assert isinstance(exc, ProtocolError)
            code, reason = exc.code, str(exc)
        elif isinstance(exchange.exception(), ConnectionClosed):
            closed = exchange.exception()
            assert isinstance(closed, ConnectionClosed)
            rcvd = closed.rcvd.code if closed.rcvd is not None else None
            if rcvd is not None and 4012 <= rcvd <= 4017:  # the peer refused *us*: not its fault
                self.counters["auth_refused"] = self.counters.get("auth_refused", 0) + 1
                logger.warning(
                    "%s: %s refused our authentication (%d)", self.core.name, link.label(), rcvd
                )
                return False
            reason = "closed during authentication"
        elif exchange.exception() is not None:
            logger.error(
                "%s: authentication of %s failed",
                self.core.name,
                link.label(),
                exc_info=exchange.exception(),
            )
            code, reason = CloseCode.INTERNAL_ERROR, "internal error"
        else:
            link.identity = exchange.result()
            self.counters["auth_ok"] = self.counters.get("auth_ok", 0) + 1
            return True
        if code != CloseCode.GOING_AWAY:
            self.counters["auth_failed"] = self.counters.get("auth_failed", 0) + 1
            key = f"auth_failed.{code.name.lower()}"
            self.counters[key] = self.counters.get(key, 0) + 1
            logger.warning(
                "%s: %s connection %s not authenticated: %s (%d): %s",
                self.core.name,
                "outbound" if link.outbound else "inbound",
                link.label(),
                code.name,
                code,
                reason,
            )
        try:
            await ws.close(
                code, "authentication failed" if code != CloseCode.GOING_AWAY else reason
            )
        except Exception:  # the socket may be gone already
            logger.debug("closing an unauthenticated connection failed", exc_info=True)
        return False

    async def _auth_exchange(self, link: _Link) -> PeerIdentity:
        """The authentication itself (see :meth:`_authenticate`); raises ProtocolError."""
        creds = self._credentials
        assert creds is not None
        ws = link.ws
        if creds.tls:
            ssl_object = ws.transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if not link.outbound:  # the client's agent certificate first, then we say who we are
                identity = creds.verify_peer(der)
                await ws.send(creds.identity_frame())
                return identity
            creds.verify_door(der)  # a mesh member's anonymous certificate, in its dates
            return creds.verify_server(der, await ws.recv())
        hs = creds.handshake(client=link.outbound)
        if link.outbound:
            await ws.send(hs.start())
        while hs.peer is None:
            reply = hs.receive(await ws.recv())
            if reply is not None:
                await ws.send(reply)
        return PeerIdentity(hs.peer, Permissions.full(), method="secret")
