"""The membership table (h11 ``_state.py`` style): what this agent can know of another
(:class:`PeerState`), what can happen to it (:class:`Event`), and :data:`TRANSITIONS`, which
event moves a member from which state to which. :func:`next_state` reads it; the only code
that assigns a status is :meth:`crdtsync.gossip.membership.Membership._move` (and its
``_report``), which applies it. Re-exported by :mod:`.membership`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["LOUD", "TRANSITIONS", "Event", "Member", "PeerState", "next_state"]


class PeerState(StrEnum):
    """What this agent knows of another (the values are the strings reported since 0.1)."""

    CONNECTED = "connected"  # derived: a member with an open connection (never stored)
    ALIVE = "alive"  # known alive, not connected to us
    SUSPECT = "suspect"  # connection lost or undialable, not yet declared dead
    DEAD = "dead"


class Event(StrEnum):
    """What can happen to a member."""

    REPORTED_ALIVE = "reported alive"  # a Hello or PeerList entry that wins (incarnation)
    REPORTED_DEAD = "reported dead"  # a PeerList entry that wins
    LEFT = "left"  # it closed its connection with GOING_AWAY
    CONNECTED = "connected"  # a connection to it was accepted (quiet)
    LOST = "lost"  # its connection broke without a clean close (quiet)
    UNREACHABLE = "unreachable"  # a dial to its address failed (quiet)
    SILENT = "silent"  # suspect, and unconnected for suspect_timeout (loud)


ALIVE, SUSPECT, DEAD = PeerState.ALIVE, PeerState.SUSPECT, PeerState.DEAD

#: (state, event) -> next state. A pair not listed leaves the state as it is.
TRANSITIONS: dict[tuple[PeerState, Event], PeerState] = {
    **{(s, Event.REPORTED_ALIVE): ALIVE for s in (ALIVE, SUSPECT, DEAD)},
    **{(s, Event.REPORTED_DEAD): DEAD for s in (ALIVE, SUSPECT, DEAD)},
    **{(s, Event.LEFT): DEAD for s in (ALIVE, SUSPECT, DEAD)},
    (SUSPECT, Event.CONNECTED): ALIVE,
    (DEAD, Event.CONNECTED): ALIVE,
    (ALIVE, Event.LOST): SUSPECT,
    (ALIVE, Event.UNREACHABLE): SUSPECT,
    (SUSPECT, Event.SILENT): DEAD,
}

#: Events whose transitions are flooded to the other peers.
LOUD = frozenset({Event.REPORTED_ALIVE, Event.REPORTED_DEAD, Event.LEFT, Event.SILENT})


def next_state(state: PeerState, event: Event) -> PeerState:
    """The state a member in ``state`` is in after ``event`` (see :data:`TRANSITIONS`)."""
    return TRANSITIONS.get((state, event), state)


@dataclass(slots=True)
class Member:
    """One other agent as known here."""

    name: str
    address: str | None
    incarnation: int
    status: PeerState  # ALIVE, SUSPECT or DEAD (CONNECTED is derived from the links)
    since: float  # when status last changed
    #: With credentials: the member's own signature over (address, incarnation), passed on
    #: with its entry while both are unchanged (None without credentials).
    signature: bytes | None = None
