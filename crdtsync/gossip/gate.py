"""The security gate: what the core asks about authenticated peers, and nothing else.

The gossip core is sans-I/O and sits below :mod:`crdtsync.security` (which needs
``cryptography``), so it does not know certificates, keys or permission patterns. A driver with
credentials hands the core a :class:`Gate` (:meth:`GossipCore.secure
<crdtsync.gossip.GossipCore.secure>`; the implementation is
:class:`crdtsync.security.gate.CredentialGate`), and passes each connection's authenticated
identity to :meth:`~crdtsync.gossip.GossipCore.connection_made`. The identity is opaque here:
the core only hands it back to the gate.

Without a gate (no credentials) nothing of this runs: the core behaves, and its simulator
traces hash, exactly as before.

Where the core calls it:

* **receive boundary** (:meth:`Gate.check`): after the flood check, before dispatch, for every
  message, the plug-ins' (sharding) included. A denied message is dropped and counted
  (:attr:`GossipCore.security_counters`), not answered with a close: an honest peer that does
  not know our permissions may still forward a write it may not make (e.g. an anti-entropy
  Diff of a shard it only reads), and cutting it off would cut the honest traffic with it.
  A restricted message continues with the parts the peer was allowed.
* **send path** (:meth:`Gate.outgoing`): every message in the outbox is cut to what its
  recipient may read (a Summary root is computed over those shards only, see
  :meth:`Gate.may_send`); our own acks and announcements are signed (:meth:`Gate.sign_ack`).
* **own permissions** (:meth:`Gate.may_write`): a shard this agent may not write is not
  pushed and not sent as a Diff (the receivers would refuse it anyway).
* **records** (:meth:`Gate.verify_ack`, :meth:`Gate.verify_announcement`): an ack relayed
  for another agent, or a membership record naming another agent's address, counts only with
  that agent's valid signature.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from ..messages import (
    Ack,
    Diff,
    DiffBatch,
    DiffChunk,
    Message,
    PeerEntry,
    PeerList,
    Push,
    RelayedAck,
    ShardState,
)

__all__ = ["Gate", "sign_outgoing"]


class Gate(Protocol):
    """Permission checks and record signatures for one agent (see the module docstring)."""

    def check(self, identity: object, msg: Message) -> tuple[Message | None, str]:
        """What of ``msg`` from the peer ``identity`` may be handled: (message, "") to
        handle it as is, (reduced message, reason) to handle a part, (None, reason) to drop it."""
        ...

    def outgoing(self, identity: object, msg: Message) -> Message | None:
        """``msg`` cut to what ``identity`` may read (None: send nothing)."""
        ...

    def may_send(self, identity: object, shard: str) -> bool:
        """Whether anything about ``shard`` may go to ``identity``."""
        ...

    def may_write(self, shard: str) -> bool:
        """Whether this agent itself may change ``shard`` (others accept its writes)."""
        ...

    def counts_as_replica(self, agent: str, shard: str) -> bool:
        """Whether ``agent``'s ack of ``shard`` counts towards ``replicated()`` and a
        placement hand-off: only an agent known here by its certificate that may write the
        shard (a read-only holder could never give the data back: its Diffs are refused)."""
        ...

    def may_relay(self, identity: object, shards: list[str]) -> bool:
        """Whether the peer ``identity`` may write every one of ``shards`` (so it may be the
        rotating relay: receivers treat relayed deltas as the relay's own writes)."""
        ...

    def learn(self, identity: object) -> None:
        """A peer authenticated as ``identity`` connected: remember its key (for records)."""
        ...

    def certificates(self) -> tuple[bytes, ...]:
        """Every agent certificate known here (ours included), to pass on to a new peer."""
        ...

    def learn_certificates(self, certificates: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """Take the certificates that verify against the mesh CA; return those new here
        (to pass on to the other peers: a flood that dies out where nothing is new)."""
        ...

    def sign_ack(self, shard: str, state_vector: bytes, delete_set: bytes) -> bytes | None:
        """Our signature over "this agent holds this durable state" (None: we cannot sign)."""
        ...

    def verify_ack(
        self,
        agent: str,
        shard: str,
        state_vector: bytes,
        delete_set: bytes,
        signature: bytes | None,
    ) -> bool:
        """Whether ``agent`` signed this ack (a relayed ack counts only then)."""
        ...

    def sign_announcement(self, address: str | None, incarnation: int) -> bytes | None:
        """Our signature over "this agent listens at ``address`` at ``incarnation``"."""
        ...

    def verify_announcement(
        self, agent: str, address: str | None, incarnation: int, signature: bytes | None
    ) -> bool:
        """Whether ``agent`` announced exactly this address and incarnation."""
        ...


def sign_outgoing(gate: Gate, name: str, msg: Message) -> Message | None:
    """``msg`` as agent ``name`` sends it with credentials: its own acks and membership entry
    signed; None for a write of a shard this agent may not write (its receivers would drop it).
    """
    if isinstance(msg, Push | Diff | DiffChunk) and not gate.may_write(msg.shard):
        return None
    if isinstance(msg, DiffBatch):
        kept = tuple(d for d in msg.diffs if gate.may_write(d.shard))
        return replace(msg, diffs=kept) if kept else None
    if isinstance(msg, Push):
        changes: dict[str, object] = {}
        if msg.durable is not None and msg.durable_signature is None:
            changes["durable_signature"] = gate.sign_ack(msg.shard, *msg.durable)
        if any(r.agent == name and r.state.signature is None for r in msg.relayed):
            changes["relayed"] = _sign_relayed(gate, name, msg.relayed)
        return replace(msg, **changes) if changes else msg  # type: ignore[arg-type]
    if isinstance(msg, Ack):
        return Ack(
            tuple(_sign_state(gate, st) for st in msg.states),
            _sign_relayed(gate, name, msg.relayed),
            msg.forward,
        )
    if isinstance(msg, PeerList):
        return PeerList(tuple(_sign_entry(gate, name, e) for e in msg.peers), msg.full)
    return msg


def _sign_state(gate: Gate, st: ShardState) -> ShardState:
    if st.signature is not None:
        return st
    return replace(st, signature=gate.sign_ack(st.shard, st.state_vector, st.delete_set))


def _sign_relayed(gate: Gate, name: str, relayed: tuple[RelayedAck, ...]) -> tuple[RelayedAck, ...]:
    return tuple(
        replace(r, state=_sign_state(gate, r.state)) if r.agent == name else r for r in relayed
    )


def _sign_entry(gate: Gate, name: str, e: PeerEntry) -> PeerEntry:
    if e.name != name or e.signature is not None or not e.alive:
        return e
    return replace(e, signature=gate.sign_announcement(e.address, e.incarnation))
