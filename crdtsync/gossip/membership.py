"""Membership (SWIM): who is alive, suspect or dead, and how reports about it are settled.

Everything that changes a member's status lives in this file and its table (h11 ``_state.py``
style): the table :data:`TRANSITIONS` (:mod:`._peer_states`, re-exported here) says which
:class:`Event` moves a member from which :class:`PeerState` to which, :func:`next_state` reads
it, and :meth:`Membership._move` is the only code that assigns a status.

* A peer whose connection was lost (or whose address cannot be dialled) is *suspect*; after
  ``suspect_timeout`` without a connection it is declared *dead* and leaves the overlay; dead
  agents are forgotten after ``forget_timeout`` (so stale "alive" reports cannot resurrect
  them meanwhile).
* SWIM incarnations settle conflicting reports: a higher incarnation wins, at equal
  incarnations "dead" wins, and an agent told it is dead raises its own incarnation (refutes).
* Reports of death that make us refute, or raise the incarnation known of their subject, are
  bounded per reporter (:data:`DEATH_REPORT_BURST`, :mod:`._report_budget`); beyond that they are ignored
  and counted (:attr:`Membership.limited`).
* A report of death about an agent we do not know is neither kept nor passed on: there is
  nothing to refute (a stale "alive" report of it may then add it, as before its death was
  known; it is dialled and declared dead again). Members taken on the
  word of others alone (an "alive" entry nobody here can verify) are capped per reporter and
  in all (:data:`HEARSAY_CAP`); beyond that they are ignored and counted
  (:attr:`Membership.capped`, logged once).
* *Loud* transitions (reports, timeouts, a peer leaving) are flooded to the other peers at the
  next window (:meth:`Membership.changes_for`); *quiet* ones (our own link to a peer broke or
  came back) are not: they are only our observation.

:attr:`Membership.version` grows with every change of the view, so caches of what is derived
from it (the overlay) know when to recompute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..messages import Message, PeerEntry, PeerList
from ._peer_states import LOUD, TRANSITIONS, Event, Member, PeerState, next_state
from ._report_budget import HearsayCap, ReportBudget

if TYPE_CHECKING:
    import random

    from .config import GossipConfig

__all__ = [
    "DEATH_REPORT_BURST",
    "LOUD",
    "DEATH_REPORT_RATE",
    "HEARSAY_CAP",
    "MAX_INCARNATION",
    "TRANSITIONS",
    "Event",
    "Member",
    "Membership",
    "PeerState",
    "next_state",
]

#: Highest incarnation accepted in a report or Hello. A refutation adds one, and the codec takes
#: signed 64-bit ints: a report at 2**63 - 1 would otherwise make its subject refute with a
#: number nobody decodes, cutting it off (issue 10). Same value as
#: :data:`crdtsync.security.records.MAX_INCARNATION`, the most a signed announcement may carry.
MAX_INCARNATION = 2**62

#: Reports of death that make us refute, or that raise the incarnation we know of their
#: subject (and so are passed on to it, or flooded), taken from one reporter (the peer that
#: sent the PeerList): at most :data:`DEATH_REPORT_BURST` at once, then
#: :data:`DEATH_REPORT_RATE` a second; beyond that they are ignored and counted
#: (:attr:`Membership.limited`). Without it a member could make any agent refute, and flood
#: the mesh with its refutations, as often as it sends a PeerList.
DEATH_REPORT_BURST = 16
DEATH_REPORT_RATE = 2.0

#: Members taken from "alive" entries that cannot be verified (no credentials, or the
#: subject's key is not known here yet), kept until they connect to us or are forgotten: at
#: most (per reporter, in all). An honest reporter's full PeerList names every agent of its
#: mesh once, 999 at the largest tested scale (Glomers N=1000: 925 from one reporter at most,
#: 996 in all): twice that per reporter, and four reporters' worth in all. Without it, one certified peer made
#: an agent keep any number of invented members (h-wire's scan: 50,000 slowed a write to 29 s).
HEARSAY_CAP = (2048, 8192)

ALIVE, SUSPECT, DEAD = PeerState.ALIVE, PeerState.SUSPECT, PeerState.DEAD


class Membership:
    """The membership view of one agent (see the module docstring).

    Args:
        name: this agent's name.
        address: its listen address, or None.
        config: the knobs (suspect_timeout, forget_timeout).
        send: queue a message to a connected peer.
        schedule_flush: ask for a flush at the next window (changes are flooded there).
        connected: whether a peer has an open connection to us.
        has_links: whether we have any connection at all.
    """

    def __init__(
        self,
        name: str,
        address: str | None,
        config: GossipConfig,
        *,
        send: Callable[[str, Message], None],
        schedule_flush: Callable[[float], None],
        connected: Callable[[str], bool],
        has_links: Callable[[], bool],
    ) -> None:
        self.name = name
        self.address = address
        self.config = config
        self.incarnation = 0
        #: Bumped on every change of the view (overlay caches are keyed by it).
        self.version = 0
        #: When the set of live agents last changed.
        self.view_at = -math.inf
        self._members: dict[str, Member] = {}
        #: names of the members that are SUSPECT or DEAD: the only ones with timers (see
        #: deadlines, asked after every event: a loop over every member was O(N) each time)
        self._timed: set[str] = set()
        #: When a full PeerList next goes to a random peer (set once we have a link).
        self.next_exchange: float | None = None
        # changes to flood at the next flush: name -> (entry, peer it came from)
        self._changes: dict[str, tuple[PeerEntry, str | None]] = {}
        self._send = send
        self._schedule_flush = schedule_flush
        self._connected = connected
        self._has_links = has_links
        #: With credentials (set by the core): whether an "alive" entry about another agent
        #: carries that agent's signature over its address and incarnation. Unsigned alive
        #: entries are ignored, and reports of death carry no address (see :meth:`merge`).
        self.verify: Callable[[PeerEntry], bool] | None = None
        #: Entries ignored by :meth:`merge` (forged, unsigned, or beyond MAX_INCARNATION).
        self.refused = 0
        #: Reports of death ignored because their reporter sent too many (see
        #: :data:`DEATH_REPORT_BURST`).
        self.limited = 0
        self._budget = ReportBudget(DEATH_REPORT_BURST, DEATH_REPORT_RATE)
        self._hearsay = HearsayCap(name, *HEARSAY_CAP)

    @property
    def capped(self) -> int:
        """New members ignored because their reporter, or all, reached :data:`HEARSAY_CAP`."""
        return self._hearsay.refused

    # -- reading the view

    def get(self, name: str) -> Member | None:
        return self._members.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[Member]:
        return iter(self._members.values())

    def __getitem__(self, name: str) -> Member:
        return self._members[name]

    def names(self) -> list[str]:
        """Every member's name, sorted."""
        return sorted(self._members)

    def live(self, *, listening: bool = False) -> tuple[str, ...]:
        """Members not declared dead, sorted (``listening``: only those with an address)."""
        return tuple(
            sorted(
                n
                for n, m in self._members.items()
                if m.status != DEAD and (m.address is not None or not listening)
            )
        )

    def full_table(self) -> tuple[PeerEntry, ...]:
        """Every member and us, as a full PeerList sends them."""
        entries = [PeerEntry(self.name, self.address, self.incarnation, True)]
        entries += [
            PeerEntry(m.name, m.address, m.incarnation, m.status != DEAD, m.signature)
            for m in self._members.values()
        ]
        return tuple(sorted(entries, key=lambda e: e.name))

    def changes_for(self, peer: str) -> list[PeerEntry]:
        """The changes to flood to ``peer`` (not those it told us), sorted by name."""
        changes = [e for e, src in self._changes.values() if src != peer]
        return sorted(changes, key=lambda e: e.name)

    @property
    def has_changes(self) -> bool:
        """Whether changes wait to be flooded at the next flush (else :meth:`changes_for` is
        empty for every peer: not asked per link)."""
        return bool(self._changes)

    def clear_changes(self) -> None:
        self._changes.clear()

    # -- the one place statuses change

    def _move(self, m: Member, event: Event, now: float) -> None:
        """Apply ``event`` to ``m`` (quiet: nothing is flooded)."""
        status = next_state(m.status, event)
        if status == m.status:
            return
        if (m.status == DEAD) != (status == DEAD):
            self.version += 1
        m.status, m.since = status, now
        self._track(m)

    def _track(self, m: Member) -> None:
        """Keep :attr:`_timed` in step with ``m.status``."""
        if m.status == SUSPECT or m.status == DEAD:
            self._timed.add(m.name)
        else:
            self._timed.discard(m.name)

    def _report(
        self,
        name: str,
        address: str | None,
        incarnation: int,
        event: Event,
        now: float,
        *,
        source: str | None,
        signature: bytes | None = None,
    ) -> None:
        """A loud change: ``event`` at ``incarnation``, flooded to the peers but ``source``."""
        m = self._members.get(name)
        if m is None:
            status = next_state(ALIVE, event)  # (a new member: only reports create one)
            self.view_at = now
            m = self._members[name] = Member(name, address, incarnation, status, now, signature)
            self._track(m)
        else:
            moved = (address is not None and address != m.address) or incarnation != m.incarnation
            if moved or signature is not None:
                m.signature = signature  # an unsigned report of a new place drops the old one
            status = next_state(m.status, event)
            if (m.status == DEAD) != (status == DEAD):
                self.view_at = now
            if m.status != status:
                m.since = now
            m.address = address if address is not None else m.address
            m.incarnation, m.status = incarnation, status
            self._track(m)
        self.version += 1
        entry = PeerEntry(name, m.address, m.incarnation, status != DEAD, m.signature)
        self._changes[name] = (entry, source)
        if self._has_links():
            self._schedule_flush(now)

    # -- events

    def announce(self, now: float) -> None:
        """Our own entry changed (address, incarnation): flood it at the next window."""
        self._changes[self.name] = (
            PeerEntry(self.name, self.address, self.incarnation, True),
            None,
        )
        self._schedule_flush(now)

    def hello(self, peer: str, address: str | None, incarnation: int, now: float) -> None:
        """A connection to ``peer`` was accepted, with this Hello."""
        self._hearsay.drop(peer)  # (it vouches for itself now)
        m = self._members.get(peer)
        if m is None or incarnation > m.incarnation:
            self._report(peer, address, incarnation, Event.REPORTED_ALIVE, now, source=peer)
            return
        if m.status == DEAD:
            # It is alive (we are talking to it) but reported dead at an incarnation it has
            # not outgrown: tell it, so it refutes with a higher incarnation that every other
            # agent will accept.
            self._send(peer, PeerList((PeerEntry(peer, m.address, m.incarnation, False),)))
            self.version += 1
        if address is not None and m.address != address:
            m.address = address
            m.signature = None  # its own signed entry follows in its PeerList
            self.version += 1
        self._move(m, Event.CONNECTED, now)

    def lost(self, peer: str, closing: bool, now: float) -> Member | None:
        """The connection to ``peer`` is gone (``closing``: cleanly). Returns its member."""
        m = self._members.get(peer)
        if m is not None and not closing:
            self._move(m, Event.LOST, now)
        return m

    def unreachable(self, address: str, now: float) -> None:
        """A dial to ``address`` failed: unconnected members there are suspect."""
        for m in self._members.values():
            if m.address == address and not self._connected(m.name):
                self._move(m, Event.UNREACHABLE, now)

    def left(self, peer: str, now: float) -> None:
        """``peer`` is stopping (Close GOING_AWAY): it leaves the overlay now."""
        m = self._members.get(peer)
        if m is not None:
            self._report(peer, m.address, m.incarnation, Event.LEFT, now, source=peer)

    def merge(self, e: PeerEntry, source: str, now: float) -> None:
        """Fold one membership report into our view (SWIM incarnation rules).

        An incarnation of :data:`MAX_INCARNATION` or more is ignored. With credentials
        (:attr:`verify`), an "alive" entry that would change our view counts only with its
        agent's signature (about us: ours, from an earlier run), so nobody can announce an
        address or incarnation that agent never announced; a report of death (which its
        subject cannot sign) still counts, without its address: it can only make us suspect
        the agent dead, which the agent refutes.
        """
        if e.incarnation >= MAX_INCARNATION or (
            not e.alive and e.incarnation >= MAX_INCARNATION - 1
        ):
            # (a death at MAX_INCARNATION - 1 would make its subject refute at
            # MAX_INCARNATION, which every agent refuses: it would stay dead for good)
            self.refused += 1
            return
        if not e.alive and self._forces(e) and not self._budget.spend(source, now):
            self.limited += 1
            return
        if self.verify is not None:
            if not e.alive:
                e = PeerEntry(e.name, None, e.incarnation, False)
            elif self._news(e) and not self.verify(e):
                # (about us too: only our own earlier runs sign those)
                self.refused += 1
                return
        if e.name == self.name:
            if e.incarnation > self.incarnation or (
                not e.alive and e.incarnation >= self.incarnation
            ):
                self.incarnation = e.incarnation + 1  # refute: we are alive, and newer
                self.announce(now)
            return
        reported = Event.REPORTED_ALIVE if e.alive else Event.REPORTED_DEAD
        m = self._members.get(e.name)
        if m is None:
            if not e.alive or not self._take(e, source):
                return  # (a death of an agent we do not know: nothing to refute or keep dead)
        elif e.incarnation > m.incarnation:
            if not e.alive and self._connected(e.name):
                # We are talking to it: pass the report on so that it refutes it.
                self._send(e.name, PeerList((e,)))
                m.incarnation, m.signature = e.incarnation, None
                return
        else:
            if e.incarnation == m.incarnation:
                self._merge_same(m, e, reported, source, now)
            return
        self._report(
            e.name,
            e.address,
            e.incarnation,
            reported,
            now,
            source=source,
            signature=e.signature,
        )

    def _merge_same(
        self, m: Member, e: PeerEntry, reported: Event, source: str, now: float
    ) -> None:
        """A report at the incarnation we know of ``m`` (see :meth:`merge`)."""
        if not e.alive and m.status != DEAD:
            if self._connected(e.name):
                self._send(e.name, PeerList((e,)))
            else:
                self._report(e.name, e.address, e.incarnation, reported, now, source=source)
        elif e.address is not None and m.address is None:
            m.address = e.address
            m.signature = e.signature
            self.version += 1
        elif (
            e.alive
            and e.signature is not None
            and e.address == m.address
            and (self.verify is None or self.verify(e))
        ):
            m.signature = e.signature  # its own signed entry (after its Hello)

    def _forces(self, e: PeerEntry) -> bool:
        """Whether a report of death makes us refute, or raises the incarnation we know of
        its subject (what the budget bounds per reporter). A report at the incarnation we
        know of a peer we are connected to is passed on to it uncounted: a healed partition
        brings one per member the other side declared dead, and the subject itself bounds
        what it refutes per reporter (us)."""
        if e.name == self.name:
            return e.incarnation >= self.incarnation
        m = self._members.get(e.name)
        return m is not None and e.incarnation > m.incarnation

    def _take(self, e: PeerEntry, source: str) -> bool:
        """Whether a new member may be taken from ``e`` (alive, verified if it can be):
        entries from ourselves (a broker's client hub) or verified by their subject's known key
        always; the others within :data:`HEARSAY_CAP`. (``verify`` passes an unsigned entry only
        when the key is unknown here: then it could not check the signed one either.)"""
        if source == self.name or (
            self.verify is not None
            and not self.verify(PeerEntry(e.name, e.address, e.incarnation, True))
        ):
            return True
        return self._hearsay.take(e.name, source)

    def _news(self, e: PeerEntry) -> bool:
        """Whether an alive entry could change our view (the others need no signature)."""
        if e.name == self.name:
            return e.incarnation > self.incarnation
        m = self._members.get(e.name)
        return (
            m is None
            or e.incarnation > m.incarnation
            or (e.address is not None and e.address != m.address)
        )

    # -- timers

    def ensure_exchange(self, now: float) -> None:
        if self.next_exchange is None:
            self.next_exchange = now + self.config.peer_exchange_interval

    def exchange(self, now: float, peers: list[str], rng: random.Random) -> None:
        """Membership anti-entropy: a full PeerList to one random peer every
        ``peer_exchange_interval``."""
        if self.next_exchange is None or now < self.next_exchange:
            return
        self.next_exchange = now + self.config.peer_exchange_interval
        if peers:
            self._send(rng.choice(peers), PeerList(self.full_table(), full=True))

    def tick(self, now: float) -> list[str]:
        """Declare silent suspects dead, forget long-dead members; return those forgotten."""
        cfg = self.config
        forgotten: list[str] = []
        if not self._timed:
            return forgotten  # no member is suspect or dead: no timer (asked every tick)
        for m in list(self._members.values()):
            if (
                m.status == SUSPECT
                and not self._connected(m.name)
                and now >= m.since + cfg.suspect_timeout
            ):
                self._report(m.name, m.address, m.incarnation, Event.SILENT, now, source=None)
            elif m.status == DEAD and now >= m.since + cfg.forget_timeout:
                del self._members[m.name]
                self._timed.discard(m.name)
                self._hearsay.drop(m.name)
                forgotten.append(m.name)
                self.version += 1
        return forgotten

    def deadlines(self) -> Iterator[float]:
        """When :meth:`tick` has work, per member."""
        cfg = self.config
        for name in self._timed:
            m = self._members[name]
            if m.status == SUSPECT and not self._connected(m.name):
                yield m.since + cfg.suspect_timeout
            elif m.status == DEAD:
                yield m.since + cfg.forget_timeout
