"""The LMDB store, on real LMDB files: layout, reopen, compaction, locking and map growth."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Map

from crdtsync.errors import (
    ClosedError,
    DataDirLocked,
    InvalidShardName,
    StoreError,
    StoreFull,
)
from crdtsync.store import LoadedShard, ShardStats, Store

ROOT = Path(__file__).resolve().parent.parent


def merge(snapshot: bytes | None, log: list[bytes]) -> bytes:
    """Replay snapshot + log into a fresh Doc and encode it as one update."""
    doc: Doc[Any] = Doc()
    if snapshot is not None:
        doc.apply_update(snapshot)
    for update in log:
        doc.apply_update(update)
    return doc.get_update()


def rebuild(loaded: LoadedShard | None) -> dict[str, object]:
    """The Map "m" of the doc rebuilt from a loaded shard."""
    assert loaded is not None
    doc: Doc[Any] = Doc()
    if loaded.snapshot is not None:
        doc.apply_update(loaded.snapshot)
    for update in loaded.log:
        doc.apply_update(update)
    return dict(doc.get("m", type=Map))


class Source:
    """A pycrdt doc whose every change is captured as one incremental update."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.map = self.doc.get("m", type=Map)

    def set(self, key: str, value: int) -> bytes:
        before = self.doc.get_state()
        self.map[key] = value
        return self.doc.get_update(before)

    def delete(self, key: str) -> bytes:
        before = self.doc.get_state()
        if key in self.map:
            del self.map[key]
        return self.doc.get_update(before)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data", sync=False)
    yield s
    s.close()


# -- round trips ------------------------------------------------------------------------


def test_append_commit_load_round_trip(store: Store) -> None:
    assert store.load("a") is None
    assert store.shard_names() == []
    store.append("a", b"one")
    store.append("a", bytearray(b"two"))  # type: ignore[arg-type]
    store.put_meta("a", "sv", b"\x01")
    store.append("b", b"")
    assert store.pending() == 4
    assert store.load("a") is None  # buffered only
    assert store.commit() == {"a", "b"}
    assert store.pending() == 0
    assert store.commit() == set()

    loaded = store.load("a")
    assert loaded == LoadedShard(
        snapshot=None,
        log=[b"one", b"two"],
        meta={"sv": b"\x01"},
        stats=ShardStats("a", 2, 6, 0, 2, None),
    )
    assert store.load("b") is not None and store.load("b").log == [b""]  # type: ignore[union-attr]
    assert store.shard_names() == ["a", "b"]
    assert store.stats("a") == loaded.stats


def test_meta_only_shard_exists_and_meta_overwrites(store: Store) -> None:
    store.put_meta("m", "k", b"1")
    store.put_meta("m", "k", b"2")
    store.put_meta("m", "other", b"x")
    store.commit()
    store.put_meta("m", "k", b"3")
    store.commit()
    loaded = store.load("m")
    assert loaded is not None
    assert loaded.meta == {"k": b"3", "other": b"x"}
    assert loaded.log == [] and loaded.stats.total_updates == 0
    assert store.shard_names() == ["m"]


def test_stats_of_unknown_shard_are_zero(store: Store) -> None:
    assert store.stats("nope") == ShardStats("nope", 0, 0, 0, 0, None)
    assert not store.needs_compaction("nope")
    assert store.compact("nope", merge) == ShardStats("nope", 0, 0, 0, 0, None)


def test_reopen_keeps_everything_and_seq_continues(tmp_path: Path) -> None:
    with Store(tmp_path, sync=True) as s:
        for i in range(5):
            s.append("x", bytes([i]))
        s.put_meta("x", "k", b"v")
        s.commit()
        s.compact("x", lambda snap, log: b"".join(log))
        s.append("x", b"\x05")
        s.commit()
    with Store(tmp_path) as s:
        loaded = s.load("x")
        assert loaded is not None
        assert loaded.snapshot == bytes(range(5))
        assert loaded.log == [b"\x05"]
        assert loaded.meta == {"k": b"v"}
        assert loaded.stats.total_updates == 6
        s.append("x", b"\x06")
        s.commit()
        assert s.load("x").log == [b"\x05", b"\x06"]  # type: ignore[union-attr]
        assert s.stats("x").total_updates == 7


