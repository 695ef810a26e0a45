"""Per-shard permissions and the pure guard that enforces them on gossip messages.

Patterns
--------
A permission is a list of shard-name patterns. Shard names are ``/``-separated paths
(:mod:`crdtsync.names`), so patterns work per path level, like shell globs and ``.gitignore``:

==============  ===========================================================================
pattern         matches
==============  ===========================================================================
``board``       exactly the shard ``board``
``tasks/*``     ``tasks/a``, ``tasks/b-2``; not ``tasks`` and not ``tasks/a/b``
``*``           every top-level shard (``board``), not ``tasks/a``
``*.log``       ``x.log``; ``*`` and ``?`` never cross a ``/``
``tasks/**``    everything *inside* ``tasks`` at any depth (``tasks/a``, ``tasks/a/b``),
                not ``tasks`` itself
``**/inbox``    ``inbox``, ``a/inbox``, ``a/b/inbox``
``**``          every shard
==============  ===========================================================================

``*`` stays within one level on purpose: granting ``tasks/*`` must not silently grant
``tasks/secret/keys`` as well; whoever means "all below" writes ``tasks/**``. ``**`` is only
allowed as a whole path segment. There are no character classes (``[`` is not a shard name
character) and no escapes.

Writing implies reading: a CRDT writer must merge what others wrote (anti-entropy sends state
vectors and diffs both ways), and what it wrote it knows anyway.

The guard
---------
:class:`Guard` is pure (no I/O, no clock): the gossip core calls :meth:`Guard.check` at its
receive boundary with the authenticated peer's :class:`Permissions` and the decoded message, and
:meth:`Guard.outgoing` (or :meth:`Guard.may_send`) on its send path, so that

* a message carrying CRDT structs or a delete set (:class:`Push`, :class:`Diff`,
  :class:`DiffChunk`) is only applied from a peer that may *write* that shard. A delete set is a
  write: the same rule refuses deletes. A relay that forwards other agents' deltas is the sender
  of those bytes, so it needs write permission on the shard too (updates are not signed by
  their author);
* a request for data (:class:`SyncRequest`, :class:`ReadRequest`) is answered only for shards
  the peer may *read*, and claims of holding a shard (:class:`Holdings`, :class:`Offer`, own
  :class:`Ack` states, :class:`ReadReply` answers) count only for shards the peer may read
  (it cannot legitimately hold any other);
* nothing about a shard (data, digest, name) is sent to a peer that may not read it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache

from ..errors import CloseCode, UsageError
from ..messages import (
    Ack,
    Certificates,
    Close,
    Diff,
    DiffBatch,
    DiffChunk,
    Digests,
    Hello,
    Holdings,
    Message,
    Offer,
    PeerList,
    Push,
    ReadReply,
    ReadRequest,
    Summary,
    SyncRequest,
)

__all__ = [
    "ALL",
    "Decision",
    "Guard",
    "PeerIdentity",
    "Permissions",
    "Verdict",
    "compile_pattern",
    "validate_pattern",
]

#: The pattern that matches every shard.
ALL = "**"

_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._:\-*?]+")


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid permission pattern, else raise :class:`UsageError`."""
    if not isinstance(pattern, str) or not 0 < len(pattern) <= 256:
        raise UsageError(f"invalid shard pattern {pattern!r}: 1-256 characters")
    for segment in pattern.split("/"):
        if segment == "**":
            continue
        if not segment or _SEGMENT_CHARS.fullmatch(segment) is None or "**" in segment:
            raise UsageError(
                f"invalid shard pattern {pattern!r}: use shard-name characters with * and ? "
                "inside a level, ** only as a whole level, and no empty '/' levels"
            )
    return pattern


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression that a shard name must fully match for ``pattern``."""
    validate_pattern(pattern)
    segments = pattern.split("/")
    parts: list[str] = []
    for i, segment in enumerate(segments):
        first, last = i == 0, i == len(segments) - 1
        if segment == "**":
            if first and last:
                parts.append(".+")
            elif last:
                parts.append("/.+")  # "a/**": one or more levels below a
            elif first:
                parts.append("(?:.+/)?")  # "**/b": b at any depth, the top included
            else:
                parts.append("/(?:.+/)?")  # "a/**/b": zero or more levels between
            continue
        if not first and segments[i - 1] != "**":
            parts.append("/")
        parts.append(
            "".join(
                "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in segment
            )
        )
    return re.compile("".join(parts))


def _matches(patterns: tuple[str, ...], shard: str) -> bool:
    return any(compile_pattern(p).fullmatch(shard) is not None for p in patterns)


@dataclass(frozen=True, slots=True)
class Permissions:
    """Which shards an agent (or token holder) may read and write, as pattern tuples.

    ``Permissions()`` allows nothing; :meth:`full` allows everything. Writing implies
    reading (see the module docstring).
    """

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("read", "write"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise UsageError(f"Permissions.{name} must be a sequence of patterns, not a str")
            patterns = tuple(value)
            for p in patterns:
                validate_pattern(p)
            object.__setattr__(self, name, patterns)

    @classmethod
    def full(cls) -> Permissions:
        """Read and write every shard (a full mesh member)."""
        return cls(read=(ALL,), write=(ALL,))

    @classmethod
    def parse(cls, read: Iterable[str] = (), write: Iterable[str] = ()) -> Permissions:
        """From command-line style values: each item may hold several comma-separated patterns."""

        def split(items: Iterable[str]) -> tuple[str, ...]:
            return tuple(p.strip() for item in items for p in item.split(",") if p.strip())

        return cls(read=split(read), write=split(write))

    def may_read(self, shard: str) -> bool:
        """Whether the holder may receive ``shard``'s data, digests or name."""
        return _matches(self.read, shard) or _matches(self.write, shard)

    def may_write(self, shard: str) -> bool:
        """Whether the holder may change ``shard`` (structs or deletes)."""
        return _matches(self.write, shard)

    def to_json(self) -> dict[str, list[str]]:
        """The JSON form stored in certificates and tokens."""
        return {"read": list(self.read), "write": list(self.write)}

    @classmethod
    def from_json(cls, value: object) -> Permissions:
        """Inverse of :meth:`to_json`; raises :class:`UsageError` on anything else."""
        if not isinstance(value, dict) or set(value) - {"read", "write"}:
            raise UsageError(f"invalid permissions {value!r}")
        lists = [value.get(k, []) for k in ("read", "write")]
        if not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in lists):
            raise UsageError(f"invalid permissions {value!r}")
        return cls(read=tuple(lists[0]), write=tuple(lists[1]))


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """An authenticated peer: its agent name (from its certificate or the handshake), its
    permissions, how it was authenticated (``"tls"``, ``"secret"`` or ``"token"``) and, with
    TLS, its agent certificate (DER), e.g. for a :class:`~crdtsync.security.records.KeyRing`.

    ``serial`` is the serial number of the certificate or token it was authenticated with
    (None in mesh-secret mode): a running agent compares it with the revocation list when the
    list changes, and closes the connections of revoked peers (see
    :meth:`crdtsync.security.credentials.Credentials.revocation_changed`)."""

    name: str
    permissions: Permissions = field(default_factory=Permissions.full)
    method: str = "tls"
    certificate: bytes | None = field(default=None, repr=False)
    serial: int | None = None


