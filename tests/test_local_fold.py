"""A shard's own writes since its last group commit are stored as one log entry (issue 17's
fanout burst): ``Store.fold_tail``, ``squash_own``, ``Shard.capture`` and ``Store.commit(upto)``.

What must hold: the store then holds what the writes hold (a reopen, trusted or validated,
gives the same document and digest), other shards' entries and remote updates keep their
place, a light writer keeps one entry per write, and nothing is folded while a commit holds
the store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pycrdt

from crdtsync import Agent, updates
from crdtsync._shard_durable import FOLD_AT, FOLD_MAX_DELETING
from crdtsync.shard import load_doc
from crdtsync.store import Store
from crdtsync.yjs.doc import squash_own


def _map_writes(doc: pycrdt.Doc[Any], keys: list[str]) -> list[bytes]:
    """One transaction per key (an overwrite where the key was set before); their deltas."""
    m = doc.get("m", type=pycrdt.Map)
    deltas: list[bytes] = []
    sub = doc.observe(lambda e: deltas.append(e.update))
    for i, k in enumerate(keys):
        m[k] = i
    doc.unobserve(sub)
    return deltas


def test_squash_own_holds_exactly_the_writes_with_their_deletions() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    before = _map_writes(doc, [f"k{i}" for i in range(30)])
    run = _map_writes(doc, [f"k{i % 40}" for i in range(100)])  # overwrites: deletions
    folded = squash_own(doc, run)
    assert folded is not None and len(folded) < sum(map(len, run))
    again: pycrdt.Doc[Any] = pycrdt.Doc()
    for u in (*before, folded):
        again.apply_update(u)
    assert updates.digest(again) == updates.digest(doc)
    assert (
        updates.validate_update(folded).delete_set
        == updates.validate_update(updates.merge_updates(run)).delete_set
    )


def test_squash_own_refuses_another_clients_delta() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    mine = _map_writes(doc, ["a", "b"])
    theirs = _map_writes(other, ["c"])
    doc.apply_update(theirs[0])
    assert squash_own(doc, [*mine, theirs[0]]) is None
    assert updates.squash_local(doc, [*mine, theirs[0]]) == updates.merge_updates(
        [*mine, theirs[0]]
    )


def _entries(store: Store) -> list[tuple[str, bytes]]:
    return [(name, value) for name, key, value in store._buf if key is None]


def test_fold_tail_replaces_only_the_runs_own_tail(tmp_path: Path) -> None:
    with Store(tmp_path / "s", sync=False) as store:
        for u in (b"a1", b"a2"):
            store.append("a", u)
        run = [bytes([i]) * 3 for i in range(5)]
        store.append("b", run[0])
        store.append("a", b"a3")  # another shard's entry between
        for u in run[1:]:
            store.append("b", u)
        folded = store.fold_tail("b", run, lambda tail: b"+".join(tail))
        assert folded == 4  # the entries after the other shard's one
        assert _entries(store) == [
            ("a", b"a1"),
            ("a", b"a2"),
            ("b", run[0]),
            ("a", b"a3"),
            ("b", b"+".join(run[1:])),
        ]
        # The same bytes but other objects, or a tail of another shard: nothing to fold.
        store.append("b", bytes(bytearray(b"x" * 40)))
        store.append("b", bytes(bytearray(b"y" * 40)))
        assert store.fold_tail("b", [b"x" * 40, b"y" * 40], lambda t: b"!") == 0
        assert store.fold_tail("a", run, lambda t: b"!") == 0
        assert store.fold_tail("b", run, lambda t: None) == 0  # fold declined: kept


def test_fold_tail_waits_for_no_commit(tmp_path: Path) -> None:
    with Store(tmp_path / "s", sync=False) as store:
        run = [b"1" * 8, b"2" * 8, b"3" * 8]
        for u in run:
            store.append("a", u)
        with store._write_lock:  # a commit or compaction under way
            assert store.fold_tail("a", run, lambda t: b"all") == 0
        assert store.pending() == 3
        assert store.fold_tail("a", run, lambda t: b"all") == 3
        assert _entries(store) == [("a", b"all")]


def test_commit_upto_leaves_later_entries_buffered(tmp_path: Path) -> None:
    with Store(tmp_path / "s", sync=False) as store:
        for u in (b"1", b"2", b"3"):
            store.append("a", u)
        assert store.commit(2) == {"a"}
        assert store.pending() == 1 and store.stats("a").log_count == 2
        store.commit()
        assert store.stats("a").log_count == 3


async def test_a_stream_of_own_writes_is_one_entry_and_reopens_the_same(
    tmp_path: Path,
) -> None:
    n = 4 * FOLD_AT
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        for i in range(n):
            shard[f"k{i % (n // 2)}"] = i  # the second half overwrites: deletions too
        del shard["k0"]
        await shard.flush()
        stats = agent.shard_stats("s")
        assert stats is not None and stats.log_count <= 3, stats  # not one per write
        digest, content = shard.digest(), shard.snapshot()
        loaded = agent._store.load("s")  # type: ignore[attr-defined]
        assert loaded is not None
        for trusted in (True, False):  # the checksummed replay and the validating one
            doc = load_doc(loaded.snapshot, loaded.log, "s", trusted=trusted)
            assert updates.digest(doc) == digest
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        assert shard.digest() == digest and shard.snapshot() == content


async def test_a_light_writer_keeps_one_entry_per_write(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        for i in range(FOLD_AT // 2):
            shard[f"k{i}"] = i
        await shard.flush()
        stats = agent.shard_stats("s")
        assert stats is not None and stats.total_updates == FOLD_AT // 2 + 1  # (+ the creation)


async def test_remote_updates_between_own_writes_keep_their_order(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        other: pycrdt.Doc[Any] = pycrdt.Doc()
        remote = _map_writes(other, [f"r{i}" for i in range(3)])
        for i in range(3 * FOLD_AT):
            shard[f"k{i}"] = i
            if i % FOLD_AT == 7:
                shard.apply_remote(remote.pop(0), "peer")
            if i % 50 == 0:
                await asyncio.sleep(0)
        await shard.flush()
        digest = shard.digest()
        stats = agent.shard_stats("s")
        assert stats is not None and stats.log_count < 3 * FOLD_AT
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        assert shard.digest() == digest and len(shard) == 3 * FOLD_AT  # (+ 3 keys in "m")


async def test_an_overwrite_heavy_run_is_stored_as_it_is(tmp_path: Path) -> None:
    """More than FOLD_MAX_DELETING writes that delete: merging their delete sets would cost
    more than it saves, the entries stay one per write."""
    n = FOLD_MAX_DELETING + FOLD_AT
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        shard["k"] = -1
        for i in range(n):
            shard["k"] = i  # each overwrite deletes the value before
        await shard.flush()
        stats = agent.shard_stats("s")
        assert stats is not None and stats.total_updates == n + 2
        assert shard["k"] == n - 1
