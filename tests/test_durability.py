"""Group commit over a real LMDB store, including durability across SIGKILL of the writer."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from crdtsync.durability import CommitPacing, GroupCommitter
from crdtsync.errors import ClosedError, StoreError, StoreFull, UsageError
from crdtsync.store import Store

ROOT = Path(__file__).resolve().parent.parent


def merge(snapshot: bytes | None, log: list[bytes]) -> bytes:
    """Replay snapshot + log into a fresh Doc and encode it as one update."""
    doc: Doc[Any] = Doc()
    if snapshot is not None:
        doc.apply_update(snapshot)
    for update in log:
        doc.apply_update(update)
    return doc.get_update()


def count_commits(store: Store) -> list[threading.Thread]:
    """Wrap ``store.commit`` to record the thread of every call (one entry per commit)."""
    calls: list[threading.Thread] = []
    real = store.commit

    def commit(upto: int | None = None) -> set[str]:
        calls.append(threading.current_thread())
        return real(upto)

    store.commit = commit  # type: ignore[method-assign]
    return calls


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data", sync=True)
    yield s
    s.close()


async def started(store: Store, **kwargs: object) -> GroupCommitter:
    gc = GroupCommitter(store, **kwargs)  # type: ignore[arg-type]
    await gc.start()
    return gc


async def test_flush_makes_appends_durable_and_reports_them(store: Store) -> None:
    durable: list[tuple[set[str], int]] = []
    gc = await started(
        store,
        interval=10.0,
        on_durable=lambda names: durable.append((names, threading.get_ident())),
    )
    commits = count_commits(store)
    store.append("a", b"1")
    store.put_meta("a", "sv", b"x")
    store.append("b", b"2")
    gc.notify()
    await gc.flush()
    # on_durable ran, in the loop thread, before flush returned.
    assert durable == [({"a", "b"}, threading.get_ident())]
    assert store.pending() == 0
    assert store.stats("a").log_count == 1 and store.load("a").meta == {"sv": b"x"}  # type: ignore[union-attr]
    assert len(commits) == 1 and commits[0] is not threading.current_thread()
    await gc.flush()  # nothing pending: no commit at all
    assert len(commits) == 1
    await gc.close()


async def test_concurrent_flushers_share_commits(store: Store) -> None:
    gc = await started(store, interval=10.0)
    commits = count_commits(store)

    async def writer(i: int) -> None:
        store.append(f"s{i % 7}", i.to_bytes(4, "big"))
        gc.notify()
        await gc.flush()

    await asyncio.gather(*(writer(i) for i in range(200)))
    assert store.pending() == 0
    assert 1 <= len(commits) <= 3, len(commits)  # one commit serves many flushers
    # Writers flushing in waves while commits are in flight still batch.
    for wave in range(5):
        await asyncio.gather(*(writer(1000 + 100 * wave + i) for i in range(100)))
        await asyncio.sleep(0)
    assert len(commits) <= 3 + 5 * 3, len(commits)
    assert sum(store.stats(f"s{k}").log_count for k in range(7)) == 700
    await gc.close()


async def test_unflushed_writes_are_committed_within_the_interval(store: Store) -> None:
    durable: list[set[str]] = []
    gc = await started(store, interval=0.05, on_durable=durable.append)
    store.append("a", b"1")
    gc.notify()
    for _ in range(20):  # more appends within the interval join the same commit
        store.append("a", b"2")
        gc.notify()
    assert store.stats("a").log_count == 0
    await asyncio.sleep(0.2)
    assert store.stats("a").log_count == 21  # a fresh read transaction
    assert store.pending() == 0
    assert durable == [{"a"}]
    await gc.close()


async def test_remote_appends_may_wait_longer_when_agents_share_a_loop(tmp_path: Path) -> None:
    """notify_remote (an update from a peer): within interval x the running committers that
    share its CommitPacing, at most remote_interval_cap; a local notify() after it still gets
    interval; hurry() commits at once; without a cap or a pacing nothing changes."""
    stores = [Store(tmp_path / f"s{i}") for i in range(6)]
    pacing = CommitPacing()
    try:
        plain = await started(stores[0], interval=0.05, pacing=pacing)
        capped = await started(stores[1], interval=0.05, remote_interval_cap=0.12, pacing=pacing)
        assert plain.remote_interval == 0.05  # no cap: as a local write
        assert pacing.running == 2
        assert capped.remote_interval == pytest.approx(0.1)  # 2 committers share the pacing
        more = [
            await started(s, interval=0.05, remote_interval_cap=0.12, pacing=pacing)
            for s in stores[2:5]
        ]
        assert capped.remote_interval == pytest.approx(0.12)  # 5 x 0.05, capped
        # one on the same loop with a pacing of its own (or none) neither counts nor stretches
        alone = await started(stores[5], interval=0.05, remote_interval_cap=0.12)
        assert alone.remote_interval == 0.05 and pacing.running == 5
        await alone.close()
        for gc in more:
            await gc.close()
        assert pacing.running == 2
        assert capped.remote_interval == pytest.approx(0.1)  # closed ones no longer count

        # A local write after a remote one: its own (earlier) bound, not the remote one's.
        loop = asyncio.get_running_loop()
        slow = await started(stores[2], interval=600.0, remote_interval_cap=3600.0, pacing=pacing)
        stores[2].append("a", b"1")
        slow.notify_remote()
        assert slow._timer is not None and slow._timer.when() > loop.time() + 1000  # 3 x 600
        stores[2].append("a", b"2")
        slow.notify()
        assert slow._timer is not None and slow._timer.when() <= loop.time() + 600.0
        # hurry(): committed now, whatever the bounds (no flush awaited)
        durable: list[set[str]] = []
        waiting = await started(
            stores[3], interval=600.0, remote_interval_cap=3600.0, on_durable=durable.append
        )
        stores[3].append("b", b"1")
        waiting.notify_remote()
        waiting.hurry()
        for _ in range(500):
            if durable:
                break
            await asyncio.sleep(0.01)
        assert durable == [{"b"}] and stores[3].pending() == 0
        for gc in (plain, capped, slow, waiting):
            await gc.close()
    finally:
        for s in stores:
            s.close()


async def test_received_interval_is_the_bound_of_remote_appends(tmp_path: Path) -> None:
    """received_interval: the bound of notify_remote (a local notify keeps interval); with a
    pacing and a cap it is what the running committers multiply; it must be positive."""
    stores = [Store(tmp_path / f"s{i}") for i in range(3)]
    pacing = CommitPacing()
    try:
        with pytest.raises(UsageError):
            GroupCommitter(stores[0], interval=0.05, received_interval=0.0)
        loop = asyncio.get_running_loop()
        gc = await started(stores[0], interval=600.0, received_interval=1200.0)
        assert gc.remote_interval == 1200.0
        stores[0].append("a", b"1")
        gc.notify_remote()
        assert gc._timer is not None and gc._timer.when() > loop.time() + 1000
        stores[0].append("a", b"2")
        gc.notify()  # a local write: its own, earlier bound
        assert gc._timer is not None and gc._timer.when() <= loop.time() + 600.0
        # hurry(linger=...): committed now, and received updates get ``interval`` meanwhile
        gc.hurry(linger=3600.0)
        assert gc.remote_interval == 600.0
        gc._eager_until = loop.time() - 1.0  # (the linger is over)
        assert gc.remote_interval == 1200.0
        paced = [
            await started(
                s, interval=0.05, received_interval=0.2, remote_interval_cap=0.5, pacing=pacing
            )
            for s in stores[1:]
        ]
        assert paced[0].remote_interval == pytest.approx(0.4)  # 2 x 0.2
        await paced[1].close()
        assert paced[0].remote_interval == pytest.approx(0.2)  # never below received_interval
        paced[0].hurry(linger=3600.0)
        assert paced[0].remote_interval == pytest.approx(0.05)  # interval, paced (1 running)
        for c in (gc, paced[0]):
            await c.close()
    finally:
        for s in stores:
            s.close()


async def test_commit_failure_reaches_every_flusher_and_the_task_survives(
    store: Store,
) -> None:
    gc = await started(store, interval=10.0)
    real = store.commit
    failures = [StoreError("injected failure")]

    def flaky_commit(upto: int | None = None) -> set[str]:
        if failures:
            raise failures.pop()
        return real(upto)

    store.commit = flaky_commit  # type: ignore[method-assign]
    store.append("a", b"1")
    results = await asyncio.gather(*(gc.flush() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, StoreError) and "injected" in str(r) for r in results), results
    assert store.pending() == 1  # still buffered
    await gc.flush()  # the background task is alive and the next commit works
    assert store.pending() == 0 and store.stats("a").log_count == 1
    await gc.close()


async def test_background_commit_failure_is_retried(store: Store) -> None:
    gc = await started(store, interval=0.02)
    real = store.commit
    failures = [StoreError("injected failure")]

    def flaky_commit(upto: int | None = None) -> set[str]:
        if failures:
            raise failures.pop()
        return real(upto)

    store.commit = flaky_commit  # type: ignore[method-assign]
    store.append("a", b"1")
    gc.notify()
    await asyncio.sleep(0.3)  # failed once, then retried after a backoff
    assert not failures
    assert store.pending() == 0 and store.stats("a").log_count == 1
    await gc.close()


async def test_store_full_propagates_and_recovers(tmp_path: Path) -> None:
    store = Store(tmp_path, map_size=64 << 10, max_map_size=1 << 20)
    gc = await started(store, interval=10.0)
    store.append("ok", b"first")
    await gc.flush()
    store.append("huge", os.urandom(2 << 20))
    store.append("ok", b"second")
    results = await asyncio.gather(*(gc.flush() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, StoreFull) for r in results), results
    assert store.pending() == 2
    store.delete_shard("huge")
    await gc.flush()
    assert store.load("ok").log == [b"first", b"second"]  # type: ignore[union-attr]
    await gc.close()
    store.close()


class ThreadRecordingMerge:
    def __init__(self) -> None:
        self.threads: set[int] = set()

    def __call__(self, snapshot: bytes | None, log: list[bytes]) -> bytes:
        self.threads.add(threading.get_ident())
        return merge(snapshot, log)


async def test_automatic_compaction_after_commits(tmp_path: Path) -> None:
    store = Store(tmp_path, sync=False, compact_min_log_count=10)
    recording = ThreadRecordingMerge()
    gc = await started(store, interval=10.0, compact_merge=recording)
    commits = count_commits(store)
    doc: Doc[Any] = Doc()
    m = doc.get("m", type=Map)
    for i in range(55):
        before = doc.get_state()
        m[f"k{i % 8}"] = i
        store.append("s", doc.get_update(before))
        gc.notify()
        await gc.flush()
    await gc.close()  # lets a compaction queued by the last commit finish or be skipped
    stats = store.stats("s")
    assert stats.last_compaction is not None and stats.snapshot_bytes > 0
    assert stats.log_count < 10 + 1
    assert stats.total_updates == 55
    assert recording.threads and threading.get_ident() not in recording.threads
    assert {commits[0].ident} == recording.threads  # the worker thread that commits
    loaded = store.load("s")
    assert loaded is not None
    rebuilt: Doc[Any] = Doc()
    rebuilt.apply_update(loaded.snapshot)  # type: ignore[arg-type]
    for u in loaded.log:
        rebuilt.apply_update(u)
    assert dict(rebuilt.get("m", type=Map)) == dict(m)
    store.close()


async def test_compact_on_demand(store: Store) -> None:
    gc = await started(store, compact_merge=merge)
    doc: Doc[Any] = Doc()
    m = doc.get("m", type=Map)
    for i in range(5):
        before = doc.get_state()
        m["x"] = i
        store.append("s", doc.get_update(before))
        if i == 2:
            await gc.flush()
    stats = await gc.compact("s")  # flushes the last two first, then folds all five
    assert stats.log_count == 0 and stats.snapshot_bytes > 0 and stats.total_updates == 5
    assert store.pending() == 0
    loaded = store.load("s")
    assert loaded is not None and loaded.log == [] and loaded.snapshot is not None
    rebuilt: Doc[Any] = Doc()
    rebuilt.apply_update(loaded.snapshot)
    assert dict(rebuilt.get("m", type=Map)) == {"x": 4.0}
    await gc.close()
    no_merge = await started(store)
    with pytest.raises(Exception, match="compact_merge"):
        await no_merge.compact("s")
    await no_merge.close()


async def test_close_commits_everything_then_refuses(store: Store) -> None:
    gc = await started(store, interval=10.0)
    store.append("a", b"1")
    gc.notify()
    store.append("a", b"2")  # appended but never notified: close still commits it
    await asyncio.gather(gc.close(), gc.close())
    await gc.close()
    assert store.pending() == 0 and store.stats("a").log_count == 2
    with pytest.raises(ClosedError):
        await gc.flush()
    with pytest.raises(ClosedError):
        gc.notify()
    with pytest.raises(ClosedError):
        await gc.compact("a")
    with pytest.raises(ClosedError):
        await gc.start()


async def test_close_raises_a_failing_final_commit(tmp_path: Path) -> None:
    store = Store(tmp_path, map_size=64 << 10, max_map_size=256 << 10)
    gc = await started(store)
    store.append("huge", os.urandom(1 << 20))
    with pytest.raises(StoreFull):
        await gc.close()
    await gc.close()  # already closed: the error was reported once
    assert store.pending() == 1
    store.close()


# -- durability across SIGKILL ------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from crdtsync.durability import GroupCommitter
    from crdtsync.store import Store

    async def main(data_dir: str, first: int) -> None:
        store = Store(data_dir, map_size=1 << 20)
        gc = GroupCommitter(store, interval=0.01)
        await gc.start()
        counter = iter(range(first, first + 10**6))

        async def writer(w: int) -> None:
            while True:
                seq = next(counter)
                store.append(f"w{w}", seq.to_bytes(8, "big") * 8)
                gc.notify()
                await gc.flush()
                sys.stdout.write(f"{seq}\\n")  # acknowledged: durable
                sys.stdout.flush()

        await asyncio.gather(*(writer(w) for w in range(4)))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run_and_kill(data_dir: Path, first: int, rng: random.Random) -> set[int]:
    """Start a writer, SIGKILL it at a random moment, return every seq it acknowledged."""
    target = rng.randint(1, 120)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir), str(first)],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    acked: set[int] = set()
    try:
        while len(acked) < target:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early: {child.stderr.read()}")
            acked.add(int(line))
        time.sleep(rng.uniform(0, 0.02))  # land anywhere: mid-append, mid-fsync, mid-print
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        acked.update(int(line) for line in child.stdout.read().split())  # printed before death
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return acked


def _check_store(data_dir: Path) -> set[int]:
    with Store(data_dir) as store:  # reopens at once: the lock died with the child
        stored: set[int] = set()
        for name in store.shard_names():
            loaded = store.load(name)
            assert loaded is not None
            seqs = [int.from_bytes(u[:8], "big") for u in loaded.log]
            assert all(u == u[:8] * 8 for u in loaded.log)  # no torn entries
            assert seqs == sorted(seqs)  # each writer's entries in its order
            assert len(seqs) == loaded.stats.log_count == loaded.stats.total_updates
            stored.update(seqs)
        return stored


class _Heard:
    """An Observer that records what the group committer tells it, and in which thread."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def committed(self, seconds: float, writes: Any) -> None:
        self.events.append(("commit", seconds, dict(writes), threading.get_ident()))

    def compacted(self, shard: str, seconds: float, before: int, after: int) -> None:
        self.events.append(("compact", shard, before, after, threading.get_ident()))

    def closed(self, code: int, by: str) -> None:  # pragma: no cover - not a committer event
        raise AssertionError("the committer closes no connection")


