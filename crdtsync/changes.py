"""Change records and the per-shard feed that hands them to listeners.

Every transaction that changes a shard, whether made here or received from a peer, yields one
:class:`Change`. Paths are only computed while somebody listens, so a shard nobody follows
pays nothing for the feed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["Change", "ChangeFeed", "Path", "Subscription"]

log = logging.getLogger("crdtsync.changes")

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One transaction's worth of change to a shard.

    Attributes:
        shard: the shard's name.
        origin: ``None`` for a change made by this agent, else the name of the peer whose
            update brought it (the neighbour that delivered it, not necessarily its writer).
        paths: the changed keys, as paths from the shard's top level: setting
            ``board["tasks"]["t1"]["done"]`` gives ``("tasks", "t1", "done")``; an edit inside a
            list or text gives the path of that list or text.
        dropped: how many records before this one were dropped because the listener fell more
            than its queue size behind (0 normally). When non-zero, re-read the snapshot.
        author: the agent that wrote the change: this agent's name for a local change; for a
            remote one the writer named by the gossip that carried it, passed on unchanged by
            every relay (so not ``origin`` when a neighbour relayed it). Every route that
            carries a writer's name gives it here:

            - a Push of one writer's updates (a direct push, a tree's or a hub's hop, a
              writer's batch to the window's relay) and a single delta too big for a Push
              (sent as DiffChunk pieces that name it);
            - a Push of several writers' updates (a rotating relay's broadcast, which mixes the
              batches of every writer of its window and its repeats of others'; a tree's or a
              hub's batch): while somebody listens, each run of one writer's updates is its
              own transaction and record, order kept (``Shard.apply_remote_by_writer``); the
              broadcasts one turn of a driver reads from the broker, likewise
              (``Shard.apply_remote_many``).

            ``None`` where the receiver knows no single writer: a change that arrived by
            anti-entropy (a Diff or a DiffBatch is ``get_update(state vector)``, one update
            merging the structs of any number of agents: catching up after a restart,
            joining a mesh, a repair after a lost push); one applied together with held-back
            out-of-order updates (they may be anybody's); an update sent with no name (a
            relay's repeat of an update its bounded table of writers forgot, a Diff's news
            passed on by a tree); a Yjs client's write through ``yjsdoor`` (no agent wrote
            it: ``origin`` names the client); a shard not served by an agent. As the peers
            claim it: not authenticated, even in a mesh with credentials.
    """

    shard: str
    origin: str | None
    paths: tuple[Path, ...]
    dropped: int = 0
    author: str | None = None

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
        self._callbacks: list[Callable[[Change], object]] = []
        self._paths: list[Path] = []
        self._closed = False

    @property
    def active(self) -> bool:
        """Whether anybody listens (only then are paths collected)."""
        return bool(self._listeners or self._callbacks)

    def subscribe(self, on_close: Callable[[], None] | None = None) -> Subscription:
        """A new subscription to every change from now on (see :class:`Subscription`)."""
        listener = _Listener(self._queue_size)
        if self._closed:
            listener.put(None)
        else:
            self._listeners.append(listener)
        return Subscription(self, listener, on_close)

    def add_callback(
        self, callback: Callable[[Change], object], on_close: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """Call ``callback(change)`` after every change; returns the function that stops it."""
        self._callbacks.append(callback)
        removed = False

        def remove() -> None:
            nonlocal removed
            if not removed:
                removed = True
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
                if on_close is not None:
                    on_close()

        return remove

    def _discard(self, listener: _Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def collect(self, events: list[Any]) -> None:
        """Record the paths of pycrdt deep events of the current transaction."""
        for event in events:
            base = tuple(event.path)
            keys = getattr(event, "keys", None)
            if keys:
                self._paths.extend(base + (key,) for key in keys)
            else:
                self._paths.append(base)

    def publish(self, origin: str | None, author: str | None = None) -> None:
        """Deliver one record for the transaction just committed (see :class:`Change`)."""
        paths = tuple(dict.fromkeys(self._paths))
        self._paths.clear()
        change = Change(self._shard, origin, paths, author=author)
        for listener in self._listeners:
            listener.put(change)
        for callback in list(self._callbacks):
            try:
                callback(change)
            except Exception:  # the change is applied and persisted whatever the callback does
                log.exception("on_change callback %r failed on shard %r", callback, self._shard)

    def close(self) -> None:
        """End every listener's iteration."""
        self._closed = True
        for listener in self._listeners:
            listener.put(None)
        self._listeners.clear()
        self._callbacks.clear()

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


class Subscription:
    """Changes of one shard from the moment of :meth:`Shard.subscribe
    <crdtsync.shard.Shard.subscribe>` on, queued until read.

    Unlike the ``changes()`` generator, a subscription survives timeouts: ``await
    sub.get(timeout=1.0)`` returns None when nothing came and the next call goes on where it
    left off. ``async for change in sub`` iterates until the shard closes. Close it (or use
    ``with shard.subscribe() as sub:``) to stop queueing.
    """

    def __init__(
        self, feed: ChangeFeed, listener: _Listener, on_close: Callable[[], None] | None
    ) -> None:
        self._feed = feed
        self._listener = listener
        self._on_close = on_close
        self._ended = False

    @property
    def closed(self) -> bool:
        """Whether the subscription ended (closed here, or its shard closed)."""
        return self._ended

    async def get(self, timeout: float | None = None) -> Change | None:
        """The next change; None on timeout or once the subscription ended."""
        if self._ended:
            return None
        try:
            change = await asyncio.wait_for(self._listener.get(), timeout)
        except TimeoutError:
            return None
        if change is None:
            self.close()
        return change

    def close(self) -> None:
        """Stop receiving changes (idempotent)."""
        if self._ended:
            return
        self._ended = True
        self._feed._discard(self._listener)
        if self._on_close is not None:
            self._on_close()

    def __aiter__(self) -> AsyncIterator[Change]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Change]:
        while (change := await self.get()) is not None:
            yield change

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Listener:
    __slots__ = ("_dropped", "_queue", "_size")

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._dropped = 0
        self._size = size

    def put(self, change: Change | None) -> None:
        if change is not None and self._queue.qsize() >= self._size:
            self._dropped += 1
            return
        if change is not None and self._dropped:
            change = Change(change.shard, change.origin, change.paths, self._dropped, change.author)
            self._dropped = 0
        self._queue.put_nowait(change)

    async def get(self) -> Change | None:
        return await self._queue.get()
