"""The end of an open event stream's credential: its token expires or is revoked.

A request is authorised once, when it arrives; an event stream (``GET /shards/NAME/events``)
then stays open for hours. Without more, it would keep delivering the shard's changes after
its bearer token expired or was revoked. :class:`StreamEnds` ends such streams:

* **expiry**: each stream opened with a token that has an end (:attr:`Access.expires
  <crdtsync.http.access.Access.expires>`, the token's ``exp`` plus the verification leeway)
  gets one ``call_later`` timer at that time. Nothing is paid per event.
* **revocation**: while a stream opened with a mesh token is open, one timer looks at the
  revocation list every :data:`REVOCATION_INTERVAL` seconds (:meth:`Credentials.revoked
  <crdtsync.security.credentials.Credentials.revoked>`: one ``stat`` of ``revoked.pem``), as
  the websocket transport does for its links and Yjs clients, and acts only when the list's
  revision changed: every stream whose token serial it revokes ends.

An ended stream is told why in a last ``error`` event (an RFC 9457 problem, ``status`` 401,
``type`` ``urn:crdtsync:problem:token-expired`` or ``...:token-revoked``), then closed. Each is
logged once (a warning) and counted (``http.stream_ended.expired`` / ``.revoked``).

The other request that can wait long, a quorum read (``GET /shards/NAME?quorum=K&timeout=T``,
up to 60 s), is refused with the same problem (401) if its token ended while it waited
(:meth:`StreamEnds.refuse_if_ended`). A write's ``replicated`` wait sends no shard data back:
the write itself was authorised when it arrived.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .problems import Problem

if TYPE_CHECKING:
    from ..security.credentials import Credentials
    from .access import Access

__all__ = ["REVOCATION_INTERVAL", "StreamEnds", "Ticket"]

logger = logging.getLogger("crdtsync.http")

#: Seconds between two looks at the revocation list while a token's stream is open.
REVOCATION_INTERVAL = 1.0

_WHY = {
    "expired": ("Token expired", "the bearer token of this stream expired"),
    "revoked": ("Token revoked", "the bearer token of this stream was revoked"),
}


@dataclass(eq=False)
class Ticket:
    """One open stream's hold on its credential: ``ended`` is set (and ``wake`` with it) when
    the token expires or is revoked."""

    wake: asyncio.Event
    label: str
    serial: int | None = None
    ended: str | None = None  # "expired" or "revoked" once ended
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 body of the final ``error`` event."""
        assert self.ended is not None
        title, detail = _WHY[self.ended]
        return {
            "type": f"urn:crdtsync:problem:token-{self.ended}",
            "title": title,
            "status": 401,
            "detail": f"{detail}; reconnect with a valid token",
            "instance": self.label,
        }


class StreamEnds:
    """The open streams of one HTTP server that hold a token, ended at its expiry or
    revocation (see the module docstring)."""

    def __init__(
        self, credentials: Credentials | None = None, counters: dict[str, int] | None = None
    ) -> None:
        #: Where revocations are read (TLS credentials only; None: streams end only at expiry).
        self.credentials = credentials if credentials is not None and credentials.tls else None
        #: ``http.stream_ended.expired``, ``http.stream_ended.revoked``.
        self.counters: dict[str, int] = {} if counters is None else counters
        self._tickets: set[Ticket] = set()
        self._seen = 0  # the credentials' revision the last look acted on
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, access: Access | None, wake: asyncio.Event, label: str) -> Ticket | None:
        """Watch the credential of a stream that opens now (None: it has none to watch)."""
        if access is None or (access.expires is None and access.serial is None):
            return None
        loop = asyncio.get_running_loop()
        ticket = Ticket(wake, label, access.serial)
        self._tickets.add(ticket)
        if access.expires is not None:
            delay = max(0.0, access.expires - time.time())
            ticket.timer = loop.call_later(delay, self._end, ticket, "expired")
        if ticket.serial is not None and self.credentials is not None:
            if self._timer is None:
                self._seen = self.credentials.revision
                self._timer = loop.call_later(REVOCATION_INTERVAL, self._tick)
            if ticket.serial in self.credentials.revoked():  # revoked since it was checked
                self._end(ticket, "revoked")
        return ticket

    def release(self, ticket: Ticket | None) -> None:
        """The stream closed (for any reason): stop watching its credential."""
        if ticket is None:
            return
        if ticket.timer is not None:
            ticket.timer.cancel()
        self._tickets.discard(ticket)
        if self._timer is not None and not any(t.serial is not None for t in self._tickets):
            self._timer.cancel()
            self._timer = None

    def check_revocations(self) -> int:
        """End the streams whose token the revocation list revokes, if the list changed
        since the last look; returns how many ended."""
        creds = self.credentials
        if creds is None:
            return 0
        revoked = creds.revoked()
        if creds.revision == self._seen:
            return 0
        self._seen = creds.revision
        ended = [t for t in self._tickets if t.serial is not None and t.serial in revoked]
        for ticket in ended:
            self._end(ticket, "revoked")
        return len(ended)

    def refuse_if_ended(self, access: Access) -> None:
        """Refuse (401) a response that waited past its token's end (a quorum read): raises
        :class:`~crdtsync.http.problems.Problem` if the token expired or was revoked meanwhile.
        """
        why = None
        if access.expires is not None and time.time() >= access.expires:
            why = "expired"
        elif access.serial is not None and self.credentials is not None:
            if access.serial in self.credentials.revoked():
                why = "revoked"
        if why is not None:
            title, detail = _WHY[why]
            raise Problem(
                401,
                f"token-{why}",
                title,
                f"{detail} while the request waited",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    def close(self) -> None:
        """The server stops: no more timers."""
        for ticket in list(self._tickets):
            self.release(ticket)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.check_revocations()
        except Exception:  # a bad list must not stop the timer
            logger.exception("checking the revocation list for event streams failed")
        if any(t.serial is not None for t in self._tickets):
            self._timer = asyncio.get_running_loop().call_later(REVOCATION_INTERVAL, self._tick)

    def _end(self, ticket: Ticket, why: str) -> None:
        if ticket.ended is not None or ticket not in self._tickets:
            return
        ticket.ended = why
        key = f"http.stream_ended.{why}"
        self.counters[key] = self.counters.get(key, 0) + 1
        logger.warning("event stream %s ended: its token %s", ticket.label, why)
        ticket.wake.set()