async def test_the_observer_hears_each_commit_and_compaction(store: Store) -> None:
    heard = _Heard()
    gc = await started(store, interval=10.0, compact_merge=merge, observer=heard)
    doc: Doc[Any] = Doc()
    m = doc.get("m", type=Map)
    sizes = []
    for i in range(3):
        before = doc.get_state()
        m["x"] = i
        update = doc.get_update(before)
        sizes.append(len(update))
        store.append("s", update)
    store.append("t", b"\x00\x00")  # (any bytes: the store does not parse them)
    store.put_meta("u", "sv", b"x")  # metadata only: a shard touched, no update
    await gc.flush()
    ((kind, seconds, writes, thread),) = heard.events
    assert kind == "commit" and seconds > 0 and thread == threading.get_ident()
    assert writes == {"s": (3, sum(sizes)), "t": (1, 2), "u": (0, 0)}
    await gc.flush()  # nothing pending: no commit, nothing heard
    stats = await gc.compact("s")
    assert heard.events[-1][:4] == ("compact", "s", sum(sizes), stats.snapshot_bytes)
    assert heard.events[-1][4] == threading.get_ident()
    await gc.compact("s")  # an empty log is not compacted: not heard
    assert [e[0] for e in heard.events] == ["commit", "compact"]
    await gc.close()


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    all_acked: set[int] = set()
    t0 = time.monotonic()
    for round_ in range(5):
        acked = _run_and_kill(tmp_path, round_ * 10**6, rng)
        all_acked |= acked
        stored = _check_store(tmp_path)
        missing = all_acked - stored
        assert not missing, f"seed {seed}: acknowledged but lost: {sorted(missing)[:10]}"
    assert time.monotonic() - t0 < 30


