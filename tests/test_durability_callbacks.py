"""The timer's commit run as plain callbacks (``_CommitTask._on_timer``), against the task's.

A commit that only its timer asked for, while the task sleeps, starts in the timer's callback
and ends in one ``call_soon_threadsafe`` from the worker thread; flushes, hurries, the close
and compactions that arrive meanwhile wait for it and are then served by the task, as the
module docstring of :mod:`crdtsync.durability` says.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdtsync.durability import GroupCommitter
from crdtsync.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data", sync=True)
    yield s
    s.close()


def count_task_commits(gc: GroupCommitter) -> list[int]:
    """Count the commits the task runs (``_commit_once``), not those by callback."""
    calls: list[int] = []
    real = gc._commit_once

    async def commit_once() -> None:
        calls.append(1)
        await real()

    gc._commit_once = commit_once  # type: ignore[method-assign]
    return calls


def gate_commits(store: Store) -> tuple[threading.Event, threading.Event]:
    """Make ``store.commit`` wait (in the worker) until released; say when one started."""
    started, release = threading.Event(), threading.Event()
    real = store.commit

    def commit(upto: int | None = None) -> set[str]:
        started.set()
        assert release.wait(10)
        return real(upto)

    store.commit = commit  # type: ignore[method-assign]
    return started, release


async def wait_for(event: threading.Event) -> None:
    for _ in range(500):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the commit did not start")


async def test_a_timer_commit_runs_by_callback_and_reports_in_the_loop_thread(
    store: Store,
) -> None:
    durable: list[tuple[set[str], int]] = []
    gc = GroupCommitter(
        store, interval=0.02, on_durable=lambda n: durable.append((n, threading.get_ident()))
    )
    await gc.start()
    task_commits = count_task_commits(gc)
    store.append("a", b"1")
    gc.notify()
    await asyncio.sleep(0.3)
    assert store.pending() == 0 and store.stats("a").log_count == 1
    assert durable == [({"a"}, threading.get_ident())]
    assert task_commits == []  # the timer's commit did not go through the task
    await gc.close()
    assert task_commits == [1]  # the final commit did


async def test_a_flush_during_a_callback_commit_waits_for_the_next(store: Store) -> None:
    durable: list[set[str]] = []
    gc = GroupCommitter(store, interval=0.02, on_durable=durable.append)
    await gc.start()
    task_commits = count_task_commits(gc)
    started, release = gate_commits(store)
    store.append("a", b"1")
    gc.notify()
    await wait_for(started)  # the callback commit is in the worker, holding "a"
    store.append("b", b"2")
    flush = asyncio.ensure_future(gc.flush())
    gc.hurry()
    await asyncio.sleep(0.05)
    assert not flush.done() and durable == []
    release.set()
    await asyncio.wait_for(flush, 5)
    assert durable == [{"a"}, {"b"}]  # the callback's commit, then the task's for the flush
    assert task_commits == [1]
    assert store.stats("b").log_count == 1 and store.pending() == 0
    await gc.close()


async def test_close_during_a_callback_commit_commits_everything(store: Store) -> None:
    gc = GroupCommitter(store, interval=0.02)
    await gc.start()
    started, release = gate_commits(store)
    store.append("a", b"1")
    gc.notify()
    await wait_for(started)
    store.append("a", b"2")
    closing = asyncio.ensure_future(gc.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    release.set()
    await asyncio.wait_for(closing, 5)
    assert store.pending() == 0 and store.stats("a").log_count == 2
    assert gc._task is not None and gc._task.done()
