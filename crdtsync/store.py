"""The durable store: every shard's updates, snapshot and metadata in one LMDB environment.

This module and :mod:`crdtsync._store_env` (directory lock and environment, split from it) are
the only ones in crdtsync that import :mod:`lmdb`; every LMDB error is translated there into
:class:`~crdtsync.errors.StoreError` (or a subclass), with the original kept as
``__cause__``. The store is synchronous and knows nothing about CRDTs: it keeps opaque update
bytes. :mod:`crdtsync.durability` drives it from asyncio. Records, checksums and format versions
live in :mod:`crdtsync._store_format`; the read path (shard names, stats, metadata, loading a
shard) in the mixin :mod:`crdtsync._store_read`; compaction and deletion of a shard in the mixin
:mod:`crdtsync._store_compact`.

Layout
------
One data directory holds ``LOCK`` (an exclusive ``flock`` plus the owner's pid, so exactly one
:class:`Store` per directory, across processes and within one) and the LMDB files
``data.mdb``/``lock.mdb``. The environment has these named databases:

``log``
    ``name + NUL + seq`` (``seq``: 8-byte big-endian) -> one update (one transaction's, or a
    run of the shard's own writes folded into one before their commit, :meth:`fold_tail
    <crdtsync._store_compact._StoreCompact.fold_tail>`). A shard's log is one
    contiguous sorted key range, read in append order with one cursor walk that never touches
    another shard. No valid shard name contains NUL (see :mod:`crdtsync.names`), so the range
    of ``"a"`` (``a\\0...``) never overlaps ``"a/b"`` or ``"ab"``.
``snap``
    ``name`` -> the compacted snapshot (one update equivalent to everything compacted).
``meta``
    ``name + NUL + key`` -> value stored with :meth:`Store.put_meta`.
``stats``
    ``name`` -> fixed-size record (log count and bytes, snapshot bytes, updates ever appended,
    last compaction time). Every committed shard has one, so :meth:`Store.shard_names` and
    :meth:`Store.stats` never scan a log. ``total_updates`` doubles as the next log ``seq``.
``info``
    ``format`` -> layout version, checked on open; ``legacy NUL name`` -> empty, for a shard
    whose entries were written before checksums (see below).

Checksums (format 2)
--------------------
Every log entry and snapshot is stored as a 4-byte big-endian ``zlib.crc32`` of the update
followed by the update. Entries are validated before they are stored, so a reader that finds
the checksum intact may trust them: :attr:`LoadedShard.verified` says so, and crdtsync then
applies them without parsing them again (that parse was 70-78 % of a reopen or compaction). A
mismatch raises :class:`~crdtsync.errors.CorruptEntry` naming the shard and the entry; it is
never skipped. A data directory of format 1 (no checksums) is upgraded in place when it is
opened: its entries get checksums, and its shards are marked *legacy*, so their entries are
reported unverified (and validated by the caller as before) until
:meth:`Store.mark_verified` records that they passed.

Writes
------
:meth:`Store.append` and :meth:`Store.put_meta` only buffer in memory (cheap, thread-safe).
:meth:`Store.commit` writes the whole buffer in ONE write transaction, i.e. one fsync when
``sync=True``; entries leave the buffer only once that transaction has committed, so a failed
commit never drops anything. When the LMDB map is full the commit is retried after doubling
the map, up to ``max_map_size``; beyond that it raises :class:`~crdtsync.errors.StoreFull`.
A new store's databases and format are written by its first write transaction, with what it
commits, and the data directory is fsynced (once per open) before that transaction: opening
a store waits for no fsync (issue 17). A new store that never committed holds nothing, and
opens again as a new store.

Compaction policy
-----------------
:meth:`Store.needs_compaction` is true when a shard's committed log holds at least
``compact_min_log_count`` entries (default 1000) *and* its bytes exceed
``compact_log_ratio`` (default 1.0) times the snapshot's bytes: the log has outgrown the
snapshot, so loading replays more than compaction would save, and replaying fewer than 1000
small updates is cheap anyway. :meth:`Store.compact` folds snapshot + log into a new snapshot
with a caller-supplied ``merge`` function (the store itself never decodes updates).

Disk space
----------
LMDB keeps its file at its high-water mark. :meth:`Store.reclaim` gives the freed pages back
(a compacted copy in ``reclaim.tmp/``, fsynced and renamed over ``data.mdb``; a leftover copy
is removed on open), :meth:`Store.needs_reclaim` is its automatic policy and
:meth:`Store.space` measures; see :mod:`crdtsync._store_space`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import lmdb

from ._store_compact import _StoreCompact
from ._store_env import _Gate, _StoreEnv, _translate
from ._store_format import (
    _LEGACY,
    _SEP,
    LoadedShard,
    ShardStats,
    _as_bytes,
    _Entry,
    _seal,
    _stats_from,
    _stats_to,
)
from ._store_read import _StoreRead
from ._store_space import (
    DEFAULT_RECLAIM_MIN_BYTES,
    DEFAULT_RECLAIM_RATIO,
    SpaceStats,
    _StoreSpace,
    remove_leftover,
)
from .errors import ClosedError, StoreFull, UsageError
from .names import _VALID as _VALID_NAMES
from .names import validate_shard_name

__all__ = [
    "SpaceStats",
    "ShardStats",
    "LoadedShard",
    "Store",
    "DEFAULT_COMPACT_MIN_LOG_COUNT",
    "DEFAULT_COMPACT_LOG_RATIO",
]

_log = logging.getLogger(__name__)

DEFAULT_COMPACT_MIN_LOG_COUNT: Final = 1000
DEFAULT_COMPACT_LOG_RATIO: Final = 1.0


class Store(_StoreEnv, _StoreSpace, _StoreRead, _StoreCompact):
    """One data directory of shards, held exclusively by this object until :meth:`close`.

    Args:
        data_dir: directory to hold the store; created if missing.
        map_size: initial LMDB map size in bytes (an existing larger file keeps its size).
        max_map_size: the map doubles on demand up to this; beyond it commits raise
            :class:`~crdtsync.errors.StoreFull`.
        sync: fsync every commit (durable across power loss). With False a commit survives a
            crash of the process but not of the machine; :meth:`close` still syncs.
        compact_min_log_count, compact_log_ratio: the :meth:`needs_compaction` policy.
        reclaim_ratio, reclaim_min_bytes: the :meth:`needs_reclaim` policy (see
            :mod:`crdtsync._store_space`): give disk space back once the file is more than
            ``reclaim_ratio`` times its live bytes and at least ``reclaim_min_bytes`` would
            come back.

    Raises:
        DataDirLocked: another process, or another Store in this process, holds ``data_dir``.
        StoreError: LMDB could not open the environment.

    Thread-safety: every method may be called from any thread. Commits, compactions and
    deletions are serialised with one lock; reads run concurrently with them.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        map_size: int = 64 << 20,
        max_map_size: int = 1 << 40,
        sync: bool = True,
        compact_min_log_count: int = DEFAULT_COMPACT_MIN_LOG_COUNT,
        compact_log_ratio: float = DEFAULT_COMPACT_LOG_RATIO,
        reclaim_ratio: float = DEFAULT_RECLAIM_RATIO,
        reclaim_min_bytes: int = DEFAULT_RECLAIM_MIN_BYTES,
        readonly: bool = False,
    ) -> None:
        if map_size <= 0 or max_map_size < map_size:
            raise UsageError(f"need 0 < map_size <= max_map_size, got {map_size}, {max_map_size}")
        self._dir = Path(data_dir)
        self._sync = sync
        self._max_map_size = max_map_size
        self._compact_min_log_count = compact_min_log_count
        self._compact_log_ratio = compact_log_ratio
        self._reclaim_ratio = reclaim_ratio
        self._reclaim_min_bytes = reclaim_min_bytes
        self._buf: list[_Entry] = []
        self._buf_lock = threading.Lock()
        self._last_counts: dict[str, tuple[int, int]] = {}  # see last_commit()
        # Serialises every write transaction and map resize (and close).
        self._write_lock = threading.Lock()
        self._gate = _Gate()
        self._closed = False
        self._dir_unsynced = False  # set by _open_env, paid by the first write (or close)
        self._unborn = False  # a new store whose databases its first write creates
        self._lock_fd = -1
        self._real = os.path.realpath(self._dir)
        if readonly:
            self._open_readonly()
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        self._acquire_dir_lock()
        try:
            remove_leftover(self._dir)  # of a reclaim a crash interrupted before its swap
            self._open_env(map_size)
        except BaseException:
            self._release_dir_lock()
            raise

    @classmethod
    def open_readonly(cls, data_dir: str | os.PathLike[str]) -> Store:
        """Open ``data_dir`` for reading only, beside the agent that may hold it: no directory
        lock is taken (LMDB serves any number of reader processes next to its one writer),
        and every write raises :class:`~crdtsync.errors.StoreError`. For inspection tools;
        do not open a directory this way in the process that holds it.

        Raises:
            StoreError: no store there, or one of another format version.
        """
        return cls(data_dir, readonly=True)

    def close(self) -> None:
        """Close the environment and release the directory lock. Idempotent.

        Buffered entries are NOT committed (commit first); they are dropped with a warning in
        the log. With ``sync=False`` the environment is synced to disk before closing.
        """
        with self._write_lock, self._gate.exclusive():
            if self._closed:
                return
            self._closed = True
            with self._buf_lock:
                dropped = len(self._buf)
                self._buf.clear()
            if dropped:
                _log.warning("closing store %s with %d uncommitted entries", self._dir, dropped)
            try:
                with _translate(f"cannot close the store in {str(self._dir)!r}"):
                    if not self._sync or self._unborn:
                        # (an unborn store: LMDB's own first pages, so that it reopens as a
                        # valid empty store even after a power loss)
                        self._env.sync(True)
                    try:
                        self._sync_dir_once()  # an open that never wrote still pays it
                    finally:
                        self._env.close()
            finally:
                self._release_dir_lock()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def data_dir(self) -> Path:
        """The data directory this store holds."""
        return self._dir

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the store in {str(self._dir)!r} is closed")

    @contextmanager
    def _read(self, what: str) -> Iterator[Any]:
        """A read transaction, held off while the map is resized."""
        with self._gate.shared():
            self._check_open()
            with _translate(what), self._env.begin(write=False) as txn:
                yield txn

    # -- reading -------------------------------------------------------------------------

    def mark_verified(self, name: str) -> None:
        """Record that the entries of ``name`` (a shard written before checksums) passed
        validation, so later loads report them verified. A no-op for other shards."""
        validate_shard_name(name)
        with self._write_lock:
            self._check_open()
            self._write(
                f"cannot mark shard {name!r} verified",
                lambda txn: txn.delete(_LEGACY + name.encode(), db=self._info),
            )

    def needs_compaction(self, name: str) -> bool:
        """Whether the automatic policy (see the module docstring) wants ``name`` compacted."""
        s = self.stats(name)
        return (
            s.log_count >= self._compact_min_log_count
            and s.log_bytes > self._compact_log_ratio * s.snapshot_bytes
        )

    def map_size(self) -> int:
        """The LMDB map size now, in bytes (grows on demand up to ``max_map_size``)."""
        with self._read("cannot read the map size"):
            return int(self._env.info()["map_size"])

    # -- buffered writes -----------------------------------------------------------------

    def append(self, name: str, update: bytes) -> None:
        """Buffer ``update`` for the end of shard ``name``'s log. Not durable until
        :meth:`commit`; cheap and thread-safe."""
        # (A shard's observer appends once per change, a paced receiver once per received
        # update: a name found valid lately and bytes are taken without the checks' calls.)
        if type(name) is not str or name not in _VALID_NAMES:
            validate_shard_name(name)
        if type(update) is not bytes:
            update = _as_bytes(update, "update")
        with self._buf_lock:
            self._check_open()
            self._buf.append((name, None, update))

    def put_meta(self, name: str, key: str, value: bytes) -> None:
        """Buffer metadata ``key`` = ``value`` of shard ``name`` (e.g. its state vector),
        written by the next :meth:`commit` together with the appended updates."""
        validate_shard_name(name)
        if not isinstance(key, str):
            raise TypeError(f"meta key must be str, not {type(key).__name__}")
        # LMDB keys are at most 511 bytes; the name takes up to 128 and the separator 1.
        if len(key.encode()) > 256:
            raise UsageError(f"meta key longer than 256 bytes: {key[:40]!r}...")
        entry = (name, key, _as_bytes(value, "meta value"))
        with self._buf_lock:
            self._check_open()
            self._buf.append(entry)

    def pending(self) -> int:
        """Buffered entries (appends and metadata) not yet committed."""
        with self._buf_lock:
            return len(self._buf)

    # -- transactions --------------------------------------------------------------------

    def _write(self, what: str, body: Callable[[Any], None]) -> None:
        """Run ``body(txn)`` in one write transaction, growing the map and retrying while it
        is full. Caller holds ``_write_lock``. Raises StoreFull when the map cannot grow."""
        while True:
            self._check_open()
            self._sync_dir_once()
            unborn = self._unborn
            with _translate(what):
                try:
                    # A new store's first write creates its databases (see _open_env); the
                    # handles change when it commits, so readers wait for it (once).
                    with self._gate.exclusive() if unborn else contextlib.nullcontext():
                        try:
                            with self._env.begin(write=True) as txn:
                                if unborn:
                                    self._create_databases(txn)
                                body(txn)
                        except BaseException:
                            if unborn:  # handles opened in an aborted transaction are void
                                self._point_at_main()
                            raise
                        self._unborn = False
                    return
                except lmdb.MapFullError as e:
                    full = e  # leaving the with-block aborted the transaction
                # Outside the aborted transaction: grow the map (needs no live txn).
                size = int(self._env.info()["map_size"])
                if size >= self._max_map_size:
                    raise StoreFull(
                        f"{what}: the LMDB map in {str(self._dir)!r} is full at "
                        f"{size} bytes (max_map_size={self._max_map_size})"
                    ) from full
                new = min(size * 2, self._max_map_size)
                with self._gate.exclusive():
                    self._env.set_mapsize(new)
                _log.info("grew the LMDB map of %s from %d to %d bytes", self._dir, size, new)

    def commit(self, upto: int | None = None) -> set[str]:
        """Write every buffered entry (``upto``: the first ``upto`` of them) in ONE write
        transaction (one fsync with ``sync=True``).

        Returns the names of the shards touched (empty if nothing was buffered). Entries
        buffered while the commit runs wait for the next one. If the commit fails — e.g.
        :class:`~crdtsync.errors.StoreFull` — all entries stay buffered, in order.
        """
        with self._write_lock:
            self._check_open()
            with self._buf_lock:
                batch = self._buf[:upto]
            if not batch:
                self._last_counts = {}
                return set()
            counts: dict[str, tuple[int, int]] = {}
            touched: dict[str, ShardStats] = {}

            def body(txn: Any) -> None:
                touched.clear()
                seqs: dict[str, list[int]] = {}  # name -> [next seq, count, bytes]
                for name, key, value in batch:
                    nkey = name.encode()
                    if name not in seqs:
                        s = _stats_from(name, txn.get(nkey, db=self._stats))
                        touched[name] = s
                        seqs[name] = [s.total_updates, 0, 0]
                    if key is None:
                        acc = seqs[name]
                        txn.put(nkey + _SEP + acc[0].to_bytes(8, "big"), _seal(value), db=self._log)
                        acc[0] += 1
                        acc[1] += 1
                        acc[2] += len(value)
                    else:
                        txn.put(nkey + _SEP + key.encode(), value, db=self._meta)
                counts.clear()
                for name, (_, count, nbytes) in seqs.items():
                    counts[name] = (count, nbytes)
                    s = touched[name]
                    txn.put(
                        name.encode(),
                        _stats_to(
                            ShardStats(
                                name,
                                s.log_count + count,
                                s.log_bytes + nbytes,
                                s.snapshot_bytes,
                                s.total_updates + count,
                                s.last_compaction,
                            )
                        ),
                        db=self._stats,
                    )

            self._write(f"cannot commit {len(batch)} entries", body)
            # Only commit() removes from the buffer's front and it holds _write_lock, so the
            # first len(batch) entries are still exactly the ones just written.
            with self._buf_lock:
                del self._buf[: len(batch)]
            self._last_counts = counts
            return set(counts)

    def last_commit(self) -> dict[str, tuple[int, int]]:
        """Per shard the last successful :meth:`commit` touched, the ``(updates, bytes)`` it
        appended to the log (metadata entries touch a shard but count no update). Read it in
        the thread that called :meth:`commit`, right after (the group committer's worker does,
        for its :class:`~crdtsync.observer.Observer`)."""
        return self._last_counts
