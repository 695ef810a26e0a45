"""Privacy at rest: AES-256-GCM sealing of shard data before it goes into LMDB.

Not wired into the store yet (``store.py`` is being changed elsewhere). The hook is two calls
at the one place the store turns shard bytes into LMDB values and back:

* on write: ``value = cipher.seal(shard, kind, plain)`` for every snapshot and log record;
* on read: ``plain = cipher.open(shard, kind, value)``;
* at open: store :meth:`AtRestCipher.check_value` once under a meta key when the store is
  created, and call :meth:`AtRestCipher.verify_check` on it at every open, so a wrong key fails
  at once (``WrongKey``) instead of at the first read of some shard.

``kind`` names the record type (``"snapshot"``, ``"log"``); the shard name and ``kind`` are the
GCM associated data, so a sealed value moved to another shard or another record type no
longer opens. The nonce is 96 random bits per value (safe far beyond the number of values one
key seals here: the NIST bound for random nonces is 2**32 messages per key).

Keys are 32 bytes, never stored beside the data: :func:`load_key` refuses a key file inside the
data directory. Shard *names* and sizes stay visible (they are LMDB keys); only contents are
hidden. The cost is measured by the benchmark the lead adds (local writes and reopen).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import CredentialsError, StoreError
from .identity import canonical_bytes, write_private_file

__all__ = ["KEY_SIZE", "AtRestCipher", "WrongKey", "generate_key_file", "load_key"]

KEY_SIZE = 32
_VERSION = b"\x01"
_NONCE = 12
_CHECK_PLAIN = b"crdtsync at-rest key check"


class WrongKey(StoreError):
    """Stored data does not open with this key: the wrong key, or the data was altered."""


def load_key(path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> bytes:
    """Read a 32-byte key (64 hex digits) from ``path``.

    Raises:
        CredentialsError: unreadable, malformed, readable by others, or inside ``data_dir``
            (a key beside the data it protects protects nothing).
    """
    key_path = Path(path).resolve()
    if data_dir is not None:
        root = Path(data_dir).resolve()
        if key_path == root or root in key_path.parents:
            raise CredentialsError(
                f"the encryption key {key_path} is inside the data directory {root}"
            )
    try:
        mode = key_path.stat().st_mode
        key = bytes.fromhex(key_path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read encryption key {key_path}: {exc}") from exc
    if mode & 0o077:
        raise CredentialsError(f"encryption key {key_path} is readable by others; chmod 600 it")
    if len(key) != KEY_SIZE:
        raise CredentialsError(
            f"encryption key {key_path} must hold {KEY_SIZE} bytes (64 hex digits)"
        )
    return key


def generate_key_file(path: str | os.PathLike[str]) -> bytes:
    """Write a fresh random key to ``path`` (mode 0600) and return it."""
    key = AESGCM.generate_key(bit_length=8 * KEY_SIZE)
    write_private_file(path, key.hex().encode() + b"\n")
    return key


class AtRestCipher:
    """Seal and open shard values with one AES-256-GCM key (see the module docstring)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise CredentialsError(f"an at-rest key has {KEY_SIZE} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(shard: str, kind: str) -> bytes:
        return canonical_bytes("at-rest", [shard, kind])

    def seal(self, shard: str, kind: str, plain: bytes) -> bytes:
        """``version || nonce || ciphertext+tag`` of ``plain`` bound to ``(shard, kind)``."""
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, self._aad(shard, kind))

    def open(self, shard: str, kind: str, sealed: bytes) -> bytes:
        """The plain bytes of a value sealed for ``(shard, kind)``.

        Raises:
            WrongKey: another key, another shard or kind, or altered bytes.
        """
        if len(sealed) < 1 + _NONCE + 16 or sealed[:1] != _VERSION:
            raise WrongKey(f"{kind} of {shard!r} is not a sealed value")
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, self._aad(shard, kind))
        except InvalidTag:
            raise WrongKey(
                f"{kind} of {shard!r} does not open with this key (wrong key or altered data)"
            ) from None

    def check_value(self) -> bytes:
        """A value to store once; :meth:`verify_check` on it tells whether a key is the right one."""
        return self.seal("", "key-check", _CHECK_PLAIN)

    def verify_check(self, value: bytes) -> None:
        """Raise :class:`WrongKey` unless ``value`` came from :meth:`check_value` with this key."""
        if self.open("", "key-check", value) != _CHECK_PLAIN:
            raise WrongKey("the at-rest key check does not match")
