"""Acks passed on: the tree's relayed acks and WANT_ACKs, and the rotating relay's acks.

:class:`~crdtsync.gossip.acks.Acks` learns who holds what (``learn``, ``on_ack``) and owes our
own durable states; what it passes on, and when, lives here:

- in a tree, how long acks are relayed back along the path a shard came by
  (:meth:`_RelayedAcks.relay_horizon`), whether a WANT_ACK goes on to the other neighbours
  (:meth:`_RelayedAcks.ask_on`), and when relayed acks are due on a link and how many fit in
  one message (:meth:`_RelayedAcks.relay_due`, :meth:`_RelayedAcks.take_relayed`);
- at a bridge (links that are not broadcast links besides a broker's), the broker agents'
  broadcast acks passed on to the websocket peers that sent us the shard or asked
  (:meth:`_RelayedAcks.on_broadcast_ack`);
- with the rotating relay, our own acks and others' news at a window boundary
  (:meth:`_RelayedAcks.own_ack_due`, :meth:`_RelayedAcks.take_news`,
  :meth:`_RelayedAcks.flush_relay_acks`), and their hand-back to per-peer acks when the
  overlay stops being a relay (:meth:`_RelayedAcks.spread_own`).

A mixin of :class:`~crdtsync.gossip.acks.Acks` (:class:`_RelayedAcks`), split from
:mod:`crdtsync.gossip.acks` as :mod:`~crdtsync.gossip._relay_loss` is from
:mod:`~crdtsync.gossip.relay`; the state is the ``Acks`` instance's (set in its ``__init__``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..messages import Ack, RelayedAck, ShardState
from . import _yjs
from ._ack_records import UnheldAcks, take_relayed
from .overlay import TREE

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link
    from .membership import Membership

__all__: list[str] = []


class _RelayedAcks:
    """Mixin of :class:`~crdtsync.gossip.acks.Acks`: the acks it passes on (module docstring).

    The attributes declared below belong to ``Acks`` (set in its ``__init__``).
    """

    _ctx: Context
    own_acks: dict[str, ShardState]
    own_acks_since: float
    own_acked_out: dict[str, ShardState]
    last_own_ack_at: float
    relay_news: dict[tuple[str, str], tuple[ShardState, int]]
    _asks: dict[tuple[str, str], float]
    owing: set[str]
    acked: dict[str, dict[str, ShardState]]
    hops: dict[tuple[str, str], int]
    _members: Membership
    _unheld: UnheldAcks
    unheld_dropped: int

    def _keeps(self, agent: str, shard: str, new: bool, now: float) -> bool:
        """Whether an ack of ``shard`` by ``agent`` may be kept: always unless it is ``new``
        (none kept yet) of a shard we do not hold, then within the bound of
        :data:`~crdtsync.gossip._ack_records.MAX_UNHELD_ACKS` per agent."""
        holds = self._ctx.holds
        if not new or holds(shard) or self._unheld.admit(agent, shard, holds, now):
            return True
        self.unheld_dropped += 1
        return False

    def relay_horizon(self) -> float:
        """How long after a neighbour sent us a shard (or asked) others' acks of it are
        relayed to it: a few ack rounds, at least 2 s (the acks of agents up to
        ``ack_relay_hops`` hops past us come back within it; a writer waiting in
        ``replicated()`` asks again every second, which keeps the path open)."""
        cfg = self._ctx.config
        return max(2.0, 4 * max(cfg.ack_interval, cfg.ack_relay_interval))

    def on_broadcast_ack(self, agent: str, msg: Ack) -> bool:
        """A broadcast Ack of ``agent`` (link or not): its own durable states, believed as a
        direct ack is; never passed on over the medium (every agent on it got it). A bridge
        (an agent with links that are not broadcast links) relays what is news to those of
        them that sent it the shard or asked for its acks lately (as a tree relays acks), so
        a websocket peer's ``replicated()`` counts the broker's agents (h-hubfwd; its asks
        reach them through :meth:`~crdtsync.gossip.push.Pushes.bridge_ask`). False if
        ``agent`` is not in our membership view (ignored, as relayed acks of strangers are)."""
        if agent not in self._members:
            return False
        for st in msg.states:
            _yjs.check_state(st.state_vector, st.delete_set)
        now = self._ctx.now
        since = now - self.relay_horizon()
        relay = not self._ctx.policy.partial and self._ctx.config.ack_relay_hops > 0
        for st in msg.states:
            held = self.acked.setdefault(agent, {})
            if not self._keeps(agent, st.shard, st.shard not in held, now):
                continue
            news = held.get(st.shard) != st
            held[st.shard] = st
            if not (relay and news):
                continue
            key = (agent, st.shard)
            self.hops[key] = 0
            for c in self._ctx.links.values():
                if (
                    not c.fanout
                    and not c.closing
                    and c.name != agent
                    and c.acks.upstream.get(st.shard, -math.inf) >= since
                ):
                    c.acks.relay_acks[key] = (st, 1)
                    c.acks.relay_since = min(c.acks.relay_since, now)
                    self.owing.add(c.name)
        return True

    def ask_on(self, shard: str, source: str, now: float) -> bool:
        """Whether a WANT_ACK of ``shard`` that came from neighbour ``source`` goes on to our
        other neighbours (a tree: the agents past us answer towards the asker): only for a
        shard we hold, once per (shard, neighbour) and half a second (the asker repeats it
        every second while it waits). Keyed by the neighbour, not by the asker the Push
        names: a peer cannot make us pass on more by naming other askers."""
        if not self._ctx.holds(shard):
            return False
        last = self._asks.get((shard, source))
        if last is not None and now < last + 0.5:
            return False
        if len(self._asks) > 1024:  # forget old asks (they only dedupe the repeats)
            self._asks = {k: t for k, t in self._asks.items() if now < t + 0.5}
        self._asks[(shard, source)] = now
        return True

    def relay_due(self, conn: Link) -> float:
        # Alone only on a link that carried no push for a while: a busy one carries them.
        cfg = self._ctx.config
        return max(
            conn.acks.relay_since + cfg.ack_delay,
            conn.acks.last_relay_at + cfg.ack_relay_interval,
            conn.push.last_push_at + cfg.ack_relay_interval,
        )

    def own_ack_due(self) -> float:
        cfg = self._ctx.config
        return max(self.own_acks_since + cfg.ack_delay, self.last_own_ack_at + cfg.ack_interval)

    def take_relayed(
        self, conn: Link, now: float, mode: str, *, riding: bool = False
    ) -> tuple[RelayedAck, ...]:
        """The relayed acks owed to ``conn`` that fit in one message (sorted), now sent.
        ``riding``: our own acks go in that message anyway (a tree sends them along, not in
        a frame of their own ack_relay_interval later)."""
        cfg = self._ctx.config
        if not conn.acks.relay_acks or (
            mode == TREE and not riding and now < conn.acks.last_relay_at + cfg.ack_relay_interval
        ):
            return ()
        out = take_relayed(conn.acks.relay_acks, cfg.max_relayed_bytes)
        conn.acks.last_relay_at = now
        conn.acks.relay_since = now if conn.acks.relay_acks else math.inf
        return out

    def take_news(self) -> tuple[RelayedAck, ...]:
        """Rotating relay: the others' acks to pass on that fit in one message (sorted)."""
        return take_relayed(self.relay_news, self._ctx.config.max_relayed_bytes)

    def flush_relay_acks(
        self,
        now: float,
        spread: bool,
        target: str | None,
        news: tuple[RelayedAck, ...],
        carried: set[str],
    ) -> None:
        """Rotating relay, at a boundary: the acks no push carried go alone.

        News (others' acks we were asked to pass on) go to every peer our broadcast missed,
        or else to the coming window's relay; our own durable states, once owed for ack_delay,
        to that relay too (at most once per ack_interval): one message, not one per peer.
        """
        own: tuple[ShardState, ...] = ()
        if (
            self.own_acks
            and now >= self.own_ack_due()
            and target is not None
            and target != self._ctx.name
        ):
            own = tuple(self.own_acks[s] for s in sorted(self.own_acks))
            self.own_acks.clear()
            self.own_acks_since = math.inf
            self.last_own_ack_at = now
            for st in own:
                self.own_acked_out[st.shard] = st
        if spread:
            if news:
                for conn in self._ctx.links.values():
                    if conn.name not in carried and not conn.closing:
                        relayed = tuple(r for r in news if r.agent != conn.name)
                        if relayed:
                            self._ctx.send(conn.name, Ack((), relayed))
            news = ()
        elif target in carried:
            news = ()
        if (own or news) and target is not None:
            self._ctx.send(target, Ack(own, news, forward=True))
        if self.relay_news:
            self._ctx.schedule_flush(now)  # more than one message holds: the rest next window

    def spread_own(self, now: float) -> None:
        """The overlay stopped being a rotating relay: owe the pending acks per peer again."""
        for shard, state in sorted(self.own_acks.items()):
            for conn in self._ctx.links.values():
                if shard in conn.interest and conn.acks.owe(state, now):
                    self.owing.add(conn.name)
        self.own_acks.clear()
        self.own_acks_since = math.inf

    def bridge_asked(self, conn: Link, shard: str, now: float) -> None:
        """A bridge (links that are not fanout links beside a broker's, h-hubfwd): the agent
        of the fanout link ``conn`` broadcast a WANT_ACK of ``shard`` (it waits in
        ``replicated()``). For the next :meth:`relay_horizon` the own acks our other links
        send us are relayed to it over that link (``Acks.learn``), and it hears those we
        know already: the broadcast Ack it gets from us carries our own states only."""
        conn.acks.upstream[shard] = now
        queued = False
        for agent in sorted(self.acked):
            st = self.acked[agent].get(shard)
            link = self._ctx.links.get(agent)
            if st is None or link is None or link.fanout or self.hops.get((agent, shard)):
                continue  # (the agents of our other links, as they acked us themselves)
            conn.acks.relay_acks[(agent, shard)] = (st, 1)
            queued = True
        if queued:
            self.owing.add(conn.name)
            conn.acks.relay_since = min(conn.acks.relay_since, now)
            self._ctx.schedule_flush(now)
