"""Opening and closing the LMDB environment of :class:`crdtsync.store.Store`.

The data directory's exclusive lock (``LOCK``: ``flock`` plus the owner's pid, and a
process-wide set of held directories), the environment and its named databases opened for
writing (creating or upgrading the format) or read-only, the readers/resizer gate and the
translation of LMDB errors into :class:`~crdtsync.errors.StoreError`. A mixin of
:class:`~crdtsync.store.Store`, split from :mod:`crdtsync.store`, whose docstring describes the
layout.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from ._store_format import _FORMAT, _FORMAT_UNCHECKED, _LEGACY, _LOCK_FILE, _seal
from .errors import DataDirLocked, StoreError

__all__: list[str] = []

#: The store's logger: log lines keep the name of the module users configure.
_log = logging.getLogger("crdtsync.store")

# Real paths of data directories a Store in this process holds. flock already refuses a second
# open file description of LOCK, but some filesystems emulate flock with per-process fcntl
# locks, which would let a second Store of the same process in; this set catches that case.
_open_dirs: set[str] = set()
_open_dirs_lock = threading.Lock()


class _Gate:
    """Readers/resizer gate: LMDB's ``mdb_env_set_mapsize`` needs no live transaction in the
    process, so a resize waits for read transactions to end and holds new ones off.

    Write transactions never need it: they and the resize both run under the commit lock.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@contextmanager
def _translate(what: str) -> Iterator[None]:
    """Turn any LMDB error escaping the block into a StoreError (cause kept)."""
    try:
        yield
    except lmdb.Error as e:
        raise StoreError(f"{what}: {e}") from e


