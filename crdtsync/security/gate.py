"""The gossip core's security gate, built from an agent's credentials.

:class:`CredentialGate` implements :class:`crdtsync.gossip.gate.Gate` (the core's view of
security, which knows no certificate or key) with the pieces of this package: the pure
:class:`~crdtsync.security.acl.Guard` for permissions, this agent's own
:class:`~crdtsync.security.acl.Permissions`, its Ed25519 key to sign its acks and
announcements (:mod:`crdtsync.security.records`) and a :class:`~crdtsync.security.records.KeyRing`
of the certified keys of the peers it has connected to, to verify those of others.

Mesh-secret credentials carry no per-agent key: every holder of the secret is a full member
that could claim any name, so records are neither signed nor verified there (they are
trusted, as the members are). Use certificates where that is not acceptable.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import ProtocolError
from ..messages import Message
from .acl import Guard, PeerIdentity
from .ca import load_certificate
from .records import MAX_INCARNATION, sign_ack, sign_announcement

if TYPE_CHECKING:
    from .credentials import Credentials

__all__ = ["CredentialGate"]

logger = logging.getLogger(__name__)

_SIGNED_CACHE = 256  # our own ack signatures remembered (the same state is acked to many peers)


class CredentialGate:
    """:class:`crdtsync.gossip.gate.Gate` for an agent holding ``credentials``."""

    def __init__(self, credentials: Credentials) -> None:
        self._creds = credentials
        self._guard = Guard()
        self._own = credentials.permissions
        self._name = credentials.name
        self._mesh = credentials.mesh
        self._key = credentials.identity().private_key if credentials.tls else None
        self._ring = credentials.keyring() if credentials.tls else None
        self._certs: set[bytes] = set()
        self._refused: set[bytes] = set()  # certificates refused once (see _add)
        self._by_name: dict[str, bytes] = {}
        if self._ring is not None and credentials.cert_path is not None:
            # Our own key too: entries about us from an earlier run of ours are signed by it.
            # (Revoked or expired: logged by _add; the mesh will refuse us and say so.)
            self._add(load_certificate(credentials.cert_path).public_bytes(Encoding.DER))
        self._acks: dict[tuple[str, bytes, bytes], bytes] = {}

    # -- permissions

    def check(self, identity: object, msg: Message) -> tuple[Message | None, str]:
        assert isinstance(identity, PeerIdentity)
        verdict = self._guard.check(identity, msg)
        return verdict.message, verdict.reason

    def outgoing(self, identity: object, msg: Message) -> Message | None:
        assert isinstance(identity, PeerIdentity)
        return self._guard.outgoing(identity, msg)

    def may_send(self, identity: object, shard: str) -> bool:
        assert isinstance(identity, PeerIdentity)
        return self._guard.may_send(identity, shard)

    def may_write(self, shard: str) -> bool:
        return self._own.may_write(shard)

    def may_relay(self, identity: object, shards: list[str]) -> bool:
        assert isinstance(identity, PeerIdentity)
        return all(identity.permissions.may_write(s) for s in shards)

    def counts_as_replica(self, agent: str, shard: str) -> bool:
        if self._ring is None:
            return True  # mesh secret: every member may write everything
        identity = self._ring.identity(agent)
        return identity is not None and identity.permissions.may_write(shard)

    # -- records

    def learn(self, identity: object) -> None:
        assert isinstance(identity, PeerIdentity)
        if identity.certificate is not None:
            self._add(identity.certificate)

    def _add(self, der: bytes) -> bool:
        """Verify ``der`` and add it to the key ring; whether it is new here."""
        if self._ring is None or der in self._certs or der in self._refused:
            return False
        try:
            name = self._ring.add_certificate(der).name
        except ProtocolError as exc:  # not of this mesh's CA, revoked or expired
            if len(self._refused) >= _SIGNED_CACHE:
                self._refused.clear()
            self._refused.add(der)  # (logged once: peers that do not know yet pass it on)
            logger.warning("%s: a certificate was refused: %s", self._name, exc)
            return False
        old = self._by_name.pop(name, None)
        if old is not None:
            self._certs.discard(old)  # a reissued certificate replaces the previous one
        self._by_name[name] = der
        self._certs.add(der)
        return True

    def forget_revoked(self, revoked: Collection[int]) -> list[str]:
        """The revocation list changed: forget the certificates and keys of revoked agents
        (not passed on any more, their acks and announcements stop counting); returns their
        names. Until a new certificate of such a name arrives, announcements about it are
        refused rather than taken unchecked (:meth:`verify_announcement`)."""
        if self._ring is None:
            return []
        gone = self._ring.forget_revoked(revoked)
        for name in gone:
            der = self._by_name.pop(name, None)
            if der is not None:
                self._certs.discard(der)
        return gone

    def certificates(self) -> tuple[bytes, ...]:
        return tuple(self._by_name[n] for n in sorted(self._by_name))

    def learn_certificates(self, certificates: tuple[bytes, ...]) -> tuple[bytes, ...]:
        return tuple(der for der in certificates if self._add(der))

    def sign_ack(self, shard: str, state_vector: bytes, delete_set: bytes) -> bytes | None:
        if self._key is None:
            return None
        k = (shard, state_vector, delete_set)
        sig = self._acks.get(k)
        if sig is None:
            sig = sign_ack(self._key, self._mesh, self._name, shard, state_vector, delete_set)
            if len(self._acks) >= _SIGNED_CACHE:
                self._acks.clear()
            self._acks[k] = sig
        return sig

    def verify_ack(
        self,
        agent: str,
        shard: str,
        state_vector: bytes,
        delete_set: bytes,
        signature: bytes | None,
    ) -> bool:
        if self._ring is None:
            return True  # mesh secret: every member is trusted (module docstring)
        return signature is not None and self._ring.verify_ack(
            agent, shard, state_vector, delete_set, signature
        )

    def sign_announcement(self, address: str | None, incarnation: int) -> bytes | None:
        if self._key is None or not 0 <= incarnation <= MAX_INCARNATION:
            return None
        return sign_announcement(self._key, self._mesh, self._name, address, incarnation)

    def verify_announcement(
        self, agent: str, address: str | None, incarnation: int, signature: bytes | None
    ) -> bool:
        if self._ring is None:
            return True
        if agent in self._ring.revoked_names:
            return False  # revoked while known here: nothing about it is taken any more
        if self._ring.public_key(agent) is None:
            # Never connected to it, so its key is unknown here: the entry cannot be checked.
            # It is taken (else no agent could learn of one it has not met), and is harmless
            # enough: every dial is authenticated, so a wrong address gives a failed dial or a
            # connection to whoever really is there, under its own name, never an impostor.
            return True
        return signature is not None and self._ring.verify_announcement(
            agent, address, incarnation, signature
        )
