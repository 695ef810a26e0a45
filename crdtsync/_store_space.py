"""Giving disk space back: :meth:`crdtsync.store.Store.reclaim` and its automatic policy.

LMDB never shrinks its file: pages freed by compaction or deletion are reused by later writes,
but the file keeps the size of its high-water mark (after compacting a 1,000,000-entry log the
data directory held 6.8x the encoded state). :meth:`_StoreSpace.reclaim` writes a compacted
copy of the environment (py-lmdb ``Environment.copy(path, compact=True)``, i.e. ``mdb_copy
-c``: live pages only, renumbered) and swaps it in for ``data.mdb``.

Crash safety, step by step (a SIGKILL at any point leaves a valid store; ``tests/faults``
kills a real child process at each step):

1. the copy is written into ``<data_dir>/reclaim.tmp/`` and fsynced; ``data.mdb`` is
   untouched, so a crash here leaves the old store and a leftover directory, which the next
   open removes;
2. ``rename(reclaim.tmp/data.mdb, data.mdb)`` replaces the file atomically: a crash before it
   leaves the old file, after it the new one, both complete; the directory is fsynced;
3. the environment is reopened on the new file.

Every step runs under the store's write lock with read transactions held off (the copy is a
consistent snapshot and no commit can land between the copy and the swap). Buffered entries are
in memory and are not touched. A read-only opener in another process (``Store.open_readonly``)
keeps reading the old file until it reopens.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ._store_env import _Gate, _translate

__all__ = ["SpaceStats"]

_log = logging.getLogger("crdtsync.store")

_TMP: Final = "reclaim.tmp"
_DATA: Final = "data.mdb"
# Automatic reclaim: the file holds more than this times its live pages ...
DEFAULT_RECLAIM_RATIO: Final = 2.0
# ... and at least this many bytes would come back (small files are not worth a copy).
DEFAULT_RECLAIM_MIN_BYTES: Final = 4 << 20

#: Test hook: called with the name of each step of a reclaim ("copied", "synced", "swapped",
#: "reopened"), so that a fault test can SIGKILL a child process exactly there. None in use.
_step_hook: Callable[[str], None] | None = None


@dataclass(frozen=True)
class SpaceStats:
    """How much of the data file holds live data."""

    file_bytes: int
    """Size of ``data.mdb`` on disk (its high-water mark)."""
    live_bytes: int
    """Bytes of the pages that hold data (every database's branch, leaf and overflow pages,
    plus the two meta pages): what a compacted copy keeps."""

    @property
    def reclaimable_bytes(self) -> int:
        return max(0, self.file_bytes - self.live_bytes)


def _step(name: str) -> None:
    if _step_hook is not None:
        _step_hook(name)


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_leftover(data_dir: Path) -> None:
    """Remove the copy of a reclaim that a crash interrupted before its swap (step 1)."""
    tmp = data_dir / _TMP
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        _log.info("removed the unfinished reclaim copy in %s", tmp)


class _StoreSpace:
    """Mixin of :class:`~crdtsync.store.Store`: disk space, measured and given back."""

    _dir: Path
    _env: Any
    _log: Any
    _snap: Any
    _meta: Any
    _stats: Any
    _info: Any
    _closed: bool
    _gate: _Gate
    _write_lock: Any
    _reclaim_ratio: float
    _reclaim_min_bytes: int

    def _check_open(self) -> None: ...  # provided by Store

    def _open_env(self, map_size: int) -> None: ...  # provided by _StoreEnv

    def _release_dir_lock(self) -> None: ...  # provided by _StoreEnv

    def space(self) -> SpaceStats:
        """The data file's size and its live bytes (cheap: LMDB's own page counts)."""
        with self._gate.shared():
            self._check_open()
            with _translate("cannot measure the store's space"):
                return self._space()

    def _space(self) -> SpaceStats:
        env = self._env
        psize = int(env.stat()["psize"])
        pages = 2  # the meta pages
        with env.begin(write=False) as txn:
            stats = [env.stat()]  # the main database: it names the others
            stats += [txn.stat(db) for db in (self._log, self._snap, self._meta, self._stats)]
            stats.append(txn.stat(self._info))
            for st in stats:
                pages += int(st["branch_pages"]) + int(st["leaf_pages"]) + int(st["overflow_pages"])
        try:
            file_bytes = (self._dir / _DATA).stat().st_size
        except OSError:
            file_bytes = 0
        return SpaceStats(file_bytes, pages * psize)

    def needs_reclaim(self) -> bool:
        """Whether the automatic policy wants :meth:`reclaim`: the file is more than
        ``reclaim_ratio`` times its live bytes and at least ``reclaim_min_bytes`` would come
        back."""
        s = self.space()
        return (
            s.file_bytes > self._reclaim_ratio * s.live_bytes
            and s.reclaimable_bytes >= self._reclaim_min_bytes
        )

    def reclaim(self) -> SpaceStats:
        """Give the space of freed pages back to the file system: write a compacted copy of
        the environment and swap it in atomically (see the module docstring for why a crash at
        any point leaves a valid store). Blocks writers and readers of this store meanwhile
        (about the time to copy the live bytes). Returns the space afterwards.

        Raises:
            StoreError: the copy or the swap failed; the store is left as it was (if the
                environment could not be reopened, the store is closed).
        """
        with self._write_lock, self._gate.exclusive():
            self._check_open()
            tmp = self._dir / _TMP
            remove_leftover(self._dir)
            tmp.mkdir()
            with _translate(f"cannot write a compacted copy of {str(self._dir)!r}"):
                map_size = int(self._env.info()["map_size"])
                self._env.copy(str(tmp), compact=True)
            _step("copied")
            _fsync_path(tmp / _DATA)
            _fsync_path(tmp, directory=True)
            _step("synced")
            with _translate(f"cannot close the store in {str(self._dir)!r} to swap it"):
                self._env.close()
            try:
                os.replace(tmp / _DATA, self._dir / _DATA)
                _fsync_path(self._dir, directory=True)
                _step("swapped")
            finally:
                # Whether or not the swap happened, reopen what data.mdb is now (complete
                # either way); if even that fails, the store is closed, not half open.
                try:
                    self._open_env(map_size)
                except BaseException:
                    self._closed = True
                    self._release_dir_lock()
                    raise
            shutil.rmtree(tmp, ignore_errors=True)
            _step("reopened")
            with _translate("cannot measure the store's space"):
                after = self._space()
        _log.info("reclaimed disk space in %s: data.mdb now %d bytes", self._dir, after.file_bytes)
        return after
