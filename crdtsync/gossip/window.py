"""What leaves at a batching-window boundary, per link and in this order.

At each boundary (:meth:`Window.flush`): the rotating relay's own batch is dispatched, then
for every link: membership changes, the reply budget is reset, and if the link is writable,
relayed acks, the queued pushes (with piggybacked acks and hints), a resync Summary after
dropped pushes, and the replies that fit; then the acks no push carried, and last the fanout
links' shared queue (one broadcast per shard, :meth:`~.push.Pushes.flush_fanout`). The order is part of
the protocol's behaviour (the golden traces pin it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..messages import PeerList
from .overlay import RELAY, TREE

if TYPE_CHECKING:
    from ._context import Context
    from .acks import Acks
    from .antientropy import AntiEntropy
    from .links import Link
    from .membership import Membership
    from .push import Pushes
    from .relay import Relay
    from .transfer import Replies

__all__ = ["Window"]


class Window:
    """The window-boundary pipeline of one agent (see the module docstring)."""

    def __init__(
        self,
        ctx: Context,
        *,
        members: Membership,
        pushes: Pushes,
        relay: Relay,
        acks: Acks,
        replies: Replies,
        ae: AntiEntropy,
    ) -> None:
        self._ctx = ctx
        self._members = members
        self._pushes = pushes
        self._relay = relay
        self._acks = acks
        self._replies = replies
        self._ae = ae

    def flush(self, now: float) -> None:
        mode = self._ctx.mode()
        # The boundary this flush aims our batch at, when it runs ahead of it (hub term,
        # _relay_hub.py); anything scheduled from here on is the next flush's.
        aim, self._ctx.aim = self._ctx.aim, None
        # Rotating relay: at this boundary we send what we relayed during the window that
        # just ended (if it was ours), and our own batch to the coming window's relay. While
        # we are not connected to everyone (joins, a settling view), a relay's broadcast does
        # not reach everyone: its receivers pass it on (a flood, deduplicated by apply()).
        broadcast = (
            mode == RELAY
            and aim is None  # a flush ahead of a boundary sends no broadcast
            and self._relay.relay_of(self._ctx.window_index(now) - 1) == self._ctx.name
        )
        hub = broadcast and self._relay.hub(now)
        if hub:
            self._relay.hub_replay(now)
        flood = mode == RELAY and not self._relay.fully_connected()
        if self._relay.own or self._relay.echo_due:
            self._relay.dispatch_own(now, mode, broadcast, aim)
        if mode != RELAY and self._acks.own_acks:
            self._acks.spread_own(now)
        # Under the hub term (_relay_hub.py: on only under loss), our ack riding on a batch
        # to the hub counts as an ack sent: the next one goes alone only after ack_interval
        # with no batch to ride on. Before, a rider did not reset that clock, and an agent
        # sent one alone each second as soon as ack_delay passed without a batch: 0.14
        # messages per write in Glomers at 20 % loss (benchmarks/history/glomers-loss.md, "h-glom4").
        hub_acks = mode == RELAY and self._relay.hub(now)
        hints: dict[str, bytes | None] = {}
        rode: set[str] = set()  # shards whose own ack rode on our broadcast
        # Relay mode: others' acks (news) and ours travel like deltas: to the coming window's
        # relay, which passes them on to everyone with its broadcast.
        spread = broadcast or flood
        target = self._relay.target(now, aim) if mode == RELAY else None
        news = (
            self._acks.take_news() if mode == RELAY and (spread or target != self._ctx.name) else ()
        )
        carried: set[str] = set()  # peers that got the news
        sent_from = len(self._ctx.outbox)
        flood_changes = self._members.has_changes
        client_hub = self._ctx.client_hub() if mode != TREE else None  # (see _context.py)
        for conn in self._ctx.links.values():
            if flood_changes:
                changes = self._members.changes_for(conn.name)
                if changes:
                    self._ctx.send(conn.name, PeerList(tuple(changes)))
            conn.replies.reply_bytes = 0
            if conn.writable:
                if not conn.push.queue and _idle(conn):
                    # Nothing queued, owed or to resume on this link: the steps below would
                    # send nothing. Skipped, so that a flush costs the links that have work,
                    # not every link (a full mesh of 64 flushes after every received push).
                    continue
                if mode != RELAY:
                    relayed = self._acks.take_relayed(conn, now, mode) if conn.push.queue else ()
                elif conn.push.queue and (spread or conn.name == target):
                    relayed = tuple(r for r in news if r.agent != conn.name)
                    carried.add(conn.name)
                else:
                    relayed = ()
                for shard, queued in conn.push.queue.items():
                    relay = shard in conn.push.relay_shards
                    forward = (mode == TREE or flood or conn.name == client_hub) and not relay
                    hint = None
                    durable = None
                    if mode == RELAY:
                        if not forward and not relay:
                            if shard not in hints:
                                hints[shard] = self._relay.hint(shard)
                            hint = hints[shard]
                        own = self._acks.own_acks.get(shard)
                        to_relay = relay and not broadcast
                        if own is not None and (to_relay or broadcast or flood):
                            durable = (own.state_vector, own.delete_set)
                            if to_relay:  # which passes it on
                                self._acks.own_acked_out[shard] = self._acks.own_acks.pop(shard)
                                if hub_acks:  # an ack that rode counts as one sent
                                    self._acks.last_own_ack_at = now
                            else:  # to everyone
                                rode.add(shard)
                    self._pushes.push(
                        conn,
                        shard,
                        queued,
                        now=now,
                        forward=forward,
                        hint=hint,
                        relayed=relayed,
                        durable=durable,
                        relay=relay,
                        authors=conn.push.authors.get(shard),
                    )
                    relayed = ()
                conn.push.drained()
                if conn.push.resync:
                    conn.push.resync = False
                    self._ctx.send(conn.name, self._ae.summary(conn.name))
                self._replies.serve(conn, now)
        for shard in rode:
            if shard in self._acks.own_acks:
                self._acks.own_acked_out[shard] = self._acks.own_acks.pop(shard)
        if not self._acks.own_acks:
            self._acks.own_acks_since = math.inf
        if mode == RELAY:
            self._acks.flush_relay_acks(now, spread, target, news, carried)
            if broadcast:
                self._relay.second_copy(sent_from, now)
            if hub:
                self._relay.hub_record(sent_from, now)
        self._pushes.flush_fanout(now)  # the fanout links' shared queue (none: nothing)
        self._members.clear_changes()
        if self._relay.own:  # held for the window we relay: it leaves with our broadcast at its end
            self._ctx.schedule_flush(now)


def _idle(conn: Link) -> bool:
    """Whether a link with an empty push queue has nothing for the window boundary: no
    resync, no delta too big for a frame, no reply owed and no cut round to resume."""
    return not (
        conn.push.resync
        or conn.push.big
        or conn.push.queued_bytes
        or conn.push.relay_shards
        or conn.replies.pending()
        or conn.rounds.more
    )
