"""An in-process network for real agents: :class:`LocalHub`, re-exported by crdtsync.testing.

Agents given ``transport=hub.transport`` and ``listen="hub://NAME"`` talk through the hub
instead of sockets: whole :class:`crdtsync.Agent` objects (LMDB stores, group commits, the
asyncio API, reads and ``replicated()``) in one process and one event loop, on the real clock.
Every frame goes through :func:`crdtsync.wire.encode` and ``decode``; ``latency`` delays
each one. Links can be cut (:meth:`LocalHub.cut`): both ends see the connection close, as
after a network failure, and the cores reconnect through their dialling rules.

It is a second :class:`~crdtsync.transport.TransportFactory` beside websockets, and follows the
driver contract in :mod:`crdtsync.gossip` (the Hellos as the core's
:class:`~crdtsync.gossip.Handshake` says: the dialer's first, the acceptor's once its core
accepted the dialer's; duplicate connections settled by the core, a ``Close`` message closes
the link after it is sent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import wire
from .errors import CloseCode, ProtocolError, UsageError
from .gossip import GossipCore, Handshake
from .messages import Close, Message
from .transport import CoreTimer

__all__ = ["HubTransport", "LocalHub"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _End:
    """One side of a hub link."""

    owner: HubTransport
    outbound: bool
    handshake: Handshake
    dialled: str | None = None
    peer: str | None = None
    open: bool = True
    other: _End | None = field(default=None, repr=False)


class LocalHub:
    """The in-process network (see the module docstring).

    Args:
        latency: seconds each frame takes, one way (0: delivered on the next loop iteration).
    """

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self._listeners: dict[str, HubTransport] = {}
        self.frames = 0  # frames delivered, for tests

    def transport(
        self,
        core: GossipCore,
        *,
        listen: str | None,
        max_frame: int,
        on_activity: Callable[[], None],
        credentials: object = None,
    ) -> HubTransport:
        """The :class:`~crdtsync.transport.TransportFactory`: ``Agent(transport=hub.transport)``.

        The hub is one process: there is nothing to authenticate, so credentials are refused
        rather than silently ignored."""
        if credentials is not None:
            raise UsageError("a LocalHub carries no credentials (it is one process)")
        return HubTransport(self, core, listen=listen, max_frame=max_frame, on_activity=on_activity)

    def cut(self, a: str, b: str) -> None:
        """Close the link between agents ``a`` and ``b`` (both see it closed; they redial)."""
        for t in list(self._listeners.values()):
            if t.core.name == a:
                end = t._by_peer.get(b)
                if end is not None:
                    t._close(end)

    def _deliver(self, end: _End, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.latency > 0:
            loop.call_later(self.latency, end.owner._receive, end, frame)
        else:
            loop.call_soon(end.owner._receive, end, frame)


class HubTransport:
    """One agent's driver on a :class:`LocalHub` (built by :meth:`LocalHub.transport`)."""

    def __init__(
        self,
        hub: LocalHub,
        core: GossipCore,
        *,
        listen: str | None,
        max_frame: int,
        on_activity: Callable[[], None],
    ) -> None:
        if listen is not None and not listen.startswith("hub://"):
            raise UsageError(f"a LocalHub agent listens on hub://NAME, not {listen!r}")
        self.hub = hub
        self.core = core
        self._listen = listen
        self._max_frame = max_frame
        self._on_activity = on_activity
        self._by_peer: dict[str, _End] = {}
        self._ends: set[_End] = set()
        self._timer = CoreTimer(core, self._after_tick)
        self._closed = False

    @property
    def address(self) -> str | None:
        return self._listen

    async def start(self) -> None:
        if self._listen is not None:
            if self._listen in self.hub._listeners:
                raise UsageError(f"{self._listen} is taken")
            self.hub._listeners[self._listen] = self
        self.kick()

    def kick(self) -> None:
        """Execute the core's effects: frames, dials, the next timer."""
        if self._closed:
            return
        for peer, msg in self.core.data_to_send():
            end = self._by_peer.get(peer)
            if end is None:
                continue
            self._send(end, wire.encode(msg))
            if isinstance(msg, Close):
                self._close(end)
        for address in self.core.dials():
            self._dial(address)
        self._arm()

    async def close(self) -> None:
        if self._closed:
            return
        for end in list(self._ends):
            if end.peer is not None:
                self._send(end, wire.encode(Close(CloseCode.GOING_AWAY)))
            self._close(end, report=False)
        self._closed = True
        if self._listen is not None and self.hub._listeners.get(self._listen) is self:
            del self.hub._listeners[self._listen]
        self._timer.close()
        await asyncio.sleep(self.hub.latency)  # let the goodbyes arrive

    # -- links ---------------------------------------------------------------------------------

    def _dial(self, address: str) -> None:
        target = self.hub._listeners.get(address)
        loop = asyncio.get_running_loop()
        if target is None or target._closed:
            loop.call_soon(self._dial_failed, address)
            return
        mine = _End(self, True, Handshake(self.core, outbound=True), dialled=address)
        theirs = _End(target, False, Handshake(target.core, outbound=False))
        mine.other, theirs.other = theirs, mine
        self._ends.add(mine)
        target._ends.add(theirs)
        self._send_handshake(mine)  # our Hello; the acceptor's waits for it (the core's rule)
        target._send_handshake(theirs)

    def _send_handshake(self, end: _End) -> None:
        for msg in end.handshake.data_to_send():
            self._send(end, wire.encode(msg))

    def _dial_failed(self, address: str) -> None:
        if not self._closed:
            self.core.dial_failed(address, time.monotonic())
            self.kick()

    def _send(self, end: _End, frame: bytes) -> None:
        if not end.open or end.other is None:
            return
        if len(frame) > self._max_frame:
            logger.error("%s: dropping a %d-byte frame over max_frame", self.core.name, len(frame))
            return
        self.hub.frames += 1
        self.hub._deliver(end.other, frame)

    def _close(self, end: _End, *, report: bool = True) -> None:
        """Close ``end`` here (reported lost to our core if ``report``) and, one latency
        later, at the other side."""
        if not end.open:
            return
        end.open = False
        self._ends.discard(end)
        if end.peer is not None and self._by_peer.get(end.peer) is end:
            del self._by_peer[end.peer]
            if report:
                self.core.connection_lost(end.peer, time.monotonic())
        other = end.other
        if other is not None and other.open:
            loop = asyncio.get_running_loop()
            loop.call_later(self.hub.latency, other.owner._closed_by_peer, other)

    def _closed_by_peer(self, end: _End) -> None:
        if not end.open:
            return
        end.open = False
        self._ends.discard(end)
        if self._closed:
            return
        now = time.monotonic()
        if end.peer is not None:
            if self._by_peer.get(end.peer) is end:
                del self._by_peer[end.peer]
                self.core.connection_lost(end.peer, now)
        elif end.outbound and end.dialled is not None:
            self.core.dial_failed(end.dialled, now)
        self.kick()

    def _receive(self, end: _End, frame: bytes) -> None:
        if not end.open or self._closed:
            return
        now = time.monotonic()
        try:
            msg = wire.decode(frame, max_size=self._max_frame)
            if end.peer is None:
                self._accept(end, msg, now)
            else:
                self.core.receive(end.peer, msg, now)
        except ProtocolError as exc:
            logger.warning("%s: closing a hub link: %s", self.core.name, exc)
            if end.peer is not None:
                self._send(end, wire.encode(Close(exc.code)))
            self._close(end)
        self.kick()
        self._on_activity()

    def _accept(self, end: _End, msg: Message, now: float) -> None:
        try:
            peer = end.handshake.receive(msg, now)
        except ProtocolError:
            self._send_handshake(end)  # a concurrent dial gets our Hello before the close
            if end.handshake.duplicate:
                self._close(end, report=False)  # the core keeps the other connection
                return
            raise
        self._send_handshake(end)  # the acceptor's Hello, ahead of what the core queued
        old = self._by_peer.pop(peer, None)
        if old is not None:  # replaced by this newer connection: not reported lost
            self._close(old, report=False)
        end.peer = peer
        self._by_peer[peer] = end

    # -- timer ---------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._timer.arm()

    def _after_tick(self) -> None:
        self.kick()
        self._on_activity()
