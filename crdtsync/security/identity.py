"""Agent identities: Ed25519 key pairs, their PEM files, and signatures over records.

An agent's identity is an Ed25519 key pair; the mesh binds its public key to its name with a
certificate (:mod:`crdtsync.security.ca`). Records an agent speaks for (acks, membership
entries) and that others pass on can then be signed with :func:`sign_record` and checked with
:func:`verify_record` by anyone holding the certificate.

Canonical bytes
---------------
A signature must cover exactly one meaning. :func:`canonical_bytes` therefore encodes a record
as a domain-separation label (``crdtsync/v1/<kind>``: a signature over an ack can never be
replayed as a membership entry) followed by each field as a one-byte type tag, a 4-byte
big-endian length and the bytes; ints are 8-byte signed big-endian (crdtsync's ints are 64-bit).
Nothing is concatenated without a length, so ``("ab", "c")`` and ``("a", "bc")`` differ.

Private keys are written with mode 0600 (created so, never readable by others even briefly)
and unencrypted: an agent must start unattended; protect the directory instead.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import CredentialsError

__all__ = [
    "SIGNATURE_DOMAIN",
    "Field",
    "Identity",
    "canonical_bytes",
    "load_private_key",
    "load_public_key",
    "public_key_bytes",
    "save_private_key",
    "save_public_key",
    "sign_record",
    "verify_record",
    "write_private_file",
]

#: Prefix of every signed record's label.
SIGNATURE_DOMAIN = "crdtsync/v1/"

#: A field of a signed record.
Field = bytes | str | int | bool | None

_TAG_NONE, _TAG_BYTES, _TAG_STR, _TAG_INT, _TAG_BOOL = 0, 1, 2, 3, 4


def canonical_bytes(kind: str, fields: Sequence[Field]) -> bytes:
    """The unambiguous bytes a signature over the record ``(kind, *fields)`` covers.

    Raises:
        ValueError: ``kind`` is empty or not ASCII, or an int is outside 64 bits.
        TypeError: a field of another type.
    """
    if not kind or not kind.isascii():
        raise ValueError(f"invalid record kind {kind!r}")
    label = (SIGNATURE_DOMAIN + kind).encode("ascii")
    out = [struct.pack(">H", len(label)), label, struct.pack(">I", len(fields))]
    for value in fields:
        if value is None:
            tag, data = _TAG_NONE, b""
        elif isinstance(value, bool):  # before int: bool is an int
            tag, data = _TAG_BOOL, b"\x01" if value else b"\x00"
        elif isinstance(value, int):
            tag, data = _TAG_INT, struct.pack(">q", value)
        elif isinstance(value, str):
            tag, data = _TAG_STR, value.encode("utf-8")
        elif isinstance(value, bytes):
            tag, data = _TAG_BYTES, value
        else:
            raise TypeError(f"cannot sign a field of type {type(value).__name__}")
        out += [bytes([tag]), struct.pack(">I", len(data)), data]
    return b"".join(out)


def sign_record(key: Ed25519PrivateKey, kind: str, fields: Sequence[Field]) -> bytes:
    """An Ed25519 signature (64 bytes) over :func:`canonical_bytes` of the record."""
    return key.sign(canonical_bytes(kind, fields))


def verify_record(
    key: Ed25519PublicKey, kind: str, fields: Sequence[Field], signature: bytes
) -> bool:
    """Whether ``signature`` is ``key``'s signature over this exact record (never raises on a
    bad signature; a malformed record still raises like :func:`canonical_bytes`)."""
    try:
        key.verify(signature, canonical_bytes(kind, fields))
    except InvalidSignature:
        return False
    return True


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600), replacing the file.

    The file is created with mode 0600 (not chmod-ed after the write), through a temporary
    name and an atomic rename, so no other user can ever read a partial or open copy.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # in case the umask was stricter than needed, or laxer
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_private_key(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(path, pem)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an Ed25519 private key PEM written by :func:`save_private_key`.

    Raises:
        CredentialsError: missing, unreadable, not Ed25519, or readable by group/others.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read private key {path}: {exc}") from exc
    if mode & 0o077:
        raise CredentialsError(
            f"private key {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialsError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialsError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key (what records and fingerprints use)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def save_public_key(path: str | os.PathLike[str], key: Ed25519PublicKey) -> None:
    """Write ``key`` as SubjectPublicKeyInfo PEM (world-readable is fine)."""
    Path(path).write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 public key PEM.

    Raises:
        CredentialsError: missing, unreadable or not an Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot load public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise CredentialsError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


@dataclass(frozen=True, slots=True)
class Identity:
    """An agent's name and Ed25519 key pair."""

    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Identity:
        """A fresh key pair for ``name``."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, name: str, path: str | os.PathLike[str]) -> Identity:
        """The identity whose private key PEM is at ``path``."""
        return cls(name, load_private_key(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key PEM to ``path`` (mode 0600)."""
        save_private_key(path, self.private_key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, what certificates carry."""
        return self.private_key.public_key()

    def sign(self, kind: str, fields: Sequence[Field]) -> bytes:
        """Sign the record ``(kind, *fields)`` (see :func:`sign_record`)."""
        return sign_record(self.private_key, kind, fields)
