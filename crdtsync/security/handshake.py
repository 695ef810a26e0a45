"""Mesh-secret authentication: a sans-I/O mutual challenge-response, run before the Hello.

For small trusted setups every agent holds the same mesh secret (``mesh.secret``). The secret
never goes on the wire; each side proves it knows it with an HMAC-SHA256 over a transcript of
this one connection. Four binary frames, the dialler (client) speaking first::

    1  C -> S   MAGIC 0x01 nonce_c                      (32 fresh random bytes)
    2  S -> C   MAGIC 0x02 nonce_s                      (32 fresh random bytes)
    3  C -> S   MAGIC 0x03 mac_c name_c                 mac_c = HMAC(K, T("client", name_c))
    4  S -> C   MAGIC 0x04 mac_s name_s                 mac_s = HMAC(K, T("server", name_c, name_s))

with ``K = HMAC(secret, "crdtsync/v1/mesh-auth-key")`` and ``T(role, ...)`` the
:func:`~crdtsync.security.identity.canonical_bytes` of (role, mesh, nonce_c, nonce_s, names):
every MAC binds both nonces, the names, the mesh and the role. Why it holds:

* *Nothing for strangers.* The acceptor sends only a random nonce before the client proved
  membership with message 3; its name follows in message 4, and the mesh name, shard names
  and address only in the Hello after that. (The *client* reveals its agent name to the server
  it dialled in message 3: it chose to dial that address.)
* *Replay.* A recorded message 3 carries a MAC over the old ``nonce_s``; the server draws a
  new one per connection, so it fails. A recorded message 4 fails against the client's fresh
  ``nonce_c``. The server also remembers recent client nonces (:class:`NonceCache`) and refuses
  a repeated one with ``REPLAYED`` at message 1, so a replay is reported as such.
* *Reflection.* The role is in the transcript, so a server cannot send the client's own MAC
  back as message 4.
* MACs are compared with :func:`hmac.compare_digest` (constant time).

A wrong secret or a wrong mesh name both end in ``UNAUTHENTICATED``: telling them apart would
tell a stranger something. Mesh-secret members all get full permissions (every holder of the
secret could mint any name anyway); use certificates for per-agent permissions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable

from ..errors import CloseCode, ProtocolError
from ..names import is_valid_shard_name
from .identity import canonical_bytes

__all__ = ["MAGIC", "NONCE_SIZE", "NonceCache", "SecretHandshake", "derive_key"]

#: First bytes of every handshake frame ("crdtsync secret auth", version 1).
MAGIC = b"CSA1"
NONCE_SIZE = 32
_MAC_SIZE = 32
_HELLO_C, _HELLO_S, _PROOF_C, _PROOF_S = 1, 2, 3, 4
_MIN_SECRET = 16


def derive_key(secret: bytes) -> bytes:
    """The HMAC key used in transcripts (the raw secret is used for nothing else)."""
    if len(secret) < _MIN_SECRET:
        raise ValueError(f"a mesh secret needs at least {_MIN_SECRET} bytes")
    return hmac.new(secret, b"crdtsync/v1/mesh-auth-key", hashlib.sha256).digest()


class NonceCache:
    """Client nonces seen recently by a server, to report replayed handshakes.

    Bounded (oldest forgotten first): security does not rest on it (a replay fails the MAC
    anyway), it only makes a replay visible as ``REPLAYED`` instead of ``UNAUTHENTICATED``.
    """

    def __init__(self, size: int = 1 << 16) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._size = size

    def add(self, nonce: bytes) -> bool:
        """Remember ``nonce``; False if it was already there."""
        if nonce in self._seen:
            return False
        self._seen[nonce] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


def _fail(reason: str, code: CloseCode = CloseCode.UNAUTHENTICATED) -> ProtocolError:
    return ProtocolError(reason, code)


class SecretHandshake:
    """One side of the mesh-secret handshake, as a state machine without I/O.

    Client: send :meth:`start`'s frame, then feed each received frame to :meth:`receive`
    and send what it returns, until :attr:`peer` is set. The server does the same without
    :meth:`start`. Any failure raises :class:`ProtocolError` with ``UNAUTHENTICATED`` or
    ``REPLAYED``; the caller closes the connection with that code.

    Args:
        secret: the mesh secret (raw bytes, at least 16).
        mesh: this agent's mesh name (bound into every MAC).
        name: this agent's name.
        client: whether this side dialled the connection.
        replay_cache: the server's shared :class:`NonceCache` (ignored on clients).
        random_bytes: source of nonces (tests may pass a deterministic one).
    """

    def __init__(
        self,
        secret: bytes,
        mesh: str,
        name: str,
        *,
        client: bool,
        replay_cache: NonceCache | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._key = derive_key(secret)
        self._mesh = mesh
        self._name = name
        self._client = client
        self._cache = replay_cache
        self._random = random_bytes
        self._nonce_c: bytes | None = None
        self._nonce_s: bytes | None = None
        self._peer_claim: str | None = None
        self._step = 0  # messages handled so far, both directions
        self.peer: str | None = None  # set once the peer proved it knows the secret

    @property
    def done(self) -> bool:
        """Whether the peer is authenticated (:attr:`peer` holds its name)."""
        return self.peer is not None

    def _mac(self, role: str, *names: str) -> bytes:
        assert self._nonce_c is not None and self._nonce_s is not None
        data = canonical_bytes(
            "mesh-auth", [role, self._mesh, self._nonce_c, self._nonce_s, *names]
        )
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def start(self) -> bytes:
        """The client's first frame."""
        if not self._client or self._step != 0:
            raise RuntimeError("start() is for a client, once")
        self._nonce_c = self._random(NONCE_SIZE)
        self._step = 1
        return MAGIC + bytes([_HELLO_C]) + self._nonce_c

    def receive(self, frame: bytes | str) -> bytes | None:
        """Handle the peer's next frame; return the frame to send back, if any.

        Raises:
            ProtocolError: ``UNAUTHENTICATED`` (malformed, out of order, wrong MAC) or
                ``REPLAYED`` (a client nonce this server saw before).
        """
        if self.done:
            raise _fail("handshake already complete")
        if (
            not isinstance(frame, bytes)
            or len(frame) < len(MAGIC) + 1
            or not frame.startswith(MAGIC)
        ):
            raise _fail("not an authentication frame")
        kind, body = frame[len(MAGIC)], frame[len(MAGIC) + 1 :]
        expected = {
            (False, 0): _HELLO_C,
            (True, 1): _HELLO_S,
            (False, 2): _PROOF_C,
            (True, 3): _PROOF_S,
        }
        if expected.get((self._client, self._step)) != kind:
            raise _fail("authentication frame out of order")
        if kind == _HELLO_C:
            return self._on_hello_c(body)
        if kind == _HELLO_S:
            return self._on_hello_s(body)
        name, mac = self._parse_proof(body)
        if kind == _PROOF_C:
            if not hmac.compare_digest(mac, self._mac("client", name)):
                raise _fail("authentication failed")
            self.peer, self._step = name, 4
            return (
                MAGIC
                + bytes([_PROOF_S])
                + self._mac("server", name, self._name)
                + self._encode_name()
            )
        if not hmac.compare_digest(mac, self._mac("server", self._name, name)):
            raise _fail("the server failed to authenticate")
        self.peer, self._step = name, 4
        return None

    def _on_hello_c(self, body: bytes) -> bytes:
        if len(body) != NONCE_SIZE:
            raise _fail("bad client nonce")
        if self._cache is not None and not self._cache.add(body):
            raise _fail("replayed authentication nonce", CloseCode.REPLAYED)
        self._nonce_c = body
        self._nonce_s = self._random(NONCE_SIZE)
        self._step = 2
        return MAGIC + bytes([_HELLO_S]) + self._nonce_s

    def _on_hello_s(self, body: bytes) -> bytes:
        if len(body) != NONCE_SIZE:
            raise _fail("bad server nonce")
        self._nonce_s = body
        self._step = 3
        return MAGIC + bytes([_PROOF_C]) + self._mac("client", self._name) + self._encode_name()

    def _encode_name(self) -> bytes:
        data = self._name.encode("ascii")
        return bytes([len(data)]) + data

    @staticmethod
    def _parse_proof(body: bytes) -> tuple[str, bytes]:
        if len(body) < _MAC_SIZE + 2 or body[_MAC_SIZE] != len(body) - _MAC_SIZE - 1:
            raise _fail("bad authentication proof")
        try:
            name = body[_MAC_SIZE + 1 :].decode("ascii")
        except UnicodeDecodeError:
            raise _fail("bad agent name in authentication proof") from None
        if not is_valid_shard_name(name):
            raise _fail("bad agent name in authentication proof")
        return name, body[:_MAC_SIZE]
