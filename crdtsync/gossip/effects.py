"""What the core hands back to its driver: :class:`Effects` after each call, and
:class:`PeerStatus` per known agent (:meth:`GossipCore.peers`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..messages import Message, ShardState
from ._yjs import decode_state_vector

__all__ = ["Effects", "PeerStatus"]


@dataclass(frozen=True, slots=True)
class Effects:
    """What the driver must do after a call into the core (see :meth:`GossipCore.effects`).

    Attributes:
        messages: (peer, message) to send, in order; after a Close, close that connection.
        dials: addresses to open connections to.
        deadline: when to call :meth:`GossipCore.tick` next (None: nothing timed).
        broadcasts: messages to publish once for every broadcast link (see
            :meth:`GossipCore.broadcasts_to_send`); always empty without such links.
    """

    messages: list[tuple[str, Message]]
    dials: list[str]
    deadline: float | None
    broadcasts: list[Message] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What this agent knows about one other agent (see :meth:`GossipCore.peers`).

    Attributes:
        name: agent name.
        address: its listen address, if known.
        state: :class:`~crdtsync.gossip.PeerState` (``connected``, ``alive``, ``suspect``, ``dead``).
        incarnation: its membership incarnation as known here.
        neighbour: whether the overlay wants a connection to it.
        queued_bytes: pushes waiting for it.
        dropped: pushes dropped for it because its queue was full.
        acked: the latest durable state it acked, per shard (replication lag), directly or
            relayed by other agents.
    """

    name: str
    address: str | None
    state: str
    incarnation: int
    neighbour: bool
    queued_bytes: int = 0
    dropped: int = 0
    acked: tuple[ShardState, ...] = ()

    def acked_items(self) -> dict[str, int]:
        """shard -> how many items (the sum of its state vector's clocks) it acked: a
        readable measure of replication progress, comparable between peers."""
        out = {}
        for st in self.acked:
            try:
                out[st.shard] = sum(decode_state_vector(st.state_vector).values())
            except Exception:  # (validated on receipt; never raise from a repr)
                out[st.shard] = -1
        return out

    def __repr__(self) -> str:
        """One readable line: names, state and counts; acked state vectors as item counts
        per shard (the raw bytes are in :attr:`acked`)."""
        acked = self.acked_items()
        shown = ", ".join(f"{s!r}: {n}" for s, n in list(acked.items())[:5])
        if len(acked) > 5:
            shown += f", ... ({len(acked)} shards)"
        flags = " neighbour" if self.neighbour else ""
        return (
            f"<PeerStatus {self.name!r} {self.state} at {self.address or '-'} "
            f"incarnation={self.incarnation}{flags} queued={self.queued_bytes}B "
            f"dropped={self.dropped} acked_items={{{shown}}}>"
        )
