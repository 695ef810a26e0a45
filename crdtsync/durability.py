"""Group commit: many appends and many flushers share one LMDB transaction and one fsync.

:class:`GroupCommitter` drives a :class:`~crdtsync.store.Store` from asyncio. Writers call
``store.append()`` then :meth:`GroupCommitter.notify`; whoever needs durability awaits
:meth:`GroupCommitter.flush`. Every ``store.commit()`` (and compaction) runs in ONE dedicated
worker thread, so the event loop never blocks on fsync and commits never overlap.

Bounds:

* A write that nobody flushes is committed within about ``interval`` seconds of its
  ``notify()`` (plus the commit already running, if any).
* An update received from a peer (:meth:`GroupCommitter.notify_remote`) is committed within
  ``received_interval`` (``interval`` unless given), unless the committer was given
  ``remote_interval_cap`` and a :class:`CommitPacing`: then within ``received_interval``
  times the number of running committers that share that pacing object, at most the cap
  (and never less than ``received_interval``). The
  agents of one event loop share one (:meth:`CommitPacing.of_loop`, what an agent on a
  broker alone takes, or one passed as ``Agent(commit_pacing=...)``): one agent alone in its
  process is unchanged; a process running dozens of agents (a swarm of asyncio agents) makes
  each of them commit what it received less often, so that the process's commits per second
  stay about those of one agent. Its writer already holds such an update, and an agent acks
  (replication) only what is on disk, so a later commit delays acks, never makes one false.
* ``flush()`` returns once everything appended before the call is durable. While a commit
  runs, every flush that arrives waits for the *next* commit, which then serves them all; so
  N concurrent flushers cost at most two commits, never N fsyncs.
* A failed commit (e.g. :class:`~crdtsync.errors.StoreFull`) is raised from every ``flush()``
  waiting on it; the entries stay buffered in the store and the background task keeps running
  and retries with backoff.

After each commit, ``on_durable(shard names)`` runs in the event-loop thread *before* the
waiting flushers resume, so by the time ``flush()`` returns the callback has seen the commit.
If ``compact_merge`` is given, shards for which ``store.needs_compaction()`` holds are then
compacted in the worker thread, between commits (a waiting flush goes first), and the disk
space compaction freed is given back when the store's policy asks for it
(:meth:`~crdtsync.store.Store.needs_reclaim`, :meth:`reclaim`). ``merge`` runs
in that thread and gets and returns only bytes: pycrdt documents are thread-bound, so a merge
must build its own ``Doc`` and never share one with the event loop. ``trusted_merge``, if
given, is used instead for shards whose entries all passed their checksums (see
:meth:`crdtsync.store.Store.compact`).

An ``observer`` (:class:`~crdtsync.observer.Observer`) hears, in the event-loop thread, of
every successful commit (its duration, write plus fsync, timed in the worker; and per shard the
updates and bytes it appended) and of every compaction that folded something (duration, bytes
before and after). The metrics are fed this way, without this module knowing them.

The background task (commits and compactions in the worker thread, retries, :meth:`reclaim`)
is the mixin :mod:`crdtsync._durability_task`, a base of :class:`GroupCommitter`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from ._durability_task import _CommitTask
from .errors import ClosedError, UsageError
from .observer import NULL_OBSERVER, Observer
from .store import ShardStats, Store

__all__ = ["CommitPacing", "GroupCommitter", "Merge"]

Merge = Callable[[bytes | None, list[bytes]], bytes]
"""``merge(snapshot, log) -> new snapshot``: one update equivalent to snapshot + log."""


class CommitPacing:
    """The commit pace shared by the group committers of one event loop.

    Each :class:`GroupCommitter` given this object (``pacing=``) counts in :attr:`running`
    from its :meth:`~GroupCommitter.start` to its :meth:`~GroupCommitter.close`; with a
    ``remote_interval_cap`` it commits what peers sent it within its ``interval`` times that
    count, at most the cap (:meth:`remote_interval`). So the more agents share a process's
    event loop, the less often each commits received updates, and the process's commits per
    second stay about one agent's (issue 14: 32 agents a process made 640 commits a second).

    Share one per event loop: :meth:`of_loop` gives the loop's own (an agent on a broker
    alone takes it unless given one, ``Agent(commit_pacing=...)``); committers on different
    loops must not share one (each loop has its own worker threads to pace).
    """

    #: The pacing object of each event loop, made on first ask (see :meth:`of_loop`).
    _of_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CommitPacing]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        #: committers started with this pacing and not closed yet
        self.running = 0

    @classmethod
    def of_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> CommitPacing:
        """The pacing object of ``loop`` (default: the running one), shared by every agent
        on it that does not bring its own; it lives as long as the loop."""
        loop = loop if loop is not None else asyncio.get_running_loop()
        pacing = cls._of_loop.get(loop)
        if pacing is None:
            pacing = cls._of_loop[loop] = cls()
        return pacing

    def remote_interval(self, interval: float, cap: float) -> float:
        """The bound for a received update of a committer with ``interval`` and ``cap``:
        ``interval`` times :attr:`running`, at most ``cap``, never less than ``interval``."""
        return max(interval, min(interval * max(self.running, 1), cap))


class GroupCommitter(_CommitTask):
    """Batches commits of a :class:`~crdtsync.store.Store` from one asyncio event loop.

    Args:
        store: the store to commit; the committer does not close it.
        interval: upper bound, in seconds, before a notified but unflushed write is committed.
        on_durable: called in the event-loop thread with the names of the shards each
            successful commit touched. Exceptions it raises are logged and ignored.
        compact_merge: enables automatic compaction (and :meth:`compact`) with this merge.
        trusted_merge: used instead of ``compact_merge`` for shards whose entries all passed
            their checksums (it may skip validating them).
        before_commit: called in the event-loop thread just before each commit is handed to
            the worker; it may return a callback that gets ``True`` once that commit is
            durable, ``False`` if it failed. The agent uses it to record which document state
            each commit makes durable (for replication acks): whatever the loop thread had
            appended when the hook ran is inside the commit.
        observer: told of every commit and compaction (see the module docstring).
        received_interval: the bound, in seconds, for what :meth:`notify_remote` announces
            (an update received from a peer); None: ``interval``, as a local write. An agent
            commits received updates less often than its own (fewer commits, acks and timer
            ticks per received update), and hurries the commit when a peer asks for its ack
            (:meth:`hurry`).
        remote_interval_cap: None: what :meth:`notify_remote` announces is committed within
            ``received_interval``. Else within ``received_interval`` times the running
            committers sharing ``pacing``, at most this many seconds (module docstring).
        pacing: the :class:`CommitPacing` this committer shares with the others of its
            event loop (it counts there while running); None: counted nowhere, a received
            update waits ``interval`` as a local write does.

    ``notify``, ``notify_remote``, ``flush``, ``compact`` and ``close`` must be called from the event loop that
    ran :meth:`start`.
    """

    def __init__(
        self,
        store: Store,
        *,
        interval: float = 0.05,
        on_durable: Callable[[set[str]], None] | None = None,
        compact_merge: Merge | None = None,
        trusted_merge: Merge | None = None,
        before_commit: Callable[[], Callable[[bool], None] | None] | None = None,
        observer: Observer = NULL_OBSERVER,
        received_interval: float | None = None,
        remote_interval_cap: float | None = None,
        pacing: CommitPacing | None = None,
    ) -> None:
        if not interval > 0:
            raise UsageError(f"interval must be > 0 seconds, got {interval!r}")
        if received_interval is not None and not received_interval > 0:
            raise UsageError(f"received_interval must be > 0 seconds, got {received_interval!r}")
        if remote_interval_cap is not None and not remote_interval_cap > 0:
            raise UsageError(
                f"remote_interval_cap must be > 0 seconds, got {remote_interval_cap!r}"
            )
        self._store = store
        self._interval = interval
        self._received = interval if received_interval is None else received_interval
        self._eager_until = 0.0  # loop time until which received updates get ``interval``
        self._on_durable = on_durable
        self._merge = compact_merge
        self._trusted_merge = trusted_merge
        self._before_commit = before_commit
        self._observer = observer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []  # flushes waiting for the next commit
        self._inflight: list[asyncio.Future[None]] | None = None  # those of the running one
        self._due = False  # the interval of an unflushed notify() has passed
        self._timer: asyncio.TimerHandle | None = None
        self._timer_local = False  # the timer is at a local write's bound (not a remote one's)
        self._remote_cap = remote_interval_cap
        self._pacing = pacing
        self._counted = False  # this committer counts in its pacing's ``running``
        self._to_compact: dict[str, None] = {}  # ordered set of shards waiting for compaction
        self._failures = 0  # consecutive failed commits, for the retry backoff
        self._closing = False
        self._closed: asyncio.Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker thread and the background commit task. Idempotent."""
        if self._closing:
            raise ClosedError("the group committer was closed")
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self._pacing is not None:
            self._pacing.running += 1
            self._counted = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crdtsync-commit")
        self._task = self._loop.create_task(self._run(), name="crdtsync-group-commit")

    async def close(self) -> None:
        """Commit everything pending, then stop the background task and the worker thread.

        Idempotent: callers concurrent with the first all wait for the one shutdown and get
        the final commit's error, if any (the committer is closed anyway; the entries stay
        buffered in the store); later calls return at once. Does not close the store.
        """
        if self._closed is not None:
            if not self._closed.done():
                await asyncio.shield(self._closed)
            return
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._closing = True
        if self._counted and self._pacing is not None:
            self._counted = False
            self._pacing.running -= 1
        error: BaseException | None = None
        try:
            if self._task is not None:
                final = loop.create_future()
                self._waiters.append(final)
                self._wake.set()
                try:
                    await final
                except Exception as e:
                    error = e
                await self._task  # exits after the final commit because _closing is set
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._executor is not None:
                # Idle by now: the final commit ran after everything submitted before it.
                self._executor.shutdown(wait=True)
            if error is None:
                self._closed.set_result(None)
            else:
                self._closed.set_exception(error)
                self._closed.exception()  # retrieved here; later callers get it via shield
        if error is not None:
            raise error

    def _check_running(self) -> asyncio.AbstractEventLoop:
        if self._closing:
            raise ClosedError("the group committer was closed")
        if self._loop is None:
            raise UsageError("GroupCommitter.start() was not awaited")
        return self._loop

    # -- the public operations ------------------------------------------------------------

    def notify(self) -> None:
        """Tell the committer that entries were appended: they are committed within
        ``interval`` seconds even if nobody flushes. Cheap; call it after every append."""
        loop = self._check_running()
        if self._due or (self._timer is not None and self._timer_local):
            return
        when = loop.time() + self._interval
        if self._timer is not None:  # a remote update's, later than ours may be
            if self._timer.when() <= when:
                self._timer_local = True
                return
            self._timer.cancel()
        self._timer = loop.call_at(when, self._on_timer)
        self._timer_local = True

    def notify_remote(self) -> None:
        """:meth:`notify` for entries that came from a peer: committed within
        :attr:`remote_interval` (``interval`` unless ``remote_interval_cap`` was given)."""
        loop = self._check_running()
        if self._timer is None and not self._due:
            self._timer = loop.call_later(self.remote_interval, self._on_timer)
            self._timer_local = False

    @property
    def remote_interval(self) -> float:
        """The bound, in seconds, for what :meth:`notify_remote` announced:
        ``received_interval`` times the running committers sharing our pacing, capped (see
        the module docstring)."""
        cap, pacing, base = self._remote_cap, self._pacing, self._received
        if self._eager_until and self._loop is not None and self._loop.time() < self._eager_until:
            base = self._interval  # a peer waits for our acks (hurry's linger)
        if cap is None or pacing is None or self._loop is None:
            return base
        return pacing.remote_interval(base, cap)

    def hurry(self, linger: float = 0.0) -> None:
        """Commit what is pending now rather than at its bound (someone waits for it to be on
        disk without awaiting :meth:`flush`, e.g. a peer asking for our acks). A no-op once
        closing (the final commit takes everything) or before :meth:`start`.

        ``linger``: for that many seconds after, what :meth:`notify_remote` announces is
        committed within ``interval`` instead of ``received_interval`` (paced as before): a
        peer waiting in ``replicated()`` asks once a second, and what is still on its way
        to us when it asks would otherwise wait the longer bound."""
        if self._closing or self._loop is None:
            return
        if linger > 0.0:
            self._eager_until = max(self._eager_until, self._loop.time() + linger)
        if self._store.pending():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._due = True
            self._wake.set()

    async def flush(self) -> None:
        """Return once everything appended to the store before this call is durable.

        Raises the commit's error (e.g. :class:`~crdtsync.errors.StoreFull`) if it failed;
        the entries then stay buffered for a later commit.
        """
        loop = self._check_running()
        if self._store.pending() == 0:
            # Everything appended so far left the buffer, i.e. was committed. Wait only for a
            # commit still in flight, so that its on_durable callback has run on return.
            if self._inflight is None:
                return
            waiters = self._inflight
        else:
            waiters = self._waiters
        fut = loop.create_future()
        waiters.append(fut)
        self._wake.set()
        await fut

    async def compact(self, name: str) -> ShardStats:
        """Fold everything appended to ``name`` before the call into its snapshot.

        Flushes first (``store.compact`` only folds committed entries), then compacts in the
        worker thread, so never during a commit. Returns the shard's stats afterwards.
        """
        self._check_running()
        if self._merge is None:
            raise UsageError("compact() needs the GroupCommitter's compact_merge")
        await self.flush()
        self._to_compact.pop(name, None)
        return self._observe_compaction(name, await self._gated(name))
