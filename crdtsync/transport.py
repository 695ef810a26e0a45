"""What an agent needs of the driver that carries its gossip: the ``Transport`` protocol.

The agent (:mod:`crdtsync.agent`) builds a :class:`~crdtsync.gossip.GossipCore` and hands it
to a :class:`TransportFactory`; the transport it gets back feeds the core what the network does
and executes the core's effects (the driver contract in :mod:`crdtsync.gossip`). The agent
never imports a transport: :class:`crdtsync.transports.websocket.WebsocketTransport` is one
such factory (the class itself), wired in as the default by the package's composition root,
:mod:`crdtsync._compose`. Pass ``Agent(..., transport=...)`` to use another.

Optional capability: a transport with a ``serve_yjs(open_shard)`` method also serves
y-websocket clients (:mod:`crdtsync.transports.yjsdoor`); a listening agent calls it with its
:meth:`~crdtsync.agent.Agent.shard` before ``start()``. Transports without it (the
one-process :class:`~crdtsync.testing.LocalHub`, test doubles) simply have no Yjs door.
Likewise a transport with ``set_observer(observer)`` reports each peer connection's close code
to that :class:`~crdtsync.observer.Observer` (the agent passes its metrics; websockets and MQTT
do).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .gossip import GossipCore
    from .security.credentials import Credentials

__all__ = [
    "Transport",
    "TransportFactory",
    "broker_factory",
    "default_factory",
    "set_broker_builder",
    "set_default_factory",
]


class Transport(Protocol):
    """A running driver of one gossip core (see :mod:`crdtsync.transports.websocket`)."""

    @property
    def address(self) -> str | None:
        """The address peers can dial (port resolved), or None if it does not listen."""

    async def start(self) -> None:
        """Start listening and dialling the core's seeds."""

    def kick(self) -> None:
        """Execute the core's pending effects now (called after the agent fed the core)."""

    async def close(self) -> None:
        """Say goodbye to peers, close every connection and stop every task."""


class TransportFactory(Protocol):
    """Builds the transport of one agent's core (``WebsocketTransport`` is one)."""

    def __call__(
        self,
        core: GossipCore,
        *,
        listen: str | None,
        max_frame: int,
        on_activity: Callable[[], None],
        credentials: Credentials | None = None,
    ) -> Transport: ...


_default: TransportFactory | None = None
_broker_builder: Callable[..., TransportFactory] | None = None


def set_default_factory(factory: TransportFactory | None) -> None:
    """Set the transport agents use when given none (the composition root sets websockets)."""
    global _default
    _default = factory


def default_factory() -> TransportFactory | None:
    """The transport agents use when given none, or None if nothing was wired in."""
    return _default


def set_broker_builder(builder: Callable[..., TransportFactory] | None) -> None:
    """Set what turns ``Agent(broker=URL)`` into a factory (the composition root sets MQTT)."""
    global _broker_builder
    _broker_builder = builder


def broker_factory(url: str, *, insecure: bool = False) -> TransportFactory:
    """The transport factory for the broker at ``url`` (``mqtt://`` or ``mqtts://``).

    Raises:
        UsageError: no broker transport is wired in, or the URL is malformed.
        InsecureBroker: a non-loopback broker without TLS and a login, unless ``insecure``.
    """
    if _broker_builder is None:
        from .errors import UsageError

        raise UsageError("no broker transport is wired in (crdtsync._compose installs MQTT)")
    return _broker_builder(url, insecure=insecure)


class CoreTimer:
    """One asyncio timer at the core's next deadline, for callback-style drivers.

    A driver calls :meth:`arm` after every call into the core (the deadline may have moved);
    when the deadline comes the timer calls ``core.tick`` and then ``after_tick`` (the driver
    sends what the tick produced). :meth:`close` stops it for good. The loop's clock is
    ``time.monotonic``, the clock agents pass to the core.
    """

    def __init__(self, core: GossipCore, after_tick: Callable[[], None]) -> None:
        self._core = core
        self._after_tick = after_tick
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # the core's deadline the handle is armed for
        self._closed = False

    def arm(self) -> None:
        """(Re)arm at ``core.next_deadline()``; nothing when it did not move or is None.

        A timer armed for a deadline already past is left as it is: it fires within a
        millisecond and the tick re-arms. The core reports an overdue deadline as "now", a
        value that moves with every call into it, and a driver kicked at every loop turn (an
        agent writing in a tight loop) would otherwise push the due timer back at every turn
        and never tick (issue 17's stream burst, benchmarks/history/fanout-writer.md, h-stream)."""
        if self._closed:
            return
        deadline = self._core.next_deadline()
        if self._handle is not None:
            if deadline is not None and self._handle.when() == deadline:
                return
            if self._deadline is not None and self._deadline <= time.monotonic():
                return  # due: fires now, never pushed back
            self._handle.cancel()
            self._handle = None
        self._deadline = deadline
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(max(deadline, loop.time() + 0.001), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._deadline = None
        if self._closed:
            return
        self._core.tick(time.monotonic())
        self._after_tick()

    def close(self) -> None:
        """Cancel the timer; it never fires again."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
