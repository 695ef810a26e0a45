"""Connections: the handshake's replacement rule and the per-link record (flood control is
per peer name, in :mod:`crdtsync.gossip.guard`).

A :class:`Link` is one accepted connection. What each concern keeps per link lives in its own
record, owned by that concern's module: :class:`~crdtsync.gossip.push.PushQueue`,
:class:`~crdtsync.gossip.acks.LinkAcks`, :class:`~crdtsync.gossip.antientropy.LinkRounds`,
:class:`~crdtsync.gossip.repair.LinkRepair`, :class:`~crdtsync.gossip.transfer.LinkReplies`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import CloseCode, ProtocolError
from ..messages import PROTOCOL_VERSION, Close, Hello, Message
from .acks import LinkAcks
from .antientropy import LinkRounds
from .membership import MAX_INCARNATION
from .push import PushQueue
from .repair import LinkRepair
from .transfer import LinkReplies

if TYPE_CHECKING:
    from .config import GossipConfig
    from .membership import Membership

__all__ = [
    "Link",
    "check_hello",
    "prune",
    "prune_candidates",
    "replaces",
]


@dataclass(slots=True)
class Link:
    """One accepted connection to a peer."""

    name: str
    since: float
    outbound: bool = False  # we dialled it
    incarnation: int = 0  # the peer's, from its Hello
    instance: int = 0  # the peer's run, from its Hello
    writable: bool = True  # the driver has not paused it
    closing: bool = False  # a Close(NORMAL/GOING_AWAY) went either way: losing it is no failure
    #: Carried by a driver whose medium fans out (an MQTT broker): its pushes and acks join
    #: the core's broadcasts (:meth:`GossipCore.broadcasts_to_send`), sent once for all such
    #: links, instead of one message per link (see :mod:`crdtsync.gossip.push`).
    fanout: bool = False
    #: The peer said an address in its Hello (it accepts connections). A peer without one (an
    #: agent behind NAT, a client) links only with agents that listen: see
    #: :meth:`~crdtsync.gossip._context.Context.client_hub` for what that changes.
    listens: bool = True
    interest: set[str] = field(default_factory=set)  # shards it holds or sent us
    #: The peer as authenticated by the driver (opaque here; handed to the security gate,
    #: :mod:`crdtsync.gossip.gate`), None without credentials.
    identity: object = None
    push: PushQueue = field(default_factory=PushQueue)
    acks: LinkAcks = field(default_factory=LinkAcks)
    rounds: LinkRounds = field(default_factory=LinkRounds)
    repair: LinkRepair = field(default_factory=LinkRepair)
    replies: LinkReplies = field(default_factory=LinkReplies)

    def has_pending(self) -> bool:
        """Whether pushes or replies wait for the link to be writable."""
        p, r = self.push, self.replies
        return bool(p.queue or p.resync or p.big or r.replies or r.want_digests or r.sending)


def check_hello(hello: Message, mesh: str) -> Hello:
    """The first message of a connection, if it is a Hello we can talk to.

    Raises:
        ProtocolError: BAD_HANDSHAKE (not a Hello), PROTOCOL_VERSION or WRONG_MESH.
    """
    if not isinstance(hello, Hello):
        raise ProtocolError(f"expected Hello, got {type(hello).__name__}", CloseCode.BAD_HANDSHAKE)
    if hello.version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {hello.version} != {PROTOCOL_VERSION}",
            CloseCode.PROTOCOL_VERSION,
        )
    if hello.mesh != mesh:
        raise ProtocolError(f"mesh {hello.mesh!r} is not {mesh!r}", CloseCode.WRONG_MESH)
    if hello.incarnation >= MAX_INCARNATION:
        raise ProtocolError(
            f"incarnation {hello.incarnation} >= {MAX_INCARNATION}", CloseCode.BAD_HANDSHAKE
        )
    return hello


def prune_candidates(
    links: dict[str, Link], desired: frozenset[str], members: Membership, grace: float
) -> list[tuple[Link, float]]:
    """(link, when it may be pruned) for links the overlay does not need."""
    out = []
    for conn in links.values():
        if conn.closing or conn.name in desired:
            continue
        m = members.get(conn.name)
        if m is None or m.address is None:
            continue  # it cannot be dialled back: keep the edge it made
        out.append((conn, conn.since + grace))
    return out


def prune(
    now: float,
    links: dict[str, Link],
    candidates: list[tuple[Link, float]],
    send: Callable[[str, Message], None],
) -> None:
    """Close, with Close(NORMAL), the candidates whose grace is over (never the last link)."""
    live = sum(1 for c in links.values() if not c.closing)
    for conn, at in candidates:
        if live <= 1:  # never cut our last connection: it is how we hear about the mesh
            break
        if now >= at:
            conn.closing = True
            live -= 1
            send(conn.name, Close(CloseCode.NORMAL, "pruned: not an overlay neighbour"))


def accept(
    links: dict[str, Link], me: str, hello: Hello, now: float, outbound: bool, config: GossipConfig
) -> Link:
    """Open the link of a checked Hello from another agent, replacing an older link to it.

    Raises:
        ProtocolError: DUPLICATE_NAME, the agent is connected and the other link is kept
            (see :func:`replaces`).
    """
    peer = hello.name
    old = links.get(peer)
    if old is not None:
        if not replaces(
            me, old, peer, hello.incarnation, hello.instance, now, outbound, config.connect_timeout
        ):
            kept = min(me, peer)
            raise ProtocolError(
                f"{peer} is already connected: keeping the connection {kept} dialled",
                CloseCode.DUPLICATE_NAME,
            )
        del links[peer]
        old.closing = True
    link = Link(
        peer,
        now,
        outbound=outbound,
        incarnation=hello.incarnation,
        instance=hello.instance,
        listens=hello.address is not None,
    )
    link.interest.update(hello.shards)
    links[peer] = link
    return link


def closing_cleanly(link: Link, msg: Close) -> bool:
    """A Close from the peer: whether it is a clean one (NORMAL, GOING_AWAY, DUPLICATE_NAME),
    whose loss is then no failure. DUPLICATE_NAME: the peer keeps another connection with us
    (a concurrent dial), which is on its way or already here."""
    if msg.code in (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.DUPLICATE_NAME):
        link.closing = True
        return True
    return False


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
    """Whether a new connection to ``peer`` replaces ``old`` (else it is refused).

    When both agents dialled each other at about the same time, each side sees first the
    Hello of the connection the *other* dialled (the dialer speaks first, see
    :mod:`.handshake`), so "the newest wins" would pick a different connection on each side,
    and they would flap. Two connections
    established within ``connect_timeout`` of each other and dialled by different agents are
    therefore settled by name, alike on both sides: the one dialled by the smaller name is
    kept. Otherwise the new connection replaces the old one: when it comes from another run
    of the peer (``Hello.instance``: it restarted) or a higher incarnation, when the same
    agent dialled both, or when the old one is older than that (an agent only dials a peer it
    has no connection to, so the old one is dead at the far end: the peer noticed a broken
    link first).
    """
    if old.closing or incarnation > old.incarnation or instance != old.instance:
        return True  # (another run of the peer: it restarted)
    if now - old.since > connect_timeout:
        return True  # not a concurrent dial: the old one is dead at the peer's end
    if outbound == old.outbound:
        return True  # the same side dialled both: it dropped the first one
    # Concurrent dials from both sides: keep the one the smaller name dialled, like the peer.
    dialler = me if outbound else peer
    return dialler == min(me, peer)
