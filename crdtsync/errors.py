"""The exceptions crdtsync raises, rooted in one class.

Local faults (the caller misused the API) are kept apart from remote faults (a peer sent
something invalid), store faults and transport faults, so agent code can catch exactly what it
can handle::

    CrdtSyncError
    ├── UsageError                  you did something the API does not allow
    │   ├── InvalidShardName        (also a ValueError)
    │   ├── UnsupportedValue        (also a TypeError): a value crdtsync cannot store exactly
    │   │   └── IntOutOfRange       (also a ValueError): an int outside signed 64 bits
    │   ├── LostUpdate              view[k] += n on a stored number (use Shard.counter)
    │   ├── ClosedError             the agent or shard was closed
    │   ├── InvalidAddress          (also a ValueError): a listen/peer address that is no URL
    │   ├── InsecureListen          listening beyond loopback without credentials
    │   ├── InsecureBroker          an MQTT broker beyond loopback without TLS and a login
    │   └── CredentialsError        keys, certificates or tokens missing, unreadable or invalid
    ├── StoreError                  the LMDB store failed
    │   ├── DataDirLocked           another process has the data directory open
    │   ├── StoreFull               the map could not grow any further
    │   ├── CorruptEntry            a stored entry fails its checksum
    │   └── WrongKey                at-rest data does not open with this key (security.atrest)
    ├── InvalidUpdate               bytes that are not a valid CRDT update (also a ValueError)
    │   └── UpdateOverLimit         a well-formed update beyond the work limits
    ├── ShardQuarantined            a stored update of the shard exceeds the work limits
    ├── BrokerRefused               the MQTT broker refused our login
    ├── ProtocolError               a peer broke the gossip protocol; carries a CloseCode
    ├── ListenFailed                the listen address cannot be bound (in use, not local)
    ├── ReplicationTimeout          replicated()/read() did not get enough answers in time
    └── ShardNotFound               no reachable agent holds the shard (also a KeyError)

Errors of pycrdt, lmdb and websockets are translated into these at the one module that talks
to each library; the original is kept as ``__cause__``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = [
    "CrdtSyncError",
    "UsageError",
    "InvalidShardName",
    "UnsupportedValue",
    "IntOutOfRange",
    "LostUpdate",
    "ClosedError",
    "InvalidAddress",
    "InsecureListen",
    "InsecureBroker",
    "BrokerRefused",
    "ListenFailed",
    "CredentialsError",
    "StoreError",
    "DataDirLocked",
    "StoreFull",
    "CorruptEntry",
    "InvalidUpdate",
    "UpdateOverLimit",
    "ShardQuarantined",
    "ProtocolError",
    "CloseCode",
    "ReplicationTimeout",
    "ShardNotFound",
    "map_exceptions",
]


class CrdtSyncError(Exception):
    """Root of every exception crdtsync raises on purpose."""


class UsageError(CrdtSyncError):
    """The caller used the API in a way it does not allow."""


class InvalidShardName(UsageError, ValueError):
    """A shard name outside the documented alphabet or length."""


class UnsupportedValue(UsageError, TypeError):
    """A value that crdtsync cannot store so that every replica reads it back exactly."""


class IntOutOfRange(UnsupportedValue, ValueError):
    """An int outside the signed 64-bit range (-2**63 .. 2**63-1)."""


class LostUpdate(UsageError):
    """``view[key] += n`` (or ``view[key] = view[key] + n``) on a stored number: a
    read-modify-write that silently loses concurrent increments of other agents. Nothing was
    written. Use :meth:`Shard.counter <crdtsync.shard.Shard.counter>`, or write
    ``view[key] = int(view[key]) + n`` to mean "last writer wins" on purpose."""


class ClosedError(UsageError):
    """The agent, shard or store was already closed by its owner."""


class InvalidAddress(UsageError, ValueError):
    """A listen or peer address that is not a ``ws://HOST:PORT`` (or ``wss://``) URL."""


class ListenFailed(CrdtSyncError):
    """The agent could not listen on its address (in use, or not an address of this machine);
    the agent did not start and released its data directory. The OSError is ``__cause__``."""


class InsecureListen(UsageError):
    """Listening on a non-loopback address without credentials (and without ``insecure=True``)."""


class InsecureBroker(UsageError):
    """A broker beyond loopback without TLS and authentication (and without ``insecure=True``)."""


class BrokerRefused(CrdtSyncError):
    """The MQTT broker refused our connection (bad user name or password, not authorised)."""


class CredentialsError(UsageError):
    """Keys, certificates, secrets or tokens are missing, unreadable, or do not verify."""


class StoreError(CrdtSyncError):
    """The durable store (LMDB) failed; the cause is kept as ``__cause__``."""


