"""The core's security component: the receive boundary, the send path, certificates.

It runs only once a driver with credentials called :meth:`GossipCore.secure
<crdtsync.gossip.GossipCore.secure>`; what it asks of the gate, and why a refused message is
dropped and counted rather than answered with a close, is in :mod:`crdtsync.gossip.gate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError
from ..messages import Certificates, Message
from .gate import Gate, sign_outgoing

if TYPE_CHECKING:
    from ._context import Context
    from .acks import Acks
    from .links import Link
    from .membership import Membership

__all__ = ["Security"]


class Security:
    """Permission checks, record signatures and certificate exchange of one core."""

    def __init__(self, ctx: Context, members: Membership, acks: Acks) -> None:
        self._ctx = ctx
        self._members = members
        self._acks = acks
        self._counts: dict[str, int] = {}
        #: The reason of the last message dropped or cut at the receive boundary, and how
        #: many were (a driver logs one line per refusal).
        self.last_refusal = ""
        self.refusals = 0

    def secure(self, gate: Gate) -> None:
        if self._ctx.links:
            raise UsageError("secure() after the first connection")
        self._ctx.gate = gate
        self._members.verify = lambda e: gate.verify_announcement(
            e.name, e.address, e.incarnation, e.signature
        )

    def counters(self) -> dict[str, int]:
        out = dict(self._counts)
        if self._acks.unverified:
            out["unverified_acks"] = self._acks.unverified
        if self._members.refused:
            out["refused_members"] = self._members.refused
        if self._members.limited:
            out["limited_death_reports"] = self._members.limited
        if self._members.capped:
            out["capped_members"] = self._members.capped
        if self._acks.unheld_dropped:
            out["unheld_acks_dropped"] = self._acks.unheld_dropped
        return out

    def _count(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def connected(self, conn: Link, identity: object) -> None:
        """A connection was accepted: keep its identity, learn its key, send our certificates
        (so that it can verify the records of agents it never meets)."""
        conn.identity = identity
        gate = self._ctx.gate
        if identity is None or gate is None:
            return
        gate.learn(identity)
        certificates = gate.certificates()
        if certificates:
            self._ctx.send(conn.name, Certificates(certificates))

    def admit(self, conn: Link, msg: Message) -> Message | None:
        """The receive boundary: what of ``msg`` may be handled (None: drop it, counted)."""
        gate = self._ctx.gate
        if gate is None or conn.identity is None:
            return msg
        allowed, reason = gate.check(conn.identity, msg)
        if allowed is None:
            self._count("forbidden")
            self._count(f"forbidden.{type(msg).__name__}")
        elif allowed is not msg:
            self._count("restricted")
        else:
            return msg
        self.last_refusal, self.refusals = reason, self.refusals + 1
        return allowed

    def on_certificates(self, conn: Link, msg: Certificates, now: float) -> None:
        """Certificates passed on: those new here (verified by the gate) go on to the other
        peers, a flood that dies out where nothing is new. Without a gate: ignored."""
        gate = self._ctx.gate
        if gate is None:
            return
        new = gate.learn_certificates(msg.certificates)
        if new:
            for c in self._ctx.live_links():
                if c is not conn and c.identity is not None:
                    self._ctx.send(c.name, Certificates(new))

    def outbox(self, name: str, out: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
        """The send path: our records signed, every message cut to what its recipient may
        read, writes of shards we may not write left out."""
        gate = self._ctx.gate
        if gate is None:
            return out
        kept = []
        for peer, msg in out:
            signed = sign_outgoing(gate, name, msg)
            conn = self._ctx.links.get(peer)
            if signed is not None and conn is not None and conn.identity is not None:
                signed = gate.outgoing(conn.identity, signed)
            if signed is None:
                self._count("unsent")
                continue
            kept.append((peer, signed))
        return kept
