"""Signed records for what relays pass on: acks and membership announcements.

Issue 10 asks that "acks, membership records and anything else a relay passes on are signed
by the agent they speak for". These are the pieces the gossip core needs for that, kept pure:

* :class:`KeyRing`: agent name → Ed25519 public key, filled from certificates that verify
  against the mesh CA (the TLS peer certificates the driver sees, or certificates carried next
  to relayed records for agents not connected directly). A name maps to the key of its
  certificate, never to a key a peer merely claims.
* :func:`sign_ack` / :func:`verify_ack`: "agent A has (state vector, delete set) of shard S on
  disk", signed by A. A relay can pass it on but cannot make it up or change it, so
  ``replicated()``, placement hand-off and quorum reads can count *distinct agents verified by
  their keys*.
* :func:`sign_announcement` / :func:`verify_announcement`: "agent A listens at ADDRESS, at
  incarnation N", signed by A, so nobody can redirect the mesh to an address A never
  announced or raise A's incarnation. (Death reports are made by *other* agents about A and
  cannot be signed by A: they should carry the reporter's signature and only ever mark A
  suspect, which A refutes with a fresh announcement.)

Each record kind has its own domain-separation label (:func:`identity.canonical_bytes`), so a
signature over one can never pass as the other. Ack records include the mesh name, so a
record from one mesh is useless in another.
"""

from __future__ import annotations

from collections.abc import Collection

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import CloseCode, ProtocolError
from .acl import PeerIdentity
from .identity import sign_record, verify_record
from .tls import verify_peer_certificate

__all__ = [
    "ACK_KIND",
    "ANNOUNCE_KIND",
    "MAX_INCARNATION",
    "KeyRing",
    "sign_ack",
    "sign_announcement",
    "verify_ack",
    "verify_announcement",
]

ACK_KIND = "ack"
ANNOUNCE_KIND = "announce"
#: Incarnations must stay encodable (the codec takes signed 64-bit ints) *after* a refutation
#: adds one: a signed announcement above this is refused, so no record can push an agent to an
#: incarnation it cannot refute.
MAX_INCARNATION = 2**62


def sign_ack(
    key: Ed25519PrivateKey,
    mesh: str,
    agent: str,
    shard: str,
    state_vector: bytes,
    delete_set: bytes,
) -> bytes:
    """``agent``'s signature over "I hold this durable state of ``shard``"."""
    return sign_record(key, ACK_KIND, [mesh, agent, shard, state_vector, delete_set])


def verify_ack(
    key: Ed25519PublicKey,
    mesh: str,
    agent: str,
    shard: str,
    state_vector: bytes,
    delete_set: bytes,
    signature: bytes,
) -> bool:
    """Whether ``signature`` is the ack of exactly this state by the holder of ``key``."""
    return verify_record(key, ACK_KIND, [mesh, agent, shard, state_vector, delete_set], signature)


def sign_announcement(
    key: Ed25519PrivateKey, mesh: str, agent: str, address: str | None, incarnation: int
) -> bytes:
    """``agent``'s signature over "I listen at ``address`` at ``incarnation``"."""
    if not 0 <= incarnation <= MAX_INCARNATION:
        raise ValueError(f"incarnation {incarnation} outside 0..{MAX_INCARNATION}")
    return sign_record(key, ANNOUNCE_KIND, [mesh, agent, address, incarnation])


def verify_announcement(
    key: Ed25519PublicKey,
    mesh: str,
    agent: str,
    address: str | None,
    incarnation: int,
    signature: bytes,
) -> bool:
    """Whether ``signature`` is ``agent``'s announcement of exactly this address and
    incarnation (False for an incarnation above :data:`MAX_INCARNATION`)."""
    if not 0 <= incarnation <= MAX_INCARNATION:
        return False
    return verify_record(key, ANNOUNCE_KIND, [mesh, agent, address, incarnation], signature)


class KeyRing:
    """Agent names and their public keys, as certified by the mesh CA.

    Args:
        ca_cert: the mesh CA certificate.
        mesh: the mesh name certificates must carry.
        revoked: serials to refuse (pass ``Credentials.revoked()``).
    """

    def __init__(self, ca_cert: x509.Certificate, mesh: str, revoked: Collection[int] = ()) -> None:
        self._ca = ca_cert
        self._mesh = mesh
        self._revoked = revoked
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._identities: dict[str, PeerIdentity] = {}
        #: Names whose certificate was revoked while known here (:meth:`forget_revoked`),
        #: until a valid certificate of the name arrives (a reissue).
        self.revoked_names: set[str] = set()

    def add_certificate(self, der: bytes) -> PeerIdentity:
        """Verify an agent certificate (DER) and remember its key under its name.

        Raises:
            ProtocolError: as :func:`~crdtsync.security.tls.verify_peer_certificate`.
        """
        identity = verify_peer_certificate(der, self._ca, self._mesh, revoked=self._revoked)
        key = x509.load_der_x509_certificate(der).public_key()
        if not isinstance(key, Ed25519PublicKey):
            raise ProtocolError(
                "agent certificate without an Ed25519 key", CloseCode.UNAUTHENTICATED
            )
        self._keys[identity.name] = key
        self._identities[identity.name] = identity
        self.revoked_names.discard(identity.name)
        return identity

    def forget_revoked(self, revoked: Collection[int]) -> list[str]:
        """Forget the keys whose certificate serial is in ``revoked`` (their records stop
        verifying, their acks stop counting); returns the names forgotten, sorted."""
        gone = sorted(n for n, i in self._identities.items() if i.serial in revoked)
        for name in gone:
            del self._keys[name], self._identities[name]
            self.revoked_names.add(name)
        return gone

    def public_key(self, name: str) -> Ed25519PublicKey | None:
        """The certified key of ``name``, or None if no certificate of it was seen."""
        return self._keys.get(name)

    def identity(self, name: str) -> PeerIdentity | None:
        """The certified identity (name, permissions) of ``name``, if known."""
        return self._identities.get(name)

    def verify_ack(
        self, agent: str, shard: str, state_vector: bytes, delete_set: bytes, signature: bytes
    ) -> bool:
        """Whether ``agent`` (known here by its certificate) signed this ack."""
        key = self._keys.get(agent)
        return key is not None and verify_ack(
            key, self._mesh, agent, shard, state_vector, delete_set, signature
        )

    def verify_announcement(
        self, agent: str, address: str | None, incarnation: int, signature: bytes
    ) -> bool:
        """Whether ``agent`` (known here by its certificate) signed this announcement."""
        key = self._keys.get(agent)
        return key is not None and verify_announcement(
            key, self._mesh, agent, address, incarnation, signature
        )
