"""How agent code follows a :class:`~crdtsync.shard.Shard`'s changes: ``changes()``,
``subscribe()`` and ``on_change()``, and the deep observer they share.

Every change to a shard, local or remote, is announced once through the shard's
:class:`~crdtsync.changes.ChangeFeed` (at the end of the shard's one update path, in
:mod:`crdtsync.shard`). The feed only collects what changed while someone listens: the first
listener here puts a deep observer on the shard's root map, the last one to leave takes it off
(an observer costs pycrdt work on every transaction).

A mixin of :class:`~crdtsync.shard.Shard` (:class:`_ChangeStream`), split from
:mod:`crdtsync.shard` so that the shard's dict-like API and its change streams each read in
a module of a few hundred lines; the state is the shard's (its slots, set in its
``__init__``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pycrdt

from .changes import Change, ChangeFeed, Subscription

__all__: list[str] = []


class _ChangeStream:
    """Mixin of :class:`~crdtsync.shard.Shard`: its change streams (module docstring).

    The attributes and methods declared below belong to the shard.
    """

    __slots__ = ()

    crdt: pycrdt.Map
    _feed: ChangeFeed
    _listeners: int
    _deep_sub: Any
    _closed: bool

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

    async def changes(self) -> AsyncIterator[Change]:
        """Yield a :class:`~crdtsync.changes.Change` for every change from now on, local or remote.

        Iteration ends when the shard's agent closes. Do not wrap ``__anext__`` of this
        generator in ``asyncio.wait_for``: a timeout cancels the generator and ends it for
        good (that is how Python async generators work). To wait with a timeout, use
        :meth:`subscribe` (``await sub.get(timeout=1.0)`` returns None on timeout and keeps
        the subscription), or :meth:`on_change` for a callback.
        """
        sub = self.subscribe()
        try:
            while True:
                change = await sub.get()
                if change is None:
                    return
                yield change
        finally:
            sub.close()

    def subscribe(self) -> Subscription:
        """A :class:`~crdtsync.changes.Subscription` to every change from now on: ``await
        sub.get(timeout=...)`` (None on timeout, the subscription lives on), ``async for``,
        ``sub.close()``. Use it as a context manager to close it."""
        self._check_open()
        self._listen_start()
        return self._feed.subscribe(on_close=self._listen_stop)

    def on_change(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """Call ``callback(change)`` synchronously after every change, local or remote;
        returns a function that stops the calls. Exceptions of the callback are logged and
        do not stop the change (it is already applied and persisted)."""
        self._check_open()
        self._listen_start()
        return self._feed.add_callback(callback, on_close=self._listen_stop)

    def _listen_start(self) -> None:
        self._listeners += 1
        if self._deep_sub is None:
            self._deep_sub = self.crdt.observe_deep(self._feed.collect)

    def _listen_stop(self) -> None:
        self._listeners -= 1
        if self._listeners == 0 and self._deep_sub is not None and not self._closed:
            self.crdt.unobserve(self._deep_sub)
            self._deep_sub = None
