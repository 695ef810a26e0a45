"""Authentication of a websocket connection before either side's Hello, and revocation of
the connections already open.

The mixin :class:`_Authenticator` of :class:`~crdtsync.transports.websocket.WebsocketTransport`:
mutual TLS with the agent certificate in one frame, or the mesh-secret challenge-response of
:mod:`crdtsync.security.handshake`; refusals closed with their specific code, logged once and
counted (see "Authentication" in the :mod:`crdtsync.transports.websocket` docstring).

Revocation (TLS credentials): every :attr:`_Authenticator.revocation_interval` seconds (one
``stat`` of ``revoked.pem``: :meth:`Credentials.revoked
<crdtsync.security.credentials.Credentials.revoked>`), and at once on
:meth:`_Authenticator.check_revocations` (``Agent.reload_revocations()``), a changed list closes
every open connection of a peer whose certificate it revokes with ``CERT_REVOKED`` (4016),
counted (``revoked_closed``), one warning line per agent; nothing it sent after that is read
(the link is closing: its frames are not handed to the core), the gate forgets its certificate
and key (its acks stop counting towards ``replicated()``, announcements about it are refused),
and its redials are refused at authentication as before (4016). The same sweep closes the Yjs
door's clients whose token was revoked.
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
    from crdtsync.transports.yjsdoor import YjsDoor

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
    _links: set[_Link]
    _loop: asyncio.AbstractEventLoop | None
    _yjs: YjsDoor | None

    #: Seconds between two looks at the revocation list of a running agent (one ``stat``).
    revocation_interval: float = 1.0
    _revocation_seen = 0  # the credentials' revision the last sweep acted on
    _revocation_timer: asyncio.TimerHandle | None = None

    if TYPE_CHECKING:

        def _pump(self) -> None: ...

        def _refuse(self, link: _Link, code: CloseCode, reason: str) -> None: ...

    def _watch_revocations(self) -> None:
        """(Re-)arm the revocation timer (TLS credentials only; stops once closing)."""
        creds = self._credentials
        if creds is None or not creds.tls or self._loop is None or self._closing:
            return
        if self._revocation_timer is None:
            self._revocation_seen = creds.revision
        self._revocation_timer = self._loop.call_later(
            self.revocation_interval, self._revocation_tick
        )

    def _revocation_tick(self) -> None:
        try:
            self.check_revocations()
        except Exception:  # a bad list must not stop the timer
            logger.exception("%s: checking the revocation list failed", self.core.name)
        self._watch_revocations()

    def check_revocations(self, *, reload: bool = False) -> int:
        """Close the open connections of peers whose certificate (and the Yjs clients whose
        token) the revocation list revokes, if the list changed since the last look
        (``reload``: re-read it and look whatever changed); returns how many were closed."""
        creds = self._credentials
        if creds is None or not creds.tls:
            return 0
        revoked = creds.reload_revocations() if reload else creds.revoked()
        if creds.revision == self._revocation_seen and not reload:
            return 0
        self._revocation_seen = creds.revision
        forget = getattr(self.core.gate, "forget_revoked", None)
        if forget is not None:
            forget(revoked)  # its acks stop counting, its records stop verifying
        closed: dict[str, int] = {}
        for link in list(self._links):
            identity = link.identity
            if link.closing or identity is None or identity.serial not in revoked:
                continue
            closed[identity.name] = closed.get(identity.name, 0) + 1
            self._refuse(link, CloseCode.CERT_REVOKED, "certificate revoked")
        for name, n in sorted(closed.items()):
            self.counters["revoked_closed"] = self.counters.get("revoked_closed", 0) + n
            logger.warning(
                "%s: closing %d connection(s) of %s: its certificate was revoked (%s, %d)",
                self.core.name,
                n,
                name,
                CloseCode.CERT_REVOKED.name,
                CloseCode.CERT_REVOKED,
            )
        yjs = self._yjs.close_revoked(revoked) if self._yjs is not None else 0
        if closed:
            self._pump()
        return sum(closed.values()) + yjs

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
        elif self._revoked_meanwhile(exchange.result()):
            # (verified against the list before a sweep that could not see it yet)
            code, reason = CloseCode.CERT_REVOKED, "certificate revoked during authentication"
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

    def _revoked_meanwhile(self, identity: PeerIdentity) -> bool:
        """Whether the list changed to revoke ``identity`` while it was being authenticated
        (a sweep then skipped the link: it had no identity yet)."""
        creds = self._credentials
        return (
            creds is not None and identity.serial is not None and identity.serial in creds.revoked()
        )

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
