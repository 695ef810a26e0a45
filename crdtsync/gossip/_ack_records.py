"""The per-link and per-broadcast records of acks, and the budget of relayed acks in a message.

:class:`LinkAcks` is what one peer is owed and was sent (a field of
:class:`~crdtsync.gossip.links.Link`); :class:`FanoutAcks` is the same for the agents behind
fanout links (one broadcast Ack for all); :func:`take_relayed` cuts relayed acks to one
message's byte budget. Plain records with no reference to the core, split from
:mod:`crdtsync.gossip.acks` (whose :class:`~crdtsync.gossip.acks.Acks` owns the protocol) so
the data and the rules each read in one module; ``acks`` re-exports every public name here
(``from crdtsync.gossip.acks import LinkAcks`` still works).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..messages import RelayedAck, ShardState

__all__: list[str] = []

#: A peer that sent us a shard is owed the acks of our next this many commits of it: the
#: first may have been captured before its update was applied (see Acks.durable).
WANTED_COMMITS = 2

#: The delete set of an ack sent to a peer that had the same one in our last ack of the shard
#: on that link: "unchanged" (the empty bytes, never a valid delete set). A streamed text's
#: delete set is kilobytes and most commits leave it alone (issue 17: 2.9 KB per paced edit,
#: mostly acks). Only on direct acks without credentials (a signature covers the whole set),
#: on links that are not fanout links (see Acks.on_wire).
SAME_DELETE_SET = b""

#: Every this many acks of a shard on a link, the delete set goes whole even if unchanged
#: (a lossy medium may have lost the one the receiver would refer to).
WHOLE_DELETE_SET_EVERY = 8

#: A delete set shorter than this many bytes always goes whole: eliding it saves next to
#: nothing (an empty one is 1 byte, one range of one client about 6-10), and an elided ack
#: whose whole one was lost cannot be resolved by the receiver, which then ignores it until
#: the next whole one. With 10 % loss that left a tree's tail check blind for a whole stream
#: (h-hello's trace: a leaf's first ack, the only whole one of 17, lost; its parent recorded
#: none of the 13 that came, and gave up on its tail check). A shard with no deletion, the
#: common case, so never depends on an earlier ack; a kilobyte delete set (a streamed text)
#: still goes as "unchanged" with the bound above.
ELIDE_DELETE_SET_FROM = 32


@dataclass(slots=True)
class LinkAcks:
    """Acks owed to, and sent to, one peer."""

    pending_acks: dict[str, ShardState] = field(default_factory=dict)  # our acks owed to it
    #: shards it sent us (or asked our ack of): our next WANTED_COMMITS durable states of
    #: each are owed to it (full mesh; see Acks.durable)
    wanted: dict[str, int] = field(default_factory=dict)
    acks_since: float = math.inf  # when the oldest pending ack became owed
    last_ack_at: float = -math.inf  # when a standalone Ack last went to it
    acked_out: dict[str, ShardState] = field(default_factory=dict)  # last state acked to it
    #: others' acks to pass on to it: (agent, shard) -> (state, hops so far)
    relay_acks: dict[tuple[str, str], tuple[ShardState, int]] = field(default_factory=dict)
    relay_since: float = math.inf  # when the oldest of those became owed
    last_relay_at: float = -math.inf  # when relayed acks last went to it
    #: shard -> (the delete set of our last ack to it, acks since it went whole)
    ds_out: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    #: shard -> the delete set of its last ack to us (what SAME_DELETE_SET refers to)
    ds_in: dict[str, bytes] = field(default_factory=dict)
    #: shard -> when it last sent us the shard or asked for our acks: in a tree, others' acks
    #: of the shard are relayed to it for a while after (Acks.relay_horizon)
    upstream: dict[str, float] = field(default_factory=dict)

    def want(self, shard: str, now: float) -> None:
        """It sent us ``shard`` (or asked for our acks) at ``now``: our next
        :data:`WANTED_COMMITS` acks of it are owed to it, and others' acks relayed to it."""
        self.wanted[shard] = WANTED_COMMITS
        self.upstream[shard] = now

    def wire_delete_set(self, shard: str, ds: bytes) -> bytes:
        """What goes on the wire for our delete set ``ds`` of ``shard`` in a direct ack to this
        peer: :data:`SAME_DELETE_SET` if our last ack had the same (within
        :data:`WHOLE_DELETE_SET_EVERY` acks) and it is at least :data:`ELIDE_DELETE_SET_FROM`
        bytes, else ``ds``."""
        if len(ds) < ELIDE_DELETE_SET_FROM:
            self.ds_out[shard] = (ds, 0)
            return ds
        last = self.ds_out.get(shard)
        if last is not None and last[0] == ds and last[1] + 1 < WHOLE_DELETE_SET_EVERY:
            self.ds_out[shard] = (ds, last[1] + 1)
            return SAME_DELETE_SET
        self.ds_out[shard] = (ds, 0)
        return ds

    def resolve(self, state: ShardState) -> ShardState | None:
        """A peer's own ack with :data:`SAME_DELETE_SET` made whole from its last one on this
        link (None: none came, e.g. lost: the ack is ignored, a later one goes whole); any
        other delete set (already validated) is remembered for the next."""
        if state.delete_set != SAME_DELETE_SET:
            self.ds_in[state.shard] = state.delete_set
            return state
        ds = self.ds_in.get(state.shard)
        if ds is None:
            return None
        return ShardState(state.shard, state.state_vector, ds, state.signature)

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


