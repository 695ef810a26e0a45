"""The background task of :class:`~crdtsync.durability.GroupCommitter`: commits and compactions.

One asyncio task per committer wakes on a notify's timer, a flush or a hurry, and runs one
commit at a time in the committer's single worker thread (timed there, then the shards that
need compaction picked); a failed commit is raised to every flush waiting on it and retried
with backoff (at most :data:`_MAX_RETRY_DELAY` seconds apart). After a commit the observer, the
``before_commit`` callback and ``on_durable`` hear of it, in the event-loop thread, before the
waiting flushers resume. Between commits (a waiting flush goes first) shards are compacted in
the worker thread, and the disk space compaction freed is given back when the store's policy
asks for it (and on :meth:`_CommitTask.reclaim`).

A mixin of :class:`~crdtsync.durability.GroupCommitter` (:class:`_CommitTask`), split from
:mod:`crdtsync.durability` (whose docstring states the bounds this keeps) so the committer's
public operations and its background task each read in one module of a few hundred lines;
the state is the committer's (set in its ``__init__``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .observer import Observer
from .store import ShardStats, SpaceStats, Store

__all__: list[str] = []

#: The committer's logger (the name users configure stays ``crdtsync.durability``).
_log = logging.getLogger("crdtsync.durability")

_MAX_RETRY_DELAY = 5.0  # seconds between retries of a failing background commit, at most


class _CompactionGate:
    """How many compactions of this process may run at once (:attr:`slots`), across every
    committer and event loop of the process.

    Issue 17: a compaction replays a shard's log in its committer's worker thread, holding
    the GIL beside the event loop; 32 committers compacting at once (32 agents in one
    process, or one agent's shards written together) left the loop thread a 1/33 share of
    it and stalled it by 40-50 ms. Through the gate they run one after the other, so the
    loop competes with one worker at a time. A committer that finds it full does not block
    (its commits and flushes go on): it leaves a waker, called from whichever thread
    releases a slot, and tries again then.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.running = 0  # compactions holding a slot now
        self.most = 0  # the most that ever held one at once (for the tests)
        self._lock = threading.Lock()
        self._wakers: dict[object, Callable[[], None]] = {}

    def try_enter(self, key: object, waker: Callable[[], None]) -> bool:
        """Take a slot (True); or, if none is free, keep ``waker`` under ``key`` to be
        called once when one frees (False)."""
        with self._lock:
            if self.running < self.slots:
                self.running += 1
                self.most = max(self.most, self.running)
                self._wakers.pop(key, None)
                return True
            self._wakers[key] = waker
            return False

    def leave(self) -> None:
        """Give a slot back and wake everyone waiting (each tries :meth:`try_enter` again)."""
        with self._lock:
            self.running -= 1
            wakers = list(self._wakers.values())
            self._wakers.clear()
        for wake in wakers:
            try:
                wake()
            except Exception:  # e.g. the waiter's loop is closed: it compacts no more
                _log.debug("cannot wake a committer waiting to compact", exc_info=True)

    def forget(self, key: object) -> None:
        """Drop ``key``'s waker (its committer closes)."""
        with self._lock:
            self._wakers.pop(key, None)


class _Slot:
    """The slot of :data:`_COMPACTIONS` one compaction holds: given back exactly once, by the
    worker thread when the compaction ends, or by its caller if the worker never started it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = 0  # 0: not started, 1: running in the worker, 2: given back

    def start(self) -> bool:
        """The worker begins: False if the caller gave the slot back already."""
        with self._lock:
            if self._state:
                return False
            self._state = 1
            return True

    def give_back(self, *, unless_started: bool = False) -> None:
        """Give the slot back (a no-op if it was, or, ``unless_started``, if running)."""
        with self._lock:
            if self._state == 2 or (unless_started and self._state == 1):
                return
            self._state = 2
        _COMPACTIONS.leave()


#: The process's compaction gate (one at a time: see :class:`_CompactionGate`).
_COMPACTIONS = _CompactionGate(1)


class _CommitTask:
    """Mixin of :class:`~crdtsync.durability.GroupCommitter`: its background task (module
    docstring).

    The attributes and methods declared below belong to the committer.
    """

    _store: Store
    _interval: float
    _on_durable: Callable[[set[str]], None] | None
    # (durability.Merge, spelt out: naming it would import crdtsync.durability, a circle)
    _merge: Callable[[bytes | None, list[bytes]], bytes] | None
    _trusted_merge: Callable[[bytes | None, list[bytes]], bytes] | None
    _before_commit: Callable[[], Callable[[bool], None] | None] | None
    _observer: Observer
    _loop: asyncio.AbstractEventLoop | None
    _executor: ThreadPoolExecutor | None
    _wake: asyncio.Event
    _waiters: list[asyncio.Future[None]]
    _inflight: list[asyncio.Future[None]] | None
    _due: bool
    _timer: asyncio.TimerHandle | None
    _timer_local: bool
    _to_compact: dict[str, None]
    _failures: int
    _closing: bool

    if TYPE_CHECKING:

        def _check_running(self) -> asyncio.AbstractEventLoop: ...

        async def flush(self) -> None: ...

    def _on_timer(self) -> None:
        self._timer = None
        self._due = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiters or self._due or (self._to_compact and not self._closing):
                try:
                    if self._waiters or self._due:
                        await self._commit_once()
                    elif not _COMPACTIONS.try_enter(self, self._wake_threadsafe):
                        break  # the gate wakes us when a slot frees (or a commit does)
                    else:  # a slot taken: _in_slot gives it back
                        name = next(iter(self._to_compact))
                        del self._to_compact[name]
                        await self._compact_once(name)
                except Exception:  # a bug here must not stop durability for good
                    _log.exception("group commit loop failed; continuing")
            if self._closing:
                _COMPACTIONS.forget(self)
                return

    def _wake_threadsafe(self) -> None:
        """The gate's waker: wake the background task (from any thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._wake.set)

    async def _gated(self, name: str) -> tuple[ShardStats, ShardStats, float]:
        """:meth:`_compact` in the worker thread once the process's gate lets it
        (:meth:`~crdtsync.durability.GroupCommitter.compact`, asked for explicitly)."""
        assert self._loop is not None
        loop = self._loop
        key = object()
        while True:
            turn: asyncio.Future[None] = loop.create_future()

            def wake(turn: asyncio.Future[None] = turn) -> None:
                loop.call_soon_threadsafe(lambda: turn.done() or turn.set_result(None))

            if _COMPACTIONS.try_enter(key, wake):
                break
            try:
                await turn
            except BaseException:
                _COMPACTIONS.forget(key)
                raise
        return await self._in_slot(name)

    async def _in_slot(self, name: str) -> tuple[ShardStats, ShardStats, float]:
        """:meth:`_compact` in the worker thread, holding a slot of the gate taken by the
        caller: the worker gives it back as the compaction ends (not the event loop, which
        might never resume this coroutine); we do if the worker never started it (we were
        cancelled while it waited behind a commit, or the executor refused it)."""
        assert self._loop is not None
        slot = _Slot()
        try:
            return await self._loop.run_in_executor(
                self._executor, self._compact_in_slot, slot, name
            )
        finally:
            slot.give_back(unless_started=True)

    def _compact_in_slot(self, slot: _Slot, name: str) -> tuple[ShardStats, ShardStats, float]:
        """Runs in the worker thread: :meth:`_compact`, then give the gate's slot back."""
        if not slot.start():
            raise RuntimeError("compaction given up before it started")
        try:
            return self._compact(name)
        finally:
            slot.give_back()

    async def _commit_once(self) -> None:
        assert self._loop is not None
        waiters, self._waiters = self._waiters, []
        self._inflight = waiters
        self._due = False
        if self._timer is not None:  # this commit covers everything notified so far
            self._timer.cancel()
            self._timer = None
        done = self._before_commit() if self._before_commit is not None else None
        # What this commit writes: the entries buffered now, as captured (not those the event
        # loop appends while the worker thread starts: they wait for the next commit, where
        # a shard's own writes are folded with the rest of their run, see Store.fold_tail).
        upto = self._store.pending()
        try:
            counts, seconds, to_compact = await self._loop.run_in_executor(
                self._executor, self._commit_in_worker, upto
            )
        except Exception as e:
            if done is not None:
                done(False)
            self._inflight = None
            self._failures += 1
            for w in waiters:
                if not w.done():
                    w.set_exception(e)
            if not waiters:
                _log.error("background commit failed (%d in a row): %r", self._failures, e)
            if not self._closing and self._store.pending():
                self._retry_later()
            return
        self._failures = 0
        names = set(counts)
        if names:
            try:
                self._observer.committed(seconds, counts)
            except Exception:  # a metrics bug must not hold up the flushers
                _log.exception("commit observer failed")
        if done is not None:
            done(True)
        if names and self._on_durable is not None:
            try:
                self._on_durable(names)
            except Exception:
                _log.exception("on_durable callback failed")
        self._inflight = None
        for w in waiters:
            if not w.done():
                w.set_result(None)
        for name in to_compact:
            self._to_compact[name] = None

    def _retry_later(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        delay = min(self._interval * 2**self._failures, _MAX_RETRY_DELAY)
        self._timer = self._loop.call_later(delay, self._on_timer)
        self._timer_local = True  # (a write meanwhile does not cut the backoff short)

    def _commit_in_worker(
        self, upto: int | None = None
    ) -> tuple[dict[str, tuple[int, int]], float, list[str]]:
        """Runs in the worker thread: commit (timed; the first ``upto`` buffered entries),
        then pick the shards to compact."""
        start = time.perf_counter()
        names = self._store.commit(upto)
        seconds = time.perf_counter() - start
        counts = self._store.last_commit() if names else {}
        to_compact: list[str] = []
        if self._merge is not None:
            for name in sorted(counts):
                try:
                    if self._store.needs_compaction(name):
                        to_compact.append(name)
                except Exception:  # the commit itself succeeded; don't report it as failed
                    _log.exception("cannot check whether shard %r needs compaction", name)
        return counts, seconds, to_compact

    def _compact(self, name: str) -> tuple[ShardStats, ShardStats, float]:
        """Compact ``name`` (in the worker thread): stats before and after, seconds taken;
        then give disk space back if the store's policy wants it
        (:meth:`~crdtsync.store.Store.needs_reclaim`): compaction frees the log's pages, but
        LMDB keeps its file at the high-water mark."""
        assert self._merge is not None
        before = self._store.stats(name)
        start = time.perf_counter()
        after = self._store.compact(name, self._merge, trusted_merge=self._trusted_merge)
        seconds = time.perf_counter() - start
        try:
            if self._store.needs_reclaim():
                self._store.reclaim()
        except Exception:  # the compaction itself succeeded; the space comes back next time
            _log.exception("cannot give disk space back after compacting shard %r", name)
        return before, after, seconds

    def _observe_compaction(
        self, name: str, result: tuple[ShardStats, ShardStats, float]
    ) -> ShardStats:
        """Tell the observer of a compaction that folded something; return the stats after."""
        before, after, seconds = result
        if before.log_count:  # an empty log is not compacted (Store.compact returns at once)
            self._observer.compacted(
                name,
                seconds,
                before.log_bytes + before.snapshot_bytes,
                after.log_bytes + after.snapshot_bytes,
            )
        return after

    async def reclaim(self) -> SpaceStats:
        """Give the disk space of freed pages back now (:meth:`Store.reclaim
        <crdtsync.store.Store.reclaim>`), in the worker thread, between commits."""
        loop = self._check_running()
        await self.flush()
        return await loop.run_in_executor(self._executor, self._store.reclaim)

    async def _compact_once(self, name: str) -> None:
        assert self._loop is not None and self._merge is not None
        try:
            result = await self._in_slot(name)
        except Exception:
            _log.exception("automatic compaction of shard %r failed", name)
        else:
            self._observe_compaction(name, result)
