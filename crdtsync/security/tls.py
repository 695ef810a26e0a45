"""Mutual TLS with the mesh CA: ``ssl.SSLContext`` builders and the peer-certificate check.

Both sides present their agent certificate and require the peer's, signed by the mesh CA,
over TLS 1.3 only. The agent name is taken from the verified certificate, never from what
the peer says later (its Hello must name the same agent, see the websocket driver).

Who checks what
---------------
OpenSSL verifies the chain (signature by the mesh CA, the only trust anchor) during the TLS
handshake; a certificate from any other CA fails there (TLS alert ``unknown_ca``). Three
checks are left to :func:`verify_peer_certificate`, run on the open connection *before* a
single crdtsync frame is sent, so that the refusal carries a specific websocket close code, is
logged once and counted, instead of a TLS alert the agent cannot count:

* no certificate at all (the server asks with ``CERT_OPTIONAL``) → ``UNAUTHENTICATED``;
* validity dates (OpenSSL's time check is turned off with ``X509_V_FLAG_NO_CHECK_TIME``)
  → ``CERT_EXPIRED``;
* the revocation list (``revoked.pem``, a CRL signed by the CA) → ``CERT_REVOKED``.

The server's name
-----------------
The acceptor presents its anonymous *door certificate* in TLS (same key as its agent
certificate, names nobody, see :mod:`crdtsync.security.ca`): whoever connects learns only that
it reached some crdtsync agent. Once the client's certificate passed, the acceptor sends its
agent certificate in one frame (:data:`IDENTITY_MAGIC` + DER). The client accepts it only if it
verifies like any peer certificate *and* carries the public key the TLS handshake proved
(:func:`verify_server_identity`): a member cannot pass off another member's certificate.

Hostnames are not checked (``check_hostname=False``): agents dial each other by address, and
their identity is the agent name in the certificate, which the Hello must repeat.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Collection

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ..errors import CloseCode, CredentialsError, ProtocolError
from .acl import PeerIdentity
from .ca import certificate_info

__all__ = [
    "IDENTITY_MAGIC",
    "client_context",
    "server_context",
    "verify_door_certificate",
    "verify_peer_certificate",
    "verify_server_identity",
]

#: First bytes of the frame carrying the acceptor's agent certificate.
IDENTITY_MAGIC = b"CSI1"

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME (not exported by the ssl module): validity dates are
#: checked by verify_peer_certificate, which can answer with a close code.
_NO_CHECK_TIME = 0x200000

_Path = str | os.PathLike[str]


def _base(ctx: ssl.SSLContext, ca: _Path, cert: _Path, key: _Path) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(f"cannot load TLS credentials ({cert}, {key}, {ca}): {exc}") from exc
    ctx.verify_flags |= _NO_CHECK_TIME  # type: ignore[assignment,unused-ignore]
    return ctx


def server_context(ca: _Path, cert: _Path, key: _Path) -> ssl.SSLContext:
    """Context to accept connections: presents ``cert`` (the door certificate), asks for a client certificate
    verified against ``ca`` (a missing one is refused by :func:`verify_peer_certificate`)."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ca, cert, key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: _Path, cert: _Path, key: _Path) -> ssl.SSLContext:
    """Context to dial peers: presents ``cert``, requires a server certificate from ``ca``."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ca, cert, key)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def verify_peer_certificate(
    der: bytes | None,
    ca_cert: x509.Certificate,
    mesh: str,
    *,
    revoked: Collection[int] = (),
    now: dt.datetime | None = None,
) -> PeerIdentity:
    """The authenticated identity in a peer's certificate (DER, as ``getpeercert(True)``).

    Raises:
        ProtocolError: ``UNAUTHENTICATED`` (none, not issued by the mesh CA, not an agent
            certificate of this mesh), ``CERT_EXPIRED`` (outside its validity dates),
            ``CERT_REVOKED`` (its serial is on the revocation list).
    """
    if not der:
        raise ProtocolError("no client certificate", CloseCode.UNAUTHENTICATED)
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(ca_cert)  # OpenSSL did; a cheap second opinion
        info = certificate_info(cert)
    except (ValueError, TypeError, InvalidSignature, CredentialsError) as exc:
        raise ProtocolError(f"certificate refused: {exc}", CloseCode.UNAUTHENTICATED) from None
    if info.mesh != mesh:
        raise ProtocolError(f"certificate of mesh {info.mesh!r}", CloseCode.UNAUTHENTICATED)
    now = now or dt.datetime.now(dt.UTC)
    if not info.not_before <= now <= info.not_after:
        raise ProtocolError(
            f"certificate of {info.name!r} valid {info.not_before:%Y-%m-%d %H:%M} to "
            f"{info.not_after:%Y-%m-%d %H:%M} UTC",
            CloseCode.CERT_EXPIRED,
        )
    if info.serial in revoked:
        raise ProtocolError(f"certificate of {info.name!r} was revoked", CloseCode.CERT_REVOKED)
    return PeerIdentity(
        info.name, info.permissions, method="tls", certificate=der, serial=info.serial
    )


def _check_dates_and_revocation(
    cert: x509.Certificate, what: str, revoked: Collection[int], now: dt.datetime | None
) -> None:
    now = now or dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ProtocolError(f"{what} is outside its validity dates", CloseCode.CERT_EXPIRED)
    if cert.serial_number in revoked:
        raise ProtocolError(f"{what} was revoked", CloseCode.CERT_REVOKED)


def verify_door_certificate(
    der: bytes | None,
    ca_cert: x509.Certificate,
    *,
    revoked: Collection[int] = (),
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Check the certificate an acceptor presented in TLS: issued by the mesh CA, in its dates,
    not revoked. Returns it (its key must match the agent certificate sent next).

    Raises:
        ProtocolError: ``UNAUTHENTICATED``, ``CERT_EXPIRED`` or ``CERT_REVOKED``.
    """
    if not der:
        raise ProtocolError("no server certificate", CloseCode.UNAUTHENTICATED)
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ProtocolError(
            f"server certificate refused: {exc}", CloseCode.UNAUTHENTICATED
        ) from None
    _check_dates_and_revocation(cert, "the server's TLS certificate", revoked, now)
    return cert


def verify_server_identity(
    frame: bytes | str,
    door: x509.Certificate,
    ca_cert: x509.Certificate,
    mesh: str,
    *,
    revoked: Collection[int] = (),
    now: dt.datetime | None = None,
) -> PeerIdentity:
    """The acceptor's identity from its identity frame, bound to the key TLS proved (``door``).

    Raises:
        ProtocolError: ``UNAUTHENTICATED`` (malformed, or another key), or as
            :func:`verify_peer_certificate`.
    """
    if not isinstance(frame, bytes) or not frame.startswith(IDENTITY_MAGIC):
        raise ProtocolError("expected the server's certificate", CloseCode.UNAUTHENTICATED)
    der = frame[len(IDENTITY_MAGIC) :]
    identity = verify_peer_certificate(der, ca_cert, mesh, revoked=revoked, now=now)
    cert = x509.load_der_x509_certificate(der)
    if cert.public_key() != door.public_key():
        raise ProtocolError(
            "the server's certificate is not for the key it proved", CloseCode.UNAUTHENTICATED
        )
    return identity
