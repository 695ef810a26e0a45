"""The loss half of the rotating relay: redundancy and repair, on only while frames are lost.

:mod:`crdtsync.gossip.relay` alone is the whole protocol on a lossless network: batches pushed
to the window's relay, broadcasts, confirmations by the broadcasts' hints, retries. What it
adds against loss (``Context.lossy``) lives here, so each half reads in one module:

- a per-link timeout on the relay broadcasts (:meth:`_RelayLoss.watch`, :data:`SILENT_WINDOWS`)
  and the lacks a hint showed, asked for only if the next relays' repeats did not bring them
  (:data:`HINT_PATIENCE`, ``Relay.lacking``);
- a later relay's hint read as a NACK of our own batch (:meth:`_RelayLoss._lacks_own`, with
  :func:`_first_client` reading our Yjs client id from the batch);
- repeats of a broadcast by the next relays (:meth:`_RelayLoss.on_broadcast`,
  :data:`REPEATS`) and a second copy of ours to the next relay (:meth:`_RelayLoss.second_copy`,
  :data:`SECOND_COPY`); the repair request itself (:meth:`_RelayLoss._ask`, :data:`SECOND_ASK`);
- a loss another agent noticed, adopted from its broadcasts (:meth:`_RelayLoss.adopt_loss`),
  and what the broadcasts before it brought, repeated once (:meth:`_RelayLoss._repeat_recent`);
- each relay broadcast timing its link, so a lost repair is asked again after a round trip
  (:meth:`_RelayLoss._time_broadcast`).

A mixin of :class:`~crdtsync.gossip.relay.Relay` (:class:`_RelayLoss`), split from
:mod:`crdtsync.gossip.relay` as :mod:`~crdtsync.gossip._push_receive` is from
:mod:`~crdtsync.gossip.push`; the state is the ``Relay`` instance's (set in its ``__init__``).
``relay`` re-exports the constants, so ``from crdtsync.gossip.relay import SILENT_WINDOWS``
still works.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..messages import Push
from . import _context, _relay_hub, _yjs
from .overlay import RELAY, window_index
from .repair import sv_covers

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._context import Context
    from .links import Link
    from .push import Pushes
    from .relay import Sent
    from .repair import Repairs

__all__: list[str] = []

#: Under loss, a shard whose relay broadcasts stopped reaching us for this many windows (a
#: run of lost frames, or the end of a burst) is asked of the last window's relay at once
#: (Relay.watch): a per-link timeout, not a wait for the next broadcast's hint. 3.5, not 2.5:
#: two broadcasts lost in a row (4 % of agent-windows at 20 % loss) are repeated in the third
#: (REPEATS), which comes before a reply would; asked after two, the repairs cost 0.25
#: messages per write and shortened nothing (benchmarks/history/glomers-loss.md, "third pass").
SILENT_WINDOWS = 3.5

#: Under loss, this many relays after a broadcast's own repeat what it brought them (see
#: Relay.on_broadcast): copies a window apart, free in messages. 4 since the lossy windows:
#: an agent that missed all four copies (0.2^4, ~75 agent-writes a run at N = 25) waited for
#: a repair; the fifth copy made the p99 latency lower on seeds 1-5 (1,030-1,195 ms, from
#: 1,100-1,320; benchmarks/history/glomers-loss.md, "third pass").
REPEATS = 4

#: Under loss, our relay broadcast goes twice to this many next relays (see second_copy).
SECOND_COPY = 1

#: Under loss, a repair is asked of two relays at once (see Relay._ask). Off since the lossy
#: windows (Context.window): with copies 105 ms apart a second answer rarely came first, and it
#: doubled the requests (0.2 messages per write; benchmarks/history/glomers-loss.md, "third pass").
SECOND_ASK = 0

#: Under loss, a hint showing we lack something asks for a repair only if, this many windows
#: later, a broadcast shows we still lack it (see Relay.on_hint). 0: at once.
HINT_PATIENCE = 1.0


#: The memory of one entry of ``Relay.writers`` beside its update's bytes (a dict slot and the
#: bytes object's header, about), counted against its bound (see _RelayLoss.note).
WRITER_ENTRY = 128


def _first_client(update: bytes) -> int | None:
    """The client id of the first struct group of a delta (see :func:`crdtsync.yjs.parse.first_client`)."""
    return _yjs.first_client(update)


class _RelayLoss:
    """Mixin of :class:`~crdtsync.gossip.relay.Relay`: its loss repair (module docstring).

    The attributes declared below belong to ``Relay`` (set in its ``__init__``).
    """

    _ctx: Context
    _pushes: Pushes
    writers: dict[bytes, str]
    writers_bytes: int
    _repairs: Repairs
    own: dict[str, list[bytes]]
    own_bytes: int
    later: dict[int, dict[str, list[bytes]]]
    heard: dict[str, float]
    silent_asks: dict[str, int]
    lacking: dict[str, tuple[float, bytes, str]]
    recent: deque[tuple[float, str, tuple[bytes, ...]]]

    if TYPE_CHECKING:  # Relay's (relay.py, _relay_turns.py); for the type checker only

        def relay_of(self, k: int, hub: bool | None = None) -> str | None: ...

        def hub(self, now: float) -> bool: ...

        def one_way(self, conn: Link | None) -> float | None: ...

        def on_grid(self, conn: Link, travel: float, prior: float | None, w: float) -> bool: ...

    def _patience(self) -> float:
        """How long a lack a hint showed may wait for the next relays' repeats (see on_hint):
        HINT_PATIENCE windows (HUB_PATIENCE under the hub term, whose broadcasts repeat the
        last HUB_REPEATS windows' news), and half a window for the broadcast that may show it
        covered."""
        return (self.patience_windows(self._ctx.now) + 0.5) * self._ctx.window(self._ctx.now)

    def patience_windows(self, now: float) -> float:
        """How many windows a lack a hint showed waits for repeats before it is asked for."""
        return _relay_hub.HUB_PATIENCE if self.hub(now) else HINT_PATIENCE

    def _silence(self) -> float:
        return SILENT_WINDOWS * self._ctx.window(self._ctx.now)

    def watch(self, now: float) -> None:
        """A per-link timeout on the relay broadcasts, under loss (see :data:`SILENT_WINDOWS`).

        While writes flow, every window's relay broadcasts to us; a shard whose broadcasts
        stopped for ``SILENT_WINDOWS`` windows (not our own turn) lost them, or the burst
        ended: ask the last window's relay for what we lack at once (one SyncRequest per
        silence: the next broadcast re-arms it), instead of waiting for a later broadcast's
        hint to show the loss. A run of lost broadcasts to one agent is common at 20 % loss
        (0.2^5 happens about once per 3,000 agent-windows), and each of them held every
        later write of the writers it cut off (Yjs keeps them pending).
        """
        if self.lacking:
            self._ask_lacking(now)
        silence = self._silence()
        due = [s for s, at in self.heard.items() if now >= at + silence]
        if not due:
            return
        for shard in due:
            del self.heard[shard]
        if self._ctx.mode() != RELAY or not self._ctx.lossy(now):
            return
        k = self._ctx.window_index(now)
        me = self._ctx.name
        if me in (self.relay_of(k - 1), self.relay_of(k - 2)):
            # Our own turn: no broadcast of ours comes back to us. Not counted as silence:
            # looked at again a window later (dropped, a cut-off agent would never ask).
            for shard in due:
                self.heard[shard] = now - silence + self._ctx.window(now)
            return
        target = self.relay_of(k - 1)
        conn = self._ctx.links.get(target) if target is not None else None
        if conn is None or conn.closing:
            return
        hub = self.hub(now)
        for shard in due:
            if not self._repairs.asking(shard):
                self._ask(conn, shard, now, None)
            if hub:
                # Hub term: the silence is watched again (HUB_SILENT_ASKS asks in all, until
                # a broadcast comes). One hub sends every broadcast, so a run of them lost on
                # one link (six in a row, about once in three runs of Glomers) cut that agent
                # off after its one ask was answered: 0.8 s more, then a hint (h-glom4).
                n = self.silent_asks.get(shard, 0) + 1
                if n < _relay_hub.HUB_SILENT_ASKS:
                    self.silent_asks[shard] = n
                    self.heard[shard] = now
                else:
                    self.silent_asks.pop(shard, None)

    def _ask_lacking(self, now: float) -> None:
        """Ask for the lacks no later broadcast showed covered in time (see on_hint): no
        broadcast came (lost, or the writes ended), so none asked for them."""
        patience = self._patience()
        for shard, (at, hint, name) in list(self.lacking.items()):
            if now < at + patience:
                continue
            del self.lacking[shard]
            conn = self._ctx.links.get(name)
            if conn is None or conn.closing or self._repairs.asking(shard):
                continue
            if not sv_covers(self._ctx.state_vector(shard), hint):
                self._ask(conn, shard, now, hint)

    def adopt_loss(self, conn: Link, now: float) -> None:
        """Not lossy yet: a broadcast from a relay of the lossy windows' turns, not of ours,
        shows that its sender (or the writer it passes on for) noticed a loss: noticed here too.

        The agents notice the first loss at different times (a repair, a NACK), and until all
        did they disagree on the windows (``Context.window``), so writers push to relays that
        are not relaying yet: the first writes on a lossy mesh after a quiet period took up to
        1.6 s (benchmarks/history/glomers-loss.md, "fourth pass"). Never when the sender is a relay of our
        own windows' turns as well (a view that differs from ours, not a loss).
        """
        ctx = self._ctx
        w = ctx.config.push_interval
        if w <= 0 or not ctx.config.align_windows or ctx.mode() != RELAY:
            return
        k = window_index(now, w)
        if conn.name in {self.relay_of(k - j, hub=False) for j in (0, 1, 2)}:
            return
        hub = ctx.config.hub_term > 1
        k = window_index(now, w * (_context.HUB_WINDOW if hub else _context.LOSSY_WINDOW))
        if conn.name in {self.relay_of(k - j, hub=hub) for j in (0, 1, 2)}:
            ctx.loss_seen_at = now

    def _time_broadcast(self, conn: Link, now: float) -> None:
        """Under loss: the broadcast of the last window's relay left at that window's end
        (aligned windows: the agents' clocks agree), so its travel time, doubled, is a round
        trip of that link. Every link gets one within a rotation, and a repair asked of a
        relay no repair was answered by yet is retried after that, not ``repair_timeout``
        (0.35 s for a 0.2 s round trip: most links had no sample in Glomers, and a straggler
        waited 350 ms per lost request or reply)."""
        ctx = self._ctx
        if not ctx.config.align_windows or conn.name != self.relay_of(ctx.window_index(now) - 1):
            return
        w = ctx.window(now)
        travel = now - ctx.window_start(now)
        if not 0 < travel < w:
            return
        prior = self.one_way(conn)
        if self.hub(now):
            # The hub broadcasts at every boundary, and a window may be shorter than the hop:
            # which boundary this one left at is read from the delay known so far.
            if prior is None:
                return
            travel += max(0, round((prior - travel) / w)) * w
        if ctx.config.hub_term > 1 and not self.on_grid(conn, travel, prior, w):
            return  # it did not leave at a boundary of our windows (_RelayHub.on_grid)
        mine = conn.repair.one_way
        conn.repair.one_way = travel if mine is None else 0.875 * mine + 0.125 * travel
        if ctx.lossy(now):
            conn.repair.sample(2 * travel)

    def _lacks_own(self, u: Sent, hint: bytes, now: float) -> bool:
        """Under loss: whether a later relay's hint shows that relay lacks the batch itself.

        The relay we pushed ``u`` to confirms it with its broadcast's hint; when that hint is
        lost (one in five at 20 %), ``u`` waited ``relay_retry``. A relay of a later window
        (its broadcast at least two windows after our push) holds the batch once the first
        relay broadcast it (or sent it the second copy): one whose hint is below our own
        clock after the batch shows the batch lost on the way to the first relay (or, rarely,
        both copies to the next one). Only our own clock is compared: a relay lacking another
        writer's delta is no sign of our loss (comparing whole state vectors made re-pushes
        feed on themselves, benchmarks/history/glomers-loss.md "Second pass").
        """
        if u.own is None or now < u.at + 1.5 * self._ctx.window(now):
            return False
        if not self._ctx.lossy(now) or self._ctx.mode() != RELAY:
            return False
        client, clock = u.own
        return _yjs.decode_state_vector(hint).get(client, 0) < clock

    def _ask(self, conn: Link, shard: str, now: float, target: bytes | None) -> None:
        """Ask ``conn`` for what we lack of ``shard``, and under loss a second holder too.

        A repair is a request and a reply, each lost with p at p loss: at 20 % one in three
        fails and is asked again only after ``repair_timeout``. Under loss (rotating relay),
        the relay of the window before ``conn``'s broadcast (or the one before it) is asked as
        well: it broadcast what ``conn`` relayed on, so it holds what we lack too, and both
        answers must be lost for the repair to wait (0.13 instead of 0.36 at 20 %).
        """
        known_lossy = self._ctx.lossy(now)  # before this ask: a first loss asks once
        self._repairs.ask(conn, shard, now, target)
        if not SECOND_ASK or not known_lossy or self._ctx.mode() != RELAY:
            return
        k = self._ctx.window_index(now)
        for j in (2, 3):
            name = self.relay_of(k - j)
            if name is None or name in (conn.name, self._ctx.name):
                continue
            other = self._ctx.links.get(name)
            if other is not None and not other.closing and shard not in other.repair.repairs:
                self._repairs.ask(other, shard, now, target)
            return

    def note(self, updates: Iterable[bytes], authors: Iterable[str | None]) -> None:
        """Keep the writer of each of ``updates`` we may send again (None: unknown, not kept).

        What we repeat (below), echo, push again or replay as hub leaves with its own writer
        in ``Push.authors``, which the receivers report as ``Change.author``: never under our
        name when another agent wrote it. Keyed by the update's bytes (a Yjs update names its
        client, so equal bytes have one writer). The table keeps those bytes alive: the
        oldest entries go beyond ``max_queue_bytes`` (the bound of our own queue and of the
        batches awaiting confirmation; each entry counted with :data:`WRITER_ENTRY` bytes of
        overhead), and an update whose entry went is sent as of an unknown writer (None).
        """
        writers = self.writers
        for u, a in zip(updates, authors, strict=False):
            if a is not None and u not in writers:
                writers[u] = a
                self.writers_bytes += len(u) + WRITER_ENTRY
        bound = self._ctx.config.max_queue_bytes
        while self.writers_bytes > bound and writers:
            old = next(iter(writers))
            del writers[old]
            self.writers_bytes -= len(old) + WRITER_ENTRY

    def on_broadcast(
        self,
        conn: Link,
        shard: str,
        updates: tuple[bytes, ...],
        now: float,
        authors: tuple[str | None, ...] = (),
    ) -> None:
        """A relay broadcast came: repeat it in ours if we relay one of the next windows
        (``authors``: the writer of each of ``updates``, kept with it: :meth:`note`).

        Redundancy against loss, on only while the network loses frames (``Context.lossy``):
        each relay broadcast is repeated by the next :data:`REPEATS` relays (in their own
        broadcasts: no extra message, only bytes), so an agent that lost one has it one, two
        or three windows later without a repair round trip. Each agent receives one broadcast
        per window, so copies can only come a window apart; at 20 % loss each copy reaches an
        agent with p = 0.8 only if its relay had the delta (0.8 too), and a delta that no copy
        brought waits for a repair (a hint, then a request and its reply, either lost with
        0.2): a third repeating relay makes that rarer (0.2 * 0.36 * 0.23 = 1.7 % per agent
        and write with two, about 0.4 % with three).
        """
        if self._ctx.mode() != RELAY:
            return
        self.note(updates, authors)
        horizon = now - REPEATS * self._ctx.window(now)
        if not self._ctx.lossy(now):
            # No loss noticed yet: no repeats, but what the last broadcasts brought is kept
            # (bytes only), to be repeated once a loss is noticed (below).
            recent = self.recent
            while recent and recent[0][0] < horizon:  # in time order: O(1) per broadcast
                recent.popleft()
            recent.append((now, shard, updates))
            return
        if self.recent:
            self._repeat_recent(horizon, now)
        k = self._ctx.window_index(now)
        me = self._ctx.name
        if self.relay_of(k) == me:
            # Ours ends this window: queued for everyone now, it leaves with our broadcast.
            for other in self._ctx.links.values():
                if other is not conn and not other.closing:
                    for u in updates:
                        self._pushes.enqueue(other, shard, u, self.writers.get(u))
        elif self.relay_of(k + 1) == me:
            # Ours is the next window: held with our own batch, which waits for it too.
            held = self.own.setdefault(shard, [])
            held.extend(updates)
            self.own_bytes += sum(len(u) for u in updates)
            self._ctx.schedule_flush(now)
        else:
            for j in range(2, REPEATS):
                if self.relay_of(k + j) == me:
                    # A later turn: kept aside (our own batches go to other relays meanwhile).
                    self.later.setdefault(k + j, {}).setdefault(shard, []).extend(updates)
                    break

    def _repeat_recent(self, horizon: float, now: float) -> None:
        """The first broadcast after a loss was noticed: what the last broadcasts before it
        brought (the last :data:`REPEATS` windows) goes once with our next batch to the next
        relay, which passes it on in its broadcast. Those broadcasts had no repeats: an agent
        that lost one of them waited for a repair, often asked of a relay that had lost it too
        (the first writes on a lossy mesh after a quiet period: 1.6 s in Glomers seed 5)."""
        recent, self.recent = self.recent, deque()
        for at, shard, updates in recent:
            if at >= horizon:
                self.own.setdefault(shard, []).extend(updates)
                self.own_bytes += sum(len(u) for u in updates)
        self._ctx.schedule_flush(now)

    def second_copy(self, sent_from: int, now: float) -> None:
        """Our broadcast (the outbox from ``sent_from`` on) goes twice to the next relays.

        Under loss only. The next :data:`SECOND_COPY` relays' broadcasts are every other
        agent's second (and third) copy of what ours brings (on_broadcast repeats it): a
        broadcast lost on the way to one of them costs a copy to all 24 agents, not one. A
        second frame to each costs one message per window each (not per agent), and makes
        that leg lose with 0.04 instead of 0.2 at 20 % loss.
        """
        if not self._ctx.lossy(now):
            return
        k = self._ctx.window_index(now)
        nexts = {self.relay_of(k + j) for j in range(SECOND_COPY)} - {None, self._ctx.name}
        if not nexts:
            return
        # The last broadcast of a hub's term (hub term: the next window's relay is another
        # agent) goes a third time to the new hub: it carries the old hub's last
        # HUB_REPEATS windows (hub_replay), and a new hub that lost both copies repeats none
        # of them, so the agents that lost that broadcast too waited for a repair (1.5-1.8 s,
        # h-glom4). One frame per hand-over.
        copies = 1 + (_relay_hub.HUB_HANDOVER_COPIES if self.hub(now) else 0)
        out = self._ctx.outbox
        for peer, msg in out[sent_from:]:
            if peer in nexts and isinstance(msg, Push):
                out.extend([(peer, msg)] * copies)
