"""The handshake of one connection: which side sends its Hello, and when.

Who speaks first is a rule of the protocol, not of a transport, so it is decided here, in the
sans-I/O core, and every driver (websockets, MQTT, the in-process hub, the simulator,
:mod:`crdtsync.testing`) only carries out what a :class:`Handshake` returns.

The rule, per role of the connection:

* **Dialer** (the side that opened the connection, for an address from
  :meth:`GossipCore.dials <crdtsync.gossip.GossipCore.dials>`): its Hello is the first frame,
  sent as the connection opens.
* **Acceptor** (the side that was dialled): nothing at all until the dialer's Hello has been
  validated by :meth:`GossipCore.connection_made <crdtsync.gossip.GossipCore.connection_made>`
  (protocol version, mesh, a name that is not ours). Then its Hello goes, ahead of anything
  the core queued for the peer. An unknown client (a port scanner, a Yjs client at the wrong
  path, an agent of another mesh, garbage) therefore gets zero frames from the gossip door: it
  learns neither our name, nor our mesh, nor our address. The one refusal that still gets our
  Hello is a concurrent dial (``DUPLICATE_NAME`` for an agent of our mesh that we are already
  connected to): its Hello was valid, so it learns who we are before the driver's Close.
* **With credentials** (:meth:`GossipCore.secure <crdtsync.gossip.GossipCore.secure>` was
  called), a handshake can only be opened for a connection the driver has already
  authenticated, with the peer's identity; the Hello is then cut to what that peer may read.

A medium without connections of its own (an MQTT broker) has logical links instead: the agent
that opens a link (publishes its ``OPEN`` frame) is the dialer, the agent that receives it the
acceptor (see :mod:`crdtsync.transports.mqtt`). The broker itself is no party to a handshake;
broadcast topics carry no handshake at all (the broker's login and ACLs guard them).

Driver use, per connection::

    hs = Handshake(core, outbound=we_dialled, identity=authenticated_peer_or_None)
    send every message of hs.data_to_send()         # dialer: [Hello]; acceptor: []
    # the peer's first frame (after wire.decode):
    try:
        peer = hs.receive(msg, now)                  # core.connection_made, see its contract
    finally:
        send every message of hs.data_to_send()     # acceptor: [Hello] (before any Close)
    # ProtocolError: close the connection with err.code as before; hs.duplicate tells a
    # concurrent dial (not a fault) from a misbehaving peer.
    # later frames go to core.receive(peer, msg, now); effects as after every core call
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CloseCode, ProtocolError, UsageError
from ..messages import Hello, Message

if TYPE_CHECKING:
    from .core import GossipCore

__all__ = ["Handshake"]


class Handshake:
    """The handshake of one connection (see the module docstring for the rule).

    Args:
        core: the agent's core (or a driver's view of it with the same methods).
        outbound: whether this agent dialled the connection (the dialer speaks first).
        identity: the peer as the driver authenticated it; required when the core is secured.

    Raises:
        UsageError: the core is secured and no identity was given (authenticate first).

    Attributes:
        outbound: the role: True for the dialer, False for the acceptor.
        identity: the authenticated peer (opaque here), or None.
        peer: the peer's name once its Hello was accepted, else None.
        duplicate: the peer's Hello was valid but the core kept another connection with that
            agent (a concurrent dial): a clean refusal, not a fault.
    """

    __slots__ = ("_core", "_out", "_spoken", "duplicate", "identity", "outbound", "peer")

    def __init__(self, core: GossipCore, *, outbound: bool, identity: object = None) -> None:
        if identity is None and core.secured:
            raise UsageError(
                "this core has credentials: authenticate the connection before its handshake "
                "and pass the peer's identity"
            )
        self._core = core
        self.outbound = outbound
        self.identity = identity
        self.peer: str | None = None
        self.duplicate = False
        self._out: list[Message] = []
        self._spoken = False
        if outbound:  # the dialer speaks first
            self._speak()

    def data_to_send(self) -> list[Message]:
        """The handshake's own messages to send now, in order, before anything the core
        queued for this peer; emptied by the call."""
        out, self._out = self._out, []
        return out

    def receive(self, msg: Message, now: float) -> str:
        """Hand the connection's first message to :meth:`GossipCore.connection_made`; return
        the peer's name. The acceptor's Hello is queued once that accepted it.

        Raises:
            ProtocolError: as ``connection_made`` (the driver closes with ``err.code``; for a
                refused concurrent dial, :attr:`duplicate` is set and our Hello is queued
                first).
            UsageError: the handshake is over (later frames go to ``core.receive``).
        """
        if self.peer is not None:
            raise UsageError("the handshake is over: later frames go to core.receive()")
        core = self._core
        try:
            peer = core.connection_made(msg, now, outbound=self.outbound, identity=self.identity)
        except ProtocolError as exc:
            if (
                exc.code == CloseCode.DUPLICATE_NAME
                and isinstance(msg, Hello)
                and msg.name != core.name
            ):
                # A valid Hello of our mesh from an agent we already have a connection with:
                # it may learn who we are (our Hello, then the driver's Close).
                self.duplicate = True
                self._speak()
            raise
        self.peer = peer
        self._speak()  # the acceptor's turn (nothing more for the dialer, which spoke first)
        return peer

    def _speak(self) -> None:
        if not self._spoken:
            self._spoken = True
            self._out.append(self._core.hello(self.identity))
