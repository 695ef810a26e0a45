"""Who may read and write which shard over HTTP: the one authorisation hook.

The HTTP app asks a single callable, the *authorizer*, what the request's bearer token (or
``None`` when the request carries none) may do, and gets back an :class:`Access`: the shard
name patterns it may read and those it may write. The security layer (bearer tokens with
per-shard scopes) plugs in here; until then the default is :data:`FULL` access, which
:class:`~crdtsync.http.server.HttpServer` only allows on a loopback address.

Patterns are those of the mesh's permissions (:mod:`crdtsync.security.acl`, one language for
every door): ``*`` and ``?`` inside one ``/`` level, ``**`` any depth (``**`` alone: every
shard), e.g. ``sensors/*``, ``pub*``, ``tasks/**``. Writing implies reading, as for peers.
Endpoints that are not about one shard (``/peers``, ``/metrics``, the shard list) need at
least one read pattern; ``/health``, ``/openapi.json`` and the dashboard page are open.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import CrdtSyncError
from ..security.acl import compile_pattern
from ..security.tokens import token_deadline

if TYPE_CHECKING:
    from ..security.credentials import Credentials

__all__ = [
    "FULL",
    "NONE",
    "Access",
    "Authorizer",
    "bearer_token",
    "is_loopback",
    "token_authorizer",
]


@dataclass(frozen=True, slots=True)
class Access:
    """What one request may do: shard-name patterns it may read and write.

    Writing implies reading (as in :class:`crdtsync.security.acl.Permissions`).
    """

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    #: The serial (``jti``) of the token that grants it, so that a revocation of the token
    #: ends the long-lived responses it opened (event streams); None: not from a mesh token.
    serial: int | None = None
    #: The Unix time the granting token stops being accepted (its ``exp`` plus the leeway),
    #: at which its event streams end; None: no end.
    expires: float | None = None

    def can_read(self, shard: str) -> bool:
        """Whether the shard may be read (snapshot, events, listing)."""
        return _matches(self.read, shard) or _matches(self.write, shard)

    def can_write(self, shard: str) -> bool:
        """Whether the shard may be changed (patch, delete, append, text edits)."""
        return _matches(self.write, shard)

    @property
    def can_observe(self) -> bool:
        """Whether mesh-wide endpoints (peers, metrics, shard list) may be read."""
        return bool(self.read or self.write)


FULL = Access(read=("**",), write=("**",))
"""Everything: the default on loopback when no authorizer is configured."""
NONE = Access()
"""Nothing: what an authorizer returns for a token that grants nothing."""

#: The hook: ``authorize(token)`` -> :class:`Access`, or ``None`` when the token is missing,
#: malformed, expired or not trusted (the request then gets 401). May be a coroutine function.
Authorizer = Callable[[str | None], "Access | None | Awaitable[Access | None]"]


def _matches(patterns: tuple[str, ...], shard: str) -> bool:
    return any(compile_pattern(p).fullmatch(shard) is not None for p in patterns)


def token_authorizer(credentials: Credentials) -> Authorizer:
    """The authorizer of an agent with mesh credentials: a bearer token issued by the mesh CA
    (``crdtsync keys token NAME --read ... --write ...``) grants its scopes; a missing,
    forged, expired or revoked token grants nothing (401). The access carries the token's
    serial and end, so an event stream it opened ends when the token expires or is revoked
    (:mod:`crdtsync.http.ends`)."""

    def authorize(token: str | None) -> Access | None:
        if token is None:
            return None
        try:
            identity = credentials.verify_token(token)
            expires = token_deadline(token)
        except CrdtSyncError:
            return None
        return Access(
            read=identity.permissions.read,
            write=identity.permissions.write,
            serial=identity.serial,
            expires=expires,
        )

    return authorize


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (RFC 6750), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal) only reaches this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
