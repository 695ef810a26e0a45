"""What an agent holds to prove it is a member and to check that its peers are.

:class:`Credentials` is what ``Agent(credentials=...)`` and the websocket driver take. Two
modes:

* ``"tls"``: the mesh CA certificate, the agent's own certificate and key, and the revocation
  list; connections are ``wss://`` with mutual TLS (:mod:`crdtsync.security.tls`); each peer's
  permissions come from its certificate.
* ``"secret"``: the mesh secret; connections run the challenge-response of
  :mod:`crdtsync.security.handshake` before anything else; every member has full permissions.

:meth:`Credentials.from_dir` reads a keys dir laid out by ``crdtsync keys``
(:mod:`crdtsync.security.ca`); it picks TLS when the agent's certificate is there.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import CredentialsError, InsecureListen
from ..names import validate_shard_name
from .acl import PeerIdentity, Permissions
from .ca import (
    agent_paths,
    certificate_info,
    door_path,
    load_certificate,
    load_revoked,
    read_mesh_name,
)
from .handshake import NonceCache, SecretHandshake
from .identity import Identity
from .records import KeyRing
from .tls import (
    IDENTITY_MAGIC,
    client_context,
    server_context,
    verify_door_certificate,
    verify_peer_certificate,
    verify_server_identity,
)
from .tokens import verify_token

__all__ = ["HINT", "Credentials", "Mode", "check_listen", "is_loopback_listen"]

logger = logging.getLogger(__name__)

Mode = Literal["tls", "secret"]

#: How to create credentials, for error messages.
HINT = (
    "create credentials with `crdtsync keys init-mesh --dir KEYS --mesh MESH` and "
    "`crdtsync keys issue NAME --dir KEYS`, then pass Agent(credentials=Credentials.from_dir(KEYS, NAME)) "
    "or `crdtsync agent --keys KEYS`"
)


@dataclass(eq=False)
class Credentials:
    """An agent's credentials (see the module docstring). Build with :meth:`from_dir`.

    Attributes:
        name: the agent's name (its certificate's, in TLS mode).
        mesh: the mesh name.
        mode: ``"tls"`` or ``"secret"``.
        permissions: this agent's own permissions (full in secret mode).
    """

    name: str
    mesh: str
    mode: Mode
    ca_path: Path | None = None
    cert_path: Path | None = None
    door_path: Path | None = None
    key_path: Path | None = None
    crl_path: Path | None = None
    secret: bytes | None = field(default=None, repr=False)
    permissions: Permissions = field(default_factory=Permissions.full)
    _ca_cert: x509.Certificate | None = field(default=None, repr=False)
    _revoked: frozenset[int] = field(default=frozenset(), repr=False)
    _crl_stamp: tuple[int, int, int] | None = field(default=None, repr=False)
    #: Bumped whenever the set of revoked serials changes (a driver compares it to close
    #: the open connections of peers revoked since it last looked).
    revision: int = field(default=0, repr=False)
    _nonces: NonceCache = field(default_factory=NonceCache, repr=False)

    @classmethod
    def from_dir(
        cls, keys_dir: str | os.PathLike[str], name: str, *, mode: Mode | None = None
    ) -> Credentials:
        """Load ``name``'s credentials from a keys dir.

        Args:
            mode: force ``"tls"`` or ``"secret"``; default TLS if ``agents/NAME.pem`` exists,
                else secret if ``mesh.secret`` exists.

        Raises:
            CredentialsError: files missing or invalid, or the certificate names another agent
                or mesh; the message says how to create what is missing.
        """
        root = Path(keys_dir)
        validate_shard_name(name)
        mesh = read_mesh_name(root)
        cert_path, key_path = agent_paths(root, name)
        if mode is None:
            mode = (
                "tls"
                if cert_path.exists()
                else "secret"
                if (root / "mesh.secret").exists()
                else None
            )
            if mode is None:
                raise CredentialsError(
                    f"no certificate for {name!r} and no mesh secret in {root}: {HINT}"
                )
        if mode == "secret":
            try:
                secret = bytes.fromhex((root / "mesh.secret").read_text().strip())
            except (OSError, ValueError) as exc:
                raise CredentialsError(f"cannot read {root}/mesh.secret: {exc}; {HINT}") from exc
            if (root / "mesh.secret").stat().st_mode & 0o077:
                raise CredentialsError(f"{root}/mesh.secret is readable by others; chmod 600 it")
            return cls(name=name, mesh=mesh, mode="secret", secret=secret)
        door = door_path(root, name)
        if not cert_path.exists() or not key_path.exists() or not door.exists():
            raise CredentialsError(
                f"no certificate for {name!r} in {root}/agents: run `crdtsync keys issue {name} --dir {root}`"
            )
        ca_cert = load_certificate(root / "ca.pem")
        info = certificate_info(load_certificate(cert_path))
        if info.name != name or info.mesh != mesh:
            raise CredentialsError(
                f"{cert_path} is for {info.name!r} in mesh {info.mesh!r}, not {name!r} in {mesh!r}"
            )
        creds = cls(
            name=name,
            mesh=mesh,
            mode="tls",
            ca_path=root / "ca.pem",
            cert_path=cert_path,
            door_path=door,
            key_path=key_path,
            crl_path=root / "revoked.pem",
            permissions=info.permissions,
            _ca_cert=ca_cert,
        )
        creds.server_context()  # fail now, not at the first connection, if the files do not fit
        if info.serial in creds.revoked():
            raise CredentialsError(f"the certificate of {name!r} is revoked; issue a new one")
        if info.not_after < dt.datetime.now(dt.UTC):
            raise CredentialsError(f"the certificate of {name!r} expired; issue a new one")
        return creds

    @property
    def tls(self) -> bool:
        """Whether connections use mutual TLS (``wss://``)."""
        return self.mode == "tls"

    def server_context(self) -> ssl.SSLContext:
        """TLS context to listen with (TLS mode only): presents the anonymous door certificate."""
        assert self.ca_path and self.door_path and self.key_path, "not TLS credentials"
        return server_context(self.ca_path, self.door_path, self.key_path)

    def client_context(self) -> ssl.SSLContext:
        """TLS context to dial with (TLS mode only)."""
        assert self.ca_path and self.cert_path and self.key_path, "not TLS credentials"
        return client_context(self.ca_path, self.cert_path, self.key_path)

    def revoked(self) -> frozenset[int]:
        """Revoked serials, re-read whenever ``revoked.pem`` changed (its mtime, size or inode:
        one ``stat``). Copy a new one in place and new connections see it; a running agent's
        transport also looks every second and closes the open connections of revoked peers
        (:meth:`reload_revocations` to look now)."""
        if self.crl_path is None or self._ca_cert is None:
            return frozenset()
        stamp = self._stamp()
        if stamp != self._crl_stamp:
            self._crl_stamp = stamp  # (also on failure: logged once per change of the file)
            self._load_revoked()
        return self._revoked

    def reload_revocations(self) -> frozenset[int]:
        """Re-read ``revoked.pem`` now, changed or not (e.g. copied with its old mtime)."""
        if self.crl_path is None or self._ca_cert is None:
            return frozenset()
        self._crl_stamp = self._stamp()
        self._load_revoked()
        return self._revoked

    def _stamp(self) -> tuple[int, int, int] | None:
        """What says ``revoked.pem`` changed: its mtime, size and inode (None: no file)."""
        assert self.crl_path is not None
        try:
            st = self.crl_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load_revoked(self) -> None:
        assert self.crl_path is not None and self._ca_cert is not None
        try:
            revoked = load_revoked(self.crl_path, self._ca_cert)
        except CredentialsError:
            logger.exception("keeping the previous revocation list")
            return
        if revoked != self._revoked:
            self._revoked = revoked
            self.revision += 1

    def verify_peer(self, der: bytes | None, now: dt.datetime | None = None) -> PeerIdentity:
        """The identity in a TLS peer's certificate (see :func:`tls.verify_peer_certificate`)."""
        assert self._ca_cert is not None, "not TLS credentials"
        return verify_peer_certificate(
            der, self._ca_cert, self.mesh, revoked=self.revoked(), now=now
        )

    def identity_frame(self) -> bytes:
        """What an acceptor sends once the client's certificate passed: its agent certificate."""
        assert self.cert_path is not None, "not TLS credentials"
        return IDENTITY_MAGIC + load_certificate(self.cert_path).public_bytes(Encoding.DER)

    def verify_server(
        self, door_der: bytes | None, frame: bytes | str, now: dt.datetime | None = None
    ) -> PeerIdentity:
        """The acceptor's identity: its TLS (door) certificate, then the agent certificate in
        ``frame`` with the same key (see :mod:`crdtsync.security.tls`)."""
        assert self._ca_cert is not None, "not TLS credentials"
        revoked = self.revoked()
        door = verify_door_certificate(door_der, self._ca_cert, revoked=revoked, now=now)
        return verify_server_identity(
            frame, door, self._ca_cert, self.mesh, revoked=revoked, now=now
        )

    def verify_door(self, door_der: bytes | None) -> None:
        """Check the acceptor's TLS certificate before reading anything from it."""
        assert self._ca_cert is not None, "not TLS credentials"
        verify_door_certificate(door_der, self._ca_cert, revoked=self.revoked())

    def verify_token(self, token: str) -> PeerIdentity:
        """The identity a bearer token grants (signature by this mesh's CA, mesh, dates,
        revocation); for the HTTP, Yjs and MQTT doors. TLS-mode credentials only (they hold
        ``ca.pem``).

        Raises:
            CredentialsError: the token is invalid; the message says why.
        """
        if self._ca_cert is None:
            raise CredentialsError(
                "verifying tokens needs the mesh CA certificate (TLS credentials)"
            )
        return verify_token(token, self._ca_cert, self.mesh, revoked=self.revoked())

    def identity(self) -> Identity:
        """This agent's key pair (TLS mode), to sign the records it speaks for."""
        assert self.key_path is not None, "not TLS credentials"
        return Identity.load(self.name, self.key_path)

    def keyring(self) -> KeyRing:
        """A :class:`~crdtsync.security.records.KeyRing` trusting this mesh's CA (TLS mode)."""
        assert self._ca_cert is not None, "not TLS credentials"
        return KeyRing(self._ca_cert, self.mesh, _LiveRevoked(self))

    def handshake(self, *, client: bool) -> SecretHandshake:
        """A fresh mesh-secret handshake for one connection (secret mode only)."""
        assert self.secret is not None, "not mesh-secret credentials"
        return SecretHandshake(
            self.secret, self.mesh, self.name, client=client, replay_cache=self._nonces
        )


class _LiveRevoked:
    """The credentials' revocation list as a collection that re-reads ``revoked.pem``."""

    def __init__(self, creds: Credentials) -> None:
        self._creds = creds

    def __contains__(self, serial: object) -> bool:
        return serial in self._creds.revoked()

    def __iter__(self) -> Iterator[int]:
        return iter(self._creds.revoked())

    def __len__(self) -> int:
        return len(self._creds.revoked())


IN_PROCESS_SCHEMES = frozenset({"hub"})
"""Listen schemes that name an in-process endpoint (no socket): exempt from the loopback rule."""


def is_loopback_listen(listen: str) -> bool:
    """Whether the listen URL's host is a loopback address (``127.0.0.0/8``, ``::1``,
    ``localhost``). Any other name counts as non-loopback: it may resolve anywhere.

    An in-process address (a scheme of :data:`IN_PROCESS_SCHEMES`, such as the test hub's
    ``hub://NAME``) opens no socket, so nothing beyond this process can reach it."""
    parts = urlsplit(listen)
    if parts.scheme in IN_PROCESS_SCHEMES:
        return True
    host = parts.hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str | None, credentials: Credentials | None, insecure: bool) -> None:
    """Refuse to listen beyond loopback without credentials (unless ``insecure``).

    Called before anything is bound, so a refused agent never accepted a connection.

    Raises:
        InsecureListen: with a message saying how to create credentials.
    """
    if listen is None or credentials is not None or insecure or is_loopback_listen(listen):
        return
    raise InsecureListen(
        f"refusing to listen on {listen} without credentials: anyone who can reach it would be a "
        f"full member of the mesh. {HINT}; or pass insecure=True (`--insecure`) on a network you trust"
    )