def test_names_that_prefix_each_other_do_not_collide(store: Store) -> None:
    names = ["a", "a/b", "ab", "a.b", "a:b", "a-b", "a/b/c", "a0", "b"]
    for round_ in range(3):
        for n in names:
            store.append(n, f"{n}#{round_}".encode())
            store.put_meta(n, "k", n.encode())
        store.commit()
    store.put_meta("a", "k\x00x", b"nul in meta key")  # meta keys may hold anything
    store.commit()
    assert store.shard_names() == sorted(names, key=str.encode)
    for n in names:
        loaded = store.load(n)
        assert loaded is not None
        assert loaded.log == [f"{n}#{r}".encode() for r in range(3)]
        expected_meta = {"k": n.encode()}
        if n == "a":
            expected_meta["k\x00x"] = b"nul in meta key"
        assert loaded.meta == expected_meta
    store.compact("a", lambda snap, log: b"A")
    store.delete_shard("a/b")
    assert store.load("a/b") is None
    assert store.load("a").log == [] and store.load("a").snapshot == b"A"  # type: ignore[union-attr]
    for n in names:
        if n not in ("a", "a/b"):
            assert store.load(n).log == [f"{n}#{r}".encode() for r in range(3)]  # type: ignore[union-attr]


@pytest.mark.parametrize("stated", [0, 2, 4, 9])
def test_stats_that_disagree_with_the_log_never_lose_or_borrow_entries(
    store: Store, stated: int
) -> None:
    """Loading and compaction read a log by the count in its stats (issue 17): if that count
    were wrong, they must still read exactly this shard's entries, and compaction must fold
    and delete exactly those (never a neighbour's, never leave one behind)."""
    from crdtsync._store_format import _stats_to

    for n in ("a", "a/b", "b"):
        for i in range(4):
            store.append(n, f"{n}#{i}".encode())
    store.commit()
    with store._env.begin(write=True) as txn:
        txn.put(b"a", _stats_to(ShardStats("a", stated, 0, 0, 4, None)), db=store._stats)
    everything = [f"a#{i}".encode() for i in range(4)]
    assert store.load("a").log == everything  # type: ignore[union-attr]
    folded: list[list[bytes]] = []

    def merge(snap: bytes | None, log: list[bytes]) -> bytes:
        folded.append(log)
        return b"A"

    if stated:  # (a shard whose stats say 0 entries is not compacted at all)
        store.compact("a", merge)
        assert folded == [everything]
        assert store.load("a").log == []  # type: ignore[union-attr]
    for n in ("a/b", "b"):
        assert store.load(n).log == [f"{n}#{i}".encode() for i in range(4)]  # type: ignore[union-attr]


