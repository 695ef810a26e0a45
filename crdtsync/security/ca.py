"""The mesh CA: one Ed25519 key that binds agent names to keys and permissions.

``crdtsync keys init-mesh`` creates a directory (the *keys dir*)::

    mesh.json          {"mesh": NAME}                         give to every agent
    ca.pem             the CA certificate                      give to every agent
    ca.key             the CA private key (0600)              keep here, never copy to agents
    mesh.secret        32 random bytes, hex (0600)            mesh-secret mode only
    issued.json        serial numbers issued per name         for revocation
    revoked.pem        the revocation list (an X.509 CRL)     give to every agent, re-copy on change
    agents/NAME.pem    NAME's certificate                      give to NAME
    agents/NAME.door.pem  NAME's anonymous TLS server certificate  give to NAME
    agents/NAME.key    NAME's private key (0600)              give to NAME only

An agent certificate is X.509 v3, Ed25519, issued directly by the CA (no intermediates):
the agent name is the subject CN and a URI SAN ``crdtsync://MESH/NAME``, and its permissions
are a non-critical private extension (:data:`PERMISSIONS_OID`) whose value is a DER UTF8String
holding JSON ``{"mesh": ..., "read": [...], "write": [...]}``. Non-critical, so TLS libraries
that do not know it still accept the certificate; crdtsync requires it.

Why a second, anonymous certificate: in TLS the server sends its certificate to whoever
connects, before the client proved anything. An agent therefore serves TLS with its *door
certificate*: same key, issued by the same CA, but naming nobody (CN ``crdtsync agent``, no
SAN, no permissions; and the CA's own name does not hold the mesh name either). A stranger
learns only that this is some crdtsync agent. The agent sends its real certificate inside the
connection once the client's certificate was verified; the client accepts it only with the
very public key the TLS handshake proved (see :mod:`crdtsync.security.tls`).

Revocation is an X.509 CRL signed by the CA, listing every serial ever issued to a revoked
name (certificates and tokens alike; token ids are drawn from the same serial space).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import CredentialsError
from ..names import validate_shard_name
from .acl import Permissions
from .identity import load_private_key, save_private_key, write_private_file

__all__ = [
    "PERMISSIONS_OID",
    "CertificateInfo",
    "MeshCA",
    "agent_paths",
    "agent_uri",
    "certificate_info",
    "door_path",
    "init_mesh",
    "load_certificate",
    "load_revoked",
    "read_mesh_name",
]

#: The permissions extension: an OID under 2.25 (ITU-T X.667: derived from a random UUID, so no
#: registration is needed and no collision is expected).
PERMISSIONS_OID = x509.ObjectIdentifier("2.25.98638612082442509790200886094640636070")

_CA_DAYS = 3650
#: Certificates start this much before issuing, so that peers with slightly slow clocks accept them.
_BACKDATE = dt.timedelta(minutes=5)
_MESH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def agent_uri(mesh: str, name: str) -> str:
    """The URI SAN of ``name``'s certificate in ``mesh``."""
    return f"crdtsync://{quote(mesh, safe='')}/{quote(name, safe='')}"


def _der_utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    n = len(data)
    if n < 0x80:
        head = bytes([n])
    elif n < 0x100:
        head = bytes([0x81, n])
    elif n < 0x10000:
        head = bytes([0x82, n >> 8, n & 0xFF])
    else:
        raise ValueError("permissions too long for a certificate")
    return b"\x0c" + head + data


