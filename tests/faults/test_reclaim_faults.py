"""Giving disk space back (``Store.reclaim``) survives a SIGKILL at any point (issue 17).

A real child process (this file run as a script) opens a store holding a compacted shard, a
second shard with a log and some metadata, all committed, and starts a reclaim. The parent
kills it with SIGKILL:

* at each named step of the reclaim (``crdtsync._store_space._step_hook``: the child prints
  the chosen step and waits there, so the kill lands exactly between two steps): after the copy was
  written, after it was fsynced, after the atomic rename, after the environment was reopened;
* and at seeded random moments while reclaims of a bigger store run back to back.

After every kill the data directory is opened again with a new ``Store``: it must open, hold
exactly what was committed before the reclaim (snapshot, log, metadata, stats of both shards),
pass every checksum, and accept a commit; no leftover copy may remain. Nothing here is timed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crdtsync.store import Store
from crdtsync.yjs.replay import replay_trusted

STEPS = ("copied", "synced", "swapped", "reopened")


def build(path: Path, n: int) -> None:
    """Shard ``a`` compacted from ``n`` entries (its freed pages make the file reclaimable),
    shard ``b`` with a log of 20 entries and a meta value."""
    import pycrdt

    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    for i in range(n):
        root[f"k{i % 500}"] = "v" * 40 + str(i)
    with Store(path, compact_min_log_count=1 << 60) as store:
        for u in updates:
            store.append("a", u)
        for u in updates[:20]:
            store.append("b", u)
        store.put_meta("b", "note", b"kept")
        store.commit()
        store.compact("a", replay_trusted)


def snapshot_of(path: Path) -> dict[str, object]:
    """Everything committed in the store at ``path`` (opened and closed here)."""
    with Store(path) as store:
        out: dict[str, object] = {}
        for name in store.shard_names():
            loaded = store.load(name)
            assert loaded is not None
            out[name] = (loaded.snapshot, loaded.log, loaded.meta, loaded.stats, loaded.verified)
        return out


def check_store(path: Path, expected: dict[str, object]) -> None:
    got = snapshot_of(path)
    assert not (path / "reclaim.tmp").exists(), "the leftover copy was not removed on open"
    assert got == expected
    with Store(path) as store:  # still writable
        store.append("b", b"\x00\x00")
        store.commit()
        assert store.stats("b").log_count == 21


def child(path: str, mode: str) -> None:
    """Run in the child process: reclaim, pausing at each step (``step``) or repeatedly."""
    from crdtsync import _store_space

    store = Store(path)
    if mode.startswith("step:"):
        at = mode.partition(":")[2]

        def pause(step: str) -> None:
            if step == at:
                sys.stdout.write(step + "\n")
                sys.stdout.flush()
                time.sleep(60)  # the parent kills us here

        _store_space._step_hook = pause
        store.reclaim()
    else:  # back-to-back reclaims until killed
        sys.stdout.write("running\n")
        sys.stdout.flush()
        while True:
            store.reclaim()


def spawn(path: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, str(path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    path = tmp_path_factory.mktemp("reclaim") / "store"
    build(path, 20_000)
    expected = snapshot_of(path)
    with Store(path, reclaim_min_bytes=1 << 20) as store:
        space = store.space()
        assert store.needs_reclaim(), space  # the premise: there is space to give back
    return path, expected


@pytest.mark.parametrize("kill_at", STEPS)
def test_sigkill_at_each_step_leaves_a_valid_store(
    built: tuple[Path, dict[str, object]], tmp_path: Path, kill_at: str
) -> None:
    src, expected = built
    path = tmp_path / "store"
    shutil.copytree(src, path)
    proc = spawn(path, f"step:{kill_at}")
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == kill_at, f"child did not reach {kill_at!r}: {proc.communicate()[1][-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    check_store(path, expected)
    if kill_at in ("swapped", "reopened"):
        with Store(path) as store:  # the space came back
            space = store.space()
            assert space.file_bytes <= 1.2 * space.live_bytes + (64 << 10), space


def test_sigkill_at_random_moments_leaves_a_valid_store(
    built: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    src, expected = built
    rng = random.Random(int(os.environ.get("CRDTSYNC_FAULT_SEED", "17")))
    path = tmp_path / "store"
    shutil.copytree(src, path)
    for _ in range(8):
        proc = spawn(path, "loop")
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == "running", proc.stderr.read()[-2000:]
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        assert snapshot_of(path) == expected
    check_store(path, expected)


def test_reclaim_gives_space_back_and_keeps_everything(
    built: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    src, expected = built
    path = tmp_path / "store"
    shutil.copytree(src, path)
    with Store(path) as store:
        before = store.space()
        store.append("b", b"\x00\x00")  # buffered across the reclaim, committed after it
        after = store.reclaim()
        assert after.file_bytes < before.file_bytes / 2
        assert after.live_bytes == before.live_bytes
        assert not store.needs_reclaim()
        assert after.file_bytes == after.live_bytes
        store.commit()
        assert store.stats("b").log_count == 21
    got = snapshot_of(path)
    assert got["a"] == expected["a"]


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