class DataDirLocked(StoreError):
    """Another process (or another Agent in this one) already has the data directory open."""


class StoreFull(StoreError):
    """The LMDB map reached its configured maximum size; nothing of the failed write was kept."""


class CorruptEntry(StoreError):
    """A stored update or snapshot fails its checksum: the data directory is damaged on disk.

    The message names the shard and the entry. Nothing is skipped: the shard cannot be loaded
    or compacted until the directory is restored (from a backup, or a fresh one synced from
    peers)."""


class InvalidUpdate(CrdtSyncError, ValueError):
    """Bytes that are not a well-formed CRDT update; nothing of them was applied or stored."""


class UpdateOverLimit(InvalidUpdate):
    """A well-formed update beyond the work limits (:class:`crdtsync.yjs.limits.UpdateLimits`,
    issue #11); nothing of it was applied or stored. From a peer it is dropped and counted
    (``quota.update-limits``) rather than closing the connection: an honest peer may pass on a
    document another peer built past the limits over many updates, and cutting it off would
    cut the honest traffic with it."""


class ShardQuarantined(CrdtSyncError):
    """The store holds an update of this shard that exceeds the work limits (stored before
    they existed, issue #11): the shard is not loaded, served or gossiped; the rest is.
    ``shard`` and ``reason`` say which and why (also :attr:`crdtsync.Agent.quarantined`)."""

    def __init__(self, shard: str, reason: str) -> None:
        super().__init__(f"shard {shard!r} is quarantined: {reason}")
        self.shard = shard
        self.reason = reason


class CloseCode(enum.IntEnum):
    """Websocket close codes (4000-4999 are reserved for applications) crdtsync uses with peers."""

    NORMAL = 1000  # clean shutdown (the websocket standard code)
    GOING_AWAY = 1001  # the agent is stopping
    PROTOCOL_VERSION = 4001  # handshake with an incompatible protocol version
    WRONG_MESH = 4002  # handshake from a different mesh
    BAD_HANDSHAKE = 4003  # first frame was not a valid handshake
    MALFORMED_FRAME = 4004  # frame is not a valid envelope
    UNKNOWN_MESSAGE = 4005  # envelope of an unknown message type
    INVALID_UPDATE = 4006  # CRDT update bytes failed validation
    INVALID_SHARD = 4007  # invalid shard name
    OVERSIZE = 4008  # frame larger than the configured limit
    FLOODING = 4009  # peer exceeded its message rate
    DUPLICATE_NAME = 4010  # an agent with this name is already connected
    INTERNAL_ERROR = 4011  # this agent failed while handling the frame
    UNAUTHENTICATED = 4012  # the peer did not prove it is a member of the mesh
    FORBIDDEN = 4013  # the authenticated peer sent something its permissions do not allow
    REPLAYED = 4014  # a handshake message seen before (a replayed transcript)
    CERT_EXPIRED = 4015  # the peer's certificate is not valid now (expired or not yet valid)
    CERT_REVOKED = 4016  # the peer's certificate is on the mesh's revocation list
    IDENTITY_MISMATCH = 4017  # the Hello names another agent than the one authenticated


class ProtocolError(CrdtSyncError):
    """A peer sent something the protocol does not allow; the connection is closed with ``code``."""

    def __init__(self, message: str, code: CloseCode = CloseCode.MALFORMED_FRAME) -> None:
        super().__init__(message)
        self.code = code


class ReplicationTimeout(CrdtSyncError, TimeoutError):
    """Not enough peers answered or acknowledged in time; ``lagging`` names those that did not."""

    def __init__(self, message: str, lagging: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.lagging = lagging


class ShardNotFound(CrdtSyncError, KeyError):
    """No reachable agent holds the shard."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "shard not found"


@contextmanager
def map_exceptions(
    mapping: Mapping[type[Exception], CloseCode], prefix: str = ""
) -> Iterator[None]:
    """Translate a local exception about a peer's data into the :class:`ProtocolError` that
    closes that peer's connection, once, at the boundary (httpcore's ``map_exceptions``).

    Example::

        with map_exceptions({InvalidUpdate: CloseCode.INVALID_UPDATE}, "invalid update in Push: "):
            validate_update(update)

    Args:
        mapping: exception type -> close code; the first type the exception is an instance of
            wins. Anything else propagates unchanged.
        prefix: put before the exception's message.

    Raises:
        ProtocolError: with the mapped code, ``prefix + str(exc)`` and the original as cause.
    """
    try:
        yield
    except Exception as exc:
        for kind, code in mapping.items():
            if isinstance(exc, kind):
                raise ProtocolError(f"{prefix}{exc}", code) from exc
        raise