def _parse_der_utf8(der: bytes) -> str:
    if len(der) < 2 or der[0] != 0x0C:
        raise ValueError("not a DER UTF8String")
    first = der[1]
    if first < 0x80:
        n, start = first, 2
    elif first in (0x81, 0x82):
        k = first - 0x80
        n, start = int.from_bytes(der[2 : 2 + k], "big"), 2 + k
    else:
        raise ValueError("unsupported DER length")
    if start + n != len(der):
        raise ValueError("DER UTF8String length mismatch")
    return der[start:].decode("utf-8")


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What crdtsync reads from an agent certificate."""

    name: str
    mesh: str
    permissions: Permissions
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime


def certificate_info(cert: x509.Certificate) -> CertificateInfo:
    """Name, mesh, permissions and validity of an agent certificate.

    Raises:
        CredentialsError: not an agent certificate (a CA, no permissions extension, CN and SAN
            disagree, an invalid name).
    """
    try:
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(cn[0].value) if len(cn) == 1 else ""
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ext = cert.extensions.get_extension_for_oid(PERMISSIONS_OID).value
        assert isinstance(ext, x509.UnrecognizedExtension)
        doc = json.loads(_parse_der_utf8(ext.value))
        mesh = doc.pop("mesh")
        permissions = Permissions.from_json(doc)
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uri_values = uris.get_values_for_type(x509.UniformResourceIdentifier)
    except (
        x509.ExtensionNotFound,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        AssertionError,
    ) as exc:
        raise CredentialsError(f"not a crdtsync agent certificate: {exc}") from exc
    except CredentialsError:
        raise
    except Exception as exc:  # UsageError from Permissions, bad JSON types
        raise CredentialsError(f"not a crdtsync agent certificate: {exc}") from exc
    if basic.ca:
        raise CredentialsError("a CA certificate is not an agent certificate")
    if not isinstance(mesh, str) or agent_uri(mesh, name) not in uri_values:
        raise CredentialsError(f"certificate CN {name!r} does not match its URI SAN {uri_values}")
    validate_shard_name(name)
    return CertificateInfo(
        name=name,
        mesh=mesh,
        permissions=permissions,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """Read a PEM certificate; raises :class:`CredentialsError` if it cannot."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot load certificate {path}: {exc}") from exc


def load_revoked(path: str | os.PathLike[str], ca_cert: x509.Certificate) -> frozenset[int]:
    """Serials on the CRL at ``path``; an absent file means none.

    Raises:
        CredentialsError: unreadable, or not signed by the mesh CA (a forged list could
            otherwise un-revoke, or cut off honest agents).
    """
    path = Path(path)
    if not path.exists():
        return frozenset()
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot load revocation list {path}: {exc}") from exc
    ca_key = ca_cert.public_key()
    if not isinstance(ca_key, Ed25519PublicKey) or not crl.is_signature_valid(ca_key):
        raise CredentialsError(f"revocation list {path} is not signed by the mesh CA")
    return frozenset(entry.serial_number for entry in crl)


def read_mesh_name(keys_dir: str | os.PathLike[str]) -> str:
    """The mesh name recorded in ``keys_dir/mesh.json``."""
    path = Path(keys_dir) / "mesh.json"
    try:
        mesh = json.loads(path.read_text())["mesh"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(
            f"{path} is missing or invalid: create a mesh with `crdtsync keys init-mesh --dir {keys_dir}`"
        ) from exc
    if not isinstance(mesh, str):
        raise CredentialsError(f"{path}: mesh is not a string")
    return mesh


def init_mesh(
    keys_dir: str | os.PathLike[str], mesh: str = "default", *, secret: bool = True
) -> MeshCA:
    """Create the CA key, its certificate, ``mesh.json`` and (if ``secret``) the mesh secret.

    Raises:
        CredentialsError: the directory already holds a CA, or the mesh name is invalid.
    """
    if _MESH_NAME.fullmatch(mesh) is None:
        raise CredentialsError(f"invalid mesh name {mesh!r}")
    root = Path(keys_dir)
    if (root / "ca.key").exists() or (root / "ca.pem").exists():
        raise CredentialsError(f"{root} already holds a mesh CA; use another --dir")
    if not root.exists():
        root.mkdir(parents=True, mode=0o700)  # only chmod what we create, never e.g. "."
    (root / "agents").mkdir(exist_ok=True)
    key = Ed25519PrivateKey.generate()
    subject = x509.Name(
        [  # no mesh name: door certificates show their issuer to anyone
            x509.NameAttribute(NameOID.COMMON_NAME, "crdtsync mesh CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "crdtsync"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, secrets.token_hex(8)),
        ]
    )
    now = _utc_now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, None)
    )
    save_private_key(root / "ca.key", key)
    (root / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "mesh.json").write_text(json.dumps({"mesh": mesh}) + "\n")
    if secret:
        write_private_file(root / "mesh.secret", secrets.token_hex(32).encode() + b"\n")
    return MeshCA(root, mesh, key, cert)