@dataclass(slots=True)
class FanoutAcks:
    """Acks owed to the agents behind fanout links, asked by a broadcast :data:`WANT_ACK`:
    they go as one broadcast Ack for all of them (at most once per ``ack_interval``)."""

    wanted: dict[str, int] = field(default_factory=dict)  # shard -> commits left to ack
    owed: dict[str, ShardState] = field(default_factory=dict)
    since: float = math.inf  # when the oldest owed ack became owed
    last_at: float = -math.inf  # when the last broadcast Ack went
    acked_out: dict[str, ShardState] = field(default_factory=dict)

    def owe(self, state: ShardState, now: float) -> bool:
        """Owe ``state`` unless it went already; whether it is owed."""
        if self.acked_out.get(state.shard) == state:
            return False
        self.owed[state.shard] = state
        self.since = min(self.since, now)
        return True

    def take(self, now: float) -> tuple[ShardState, ...]:
        """Every owed ack, sorted, now broadcast."""
        states = tuple(self.owed[s] for s in sorted(self.owed))
        self.owed.clear()
        self.since = math.inf
        self.last_at = now
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
        size = len(key[0]) + len(st.shard) + len(st.state_vector) + len(st.delete_set) + 8
        if out and size > budget:
            break
        out.append(RelayedAck(key[0], st, hops))
        budget -= size
    for r in out:
        del news[(r.agent, r.state.shard)]
    return tuple(out)


#: Acks of shards we did not hold when they came, kept per agent: at most this many (beyond
#: that they are ignored and counted, Acks.unheld_dropped). A relay records the acks of
#: shards it has not received yet (a writer's ack reaches the rotating relay before or without
#: its Push, test_core_relay), so they cannot simply be skipped; an honest agent acks only
#: shards it holds, and news of a shard reaches us within a few windows, so the unheld ones
#: at any time are those written in the last few windows (a few per writer). Without a bound one
#: peer's Acks of invented names were kept until it left the view (10^5 per frame, h-wire).
MAX_UNHELD_ACKS = 1024


class UnheldAcks:
    """Per agent, the shards whose acks were kept while we did not hold them (bounded by
    :data:`MAX_UNHELD_ACKS`). Those we came to hold are pruned when the bound is reached, at
    most once a second per agent (a prune walks the agent's set: an agent at the bound costs a
    set walk a second, not one per ack)."""

    def __init__(self) -> None:
        self._shards: dict[str, set[str]] = {}
        self._pruned: dict[str, float] = {}

    def admit(self, agent: str, shard: str, holds: Callable[[str], bool], now: float) -> bool:
        """Whether an ack of ``shard`` (not held by us, not kept yet) by ``agent`` may be kept."""
        shards = self._shards.setdefault(agent, set())
        if len(shards) >= MAX_UNHELD_ACKS and now >= self._pruned.get(agent, -math.inf) + 1.0:
            self._pruned[agent] = now
            shards.difference_update([s for s in shards if holds(s)])
        if len(shards) >= MAX_UNHELD_ACKS:
            return False
        shards.add(shard)
        return True

    def forget(self, agent: str) -> None:
        """``agent`` left the view (its acks were dropped)."""
        self._shards.pop(agent, None)
        self._pruned.pop(agent, None)