class Decision(enum.Enum):
    """What to do with an incoming message (see :class:`Verdict`)."""

    ALLOW = "allow"  # handle it as it is
    RESTRICT = "restrict"  # handle ``Verdict.message``: the parts the peer was not allowed were cut
    DENY = "deny"  # do not handle any of it


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer for one incoming message.

    Attributes:
        decision: allow, restrict or deny.
        message: what to hand to the core (the original, or the reduced one); None on deny.
        reason: why something was cut or denied (for the one log line), "" when allowed.
        code: the close code to use if the caller chooses to close the connection on a deny
            (:attr:`CloseCode.FORBIDDEN`). An honest peer unaware of our permissions may still
            forward a write it may not make, so dropping and counting is the gentler policy.
    """

    decision: Decision
    message: Message | None
    reason: str = ""
    code: CloseCode | None = None

    @property
    def allowed(self) -> bool:
        """Whether anything of the message may be handled."""
        return self.decision is not Decision.DENY


def _deny(reason: str) -> Verdict:
    return Verdict(Decision.DENY, None, reason, CloseCode.FORBIDDEN)


class Guard:
    """Permission checks for one agent's gossip traffic; pure and stateless.

    Incoming: :meth:`check`. Outgoing: :meth:`outgoing`, :meth:`may_send`.
    """

    def check(self, peer: PeerIdentity, msg: Message) -> Verdict:
        """May ``peer`` make us handle ``msg``? Returns the verdict (never raises)."""
        perms = peer.permissions
        if isinstance(msg, Push | Diff | DiffChunk):
            if perms.may_write(msg.shard):
                return Verdict(Decision.ALLOW, msg)
            return _deny(f"{peer.name!r} may not write {msg.shard!r} ({type(msg).__name__})")
        if isinstance(msg, DiffBatch):
            kept_d = tuple(d for d in msg.diffs if perms.may_write(d.shard))
            return self._reduced(
                peer, msg, len(kept_d), len(msg.diffs), lambda: replace(msg, diffs=kept_d), "write"
            )
        if isinstance(msg, SyncRequest):
            kept = tuple(sv for sv in msg.state_vectors if perms.may_read(sv[0]))
            return self._reduced(
                peer,
                msg,
                len(kept),
                len(msg.state_vectors),
                lambda: replace(msg, state_vectors=kept),
                "read",
            )
        if isinstance(msg, ReadRequest):
            kept_r = tuple(sv for sv in msg.shards if perms.may_read(sv[0]))
            # A prefix scan stays allowed: its answer is cut by may_send on the way out.
            if len(kept_r) == len(msg.shards):
                return Verdict(Decision.ALLOW, msg)
            if not kept_r and msg.prefix is None:
                return _deny(f"{peer.name!r} may not read any shard it asked for")
            return Verdict(
                Decision.RESTRICT,
                replace(msg, shards=kept_r),
                f"{peer.name!r} may not read {len(msg.shards) - len(kept_r)} asked shards",
            )
        if isinstance(msg, ReadReply):
            kept_rr = tuple(s for s in msg.shards if perms.may_read(s[0]))
            return self._reduced(
                peer,
                msg,
                len(kept_rr),
                len(msg.shards),
                lambda: replace(msg, shards=kept_rr),
                "hold",
                keep_empty=True,
            )
        if isinstance(msg, Holdings):
            kept_h = tuple(s for s in msg.shards if perms.may_read(s))
            return self._reduced(
                peer,
                msg,
                len(kept_h),
                len(msg.shards),
                lambda: replace(msg, shards=kept_h),
                "hold",
                keep_empty=True,
            )
        if isinstance(msg, Offer):
            kept_o = tuple(s for s in msg.shards if perms.may_read(s))
            return self._reduced(
                peer, msg, len(kept_o), len(msg.shards), lambda: replace(msg, shards=kept_o), "hold"
            )
        if isinstance(msg, Ack):
            kept_a = tuple(s for s in msg.states if perms.may_read(s.shard))
            # Relayed acks speak for other agents: their authenticity is a matter of
            # signatures (see identity.sign_record), not of the relay's permissions.
            return self._reduced(
                peer,
                msg,
                len(kept_a),
                len(msg.states),
                lambda: replace(msg, states=kept_a),
                "hold",
                keep_empty=True,
            )
        if isinstance(msg, Hello | Summary | Digests | PeerList | Close | Certificates):
            # Hello: its name is checked against the authenticated one by the driver.
            # Summary/Digests: the peer describes its own data; what we answer goes through
            # the send path. PeerList: membership, no shard data (its entries are signed).
            # Certificates: each is checked against the mesh CA by the receiver.
            return Verdict(Decision.ALLOW, msg)
        return _deny(f"unknown message type {type(msg).__name__}")

    @staticmethod
    def _reduced(
        peer: PeerIdentity,
        msg: Message,
        kept: int,
        total: int,
        rebuild: Callable[[], Message],
        what: str,
        *,
        keep_empty: bool = False,
    ) -> Verdict:
        if kept == total:
            return Verdict(Decision.ALLOW, msg)
        if kept == 0 and not keep_empty:
            return _deny(f"{peer.name!r} may not {what} any shard of its {type(msg).__name__}")
        return Verdict(
            Decision.RESTRICT,
            rebuild(),
            f"{peer.name!r} may not {what} {total - kept} shards of its {type(msg).__name__}",
        )

    def may_send(self, peer: PeerIdentity, shard: str) -> bool:
        """Whether anything about ``shard`` (data, digest, name) may go to ``peer``."""
        return peer.permissions.may_read(shard)

    def outgoing(self, peer: PeerIdentity, msg: Message) -> Message | None:
        """``msg`` cut to what ``peer`` may read, or None if nothing of it may be sent.

        The core should rather not build such messages (a :class:`Summary` root over shards the
        peer cannot see never matches; compute it over :meth:`may_send` shards), but this is
        the last line: nothing a peer may not read leaves through it.
        """
        ok = peer.permissions.may_read
        if isinstance(msg, Push):
            if not ok(msg.shard):
                return None
            return replace(msg, relayed=tuple(r for r in msg.relayed if ok(r.state.shard)))
        if isinstance(msg, Diff | DiffChunk):
            return msg if ok(msg.shard) else None
        if isinstance(msg, DiffBatch):
            kept_d = tuple(d for d in msg.diffs if ok(d.shard))
            return replace(msg, diffs=kept_d) if kept_d else None
        if isinstance(msg, Hello):
            return replace(msg, shards=tuple(s for s in msg.shards if ok(s)))
        if isinstance(msg, Digests):
            return replace(msg, digests=tuple(d for d in msg.digests if ok(d[0])))
        if isinstance(msg, SyncRequest):
            kept = tuple(sv for sv in msg.state_vectors if ok(sv[0]))
            return replace(msg, state_vectors=kept) if kept else None
        if isinstance(msg, Holdings):
            return replace(msg, shards=tuple(s for s in msg.shards if ok(s)))
        if isinstance(msg, Offer):
            kept_o = tuple(s for s in msg.shards if ok(s))
            return replace(msg, shards=kept_o) if kept_o else None
        if isinstance(msg, ReadRequest):
            return replace(msg, shards=tuple(s for s in msg.shards if ok(s[0])))
        if isinstance(msg, ReadReply):
            return replace(msg, shards=tuple(s for s in msg.shards if ok(s[0])))
        if isinstance(msg, Ack):
            states = tuple(s for s in msg.states if ok(s.shard))
            relayed = tuple(r for r in msg.relayed if ok(r.state.shard))
            if not states and not relayed:
                return None
            return replace(msg, states=states, relayed=relayed)
        return msg  # Summary (see above), PeerList, Close: no shard names
