"""Acks: which durable state each peer has, and how that news travels.

After :meth:`GossipCore.durable`, the peers that want it are owed our on-disk (state vector,
delete set): piggybacked on a Push to them within ``ack_delay``, or else sent alone as an Ack
(at most once per ``ack_interval``). Who wants it, in a full mesh and in a tree alike: the
peers that sent us the shard since (a writer waits on our ack in ``replicated()``), and a peer
that asks with a Push of :data:`WANT_ACK` (it waits in ``replicated()`` for changes it did not
make). With partial replication every peer that sent us the shard or said it holds it is owed
them (acks are not relayed there). Fanout links (:attr:`~crdtsync.gossip.links.Link.fanout`,
a broker) are owed nothing by default: an agent that waits in ``replicated()`` broadcasts a
:data:`WANT_ACK`, and every agent holding the shard answers with one broadcast Ack, then acks
its next :data:`WANTED_COMMITS` commits of it the same way (:class:`FanoutAcks`). Acking
every write to every holder would cost each agent a delivery per agent per ack interval
(quadratic in the agents on one broker).

In a tree, acks of other agents are passed on (``RelayedAck``, up to ``ack_relay_hops`` hops)
so that ``replicated()`` hears of agents we are not connected to, but only back along the
path the shard came by: to the neighbours that sent it to us or asked for our acks within
:meth:`Acks.relay_horizon` (:attr:`LinkAcks.upstream`). A writer's update travels down the
tree and the acks of its receivers climb back to it; nothing goes down. A ``WANT_ACK`` in a
tree is passed on to the other neighbours (once per neighbour and half a second), and each agent
it reaches sends the asker's side the acks it already knows (within the hops), so that a
reader waiting in ``replicated()`` hears of agents that got the change from elsewhere
(issue 18: owing acks to every holder cost 24 Acks per update at 64 agents).
:class:`LinkAcks` is the per-link part of that state.

Where each part lives: the records (:class:`LinkAcks`, :class:`FanoutAcks`,
:func:`take_relayed`, :data:`WANTED_COMMITS`, :data:`SAME_DELETE_SET`) in
:mod:`~crdtsync.gossip._ack_records`; what :class:`Acks` passes on (relayed acks and
WANT_ACKs in a tree, the rotating relay's acks) in its mixin
:mod:`~crdtsync.gossip._acks_relayed`; here, what is owed, what was learnt, ``replicated()``.
All are re-exported here, so ``from crdtsync.gossip.acks import LinkAcks`` still works.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..messages import Ack, ShardState
from . import _yjs
from ._ack_records import (
    SAME_DELETE_SET,
    WANTED_COMMITS,
    WHOLE_DELETE_SET_EVERY,  # noqa: F401  (re-exported: it lived here)
    FanoutAcks,
    LinkAcks,
    UnheldAcks,
    take_relayed,
)
from ._acks_relayed import _RelayedAcks
from .overlay import FULL, RELAY, TREE

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link
    from .membership import Membership
    from .repair import Repairs

__all__ = ["WANT_ACK", "WANTED_COMMITS", "Acks", "FanoutAcks", "LinkAcks", "take_relayed"]

#: The empty Yjs update (no structs, no deletes). A Push holding only it asks the receiver for
#: its ack of the shard (see GossipCore.want_acks); applying it changes nothing.
WANT_ACK = b"\x00\x00"


class Acks(_RelayedAcks):
    """What each agent holds on disk, as far as we know, and the acks we owe (see the module
    docstring).

    Args:
        ctx: the shared context. members: the membership view (only known agents count).
        repairs: told of every ack we do not cover (a sign of a lost push).
    """

    def __init__(self, ctx: Context, members: Membership, repairs: Repairs) -> None:
        self._ctx = ctx
        self._members = members
        self._repairs = repairs
        self.acked: dict[str, dict[str, ShardState]] = {}  # agent -> shard -> durable state
        # Rotating relay: our own durable states owed to the mesh (they ride to the relay),
        # and others' acks to pass on: (agent, shard) -> (state, hops).
        self.own_acks: dict[str, ShardState] = {}
        self.own_acks_since = math.inf
        self.own_acked_out: dict[str, ShardState] = {}
        self.last_own_ack_at = -math.inf
        self.relay_news: dict[tuple[str, str], tuple[ShardState, int]] = {}
        #: Relayed acks ignored for want of a valid signature (credentials only).
        self.unverified = 0
        #: Acks asked by broadcast WANT_ACKs (fanout links; see the module docstring).
        self.fanout = FanoutAcks()
        #: We hold a fanout link (set by GossipCore.broadcast_link): with links that are not
        #: fanout links too, we bridge acks (_acks_relayed.py, bridge_asked).
        self.any_fanout = False
        #: (agent, shard) -> the hops the ack in ``acked`` had come (0: from the agent itself)
        self.hops: dict[tuple[str, str], int] = {}
        #: (shard, neighbour) -> when a WANT_ACK from it was last passed on (tree; ask_on)
        self._asks: dict[tuple[str, str], float] = {}
        #: Names of the links we may owe acks or relayed acks to (a superset, pruned by
        #: deadlines): the core asks for our timers after every received Push, and a full
        #: mesh of 32 owes acks to one or two of its 31 links (issue 18).
        self.owing: set[str] = set()
        #: Acks of shards not held here, kept within MAX_UNHELD_ACKS per agent; those beyond
        #: are ignored and counted in ``unheld_dropped``.
        self._unheld = UnheldAcks()
        self.unheld_dropped = 0

    def forget(self, agent: str) -> None:
        """``agent`` left the membership view."""
        for shard in self.acked.pop(agent, {}):
            self.hops.pop((agent, shard), None)
        self._unheld.forget(agent)

    def deadlines(self) -> list[float]:
        """When :meth:`send_due` has work (only asked while no flush is scheduled).

        Walks the links in :attr:`owing` only, and drops those that owe nothing."""
        times = []
        links = self._ctx.links
        for name in list(self.owing):
            conn = links.get(name)
            if conn is None or not (conn.acks.pending_acks or conn.acks.relay_acks):
                self.owing.discard(name)
                continue
            if conn.acks.pending_acks:
                times.append(self.ack_due(conn))
            if conn.acks.relay_acks:
                times.append(self.relay_due(conn))
        if self.own_acks:
            times.append(self.own_ack_due())
        if self.fanout.owed:
            times.append(self.fanout_due())
        return times

    def durable(self, shards: Iterable[str], now: float) -> None:
        """These shards' latest changes are on disk: owe acks to the peers that want them."""
        relay = self._ctx.mode() == RELAY
        for shard in sorted(set(shards)):
            sv, ds = self._ctx.replicas.durable_state(shard)
            state = ShardState(shard, sv, ds)
            if relay:
                # Owed to the mesh: it rides to the window's relay (on our batch, or alone),
                # which passes it on to everyone with its broadcast.
                if self.own_acked_out.get(shard) != state and self._ctx.links:
                    self.own_acks[shard] = state
                    self.own_acks_since = min(self.own_acks_since, now)
                    self._ctx.schedule_flush(now)
                continue
            # Owed to the peers that sent us the shard lately (or asked): the one that wrote
            # waits on them, or passes them on towards the writer (a tree); the others would
            # only decode and store them. Partial replication relays no acks, so every holder
            # is owed them. Fanout links (a broker): only what a broadcast WANT_ACK asked for.
            broad = self._ctx.policy.partial
            for conn in self._ctx.links.values():
                if conn.fanout:
                    continue
                if broad:
                    # (partial replication: also every peer that announced holding the shard)
                    wants = shard in conn.interest or self._ctx.policy.sends_to(conn.name, shard)
                else:
                    # Kept for WANTED_COMMITS commits: an update applied after the capture of
                    # one commit is in the next one (its shard is dirty again).
                    left = conn.acks.wanted.get(shard, 0)
                    wants = left > 0
                    if left > 1:
                        conn.acks.wanted[shard] = left - 1
                    elif wants:
                        del conn.acks.wanted[shard]
                if wants and conn.acks.owe(state, now):
                    self.owing.add(conn.name)
                    self._ctx.schedule_flush(now)
            left = self.fanout.wanted.get(shard, 0)
            if left:
                if left > 1:
                    self.fanout.wanted[shard] = left - 1
                else:
                    del self.fanout.wanted[shard]
                if self.fanout.owe(state, now):
                    self._ctx.schedule_flush(now)

    def owe_broadcast(self, shard: str, now: float) -> None:
        """A broadcast WANT_ACK of ``shard`` (an agent waits in ``replicated()``): owe our
        durable state of it to the mesh now, and our next WANTED_COMMITS ones, as broadcasts."""
        if not self._ctx.holds(shard):
            return
        self._ask_commit(shard)
        self.fanout.wanted[shard] = WANTED_COMMITS
        sv, ds = self._ctx.replicas.durable_state(shard)
        # Asked: owed even if it went before (the asker may have come since, or missed it).
        self.fanout.acked_out.pop(shard, None)
        if self.fanout.owe(ShardState(shard, sv, ds), now):
            self._ctx.schedule_flush(now)

    def fanout_due(self) -> float:
        cfg = self._ctx.config
        return max(self.fanout.since + cfg.ack_delay, self.fanout.last_at + cfg.ack_interval)

    def owe_now(self, conn: Link, shard: str, now: float, *, hub: bool = False) -> None:
        """``conn`` asked for our ack of ``shard`` (a Push of WANT_ACK): owe our durable state
        now (unless it has it), and the next ones as they come. ``hub``: a client asked us,
        its hub, in a full mesh (_context.py, client_hub): it hears the acks we know of our
        other clients too, as an asker in a tree hears those we know."""
        conn.acks.want(shard, now)
        if not self._ctx.holds(shard):
            return
        self._ask_commit(shard)
        mode = self._ctx.mode()
        if mode == RELAY:
            return  # the relay owes our acks to the whole mesh anyway
        sv, ds = self._ctx.replicas.durable_state(shard)
        if conn.acks.owe(ShardState(shard, sv, ds), now):
            self.owing.add(conn.name)
            self._ctx.schedule_flush(now)
        if (mode == TREE or hub) and not self._ctx.policy.partial:
            # The asker hears of the agents we know hold the shard (within the hops): they
            # acked towards us, or past us, not towards it (see the module docstring).
            limit = self._ctx.config.ack_relay_hops
            queued = False
            links = self._ctx.links
            for agent in sorted(self.acked):
                st = self.acked[agent].get(shard)
                if st is None or agent == conn.name:
                    continue
                if hub and (agent not in links or links[agent].listens):
                    continue  # (a hub: of its other clients only; the asker links the rest)
                hops = self.hops.get((agent, shard), 0)
                if hops < limit:
                    conn.acks.relay_acks[(agent, shard)] = (st, hops + 1)
                    queued = True
            if queued:
                self.owing.add(conn.name)
                conn.acks.relay_since = min(conn.acks.relay_since, now)
                self._ctx.schedule_flush(now)

    def owe_again(self, conn: Link, shard: str, now: float) -> None:
        """``conn`` pushed its last Push of ``shard`` again and it held nothing new to us: its
        tail check (:mod:`~crdtsync.gossip._tail_check`) saw no ack of ours covering it. Owe
        our durable state of it even if it went already (it may have been lost), with its
        whole delete set (the one a SAME_DELETE_SET would refer to may be lost too).

        Full mesh only: in a tree it halved the Pushes sent again (64 agents, 10 and 20 %
        loss, seeds 1-6), but at 10 % the last key reached everyone later in 5 runs of 12
        (0.5-1 s, none earlier), not explained yet (h-meshtail); the tree keeps h-loss64's
        behaviour, byte for byte."""
        if not self._ctx.holds(shard) or self._ctx.mode() != FULL:
            return
        conn.acks.acked_out.pop(shard, None)
        conn.acks.ds_out.pop(shard, None)
        sv, ds = self._ctx.replicas.durable_state(shard)
        if conn.acks.owe(ShardState(shard, sv, ds), now):
            self.owing.add(conn.name)
            self._ctx.schedule_flush(now)

    def _ask_commit(self, shard: str) -> None:
        """Tell the agent a peer waits for our ack of ``shard`` (Context.on_ack_wanted)."""
        if self._ctx.on_ack_wanted is not None:
            self._ctx.on_ack_wanted(shard)

    def ack_due(self, conn: Link) -> float:
        cfg = self._ctx.config
        return max(
            conn.acks.acks_since + cfg.ack_delay,
            conn.acks.last_ack_at + cfg.ack_interval,
        )

    def send_due(self, now: float, *, flushed: bool = False) -> None:
        """Send the acks that are due and rode on no Push.

        Acks wait for the next window flush and then up to ack_delay for a Push to ride on;
        standalone Ack messages go to one peer at most once per ack_interval (relayed ones
        at most once per ack_relay_interval). ``flushed``: a window flush ran just before,
        in this tick. The acks it left are then due even if that flush already asked for
        the next one: a flush that keeps asking for the next (replies paced or over the
        budget, e.g. a peer sending Summaries back to back) must not hold acks back for
        ever (issue #11: an honest peer's replicated() waited 5-60 s under a Summary flood).
        """
        if self._ctx.flush_at is not None and not flushed:
            return
        mode = self._ctx.mode()
        for conn in self._ctx.links.values():
            own_due = bool(conn.acks.pending_acks) and now >= self.ack_due(conn)
            relay_due = bool(conn.acks.relay_acks) and now >= self.relay_due(conn)
            if not own_due and not relay_due:
                continue
            states: tuple[ShardState, ...] = ()
            if conn.acks.pending_acks and (
                own_due or now >= conn.acks.last_ack_at + self._ctx.config.ack_interval
            ):
                states = conn.acks.take_all(now)
            relayed = (
                self.take_relayed(conn, now, mode, riding=bool(states))
                if conn.acks.relay_acks
                else ()
            )
            if states or relayed:
                states = tuple(self.on_wire(conn, st) for st in states)
                self._ctx.send(conn.name, Ack(states, relayed, forward=mode == TREE))
        if self.fanout.owed and now >= self.fanout_due():
            self._ctx.broadcast(Ack(self.fanout.take(now), ()))
        if self.own_acks and now >= self.own_ack_due():
            if mode == RELAY:
                self._ctx.schedule_flush(now)  # they go to the relay at the boundary
            else:
                self.spread_own(now)

    def on_wire(self, conn: Link, state: ShardState) -> ShardState:
        """Our own ``state`` as it goes to ``conn`` in a direct ack: its delete set replaced by
        :data:`SAME_DELETE_SET` where the peer has it (see there; never with credentials, nor
        on a fanout link: a broker's at-least-once delivery may repeat an older ack)."""
        if self._ctx.gate is not None or conn.fanout:
            return state
        ds = conn.acks.wire_delete_set(state.shard, state.delete_set)
        if ds is state.delete_set:
            return state
        return ShardState(state.shard, state.state_vector, ds, state.signature)

    def learn(
        self,
        agent: str,
        state: ShardState,
        source: Link,
        forward: bool,
        now: float,
        hops: int = 0,
    ) -> None:
        """Record that ``agent`` holds ``state`` on disk (told by ``source``, ``hops`` agents
        passed it on before); pass it on if ``forward`` and it is news (relayed acks, see the
        module docstring)."""
        if agent == self._ctx.name:
            return
        direct = agent == source.name
        if not direct and agent not in self._members:
            return  # only agents we know of count (and take memory)
        gate = self._ctx.gate
        if (
            gate is not None
            and not direct
            and not gate.verify_ack(
                agent, state.shard, state.state_vector, state.delete_set, state.signature
            )
        ):
            # With credentials a relayed ack counts only with its agent's own signature: a
            # relay cannot make us believe another agent holds data (replicated(), hand-off).
            self.unverified += 1
            return
        cur = self.acked.get(agent, {}).get(state.shard)
        key = (agent, state.shard)
        source.acks.relay_acks.pop(key, None)  # it has this one, or a newer one
        if cur == state:
            if hops < self.hops.get(key, hops):
                self.hops[key] = hops  # a shorter way (what owe_now passes on counts it)
            return
        if (
            cur is not None
            and not direct
            and not _yjs.covers(
                state.state_vector, state.delete_set, cur.state_vector, cur.delete_set
            )
        ):
            return  # older news (a durable state only grows; the agent itself is believed)
        if not self._keeps(agent, state.shard, cur is None, now):
            return
        self.acked.setdefault(agent, {})[state.shard] = state
        self.hops[key] = hops
        self._repairs.check_ack(agent, state, source, now)
        mode = self._ctx.mode()
        # A full mesh: a client's own ack is passed on to our other clients that wait on the
        # shard (they hold no link with it; _context.py, client_hub), as a tree passes acks.
        clients = mode == FULL and direct and not source.listens
        forward = forward or clients
        # A bridge: an agent's own ack on a link goes to the broker agents that asked us
        # (a broadcast WANT_ACK, _acks_relayed.py: bridge_asked), over our links with them.
        bridge = self.any_fanout and direct and not source.fanout
        if forward and mode == RELAY:
            # they travel with the deltas (see window.py)
            self.relay_news[key] = (state, hops + 1)
            self._ctx.schedule_flush(now)
        elif (
            (forward or bridge)
            and not self._ctx.policy.partial
            and hops < self._ctx.config.ack_relay_hops
        ):
            # (Partial replication: a shard's holders are connected to each other, so acks
            # need no relay; relaying them would carry every shard's acks to every agent.)
            # Only back along the path the shard came by (see the module docstring).
            since = now - self.relay_horizon()
            for c in self._ctx.links.values():
                if (
                    c is not source
                    and not c.closing
                    and c.name != agent
                    and c.acks.upstream.get(state.shard, -math.inf) >= since
                    and (
                        (bridge or (forward and not clients))  # (bridge: it asked us)
                        if c.fanout
                        else (forward and not (clients and c.listens))
                    )
                ):
                    c.acks.relay_acks[key] = (state, hops + 1)
                    c.acks.relay_since = min(c.acks.relay_since, now)
                    self.owing.add(c.name)

    def replicated(self, shard: str, state_vector: bytes, delete_set: bytes) -> tuple[str, ...]:
        """Peers whose latest durable ack of ``shard`` covers (state_vector, delete_set).

        The agent passes what it wants replicated (e.g. its own state right after a write) and
        waits until at least k peers are returned. Peers that are not directly connected
        count too: acks are relayed (in a tree, and through the rotating relay), within about
        :attr:`GossipConfig.ack_relay_interval` per hop.
        """
        out = []
        gate = self._ctx.gate
        for peer in sorted(self.acked):
            if gate is not None and not gate.counts_as_replica(peer, shard):
                continue  # with credentials: certified agents that may write it (gate.py)
            st = self.acked[peer].get(shard)
            if st is not None and _yjs.covers(
                st.state_vector, st.delete_set, state_vector, delete_set
            ):
                out.append(peer)
        return tuple(out)

    def on_ack(self, conn: Link, msg: Ack, now: float) -> None:
        """A peer's Ack: its own durable states, and others' it passes on."""
        for st in msg.states:
            _yjs.check_state(st.state_vector, _given(st.delete_set))
        for r in msg.relayed:
            _yjs.check_state(r.state.state_vector, r.state.delete_set)
        forward = msg.forward or self._ctx.mode() == TREE
        holds = self._ctx.holds
        for st in msg.states:
            if holds(st.shard):  # (only held shards: a peer may ack any number of names)
                conn.interest.add(st.shard)
            whole = conn.acks.resolve(st)
            if whole is not None:
                self.learn(conn.name, whole, conn, forward, now)
        for r in msg.relayed:
            self.learn(r.agent, r.state, conn, forward, now, r.hops)


def _given(ds: bytes) -> bytes | None:
    """The delete set to validate of a peer's own ack (None: SAME_DELETE_SET, nothing to)."""
    return None if ds == SAME_DELETE_SET else ds