class MeshCA:
    """A loaded mesh CA that can issue certificates and tokens and revoke names."""

    def __init__(
        self, root: Path, mesh: str, key: Ed25519PrivateKey, cert: x509.Certificate
    ) -> None:
        self.root = root
        self.mesh = mesh
        self.key = key
        self.cert = cert

    @classmethod
    def load(cls, keys_dir: str | os.PathLike[str]) -> MeshCA:
        """The CA in ``keys_dir`` (needs ``ca.key``: run on the machine that keeps it)."""
        root = Path(keys_dir)
        mesh = read_mesh_name(root)
        return cls(root, mesh, load_private_key(root / "ca.key"), load_certificate(root / "ca.pem"))

    # -- serials -----------------------------------------------------------------------------

    def _issued(self) -> dict[str, list[int]]:
        path = self.root / "issued.json"
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        return {str(k): [int(s) for s in v] for k, v in data.items()}

    def record_serial(self, name: str, serial: int) -> None:
        """Remember that ``serial`` was issued to ``name`` (so ``revoke(name)`` finds it)."""
        issued = self._issued()
        issued.setdefault(name, []).append(serial)
        tmp = self.root / "issued.json.tmp"
        tmp.write_text(json.dumps(issued, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.root / "issued.json")

    # -- issuing -----------------------------------------------------------------------------

    def issue(
        self,
        name: str,
        permissions: Permissions | None = None,
        *,
        days: float = 365,
        now: dt.datetime | None = None,
        write_files: bool = True,
    ) -> tuple[x509.Certificate, Ed25519PrivateKey]:
        """Make a key pair and certificate for agent ``name``; write ``agents/NAME.{pem,key}``.

        Args:
            permissions: what the agent may read and write; default :meth:`Permissions.full`.
            days: validity from ``now``.
            now: issuing time (tests use a past one to make an expired certificate).
        """
        validate_shard_name(name)
        if days <= 0:
            raise CredentialsError("a certificate must be valid for some days (--days > 0)")
        permissions = permissions if permissions is not None else Permissions.full()
        now = now or _utc_now()
        key = Ed25519PrivateKey.generate()
        doc = {"mesh": self.mesh, **permissions.to_json()}
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(agent_uri(self.mesh, name))]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.UnrecognizedExtension(
                    PERMISSIONS_OID, _der_utf8(json.dumps(doc, sort_keys=True))
                ),
                critical=False,
            )
            .sign(self.key, None)
        )
        self.record_serial(name, serial)
        door = self._door_certificate(
            key.public_key(), now - _BACKDATE, now + dt.timedelta(days=days)
        )
        self.record_serial(name, door.serial_number)
        if write_files:
            cert_path, key_path = agent_paths(self.root, name)
            cert_path.parent.mkdir(exist_ok=True)
            save_private_key(key_path, key)
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            door_path(self.root, name).write_bytes(door.public_bytes(serialization.Encoding.PEM))
        return cert, key

    def _door_certificate(
        self, public_key: Ed25519PublicKey, not_before: dt.datetime, not_after: dt.datetime
    ) -> x509.Certificate:
        """The anonymous TLS server certificate for ``public_key`` (see the module docstring)."""
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crdtsync agent")]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, None)
        )

    def revoke(self, name: str) -> list[int]:
        """Put every serial issued to ``name`` on ``revoked.pem``; returns them.

        Raises:
            CredentialsError: nothing was ever issued to ``name``.
        """
        serials = self._issued().get(name)
        if not serials:
            raise CredentialsError(f"no certificate or token was issued to {name!r} by this CA")
        already = load_revoked(self.root / "revoked.pem", self.cert)
        now = _utc_now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=_CA_DAYS))
        )
        for serial in sorted(already | set(serials)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        crl = builder.sign(self.key, None)
        tmp = self.root / "revoked.pem.tmp"
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        os.replace(tmp, self.root / "revoked.pem")
        return sorted(serials)


def door_path(keys_dir: str | os.PathLike[str], name: str) -> Path:
    """Path of agent ``name``'s anonymous TLS server certificate in a keys dir."""
    cert, _ = agent_paths(keys_dir, name)
    return cert.with_name(cert.name[: -len(".pem")] + ".door.pem")


def agent_paths(keys_dir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """``(certificate, private key)`` paths of agent ``name`` in a keys dir (``/`` in a name,
    which files cannot hold, is written ``%2F``)."""
    stem = Path(keys_dir) / "agents" / name.replace("/", "%2F")
    return stem.with_name(stem.name + ".pem"), stem.with_name(stem.name + ".key")
