"""The hub term of the rotating relay under loss: one relay for many windows, repeating itself.

Why (issue 17, Glomers at 20 % loss; benchmarks/history/glomers-loss.md, "h-glom, hub term"). In the
one-window rotation, copy j of a write reaches an agent in relay j's broadcast, and relay j
holds the write only once relay j - 1's broadcast reached it: copies come max(window, hop)
apart, and a window shorter than the 100 ms hop gives no more copies by 450 ms. Here, while
the network loses frames (``Context.lossy``), the turn lasts ``GossipConfig.hub_term``
windows, and the relay (the *hub*) repeats in each broadcast what its last
:data:`HUB_REPEATS` broadcasts brought (bytes, not messages: the frames go anyway). The hub
holds every write from its push on, so copies come one window apart from the first broadcast
on, whatever the hop; the window (:data:`~._context.HUB_WINDOW`) is then chosen for the
message budget alone. Writers aim their batch at a boundary: it leaves one link delay (the
measured travel time of the relay broadcasts, ``LinkRepair.one_way``) plus :data:`HUB_MARGIN` before it, so it
reaches the hub just before that boundary (``Context.flush_lead``, ``Context.aim``).

A mixin of :class:`~crdtsync.gossip.relay.Relay`; its state is the ``Relay`` instance's.
Lossless, none of it runs: the turns and windows are the one-window rotation's.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..messages import Push
from . import _context
from .overlay import RELAY, window_index

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._context import Context
    from .links import Link
    from .push import Pushes

__all__: list[str] = []

#: The hub repeats each broadcast's deltas in this many of its next broadcasts.
HUB_REPEATS = 4

#: Under the hub term, a lack a hub's hint showed is asked for only if this many windows later
#: a broadcast still shows it (the hub's repeats bring it first: HINT_PATIENCE otherwise).
HUB_PATIENCE = 3.0

#: The last broadcast of a hub's term goes this many times more to the new hub than a
#: broadcast's usual second copy (``_RelayLoss.second_copy``; h-glom4).
HUB_HANDOVER_COPIES = 2

#: The push-to-confirmation bound (``_RelayHub.hub_confirmed``) stands in for a link's
#: delay only once this many were seen: a confirmation by a later broadcast (the first one
#: lost on the way to us, p = 0.2 at 20 % loss) is a window too long, and the smallest of
#: three is too long with p = 0.008.
HUB_RTT_SAMPLES = 3

#: Under the hub term, a silence of the hub's broadcasts (``_RelayLoss.watch``) is asked
#: about up to this many times, SILENT_WINDOWS apart, until a broadcast comes (h-glom4).
HUB_SILENT_ASKS = 3

#: With the hub term, a relay broadcast whose travel time (resolved to the nearest window)
#: is more than this share of a window off the link's delay known so far did not leave at a
#: boundary of our windows: it is no sample of the delay or the round trip
#: (:meth:`_RelayHub.on_grid`; h-glom5). 1/32 is 2.9 ms at the WAN default's 92 ms, the
#: order of :data:`HUB_MARGIN`: an aim off by more misses the boundary anyway. (1/8, 11.5 ms,
#: still let off-grid reads leave 19-20 links of Glomers 5-8 ms off 1 s into the loss.)
HUB_OFF_GRID = 1 / 32

#: ... unless this many in a row agree with each other: then the delay known so far is what
#: was wrong (or the link's delay changed), and the link's is taken afresh from them.
HUB_OFF_GRID_RUN = 3

#: A writer's batch is aimed to reach the hub this long before the hub's boundary.
HUB_MARGIN = 0.003


class _RelayHub:
    """Mixin of :class:`~crdtsync.gossip.relay.Relay`: the hub term (module docstring)."""

    _ctx: Context
    _pushes: Pushes
    #: (window index, shard -> deltas) of our last broadcasts as hub
    hub_sent: deque[tuple[int, dict[str, list[bytes]]]]
    #: the smallest push-to-confirmation time of our batches under the hub term (s), and
    #: how many were timed
    hub_rtt: float
    hub_rtt_n: int
    #: update -> its writer (Relay.writers, _RelayLoss.note)
    writers: dict[bytes, str]

    if TYPE_CHECKING:  # Relay's (relay.py, _relay_turns.py); for the type checker only

        def relay_of(self, k: int, hub: bool | None = None) -> str | None: ...

        def note(self, updates: Iterable[bytes], authors: Iterable[str | None]) -> None: ...

    def hub(self, now: float) -> bool:
        """Whether the hub term is on: the rotating relay, aligned windows, under loss."""
        ctx = self._ctx
        return (
            ctx.config.hub_term > 1
            and ctx.lossy(now)
            and ctx.config.align_windows
            and ctx.config.push_interval > 0
            and ctx.mode() == RELAY
        )

    def lead(self, now: float) -> float | None:
        """How long before a boundary our batch should leave (see ``Context.flush_lead``):
        the hub's one-way delay plus :data:`HUB_MARGIN`, or None (at the boundary: not the
        hub term, we relay the coming window, or no link was timed yet)."""
        if not self.hub(now):
            return None
        ctx = self._ctx
        k = ctx.window_index(now)
        hub = self.relay_of(k + 1)
        if hub is None or hub == ctx.name or self.relay_of(k) == ctx.name:
            return None
        one_way = self.one_way(ctx.links.get(hub))
        return None if one_way is None else one_way + HUB_MARGIN

    def one_way(self, conn: Link | None) -> float | None:
        """The one-way delay to ``conn`` as best known: its relay broadcasts' travel time,
        else the mean of the other links', else half a measured round trip (a repair
        answered: ``LinkRepair.srtt``) of it or of the others; None if nothing was timed.

        The round trip is the fallback for an agent that noticed the loss before any relay
        broadcast reached it lossless: under the hub term a broadcast's travel time is
        ambiguous modulo the window, and is resolved with this delay. Without it such an
        agent never timed a link, never aimed its batches, and read every hub broadcast
        that left before its batch arrived as a NACK: six pushes of a batch within a few
        windows, then anti-entropy (1.9 s, h-glom4)."""
        links = self._ctx.links.values()
        if conn is not None and conn.repair.one_way is not None:
            return conn.repair.one_way
        timed = [c.repair.one_way for c in links if c.repair.one_way is not None]
        if timed:
            return sum(timed) / len(timed)
        if conn is not None and conn.repair.srtt is not None:
            return conn.repair.srtt / 2
        rtts = [c.repair.srtt for c in links if c.repair.srtt is not None]
        if rtts:
            return sum(rtts) / len(rtts) / 2
        return self.hub_rtt / 2 if self.hub_rtt_n >= HUB_RTT_SAMPLES else None

    def on_grid(self, conn: Link, travel: float, prior: float | None, w: float) -> bool:
        """Whether a relay broadcast's travel time on ``conn`` (read on our windows of
        ``w``) is a sample of the link's delay and round trip (``_RelayLoss._time_broadcast``).

        Only a broadcast that left at a boundary of our windows is, as Karn's rule keeps an
        answer to a retransmission out of TCP's round trip. Agents switch between the
        lossless windows and the hub term's at different times (each when it notices the
        loss), and a sender on other windows than ours broadcasts at the end of its own:
        read on our grid, its travel time is anything within a window. h-glom5 traced one:
        a broadcast left at a lossless boundary (130 ms windows) and was read on the hub's
        92 ms windows as a 60 ms hop on a 100 ms link. It seeded the link's delay, every
        later broadcast was resolved against it, and the smoothed round trip was 0.176 s on
        a 0.2 s round trip after 4 s (one way 0.086 s). So a travel time more than
        :data:`HUB_OFF_GRID` of a window off the delay known so far (``prior``) is kept out,
        unless :data:`HUB_OFF_GRID_RUN` in a row agree with each other: then ``prior`` was
        wrong (or the delay changed), and the link's delay is taken afresh. A sender's
        boundary closer than that to one of ours cannot be told from jitter; it moves the
        smoothed values by an eighth of its error. Jitter well above the tolerance leaves
        the delay as first measured (three reads in a row rarely agree then); the aim,
        :data:`HUB_MARGIN` ahead of the boundary, assumes a steadier link anyway."""
        rep = conn.repair
        tolerance = HUB_OFF_GRID * w
        if prior is None or abs(travel - prior) <= tolerance:
            rep.off_grid = 0
            return True
        if rep.off_grid and abs(travel - rep.off_grid_travel) <= tolerance:
            rep.off_grid += 1
        else:
            rep.off_grid = 1
        rep.off_grid_travel = travel
        if rep.off_grid < HUB_OFF_GRID_RUN:
            return False
        rep.off_grid = 0
        rep.one_way = None  # taken afresh from this one
        return True

    def hub_confirmed(self, sent_at: float, now: float) -> None:
        """A hub's broadcast confirmed our batch pushed to it at ``sent_at``: a bound on the
        round trip (push, the wait for the boundary, broadcast), kept as the smallest seen.
        For a batch pushed at a boundary and confirmed by the first broadcast that could,
        half of it resolves the broadcast's travel time to the right window (the last
        fallback of :meth:`one_way`)."""
        self.hub_rtt = min(self.hub_rtt, now - sent_at)
        self.hub_rtt_n += 1

    def aimed(self, now: float, aim: int | None) -> int | None:
        """The boundary a batch leaving at ``now`` makes at the hub: ``aim`` for a flush
        scheduled ahead of it, else (hub term) the first one after its arrival; None when
        not under the hub term (the coming window's relay takes it)."""
        if aim is not None:
            return aim
        lead = self.lead(now)
        if lead is None:
            return None
        return window_index(now + lead, self._ctx.window(now)) + 1

    def target(self, now: float, aim: int | None) -> str | None:
        """The relay our batch goes to at a flush at ``now``: that of the boundary it makes
        (:meth:`aimed`), else the coming window's."""
        k = self.aimed(now, aim)
        if k is not None:
            return self.relay_of(k - 1)
        return self.relay_of(self._ctx.window_index(now))

    def hand_on(self, now: float) -> str | None:
        """A writer's batch reached us after our hub term ended (it was aimed at our last
        boundary and came late): the hub it goes on to, or None (not the hub term, or we
        relay the window now: passed on to everyone as usual). A batch that reaches us as
        the hub of the hub term's turns while we have not noticed the loss turns the hub
        term on here first (:meth:`adopt_hub`)."""
        if not self.hub(now):
            self.adopt_hub(now)
            if not self.hub(now):
                return None
        hub = self.relay_of(self._ctx.window_index(now))
        return None if hub is None or hub == self._ctx.name else hub

    def adopt_hub(self, now: float) -> None:
        """Not lossy yet, a writer's batch came to us (``Push.relay``), and we relay no
        window near now in our own turns but are the hub of the hub term's: its writer
        noticed a loss and aimed at us as the hub, so the loss is noticed here too.

        Why (h-glom5, Glomers seed 6): the hub of the first turn after the loss noticed it
        0.48 s after the first agent did. Meanwhile every lossy writer pushed to it, and it
        passed their batches on once, on its lossless windows, with no repeats and no hint a
        writer could read as a NACK; an agent that lost that one copy waited for repairs
        (1.1-1.6 s). ``Relay.adopt_loss`` does the same from a broadcast."""
        ctx = self._ctx
        w = ctx.config.push_interval
        if (
            ctx.config.hub_term <= 1
            or ctx.lossy(now)
            or w <= 0
            or not ctx.config.align_windows
            or ctx.mode() != RELAY
        ):
            return
        me = ctx.name
        k = window_index(now, w)
        if me in {self.relay_of(k + j, hub=False) for j in (-2, -1, 0, 1)}:
            return  # a relay of our own turns: a batch for us anyway
        k = window_index(now, w * _context.HUB_WINDOW)
        if me in {self.relay_of(k + j, hub=True) for j in (-1, 0, 1)}:
            ctx.loss_seen_at = now

    def hub_replay(self, now: float) -> None:
        """We broadcast at this boundary as the hub: queue again, for every link, what our
        last :data:`HUB_REPEATS` broadcasts brought."""
        k = self._ctx.window_index(now) - 1
        sent = self.hub_sent
        while sent and k - sent[0][0] > HUB_REPEATS:
            sent.popleft()
        if not sent:
            return
        links = [c for c in self._ctx.links.values() if not c.closing]
        policy = self._ctx.policy
        for _, news in sent:
            for shard, deltas in news.items():
                for conn in links:
                    if policy.sends_to(conn.name, shard):
                        for d in deltas:
                            self._pushes.enqueue(conn, shard, d, self.writers.get(d))

    def hub_inherit(
        self,
        conn: Link,
        shard: str,
        updates: tuple[bytes, ...],
        news: list[bytes],
        now: float,
        authors: tuple[str | None, ...] = (),
    ) -> None:
        """A relay broadcast (``updates``; ``news``: what of it was new to us) came while we
        are the hub: it is the last hub's, one of the last broadcasts of its term (they
        arrive a hop later, in ours). Its updates we already held are kept as news of our
        last window, so :meth:`hub_replay` repeats them in our next :data:`HUB_REPEATS`
        broadcasts; what was news to us is in ours already (``Relay.on_broadcast``) and is
        kept by :meth:`hub_record`.

        Why (h-glom5, Glomers seed 1): a writer that becomes the next hub held its own write
        that the last hub broadcast in the last windows of its term, so that broadcast was no
        news to it, and the write had no repeats after the term (a relay repeats news only).
        An agent that lost the last hub's last two broadcasts (p = 0.04) then waited for a
        repair of it, whose request and replies were lost three times: 1,678 ms. Bytes only:
        no frame is added."""
        if not self.hub(now):
            return
        ctx = self._ctx
        if self.relay_of(ctx.window_index(now)) != ctx.name or conn.name == ctx.name:
            return
        seen = {d for _, kept in self.hub_sent for ds in kept.values() for d in ds}
        seen.update(news)
        held = []
        for u in updates:  # (a broadcast may carry a delta twice: its news and a repeat)
            if u not in seen:
                seen.add(u)
                held.append(u)
        if held:
            self.note(updates, authors)  # (``authors``: of ``updates``, Push.authors)
            self.hub_sent.append((ctx.window_index(now) - 1, {shard: held}))

    def hub_record(self, sent_from: int, now: float) -> None:
        """Keep what our broadcast at this boundary brought that no earlier one did (the
        outbox from ``sent_from`` on), for :meth:`hub_replay`."""
        k = self._ctx.window_index(now) - 1
        seen = {d for _, news in self.hub_sent for ds in news.values() for d in ds}
        news: dict[str, list[bytes]] = {}
        for _, msg in self._ctx.outbox[sent_from:]:
            if isinstance(msg, Push) and msg.hint is not None:
                self.note(msg.updates, msg.authors)
                for d in msg.updates:
                    if d not in seen:
                        seen.add(d)
                        news.setdefault(msg.shard, []).append(d)
        if news:
            self.hub_sent.append((k, news))
