"""One gossip core, two drivers: websockets to near peers and a broker for the rest.

``Agent(listen=..., broker=...)`` hands its core to both drivers through :func:`combine`. Each
driver sees the core through a :class:`_Share`, which is the core itself except for its
effects: the core's outbox is drained once and routed, frames to the driver that carries the
peer (the one whose ``connection_made`` accepted it), dials by address (``mqtt:<name>`` to the
broker, the rest to websockets), broadcasts to the driver that marked broadcast links. A driver
that gets effects while another one is running its own is kicked soon after. The core stays
sans-I/O and neither driver knows about the other.

The agent's address (in its Hello and the PeerLists) is the websocket one; agents on the broker
reach it through its presence there. What one side sends the agent reaches the other side: the
core passes on to its websocket links what a broadcast brought, and broadcasts what a websocket
peer sent (:mod:`crdtsync.gossip.push`).

A peer reachable both ways (another agent on both) is carried by one link at a time, the one the
core accepted last; a report that the other one closed is ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .transport import Transport, TransportFactory

if TYPE_CHECKING:
    from .gossip import GossipCore
    from .messages import Message
    from .observer import Observer

__all__ = ["combine"]


class _Share:
    """What one driver sees of the core: the core, with its effects routed (see the module)."""

    def __init__(self, board: _Board, index: int) -> None:
        self._board = board
        self._index = index
        self.transport: Transport | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._board.core, name)

    def set_address(self, address: str) -> None:
        if self._index == 0:  # the websocket address is the agent's; the broker has presence
            self._board.core.set_address(address)

    def connection_made(self, hello: Message, now: float, *, outbound: bool, **kw: Any) -> str:
        peer: str = self._board.core.connection_made(hello, now, outbound=outbound, **kw)
        self._board.owner[peer] = self._index
        return peer

    def connection_lost(self, peer: str, now: float) -> None:
        if self._board.owner.get(peer, self._index) != self._index:
            return  # the core took another driver's link with it since
        self._board.owner.pop(peer, None)
        self._board.core.connection_lost(peer, now)

    def broadcast_link(self, peer: str) -> None:
        self._board.broadcaster = self._index
        self._board.core.broadcast_link(peer)

    def data_to_send(self) -> list[tuple[str, Message]]:
        pending = self._board.drain(self._index)
        out, pending.frames = pending.frames, []
        return out

    def dials(self) -> list[str]:
        pending = self._board.drain(self._index)
        out, pending.dials = pending.dials, []
        return out

    def broadcasts_to_send(self) -> list[Message]:
        pending = self._board.drain(self._index)
        out, pending.broadcasts = pending.broadcasts, []
        return out


class _Pending:
    """Effects routed to one driver, waiting for it to ask."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, Message]] = []
        self.dials: list[str] = []
        self.broadcasts: list[Message] = []

    def __bool__(self) -> bool:
        return bool(self.frames or self.dials or self.broadcasts)


class _Board:
    """The routing of one core's effects between its two drivers."""

    def __init__(self, core: GossipCore, broker_scheme: str) -> None:
        self.core = core
        self.owner: dict[str, int] = {}  # peer -> the share whose link carries it
        self.broadcaster = 1
        self._scheme = broker_scheme
        self.shares = [_Share(self, 0), _Share(self, 1)]
        self._pending = [_Pending(), _Pending()]
        self._kick_soon = [False, False]

    def drain(self, index: int) -> _Pending:
        """Route everything the core has now; return what waits for driver ``index`` (the
        other one is kicked soon if something waits for it)."""
        core = self.core
        for peer, msg in core.data_to_send():
            owner = self.owner.get(peer)
            if owner is not None:  # (none: the link is gone; the core learns it)
                self._pending[owner].frames.append((peer, msg))
        for address in core.dials():
            self._pending[1 if address.startswith(self._scheme) else 0].dials.append(address)
        self._pending[self.broadcaster].broadcasts.extend(core.broadcasts_to_send())
        other = 1 - index
        if self._pending[other] and not self._kick_soon[other]:
            self._kick_soon[other] = True
            asyncio.get_running_loop().call_soon(self._kick, other)
        return self._pending[index]

    def _kick(self, index: int) -> None:
        self._kick_soon[index] = False
        transport = self.shares[index].transport
        if transport is not None:
            transport.kick()


class _Combined:
    """Both drivers as one :class:`~crdtsync.transport.Transport`."""

    def __init__(self, first: Transport, second: Transport) -> None:
        self._parts = (first, second)

    @property
    def address(self) -> str | None:
        return self._parts[0].address

    @property
    def counters(self) -> dict[str, int]:
        """Both drivers' counters (the broker's: ``broadcast_pushes``, ``garbage``...)."""
        out: dict[str, int] = {}
        for part in self._parts:
            for key, n in getattr(part, "counters", {}).items():
                out[key] = out.get(key, 0) + n
        return out

    def set_observer(self, observer: Observer) -> None:
        """Both drivers report their links' close codes to ``observer`` (the metrics)."""
        for part in self._parts:
            set_observer = getattr(part, "set_observer", None)
            if callable(set_observer):
                set_observer(observer)

    def __getattr__(self, name: str) -> Any:
        # serve_yjs, watch_seeds, seed_status...: the websocket driver's
        for part in self._parts:
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(name)

    async def start(self) -> None:
        await self._parts[0].start()  # the listen address first: it is the agent's
        try:
            await self._parts[1].start()
        except BaseException:
            await self._parts[0].close()
            raise

    def kick(self) -> None:
        for part in self._parts:
            part.kick()

    async def close(self) -> None:
        for part in reversed(self._parts):
            await part.close()


def combine(
    near: TransportFactory, broker: TransportFactory, *, broker_scheme: str = "mqtt:"
) -> TransportFactory:
    """A factory that drives one core with ``near`` (websockets: it gets ``listen``) and
    ``broker`` (its addresses start with ``broker_scheme``), see the module docstring."""

    def factory(
        core: GossipCore,
        *,
        listen: str | None,
        max_frame: int,
        on_activity: Callable[[], None],
        **extra: Any,
    ) -> Transport:
        board = _Board(core, broker_scheme)
        first = near(
            cast("GossipCore", board.shares[0]),
            listen=listen,
            max_frame=max_frame,
            on_activity=on_activity,
            **extra,
        )
        second = broker(
            cast("GossipCore", board.shares[1]),
            listen=None,
            max_frame=max_frame,
            on_activity=on_activity,
            **extra,
        )
        board.shares[0].transport, board.shares[1].transport = first, second
        return _Combined(first, second)

    return factory