def test_invalid_names_and_values_are_refused(store: Store) -> None:
    for bad in ["", "a\x00b", "/a", "a//b", "a/", "x" * 129, "é"]:
        with pytest.raises(InvalidShardName):
            store.append(bad, b"")
    with pytest.raises(TypeError):
        store.append("a", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.put_meta("a", b"k", b"")  # type: ignore[arg-type]
    assert store.pending() == 0


def test_delete_shard_drops_its_buffered_entries(store: Store) -> None:
    store.append("gone", b"1")
    store.put_meta("gone", "k", b"v")
    store.append("kept", b"1")
    store.commit()
    store.append("gone", b"2")
    store.append("kept", b"2")
    store.delete_shard("gone")
    store.delete_shard("never-existed")
    assert store.pending() == 1
    assert store.commit() == {"kept"}
    assert store.load("gone") is None
    assert store.shard_names() == ["kept"]
    assert store.load("kept").log == [b"1", b"2"]  # type: ignore[union-attr]


def test_closed_store_refuses_everything(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.close()
    s.close()  # idempotent
    assert s.closed
    for call in (
        lambda: s.append("a", b""),
        lambda: s.put_meta("a", "k", b""),
        s.commit,
        s.shard_names,
        lambda: s.load("a"),
        lambda: s.stats("a"),
        lambda: s.compact("a", merge),
        lambda: s.delete_shard("a"),
    ):
        with pytest.raises(ClosedError):
            call()


def test_appends_from_one_thread_while_another_commits(store: Store) -> None:
    n = 20_000
    done = threading.Event()
    commits = 0

    def committer() -> None:
        nonlocal commits
        while not done.is_set():
            if store.commit():
                commits += 1

    t = threading.Thread(target=committer)
    t.start()
    try:
        for i in range(n):
            store.append(f"s{i % 3}", i.to_bytes(4, "big"))
            if i % 1000 == 0:
                time.sleep(0.001)  # let the committer in between
    finally:
        done.set()
        t.join()
    store.commit()
    assert commits > 1
    for k in range(3):
        log = store.load(f"s{k}").log  # type: ignore[union-attr]
        assert [int.from_bytes(u, "big") for u in log] == list(range(k, n, 3))


# -- compaction ---------------------------------------------------------------------------

_key = st.sampled_from("abcde")
_op = st.one_of(
    st.tuples(st.just("set"), _key, st.integers(-5, 5)),
    st.tuples(st.just("del"), _key),
    st.tuples(st.just("commit")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("reopen")),
)


@given(ops=st.lists(_op, max_size=60))
def test_compaction_keeps_exactly_the_state(ops: list[tuple[Any, ...]]) -> None:
    """Random Map edits with commits, compactions and reopens anywhere: a doc rebuilt from
    the compacted store equals one rebuilt from a store that never compacts (and the source)."""
    source = Source()
    with tempfile.TemporaryDirectory() as tmp:
        compacted = Store(Path(tmp) / "c", sync=False)
        plain = Store(Path(tmp) / "p", sync=False)
        try:
            for op in ops:
                if op[0] in ("set", "del"):
                    u = source.set(op[1], op[2]) if op[0] == "set" else source.delete(op[1])
                    compacted.append("s", u)
                    plain.append("s", u)
                elif op[0] == "commit":
                    compacted.commit()
                elif op[0] == "compact":
                    before = compacted.pending()
                    stats = compacted.compact("s", merge)
                    assert compacted.pending() == before  # buffered entries untouched
                    assert stats.log_count == 0
                else:  # reopen: what was committed survives, the rest is re-appended
                    compacted.commit()
                    compacted.close()
                    compacted = Store(Path(tmp) / "c", sync=False)
            compacted.commit()
            plain.commit()
            expected = dict(source.map)
            if plain.load("s") is None:
                assert compacted.load("s") is None
                return
            assert rebuild(compacted.load("s")) == rebuild(plain.load("s")) == expected
            c, p = compacted.stats("s"), plain.stats("s")
            assert c.total_updates == p.total_updates == p.log_count
        finally:
            compacted.close()
            plain.close()


def test_compaction_leaves_pending_entries_for_after_the_snapshot(store: Store) -> None:
    src = Source()
    u1, u2 = src.set("x", 1), src.set("y", 2)
    store.append("s", u1)
    store.append("s", u2)
    store.commit()
    u3 = src.delete("x")
    store.append("s", u3)  # not committed yet
    seen: list[tuple[bytes | None, list[bytes]]] = []

    def recording_merge(snapshot: bytes | None, log: list[bytes]) -> bytes:
        seen.append((snapshot, list(log)))
        return merge(snapshot, log)

    t0 = time.time()
    stats = store.compact("s", recording_merge)
    assert seen == [(None, [u1, u2])]
    assert stats.log_count == 0 and stats.log_bytes == 0 and stats.snapshot_bytes > 0
    assert stats.total_updates == 2
    assert stats.last_compaction is not None and t0 <= stats.last_compaction <= time.time()
    assert store.pending() == 1
    store.commit()
    loaded = store.load("s")
    assert loaded is not None and loaded.log == [u3] and loaded.stats.total_updates == 3
    assert rebuild(loaded) == {"y": 2.0} == dict(src.map)
    # A second compaction folds the new log entry into the existing snapshot.
    store.compact("s", recording_merge)
    assert seen[-1][0] == loaded.snapshot and seen[-1][1] == [u3]
    assert rebuild(store.load("s")) == {"y": 2.0}


def test_failing_merge_changes_nothing(store: Store) -> None:
    src = Source()
    store.append("s", src.set("a", 1))
    store.put_meta("s", "k", b"v")
    store.commit()
    store.compact("s", merge)
    store.append("s", src.set("b", 2))
    store.commit()
    store.append("s", src.set("c", 3))  # pending
    before = store.load("s")

    def broken(snapshot: bytes | None, log: list[bytes]) -> bytes:
        raise RuntimeError("merge failed")

    with pytest.raises(RuntimeError, match="merge failed"):
        store.compact("s", broken)
    with pytest.raises(TypeError):
        store.compact("s", lambda snap, log: None)  # type: ignore[arg-type,return-value]
    assert store.load("s") == before
    assert store.pending() == 1


def test_needs_compaction_policy(tmp_path: Path) -> None:
    with Store(tmp_path, compact_min_log_count=3, compact_log_ratio=1.0) as s:
        s.append("s", b"x" * 10)
        s.append("s", b"x" * 10)
        s.commit()
        assert not s.needs_compaction("s")  # too few entries
        s.append("s", b"x" * 10)
        s.commit()
        assert s.needs_compaction("s")  # 3 entries, 30 log bytes > 0 snapshot bytes
        s.compact("s", lambda snap, log: b"S" * 100)
        assert not s.needs_compaction("s")
        for _ in range(5):
            s.append("s", b"x" * 10)
        s.commit()
        assert not s.needs_compaction("s")  # 50 log bytes < 100 snapshot bytes
        for _ in range(6):
            s.append("s", b"x" * 10)
        s.commit()
        assert s.needs_compaction("s")  # 110 > 100


# -- locking ------------------------------------------------------------------------------


def test_second_store_in_same_process_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "d"):
        with pytest.raises(DataDirLocked) as info:
            Store(tmp_path / "d")
        assert str(tmp_path / "d") in str(info.value)
        assert str(os.getpid()) in str(info.value)
        # A different directory is fine.
        Store(tmp_path / "other").close()
    Store(tmp_path / "d").close()  # the lock was released


def test_second_process_is_refused_quickly(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from crdtsync.errors import DataDirLocked
        from crdtsync.store import Store
        try:
            Store(sys.argv[1])
        except DataDirLocked as e:
            print(e)
            sys.exit(3)
        sys.exit(0)
        """
    )
    with Store(tmp_path):
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        elapsed = time.monotonic() - t0
    assert r.returncode == 3, r.stderr
    assert str(tmp_path) in r.stdout
    assert f"process {os.getpid()}" in r.stdout
    assert elapsed < 10


def test_lock_dies_with_its_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from crdtsync.store import Store
        Store(sys.argv[1])
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        with pytest.raises(DataDirLocked, match=f"process {child.pid}"):
            Store(tmp_path)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    Store(tmp_path).close()


# -- map growth ---------------------------------------------------------------------------


def test_map_grows_from_tiny(tmp_path: Path) -> None:
    with Store(tmp_path, map_size=64 << 10, max_map_size=64 << 20, sync=False) as s:
        assert s.map_size() == 64 << 10
        s.append("big", os.urandom(1 << 20))  # one 1 MiB update
        s.commit()
        for _ in range(100):
            s.append("mid", os.urandom(20_000))
        s.commit()
        for i in range(2000):
            s.append(f"small{i % 10}", os.urandom(1000))
        s.commit()
        assert s.map_size() >= 4 << 20
        assert s.stats("big").log_bytes == 1 << 20
        assert s.stats("mid").log_count == 100
        assert sum(s.stats(f"small{k}").log_count for k in range(10)) == 2000
    with Store(tmp_path, map_size=64 << 10) as s:  # an existing bigger map keeps its size
        assert s.map_size() > 4 << 20  # LMDB takes at least the used size
        assert len(s.load("mid").log) == 100  # type: ignore[union-attr]


def test_store_full_keeps_buffered_entries(tmp_path: Path) -> None:
    with Store(tmp_path, map_size=64 << 10, max_map_size=1 << 20, sync=False) as s:
        for _ in range(10):
            s.append("ok", os.urandom(10_000))
        s.commit()
        s.append("huge", os.urandom(2 << 20))
        s.append("ok", b"after")
        with pytest.raises(StoreFull) as info:
            s.commit()
        assert isinstance(info.value, StoreError)
        assert type(info.value.__cause__).__name__ == "MapFullError"
        assert "max_map_size" in str(info.value)
        assert s.pending() == 2  # nothing dropped
        assert s.map_size() == 1 << 20
        with pytest.raises(StoreFull):
            s.commit()
        assert s.pending() == 2
        # Still usable: reads work, and dropping the oversized shard lets the rest commit.
        assert s.stats("ok").log_count == 10
        assert s.load("huge") is None
        s.delete_shard("huge")
        assert s.commit() == {"ok"}
        assert s.load("ok").log[-1] == b"after"  # type: ignore[union-attr]
        assert s.stats("ok").log_count == 11


def _directory_fsyncs(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> list[str]:
    """Record every fsync of ``data_dir`` itself (the directory, not its files)."""
    seen: list[str] = []
    real_fsync, real_open = os.fsync, os.open
    dir_fds: set[int] = set()

    def opening(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_DIRECTORY and os.path.realpath(path) == os.path.realpath(data_dir):
            dir_fds.add(fd)
        else:
            dir_fds.discard(fd)
        return fd

    def syncing(fd: int) -> None:
        if fd in dir_fds:
            seen.append("dir")
        real_fsync(fd)

    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "fsync", syncing)
    return seen


def test_directory_synced_once_per_open_before_its_first_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data directory's entry is fsynced before the first commit of each open (or at
    close if the open never wrote), not while a new store is created: an agent's start does
    not wait for it (issue 17), and a commit that returned is still durable with its file."""
    data_dir = tmp_path / "store"
    seen = _directory_fsyncs(monkeypatch, data_dir)
    store = Store(data_dir)
    assert seen == []  # creating the store does not wait for the directory
    store.append("s", b"one")
    store.commit()
    assert seen == ["dir"]  # before the first commit returned
    store.append("s", b"two")
    store.commit()
    assert seen == ["dir"]  # once per open
    store.close()
    assert seen == ["dir"]
    with Store(data_dir) as again:  # reopened and closed without a write: paid at close
        assert seen == ["dir"]
        assert again.load("s").log == [b"one", b"two"]  # type: ignore[union-attr]
    assert seen == ["dir", "dir"]
    with Store(data_dir, sync=False) as unsynced:  # sync=False never fsyncs the directory
        unsynced.append("s", b"three")
        unsynced.commit()
    assert seen == ["dir", "dir"]


def test_new_store_creates_its_databases_with_its_first_commit(tmp_path: Path) -> None:
    """Opening a new store commits nothing (issue 17: no fsync in an agent's start); it reads
    as empty, reopens as new if it never committed, and its first commit creates the
    databases with the data, also when that commit first failed (the map full)."""
    import lmdb

    def databases(path: Path) -> int:
        env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=8)
        try:
            return int(env.stat()["entries"])  # named databases live in the main one
        finally:
            env.close()

    data_dir = tmp_path / "store"
    with Store(data_dir) as store:
        assert store.shard_names() == [] and store.load("s") is None
        assert store.stats("s").log_count == 0 and store.meta_values("k") == {}
        store.space()  # (reads every database handle)
    assert databases(data_dir) == 0  # nothing was committed
    with Store.open_readonly(data_dir) as readonly:  # an inspector sees an empty store
        assert readonly.shard_names() == []

    with Store(data_dir, map_size=64 << 10, max_map_size=1 << 20, sync=False) as store:
        store.append("huge", os.urandom(2 << 20))
        store.append("ok", b"one")
        with pytest.raises(StoreFull):
            store.commit()  # the first write failed: the store stays new, and readable
        assert store.shard_names() == [] and store.load("ok") is None
        store.delete_shard("huge")  # (a write: creates the databases)
        assert store.commit() == {"ok"}
        assert store.load("ok").log == [b"one"]  # type: ignore[union-attr]
    assert databases(data_dir) == 5
    with Store(data_dir) as store:
        assert store.load("ok").log == [b"one"]  # type: ignore[union-attr]