def test_durable_state_of_a_reopened_shard_is_what_was_loaded(tmp_path: Path) -> None:
    """A reopened shard computes its durable (state vector, delete set) only when first read
    (issue 17: the delete set walks every item). Read before any change, or after changes
    not yet committed (deletions of loaded items, items made and deleted since, a peer's
    update), it is exactly what was on disk; after the next commit, the new state."""
    from pycrdt import Doc, Text

    from crdtsync import Agent, updates
    from crdtsync.yjs.state import decode_state_vector

    async def go() -> None:
        async with Agent("a", data_dir=tmp_path / "a") as agent:
            shard = await agent.shard("s")
            text = shard.text("t")
            text += "hello brave new world"
            for i in range(20):
                shard[f"k{i % 4}"] = i  # overwritten keys: deleted items
            with shard.transaction():
                del text[5:11]
            await shard.flush()
            on_disk = shard.durable_state
            assert on_disk == (updates.state_vector(shard.doc), updates.delete_set(shard.doc))

        # read before any change
        async with Agent("a", data_dir=tmp_path / "a") as agent:
            shard = await agent.shard("s")
            assert shard._durable is None  # not computed at open
            assert shard.durable_state == on_disk

        # read after changes that are not committed yet
        peer: Doc[Any] = Doc()
        peer["x"] = Text("from a peer")
        async with Agent("a", data_dir=tmp_path / "a") as agent:
            shard = await agent.shard("s")
            text = shard.text("t")
            with shard.transaction():
                del text[0:3]  # loaded items
                text.insert(0, "abc")
                del text[1:2]  # an item made since, deleted since
                shard["k1"] = "changed"
            text += "!"
            shard.apply_remote(peer.get_update(), "peer")
            sv, ds = shard.durable_state  # no await since: nothing committed
            assert ds == on_disk[1]
            assert decode_state_vector(sv) == decode_state_vector(on_disk[0])
            await shard.flush()
            assert shard.durable_state == (
                updates.state_vector(shard.doc),
                updates.delete_set(shard.doc),
            )

    asyncio.run(go())
