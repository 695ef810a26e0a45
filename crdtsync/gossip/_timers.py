"""Timers and effects of :class:`~crdtsync.gossip.GossipCore`: ``tick``, ``next_deadline``,
``dials``, ``data_to_send`` and ``effects``.

``tick`` runs the components' timers in a fixed order (the order is part of the protocol: the
golden traces pin it); ``next_deadline`` says when it next has work, cached per generation of
the core (bumped by every entry point that may move a timer); ``dials`` and ``data_to_send``
hand the driver what it must do after every call. A mixin of the core (:class:`_Timers`), split
from :mod:`crdtsync.gossip.core` so that "when does the core act on its own, and what does the
driver execute" reads in one place; its caches are attributes of the core.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..messages import Message
from ._context import Context
from .components import Components
from .config import GossipConfig
from .effects import Effects
from .links import Link, prune, prune_candidates
from .overlay import OverlayView
from .policy import ReplicationPolicy, Service
from .security import Security

if TYPE_CHECKING:
    import random  # the type of the generator a driver hands in; never the module's own

__all__: list[str] = []


class _Timers:
    """Mixin of :class:`~crdtsync.gossip.GossipCore`: timers and effects (module docstring).

    The attributes declared below belong to the core (set in its ``__init__``).
    """

    name: str
    config: GossipConfig
    policy: ReplicationPolicy
    _ctx: Context
    _conns: dict[str, Link]
    _p: Components
    _sec: Security
    _rng: random.Random
    _services: tuple[Service, ...]
    _gen: int
    _light: int
    _deadlines: tuple[int, float]
    _light_deadlines: tuple[tuple[int, int], float, float]
    _no_dials: tuple[int, float]
    _dials_at: tuple[tuple[int, float], list[tuple[str, float]]]

    if TYPE_CHECKING:  # the core's and its other mixins'; declared for the type checker only

        def _advance(self, now: float) -> None: ...

        def _ensure_timers(self, now: float) -> None: ...

        def dial_failed(self, address: str, now: float) -> None: ...

        def broadcasts_to_send(self) -> list[Message]: ...

        def _views(self) -> OverlayView: ...

    def tick(self, now: float) -> None:
        """Run whatever timers are due at ``now``: flush, acks, anti-entropy, membership."""
        tails = self._p.tails
        tail_due = tails.due is not None and now >= tails.due
        held = self._p.pushes.coalescer
        if (tail_due or held.due is not None) and now < self._others_deadline():
            # Only the tail check (_tail_check.py) or the coalescing window has a timer due:
            # the window's end, or a check of the writer's pause. During a burst the pause's
            # deadline moves with every write, so the driver's timer comes about once a
            # millisecond and mostly finds a later write: that costs this test, not a pass
            # over every component (~15 us each; benchmarks/history/fanout-writer.md,
            # h-send2). Nothing else is due before the others' first deadline (the AE and
            # membership timers are set when a link comes up), and a check that finds a
            # later write moves no timer: no generation bump either.
            self._ctx.now = max(self._ctx.now, now)
            if tail_due:
                tails.check(now)
            if held.due is not None and (now >= held.due or held.paused_by(now)):
                self._advance(now)
                self._p.pushes.flush_local(now)  # the window's end, or the writer paused
            return
        self._advance(now)
        self._ensure_timers(now)
        if self._p.relay.unconfirmed:
            self._p.relay.retry_unconfirmed(now)
        if self._p.relay.heard or self._p.relay.lacking:
            self._p.relay.watch(now)
        if self._p.repairs.lags:
            self._p.repairs.check_lags(now)
        paced = self._p.replies.take_due(now)  # paced Digests due: flush now
        if paced is not None and (self._ctx.flush_at is None or self._ctx.flush_at > paced):
            self._ctx.flush_at = paced
        held = self._p.pushes.coalescer
        if held.due is not None and (now >= held.due or held.paused_by(now)):
            self._p.pushes.flush_local(now)  # the window's end, or the writer paused
        flushed = self._ctx.flush_at is not None and now >= self._ctx.flush_at
        if flushed:
            if held.aligned and held.held:  # aligned windows: the held writes join the flush
                self._p.pushes.flush_local(now)
            self._ctx.flush_at = None
            self._p.window.flush(now)
        self._p.acks.send_due(now, flushed=flushed)
        self._p.ae.tick(now)
        self._p.members.exchange(
            now, [c.name for c in self._conns.values() if not c.closing], self._rng
        )
        for name in self._p.members.tick(now):
            self._p.acks.forget(name)
        for address in self._p.dialer.timed_out(now):
            self.dial_failed(address, now)
        self._p.repairs.retry(now)
        self._p.ae.retries.retry(now, self._p.repairs.timeout)
        if tails.due is not None:
            tails.check(now)
        self._expire_transfers(now)
        for service in self._services:
            service.tick(now)
        prune(now, self._conns, self._prune_candidates(), self._ctx.send)

    def _expire_transfers(self, now: float) -> None:
        """Drop unfinished DiffChunk transfers past the quota's timeout (checked on every
        tick, which comes at least once an anti-entropy interval while linked)."""
        for peer, transfer in self._ctx.guard.expired_transfers(now):
            conn = self._conns.get(peer)
            if conn is not None and conn.replies.receiving is not None:
                if conn.replies.receiving.transfer == transfer:
                    conn.replies.receiving = None

    # ------------------------------------------------------------------------------------------
    # effects

    def effects(self) -> Effects:
        """Everything the driver must do now, in one value: the same as calling
        :meth:`data_to_send`, :meth:`dials` and :meth:`next_deadline` in that order."""
        return Effects(
            self.data_to_send(), self.dials(), self.next_deadline(), self.broadcasts_to_send()
        )

    def data_to_send(self) -> list[tuple[str, Message]]:
        """Messages to send, as (peer, message), in order; the outbox is emptied.

        After sending a :class:`~crdtsync.messages.Close`, close that connection.
        """
        out, self._ctx.outbox = self._ctx.outbox, []
        # signed and cut with credentials (nothing to send: nothing to sign, asked after
        # every received Push)
        return self._sec.outbox(self.name, out) if out else out

    def dials(self) -> list[str]:
        """Addresses to open connections to now (each handed out once until it succeeds,
        fails via :meth:`dial_failed`, or times out)."""
        now = self._ctx.now
        gen, first = self._no_dials
        if gen == self._gen and now < first:
            return []  # nothing moved since the last call, and no candidate is due yet
        candidates = self._dial_candidates()
        out = self._p.dialer.hand_out(now, candidates)
        if out:
            self._gen += 1  # (dials under way time out: a timer)
        elif self._p.dialer.full():  # the next dial waits for one to end (an event)
            self._no_dials = (self._gen, math.inf)
        else:
            self._no_dials = (self._gen, min((at for _, at in candidates), default=math.inf))
        return out

    def _others_deadline(self) -> float:
        """The first timer of every component but the coalescing window (math.inf: none).

        The timers of the components are computed again only after a call that may have
        moved one (a generation counter, bumped by every entry point but a plain local
        write); after a received Push (the light generation) only those it may move: the
        relay's, the repairs' and the acks'. The flush and the services' timers are read on
        every call (and the coalescing window's, in :meth:`next_deadline`).
        """
        gen, fixed = self._deadlines
        if gen != self._gen:
            fixed = min(self._component_deadlines(), default=math.inf)
            self._deadlines = (self._gen, fixed)
        key = (self._gen, self._light)
        lkey, light, acks_at = self._light_deadlines
        if lkey != key:
            # Nothing under way (a paced mesh after nearly every received Push): the relay's,
            # the repairs' and the acks' timers are read off the state that holds them,
            # without a call into each (what their deadlines methods return then: nothing).
            p = self._p
            relay, repairs, acks = p.relay, p.repairs, p.acks
            if relay.unconfirmed or relay.heard or relay.lacking or repairs.lags or repairs.asked:
                light = min(self._push_deadlines(), default=math.inf)
            else:
                light = math.inf
            if acks.owing or acks.own_acks or acks.fanout.owed:
                acks_at = min(acks.deadlines(), default=math.inf)
            else:
                acks_at = math.inf
            self._light_deadlines = (key, light, acks_at)
        times = [fixed, light]
        flush_at = self._ctx.flush_at
        times.append(acks_at if flush_at is None else flush_at)
        paced = self._p.replies.paced_deadline()
        if paced is not None:
            times.append(paced)
        for service in self._services:
            at = service.next_deadline()
            if at is not None:
                times.append(at)
        return min(times)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (None: no timer pending).

        Lets an event loop sleep, and the simulator jump its virtual clock, until then: the
        components' timers (:meth:`_others_deadline`) and the coalescing window's end, or
        before it the writer's pause (:meth:`~crdtsync.gossip.coalesce.Coalescer.pause_at`),
        read on every call.

        An overdue deadline comes back as the core's current time, a value that moves with
        every call into the core: a driver keeps a timer that is already due instead of
        re-arming it at the new value (an agent writing in a tight loop calls in at every
        loop turn and would push it back for ever; ``CoreTimer``, the websocket driver).
        """
        first = self._others_deadline()
        tails = self._p.tails.due  # (re-armed by Pushes, which move no generation)
        if tails is not None:
            first = min(first, tails)
        held = self._p.pushes.coalescer
        if held.due is not None:  # the window's end, or before it the writer's pause
            pause = held.pause_at()
            first = min(first, held.due if pause is None else pause)
        if first == math.inf:
            return None
        # A deadline in the past means "now": tick() handles it (dials are handed out by
        # dials(), which the driver calls after tick, so those never linger).
        return max(first, self._ctx.now)

    def _push_deadlines(self) -> list[float]:
        """The timers a received Push may move but the acks' (see next_deadline)."""
        times: list[float] = []
        relay_at = self._p.relay.deadline()
        if relay_at is not None:
            times.append(relay_at)
        times.extend(self._p.repairs.deadlines())
        return times

    def _component_deadlines(self) -> list[float]:
        """The components' timers a received Push cannot move (see next_deadline)."""
        times: list[float] = []
        for t in (self._p.ae.next_round, self._p.members.next_exchange):
            if t is not None and self._conns:
                times.append(t)
        times.extend(self._p.members.deadlines())
        times.extend(self._p.ae.retries.deadlines(self._p.repairs.timeout))
        times.extend(self._p.dialer.deadlines())
        if not self._p.dialer.full():  # (when full, the end of a dial is an event)
            for _, ready in self._dial_candidates():
                times.append(ready)
        prunable = self._prune_candidates()
        if prunable and sum(1 for c in self._conns.values() if not c.closing) > 1:
            times.extend(at for _, at in prunable)
        return times

    def _prune_candidates(self) -> list[tuple[Link, float]]:
        desired = self._views().desired
        if desired.issuperset(self._conns):
            return []  # every link is wanted (asked after every event: a set test, not a loop)
        return prune_candidates(self._conns, desired, self._p.members, self.config.prune_grace)

    def _dial_candidates(self) -> list[tuple[str, float]]:
        """(address, time it may be dialled) for every connection we want and lack.

        Kept for the rest of one call into the core (same generation and time): the driver
        asks :meth:`dials`, then :meth:`next_deadline`, and nothing moves in between but a
        hand-out, which bumps the generation."""
        at = (self._gen, self._ctx.now)
        cached = self._dials_at
        if cached[0] == at:
            return cached[1]
        conns = self._conns
        out = self._p.dialer.candidates(
            self._ctx.now,
            self._views(),
            self._p.members,
            conns.__contains__,
            bool(conns),
            self.policy.urgent,
            frozenset(conns),
        )
        self._dials_at = (at, out)
        return out
