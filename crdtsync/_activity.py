"""Wake-ups between the asyncio side of an agent and its transport.

Waiters (``Shard.replicated``, remote reads) start something in the core, :meth:`Activity.kick`
the transport so it sends at once, then :meth:`Activity.wait` until the transport reports that
it handled frames (:meth:`Activity.set`, the transport's ``on_activity`` callback) or a short
poll interval passed: a wake-up may be missed, so waiters always look again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Activity"]


class Activity:
    """One agent's "something happened" signal plus the transport's kick (see module docs)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._kick: Callable[[], None] | None = None
        # The transport calls set() after every frame it handles: the event's own method,
        # one call instead of two (issue 17/18, h-recv4). Same effect as the method below.
        self.set = self._event.set  # type: ignore[method-assign]

    def bind(self, kick: Callable[[], None] | None) -> None:
        """Route :meth:`kick` to the transport (None: no transport, kicks do nothing)."""
        self._kick = kick

    def kick(self) -> None:
        """Ask the transport to execute the core's pending effects now."""
        if self._kick is not None:
            self._kick()

    def set(self) -> None:
        """The transport handled something: wake every waiter."""
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Return at the next :meth:`set` or after ``timeout`` seconds, whichever is first."""
        self._event.clear()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
