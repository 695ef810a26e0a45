"""Handshake, connections and received messages of :class:`~crdtsync.gossip.GossipCore`.

The driver calls that open and close links (``hello``, ``connection_made``,
``connection_lost``, ``dial_failed``, flow control) and the one that hands in every later
frame (``receive``, routed through the core's dispatch table), with the core's own handlers of
``PeerList``, ``Close`` and a second ``Hello``. A mixin of the core (:class:`_Connections`),
split from :mod:`crdtsync.gossip.core` so that "what happens when a peer connects, sends or
goes away" reads in one place; it owns no state of its own (links are
:mod:`~crdtsync.gossip.links`, the rest is the components').
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import CloseCode, ProtocolError, UsageError
from ..messages import PROTOCOL_VERSION, Ack, Close, Hello, Message, PeerList, Push
from ._context import Context
from .components import Components
from .config import GossipConfig
from .links import Link, accept, check_hello, closing_cleanly
from .policy import Service
from .security import Security

__all__: list[str] = []


class _Connections:
    """Mixin of :class:`~crdtsync.gossip.GossipCore`: links and received messages (module
    docstring).

    The attributes declared below belong to the core (set in its ``__init__``).
    """

    name: str
    mesh: str
    config: GossipConfig
    _ctx: Context
    _conns: dict[str, Link]
    _p: Components
    _sec: Security
    _services: tuple[Service, ...]
    _dispatch: dict[type[Message], Callable[[Link, Any, float], None]]
    _instance: int
    _gen: int
    _light: int
    _holdable: tuple[int, bool]

    if TYPE_CHECKING:  # the core's (core.py); declared for the type checker only

        @property
        def address(self) -> str | None: ...

        def _advance(self, now: float) -> None: ...

        def _ensure_timers(self, now: float) -> None: ...

    @property
    def secured(self) -> bool:
        """Whether :meth:`secure` was called: every connection is then authenticated by the
        driver before its handshake (:class:`~crdtsync.gossip.handshake.Handshake`)."""
        return self._ctx.gate is not None

    def hello(self, identity: object = None) -> Hello:
        """The first message to send on every new connection, inbound or outbound (when:
        :class:`~crdtsync.gossip.handshake.Handshake`); with credentials, cut to what the
        peer ``identity`` may read.

        It lists no shards (issue #11): its size must not grow with the number of shards (an
        agent with 132,000 shards had a Hello over every peer's frame limit, and was cut off
        for good). A peer learns what we hold after the handshake, in messages that stay
        small: the on-connect anti-entropy round (equal Summary roots, or Digests), pushes and
        acks, and with partial replication :class:`~crdtsync.messages.Holdings` in pieces.
        """
        hello = Hello(
            version=PROTOCOL_VERSION,
            mesh=self.mesh,
            name=self.name,
            address=self.address,
            shards=(),
            incarnation=self._p.members.incarnation,
            instance=self._instance,
        )
        gate = self._ctx.gate
        if gate is not None and identity is not None:
            cut = gate.outgoing(identity, hello)
            assert isinstance(cut, Hello)  # a Hello is always sent, only its shards are cut
            return cut
        return hello

    def connection_made(
        self, hello: Message, now: float, *, outbound: bool, identity: object = None
    ) -> str:
        """Accept a peer's handshake; return its name, the key for every later call.

        Args:
            hello: the first message received on the connection.
            now: the driver's clock.
            outbound: whether this agent dialled the connection (it came from :meth:`dials`).
            identity: the peer as the driver authenticated it (with credentials; the driver
                has checked that ``hello.name`` is its name). Every message it sends then goes
                through the security gate (:meth:`secure`). None: no credentials.

        Raises:
            ProtocolError: ``BAD_HANDSHAKE`` (not a Hello), ``PROTOCOL_VERSION``,
                ``WRONG_MESH``, or ``DUPLICATE_NAME``: it is ourselves, or the agent is
                already connected and the other connection is kept (see below). The driver
                closes that connection and does not report it lost.

        A second connection with an agent already connected either replaces the old one (the
        driver closes the old one and does not report it lost) or is refused: the rule, alike
        on both sides, is :func:`~crdtsync.gossip.links.replaces`.
        """
        self._advance(now)
        hello = check_hello(hello, self.mesh)
        if hello.name == self.name:
            if hello.address is not None:
                self._p.dialer.self_addresses.add(hello.address)  # never dial ourselves again
            raise ProtocolError("connected to ourselves", CloseCode.DUPLICATE_NAME)
        peer = hello.name
        try:
            conn = accept(self._conns, self.name, hello, now, outbound, self.config)
        except ProtocolError:
            self._p.dialer.refused(hello.address)
            raise
        self._sec.connected(conn, identity)
        self._p.dialer.connected(peer, hello.address)

        self._p.members.hello(peer, hello.address, hello.incarnation, now)
        self._ctx.send(peer, PeerList(self._p.members.full_table(), full=True))
        for service in self._services:
            service.connection_made(peer, hello, now)
        if self.name < peer:  # one side starts the on-connect round; its Diffs go both ways
            self._p.ae.start_round(conn, now)
        self._ensure_timers(now)
        return peer

    def connection_lost(self, peer: str, now: float) -> None:
        """A connection that :meth:`connection_made` accepted is gone (idempotent)."""
        self._advance(now)
        conn = self._conns.pop(peer, None)
        if conn is None:
            return
        self._ctx.guard.peer_gone(peer)
        for service in self._services:
            service.connection_lost(peer, now)
        self._p.dialer.lost(peer)
        m = self._p.members.lost(peer, conn.closing, now)
        if m is None:
            return
        if m.address is not None and not conn.closing:
            self._p.dialer.backoff.lost(m.address, now)

    def dial_failed(self, address: str, now: float) -> None:
        """A connection attempt to ``address`` (from :meth:`dials`) failed."""
        self._advance(now)
        self._p.dialer.failed(address, now)
        self._p.members.unreachable(address, now)

    def pause_writing(self, peer: str) -> None:
        """The transport's buffer for ``peer`` is full: hold pushes (up to max_queue_bytes)."""
        self._gen += 1
        conn = self._conns.get(peer)
        if conn is not None:
            conn.writable = False

    def resume_writing(self, peer: str, now: float) -> None:
        """The transport's buffer for ``peer`` drained: pushes flow again."""
        self._advance(now)
        conn = self._conns.get(peer)
        if conn is not None:
            conn.writable = True
            if conn.has_pending() or (conn.fanout and self._p.pushes.fanout.queue):
                self._ctx.schedule_flush(now)

    # ------------------------------------------------------------------------------------------
    # incoming messages

    def read_delay(self, peer: str, now: float) -> float:
        """Seconds a driver should wait before it reads the next frame of ``peer`` (fair
        reading between peers, :meth:`Guard.read_delay <crdtsync.gossip.guard.Guard.
        read_delay>`); 0.0: read it now. The cheapest check there is: a frame that waits is
        not even decoded. Drivers that cannot hold a peer back (the simulator) do not ask."""
        return self._ctx.guard.read_delay(peer, now)

    def receive(self, peer: str, msg: Message, now: float) -> None:
        """Handle one message from connected ``peer``.

        Raises:
            ProtocolError: the peer misbehaved; close its connection with ``err.code``.
                Nothing of the message was applied.
            UsageError: ``peer`` is not connected (a driver bug).
        """
        light = (type(msg) is Push or type(msg) is Ack) and self._ctx.gate is None
        if light:
            # A Push or an Ack moves no membership, dial, pruning or anti-entropy timer: only
            # the relay's, the repairs' and the acks' are computed again (issue 17/18: a full
            # next_deadline and dials after every received push were 16 % of its handling).
            # A handler of either that comes to move another timer (anti-entropy, membership,
            # dials, pruning) must bump the core's generation itself (GossipCore._advance).
            self._ctx.now = max(self._ctx.now, now)
            self._light += 1
            self._holdable = (-1, False)  # (relay acks a Push brings make local writes go)
        else:
            self._advance(now)
        conn = self._conns.get(peer)
        if conn is None:
            raise UsageError(f"receive() from {peer!r}, which is not connected")
        # Flood limit per peer name (a reconnect does not reset it) and the fair share of
        # the budget of all peers together: ProtocolError FLOODING.
        self._ctx.guard.admit_message(peer, now)
        handler = self._dispatch.get(type(msg))
        if handler is None:  # pragma: no cover - wire.decode only produces known types
            raise ProtocolError(
                f"unexpected message {type(msg).__name__}", CloseCode.UNKNOWN_MESSAGE
            )
        # the receive boundary (credentials only: without a gate, what came is admitted)
        admitted = msg if light else self._sec.admit(conn, msg)
        if admitted is not None:
            handler(conn, admitted, now)

    def _on_peer_list(self, conn: Link, msg: PeerList, now: float) -> None:
        for entry in msg.peers:
            self._p.members.merge(entry, conn.name, now)

    def _on_close(self, conn: Link, msg: Close, now: float) -> None:
        """The peer is closing the connection (the driver reports it lost afterwards)."""
        if closing_cleanly(conn, msg):
            if msg.code == CloseCode.GOING_AWAY:  # it is stopping: leave the overlay now
                self._p.members.left(conn.name, now)
            else:  # do not redial right away
                m = self._p.members.get(conn.name)
                if m is not None and m.address is not None:
                    self._p.dialer.backoff.failed(m.address, now)

    def _on_hello_again(self, conn: Link, msg: Hello, now: float) -> None:
        raise ProtocolError("second Hello on one connection", CloseCode.BAD_HANDSHAKE)
