"""Bearer tokens for the agent's other doors (HTTP, Yjs, MQTT): JWT signed by the mesh CA.

A token is a JWT signed with EdDSA (Ed25519) by the CA key, so every agent that holds
``ca.pem`` can verify it offline. Claims::

    iss  "crdtsync:MESH"     the mesh; a token of another mesh is refused
    aud  "crdtsync:MESH"
    sub  NAME                whom it was issued to
    iat, nbf, exp            issued, valid from, valid until (seconds since the epoch)
    jti  serial (a decimal string) from the CA's serial space, so revoking NAME revokes it
    crdtsync  {"read": [...], "write": [...]}   per-shard scopes (:class:`Permissions`)

Only EdDSA is accepted on verification (no ``alg`` confusion: ``none`` and HMAC are refused).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import CredentialsError
from ..names import validate_shard_name
from .acl import PeerIdentity, Permissions
from .ca import MeshCA

__all__ = ["issue_token", "token_deadline", "verify_token"]

_LEEWAY = 60  # seconds of clock skew tolerated on exp/nbf


def issue_token(
    ca: MeshCA,
    name: str,
    permissions: Permissions,
    *,
    days: float = 30,
    now: dt.datetime | None = None,
) -> str:
    """A bearer token for ``name`` with ``permissions``, valid ``days`` from ``now``."""
    validate_shard_name(name)
    if days <= 0:
        raise CredentialsError("a token must be valid for some time (--days > 0)")
    now = now or dt.datetime.now(dt.UTC)
    serial = x509.random_serial_number()
    claims = {
        "iss": f"crdtsync:{ca.mesh}",
        "aud": f"crdtsync:{ca.mesh}",
        "sub": name,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()) - _LEEWAY,
        "exp": int((now + dt.timedelta(days=days)).timestamp()),
        "jti": str(serial),
        "crdtsync": permissions.to_json(),
    }
    ca.record_serial(name, serial)
    return jwt.encode(claims, ca.key, algorithm="EdDSA")


def verify_token(
    token: str, ca_cert: x509.Certificate, mesh: str, *, revoked: Collection[int] = ()
) -> PeerIdentity:
    """The identity a token grants, after checking signature, mesh, time and revocation.

    Raises:
        CredentialsError: the token is invalid for any reason (the message says which).
    """
    key = ca_cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise CredentialsError("the mesh CA key is not Ed25519")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=f"crdtsync:{mesh}",
            issuer=f"crdtsync:{mesh}",
            leeway=_LEEWAY,
            options={"require": ["exp", "iat", "sub", "jti", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise CredentialsError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise CredentialsError(f"invalid token: {exc}") from exc
    try:
        serial = int(claims["jti"])
        name = validate_shard_name(claims["sub"])
        permissions = Permissions.from_json(claims.get("crdtsync"))
    except Exception as exc:
        raise CredentialsError(f"invalid token claims: {exc}") from exc
    if serial in revoked:
        raise CredentialsError(f"token of {name!r} was revoked")
    return PeerIdentity(name, permissions, method="token", serial=serial)


def token_deadline(token: str) -> float:
    """The Unix time from which :func:`verify_token` refuses ``token`` as expired: its ``exp``
    plus the clock-skew leeway. A door that keeps a connection open past its admission (an
    HTTP event stream, a Yjs client) ends it then, so a connection never outlives what a new
    one with the same token would be granted.

    Only call it on a token :func:`verify_token` accepted: the signature is not checked here.

    Raises:
        CredentialsError: the token has no numeric ``exp``.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise TypeError(f"exp is {type(exp).__name__}")
    except Exception as exc:
        raise CredentialsError(f"invalid token claims: {exc}") from exc
    return float(exp) + _LEEWAY
