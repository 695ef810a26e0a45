"""Security of a crdtsync mesh: identities, the mesh CA, permissions, authentication, TLS.

==========================  ======================================================================
module                      what it holds
==========================  ======================================================================
:mod:`.identity`            Ed25519 agent keys (PEM files, 0600) and domain-separated signatures
:mod:`.ca`                  the mesh CA: agent certificates with permissions, revocation list
:mod:`.tokens`              bearer tokens (JWT, EdDSA) with per-shard scopes for the other doors
:mod:`.acl`                 :class:`Permissions` patterns and the pure :class:`Guard`
:mod:`.handshake`           sans-I/O mesh-secret challenge-response
:mod:`.tls`                 ``ssl.SSLContext`` builders and peer-certificate checks (mutual TLS)
:mod:`.credentials`         what an agent holds: :class:`Credentials.from_dir`
:mod:`.atrest`              AES-256-GCM sealing of shard values (store hook not wired yet)
:mod:`.records`             signed acks and announcements, :class:`KeyRing` of certified keys
:mod:`.gate`                the gossip core's gate from credentials (guard, own key, key ring)
:mod:`.cli`                 the ``crdtsync keys`` commands
==========================  ======================================================================
"""

from __future__ import annotations

from .acl import ALL, Decision, Guard, PeerIdentity, Permissions, Verdict

__all__ = ["ALL", "Decision", "Guard", "PeerIdentity", "Permissions", "Verdict"]
