"""Acks: which durable state each peer has, and how that news travels.

After :meth:`GossipCore.durable`, peers that sent us a shard (or said they hold it) are owed
our on-disk (state vector, delete set): piggybacked on a Push to them within ``ack_delay``, or
else sent alone as an Ack (at most once per ``ack_interval``). Acks of other agents are passed
on (``RelayedAck``) in a tree, up to ``ack_relay_hops`` hops, so that ``replicated()`` hears
of agents we are not connected to. :class:`LinkAcks` is the per-link part of that state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..messages import RelayedAck, ShardState

__all__ = ["LinkAcks", "take_relayed"]


@dataclass(slots=True)
class LinkAcks:
    """Acks owed to, and sent to, one peer."""

    pending_acks: dict[str, ShardState] = field(
        default_factory=dict
    )  # our acks owed to it
    acks_since: float = math.inf  # when the oldest pending ack became owed
    last_ack_at: float = -math.inf  # when a standalone Ack last went to it
    acked_out: dict[str, ShardState] = field(
        default_factory=dict
    )  # last state acked to it
    #: others' acks to pass on to it: (agent, shard) -> (state, hops so far)
    relay_acks: dict[tuple[str, str], tuple[ShardState, int]] = field(
        default_factory=dict
    )
    relay_since: float = math.inf  # when the oldest of those became owed
    last_relay_at: float = -math.inf  # when relayed acks last went to it

    def owe(self, state: ShardState, now: float) -> bool:
        """Owe our ``state`` of a shard to this peer unless it has it; whether it is owed."""
        if self.acked_out.get(state.shard) == state:
            return False
        self.pending_acks[state.shard] = state
        self.acks_since = min(self.acks_since, now)
        return True

    def take_pending(self, shard: str) -> ShardState | None:
        """The ack of ``shard`` owed to this peer, now sent (riding on a Push)."""
        ack = self.pending_acks.pop(shard, None)
        if ack is not None:
            self.acked_out[shard] = ack
            if not self.pending_acks:
                self.acks_since = math.inf
        return ack

    def take_all(self, now: float) -> tuple[ShardState, ...]:
        """Every ack owed, sorted, now sent alone."""
        self.acks_since = math.inf
        states = tuple(self.pending_acks[s] for s in sorted(self.pending_acks))
        self.pending_acks.clear()
        self.last_ack_at = now
        for st in states:
            self.acked_out[st.shard] = st
        return states


def take_relayed(
    news: dict[tuple[str, str], tuple[ShardState, int]], budget: int
) -> tuple[RelayedAck, ...]:
    """The relayed acks of ``news`` that fit in ``budget`` bytes (sorted; at least one), removed
    from ``news``."""
    out: list[RelayedAck] = []
    for key in sorted(news):
        st, hops = news[key]
        size = (
            len(key[0]) + len(st.shard) + len(st.state_vector) + len(st.delete_set) + 8
        )
        if out and size > budget:
            break
        out.append(RelayedAck(key[0], st, hops))
        budget -= size
    for r in out:
        del news[(r.agent, r.state.shard)]
    return tuple(out)
