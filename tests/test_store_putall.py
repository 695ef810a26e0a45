"""The store's batched puts (``store._put_all``): LMDB's append mode only where it is valid.

LMDB's append mode (``MDB_APPEND``) silently skips a key that does not sort after the
database's last key, so ``_put_all`` must choose it only when every key does; these tests
check the content after each case against plain puts, on real LMDB files.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from crdtsync._store_env import _put_all
from crdtsync.store import Store


def _put_and_read(tmp_path: Path, before: list[bytes], items: list[tuple[bytes, bytes]]) -> list:
    env = lmdb.open(str(tmp_path / "env"), max_dbs=2)
    db = env.open_db(b"log")
    with env.begin(write=True) as txn:
        for k in before:
            txn.put(k, b"old", db=db)
    with env.begin(write=True) as txn:
        _put_all(txn, db, items)
    with env.begin() as txn:
        got = list(txn.cursor(db=db))
    env.close()
    return got


@pytest.mark.parametrize(
    "before, items",
    [
        ([], [(b"a1", b"x"), (b"a2", b"y")]),  # empty database: append
        ([b"a0"], [(b"a1", b"x"), (b"a2", b"y")]),  # all after the last key: append
        ([b"b0"], [(b"a1", b"x"), (b"a2", b"y")]),  # before the last key: plain puts
        ([b"a0"], [(b"a2", b"x"), (b"a1", b"y")]),  # not in order: plain puts
        ([b"a0"], [(b"a1", b"x"), (b"a1", b"y")]),  # a repeated key: the later wins
        ([b"a1"], [(b"a1", b"new")]),  # an existing key: overwritten
        ([b"a0"], []),
    ],
)
def test_put_all_stores_every_item_like_plain_puts(
    tmp_path: Path, before: list[bytes], items: list[tuple[bytes, bytes]]
) -> None:
    expected = dict.fromkeys(before, b"old")
    for k, v in items:
        expected[k] = v
    assert _put_and_read(tmp_path, before, items) == sorted(expected.items())


def test_interleaved_shards_across_commits_keep_every_entry(tmp_path: Path) -> None:
    """Shards whose new entries sort before and after others', in one commit and across
    commits (append mode valid for some commits, not others), reopened."""
    names = ["m", "a", "z", "a/b"]
    with Store(tmp_path / "s") as store:
        for r in range(5):
            for n in names[: 1 + r % len(names)]:
                for i in range(3):
                    store.append(n, f"{n}:{r}:{i}".encode())
                store.put_meta(n, "sv", f"{r}".encode())
            store.commit()
    with Store(tmp_path / "s") as store:
        for n in names:
            loaded = store.load(n)
            assert loaded is not None
            rounds = [r for r in range(5) if n in names[: 1 + r % len(names)]]
            assert loaded.log == [f"{n}:{r}:{i}".encode() for r in rounds for i in range(3)]
            assert loaded.meta == {"sv": f"{rounds[-1]}".encode()}
            assert loaded.stats.total_updates == 3 * len(rounds)


def test_last_commit_due_is_the_policy_on_the_committed_stats(tmp_path: Path) -> None:
    """``last_commit_due`` (what the group committer compacts after a commit, without a read
    transaction) names exactly the touched shards ``needs_compaction`` holds for."""
    with Store(tmp_path / "s", compact_min_log_count=3, compact_log_ratio=1.0) as store:
        for r in range(8):
            for n in ("a", "b", "c")[: 1 + r % 3]:
                store.append(n, b"x" * (r + 1))
            if r == 5:
                store.put_meta("z", "k", b"v")  # a meta-only shard: never due
            touched = store.commit()
            want = sorted(n for n in touched if store.needs_compaction(n))
            assert store.last_commit_due() == want
            if r == 4:
                assert want == ["a", "b"]
                store.compact("a", lambda snap, log: b"y" * 100)
        assert store.commit() == set() and store.last_commit_due() == []
