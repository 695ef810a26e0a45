"""Change records and the per-shard feed that hands them to listeners.

Every transaction that changes a shard, whether made here or received from a peer, yields one
:class:`Change`. Paths are only computed while somebody listens, so a shard nobody follows
pays nothing for the feed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Change", "ChangeFeed", "Path"]

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One transaction's worth of change to a shard.

    Attributes:
        shard: the shard's name.
        origin: ``None`` for a change made by this agent, else the name of the peer whose
            update brought it.
        paths: the changed keys, as paths from the shard's top level: setting
            ``board["tasks"]["t1"]["done"]`` gives ``("tasks", "t1", "done")``; an edit inside a
            list or text gives the path of that list or text.
        dropped: how many records before this one were dropped because the listener fell more
            than its queue size behind (0 normally). When non-zero, re-read the snapshot.
    """

    shard: str
    origin: str | None
    paths: tuple[Path, ...]
    dropped: int = 0

    @property
    def local(self) -> bool:
        """Whether this agent made the change."""
        return self.origin is None


class ChangeFeed:
    """Fans change records out to any number of async listeners with bounded queues."""

    def __init__(self, shard: str, *, queue_size: int = 10_000) -> None:
        self._shard = shard
        self._queue_size = queue_size
        self._listeners: list[_Listener] = []
        self._paths: list[Path] = []

    @property
    def active(self) -> bool:
        """Whether anybody listens (only then are paths collected)."""
        return bool(self._listeners)

    def collect(self, events: list[Any]) -> None:
        """Record the paths of pycrdt deep events of the current transaction."""
        for event in events:
            base = tuple(event.path)
            keys = getattr(event, "keys", None)
            if keys:
                self._paths.extend(base + (key,) for key in keys)
            else:
                self._paths.append(base)

    def publish(self, origin: str | None) -> None:
        """Deliver one record for the transaction just committed."""
        paths = tuple(dict.fromkeys(self._paths))
        self._paths.clear()
        for listener in self._listeners:
            listener.put(Change(self._shard, origin, paths))

    def close(self) -> None:
        """End every listener's iteration."""
        for listener in self._listeners:
            listener.put(None)
        self._listeners.clear()

    async def listen(self) -> AsyncIterator[Change]:
        """Yield every change from now on until the shard closes."""
        listener = _Listener(self._queue_size)
        self._listeners.append(listener)
        try:
            while True:
                change = await listener.get()
                if change is None:
                    return
                yield change
        finally:
            if listener in self._listeners:
                self._listeners.remove(listener)


class _Listener:
    __slots__ = ("_queue", "_dropped", "_size")

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._dropped = 0
        self._size = size

    def put(self, change: Change | None) -> None:
        if change is not None and self._queue.qsize() >= self._size:
            self._dropped += 1
            return
        if change is not None and self._dropped:
            change = Change(change.shard, change.origin, change.paths, self._dropped)
            self._dropped = 0
        self._queue.put_nowait(change)

    async def get(self) -> Change | None:
        return await self._queue.get()
