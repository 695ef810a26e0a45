"""Connections: the handshake's replacement rule, flood control, and the per-link record.

A :class:`Link` is one accepted connection. What each concern keeps per link lives in its own
record, owned by that concern's module: :class:`~crdtsync.gossip.push.PushQueue`,
:class:`~crdtsync.gossip.acks.LinkAcks`, :class:`~crdtsync.gossip.antientropy.LinkRounds`,
:class:`~crdtsync.gossip.repair.LinkRepair`, :class:`~crdtsync.gossip.transfer.LinkReplies`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .acks import LinkAcks
from .antientropy import LinkRounds
from .push import PushQueue
from .repair import LinkRepair
from .transfer import LinkReplies

__all__ = ["TokenBucket", "Link", "replaces"]


@dataclass(slots=True)
class TokenBucket:
    """Messages a peer may send: ``rate`` per second on average, bursts of ``burst``."""

    rate: float
    burst: float
    tokens: float
    refilled: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        """Refill for the time since the last call, then take one token if there is one."""
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(slots=True)
class Link:
    """One accepted connection to a peer."""

    name: str
    since: float
    bucket: TokenBucket
    outbound: bool = False  # we dialled it
    incarnation: int = 0  # the peer's, from its Hello
    instance: int = 0  # the peer's run, from its Hello
    writable: bool = True  # the driver has not paused it
    closing: bool = (
        False  # a Close(NORMAL/GOING_AWAY) went either way: losing it is no failure
    )
    interest: set[str] = field(default_factory=set)  # shards it holds or sent us
    push: PushQueue = field(default_factory=PushQueue)
    acks: LinkAcks = field(default_factory=LinkAcks)
    rounds: LinkRounds = field(default_factory=LinkRounds)
    repair: LinkRepair = field(default_factory=LinkRepair)
    replies: LinkReplies = field(default_factory=LinkReplies)


def replaces(
    me: str,
    old: Link,
    peer: str,
    incarnation: int,
    instance: int,
    now: float,
    outbound: bool,
    connect_timeout: float,
) -> bool:
    """Whether a new connection to ``peer`` replaces ``old`` (see GossipCore.connection_made)."""
    if old.closing or incarnation > old.incarnation or instance != old.instance:
        return True  # (another run of the peer: it restarted)
    if now - old.since > connect_timeout:
        return True  # not a concurrent dial: the old one is dead at the peer's end
    if outbound == old.outbound:
        return True  # the same side dialled both: it dropped the first one
    # Concurrent dials from both sides: keep the one the smaller name dialled, like the peer.
    dialler = me if outbound else peer
    return dialler == min(me, peer)