class _StoreEnv:
    """Mixin of :class:`~crdtsync.store.Store`: the directory lock and the LMDB environment.

    The attributes declared below belong to the store (set in its ``__init__`` or here).
    """

    _dir: Path
    _real: str
    _sync: bool
    _dir_unsynced: bool
    _unborn: bool
    _lock_fd: int
    _env: Any
    _log: Any
    _snap: Any
    _meta: Any
    _stats: Any
    _info: Any

    # -- opening and closing -------------------------------------------------------------

    def _acquire_dir_lock(self) -> None:
        with _open_dirs_lock:
            if self._real in _open_dirs:
                raise DataDirLocked(
                    f"data directory {str(self._dir)!r} is already open by another Store in "
                    f"this process (pid {os.getpid()})"
                )
            path = self._dir / _LOCK_FILE
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock {str(path)!r}: {e}") from e
                try:
                    owner = path.read_text().strip()
                except OSError:
                    owner = ""
                by = f"process {owner}" if owner.isdigit() else "another process"
                raise DataDirLocked(
                    f"data directory {str(self._dir)!r} is in use by {by} "
                    f"(exclusive lock on {str(path)!r})"
                ) from e
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._lock_fd = fd
            _open_dirs.add(self._real)

    def _open_readonly(self) -> None:
        if not (self._dir / "data.mdb").exists():
            raise StoreError(f"no crdtsync store in {str(self._dir)!r}")
        with _translate(f"cannot open the LMDB store in {str(self._dir)!r} read-only"):
            self._env = lmdb.open(
                str(self._dir), subdir=True, max_dbs=8, readonly=True, lock=True, max_spare_txns=0
            )
            try:
                if self._env.stat()["entries"] == 0:  # a new store before its first commit
                    self._point_at_main()  # (it holds nothing; this open never writes)
                    return
                self._log = self._env.open_db(b"log", create=False)
                self._snap = self._env.open_db(b"snap", create=False)
                self._meta = self._env.open_db(b"meta", create=False)
                self._stats = self._env.open_db(b"stats", create=False)
                self._info = self._env.open_db(b"info", create=False)
                with self._env.begin() as txn:
                    fmt = txn.get(b"format", db=self._info)
                if fmt != _FORMAT:
                    raise StoreError(
                        f"{str(self._dir)!r} holds store format {fmt!r}, this version reads "
                        f"{_FORMAT!r} (open it once with an agent to upgrade it)"
                    )
            except BaseException:
                self._env.close()
                raise

    def _release_dir_lock(self) -> None:
        with _open_dirs_lock:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1
            _open_dirs.discard(self._real)

    def _open_env(self, map_size: int) -> None:
        # LMDB fsyncs its files, not the directory entries naming them: the directory is
        # synced once per open, so that a created store survives power loss too. Not here but
        # before the first write transaction of this open (or at close): nothing needs the
        # entry to be durable before a commit must be, and the first commit runs in the group
        # committer's worker thread, off the start of an agent (a new agent's start waited
        # 0-4 ms for it, more on a busy disk; a reopen paid it too; issue 17).
        self._dir_unsynced = self._sync
        with _translate(f"cannot open the LMDB store in {str(self._dir)!r}"):
            self._env = lmdb.open(
                str(self._dir),
                map_size=map_size,
                subdir=True,
                max_dbs=8,
                sync=self._sync,
                metasync=self._sync,
                lock=True,
                max_spare_txns=0,  # spare read txns would count as live during a resize
            )
            try:
                self._unborn = self._env.stat()["entries"] == 0
                if self._unborn:
                    # A new store (no database yet): its databases are created by its first
                    # write transaction (_create_databases), not now, so that a new agent's
                    # start does not wait for a commit and its fsyncs (0.5-16 ms here, most
                    # of that start; issue 17). Until then every read meets the empty main
                    # database, as it would meet empty databases.
                    self._point_at_main()
                    return
                # One write transaction opens every database and checks the format (no
                # fsync: it changes nothing, unless it upgrades a format 1 store).
                with self._env.begin(write=True) as txn:
                    self._log = self._env.open_db(b"log", txn=txn)
                    self._snap = self._env.open_db(b"snap", txn=txn)
                    self._meta = self._env.open_db(b"meta", txn=txn)
                    self._stats = self._env.open_db(b"stats", txn=txn)
                    info = self._env.open_db(b"info", txn=txn)
                    self._info = info
                    fmt = txn.get(b"format", db=info)
                    if fmt is None:
                        txn.put(b"format", _FORMAT, db=info)
                    elif fmt == _FORMAT_UNCHECKED:
                        self._upgrade(txn)
                    elif fmt != _FORMAT:
                        raise StoreError(
                            f"{str(self._dir)!r} holds store format {fmt!r}, "
                            f"this version reads {_FORMAT!r}"
                        )
            except BaseException:
                self._env.close()
                raise

    def _point_at_main(self) -> None:
        """Every database handle on LMDB's main database (empty in a store that has none)."""
        main = self._env.open_db(None)
        self._log = self._snap = self._meta = self._stats = self._info = main

    def _create_databases(self, txn: Any) -> None:
        """In the first write transaction of a new store (``_unborn``): create its databases
        and write its format, so that they are durable with what that transaction commits.
        The handles are valid once it has committed; if it aborts, call
        :meth:`_point_at_main` again."""
        self._log = self._env.open_db(b"log", txn=txn)
        self._snap = self._env.open_db(b"snap", txn=txn)
        self._meta = self._env.open_db(b"meta", txn=txn)
        self._stats = self._env.open_db(b"stats", txn=txn)
        self._info = self._env.open_db(b"info", txn=txn)
        txn.put(b"format", _FORMAT, db=self._info)

    def _sync_dir_once(self) -> None:
        """fsync the data directory if this open has not yet (see :meth:`_open_env`); before
        any write transaction commits, so a failure here has committed nothing.

        Raises:
            StoreError: the fsync failed (``__cause__`` is the OSError).
        """
        if not self._dir_unsynced:
            return
        try:
            fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise StoreError(f"cannot fsync the data directory {str(self._dir)!r}: {e}") from e
        self._dir_unsynced = False

    def _upgrade(self, txn: Any) -> None:
        """Format 1 -> 2 in the open write transaction: seal every entry, mark shards legacy."""
        for db in (self._log, self._snap):
            cur = txn.cursor(db=db)
            for key, value in list(cur.iternext()):
                txn.put(key, _seal(bytes(value)), db=db)
        for key in txn.cursor(db=self._stats).iternext(values=False):
            txn.put(_LEGACY + bytes(key), b"", db=self._info)
        txn.put(b"format", _FORMAT, db=self._info)
        _log.info("upgraded the store in %s to format %s (checksums)", self._dir, _FORMAT)
