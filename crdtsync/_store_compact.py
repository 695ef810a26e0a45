"""Compaction and deletion of whole shards: :meth:`~crdtsync.store.Store.compact` and
:meth:`~crdtsync.store.Store.delete_shard`; and :meth:`_StoreCompact.fold_tail`, which folds a
shard's latest buffered entries into one before they are committed.

:meth:`_StoreCompact.compact` folds a shard's snapshot and committed log into one new snapshot
with the caller's ``merge`` (the store never decodes updates): it reads under the store's
write lock in a read transaction, merges outside any transaction, and writes the snapshot,
the log's deletion and the new stats in one write transaction. :meth:`_StoreCompact.delete_shard`
removes every record of a shard in one write transaction and drops its buffered entries. The
automatic policy (:meth:`~crdtsync.store.Store.needs_compaction`) and the layout of the records
are described in :mod:`crdtsync.store`'s docstring.

A mixin of :class:`~crdtsync.store.Store` (:class:`_StoreCompact`), split from
:mod:`crdtsync.store` as :mod:`crdtsync._store_read` is, so the buffered writes and commits and
these whole-shard rewrites each read in one module of a few hundred lines; the state (the
environment, its named databases, the write lock and the buffer) is the ``Store`` instance's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from itertools import repeat
from typing import TYPE_CHECKING, Any

from ._store_format import (
    _LEGACY,
    _SEP,
    ShardStats,
    _as_bytes,
    _Entry,
    _seal,
    _stats_from,
    _stats_to,
)
from .names import validate_shard_name

__all__: list[str] = []


class _StoreCompact:
    """Mixin of :class:`~crdtsync.store.Store`: compacting and deleting shards (module
    docstring).

    The attributes and methods declared below belong to ``Store``.
    """

    _log: Any
    _snap: Any
    _meta: Any
    _stats: Any
    _info: Any
    _write_lock: threading.Lock
    _buf_lock: threading.Lock
    _buf: list[_Entry]

    if TYPE_CHECKING:  # Store's (store.py, _store_read.py); declared for the type checker only

        def _check_open(self) -> None: ...

        def _read(self, what: str) -> AbstractContextManager[Any]: ...

        def _write(self, what: str, body: Callable[[Any], None]) -> None: ...

        def _read_entries(
            self, txn: Any, name: str, count: int | None = None
        ) -> tuple[bytes | None, list[bytes]]: ...

    def compact(
        self,
        name: str,
        merge: Callable[[bytes | None, list[bytes]], bytes],
        *,
        trusted_merge: Callable[[bytes | None, list[bytes]], bytes] | None = None,
    ) -> ShardStats:
        """Fold the snapshot and the whole committed log of ``name`` into a new snapshot.

        ``merge(snapshot, log)`` must return one update equivalent to the snapshot followed by
        the log. ``trusted_merge``, if given, is called instead when every entry passed its
        checksum and the shard is not legacy (see :attr:`LoadedShard.verified`): it may skip
        validating them. A mismatching checksum raises
        :class:`~crdtsync.errors.CorruptEntry` and changes nothing. The new snapshot replaces
        the old and the log entries are deleted in one write transaction. If ``merge`` raises,
        nothing changes and the exception propagates.
        Buffered (uncommitted) entries are untouched and land in the log, after the new
        snapshot, at the next :meth:`commit`. ``merge`` is not called if the log is empty.

        Returns the shard's stats after compaction.
        """
        validate_shard_name(name)
        nkey = name.encode()
        prefix = nkey + _SEP
        with self._write_lock:
            # Holding _write_lock, no other writer of this environment can run (and no other
            # process can open it), so reading in a read txn, merging outside any txn and then
            # writing is as atomic as one write txn, without holding a write txn over merge().
            with self._read(f"cannot read shard {name!r} for compaction") as txn:
                stats = _stats_from(name, txn.get(nkey, db=self._stats))
                if stats.log_count == 0:
                    return stats
                snapshot, log = self._read_entries(txn, name, stats.log_count)
                legacy = txn.get(_LEGACY + nkey, db=self._info) is not None
            use = merge if legacy or trusted_merge is None else trusted_merge
            new = _as_bytes(use(snapshot, log), "merge() result")
            after = ShardStats(name, 0, 0, len(new), stats.total_updates, time.time())

            def body(txn: Any) -> None:
                txn.put(nkey, _seal(new), db=self._snap)
                self._delete_log(txn, prefix, len(log))
                txn.delete(_LEGACY + nkey, db=self._info)  # merge() validated what was legacy
                txn.put(nkey, _stats_to(after), db=self._stats)

            self._write(f"cannot write the compacted shard {name!r}", body)
            return after

    def fold_tail(
        self,
        name: str,
        run: Sequence[bytes],
        fold: Callable[[Sequence[bytes]], bytes | None],
    ) -> int:
        """Replace buffered log entries of ``name`` by one: those at the end of the buffer
        that are the last entries of ``run`` (the very objects appended, in order), by
        ``fold(them)``, one update equivalent to them (None: keep them as they are).

        A shard folds the entries of its own writes since its last group commit this way
        (issue 17: a writer's one entry per write cost it an LMDB put, a checksum and, every
        thousand entries, a compaction replaying the whole shard). Only the buffer's tail is
        touched, so the entries of every shard keep their order, and nothing happens while a
        commit or compaction holds the write lock (a commit takes the buffer's front).
        ``fold`` runs under the store's locks. Returns how many entries were folded into one
        (0: none).
        """
        if len(run) < 2 or not self._write_lock.acquire(blocking=False):
            return 0
        try:
            with self._buf_lock:
                self._check_open()
                buf = self._buf
                most = min(len(run), len(buf))
                k = 0
                while k < most:
                    entry = buf[-1 - k]
                    if entry[2] is not run[-1 - k] or entry[1] is not None or entry[0] != name:
                        break
                    k += 1
                if k < 2:
                    return 0
                folded = fold(run[len(run) - k :])
                if folded is None:
                    return 0
                del buf[len(buf) - k :]
                buf.append((name, None, _as_bytes(folded, "update")))
                return k
        finally:
            self._write_lock.release()

    def _delete_log(self, txn: Any, prefix: bytes, known: int) -> None:
        """Delete a shard's whole log. ``known``: how many entries from its first key were
        just read under the same write lock, so all carry ``prefix``: those are deleted with
        one call each, without looking at their keys; anything after them with the prefix
        (none, unless the stats were behind) is deleted key by key."""
        cur = txn.cursor(db=self._log)
        if not cur.set_range(prefix) or not cur.key().startswith(prefix):
            return
        delete = cur.delete  # moves to the next entry; False past the last one
        for _ in repeat(None, known):
            if not delete():
                return
        self._delete_range(txn, self._log, prefix)

    @staticmethod
    def _delete_range(txn: Any, db: Any, prefix: bytes) -> None:
        cur = txn.cursor(db=db)
        if not cur.set_range(prefix):
            return
        while cur.key().startswith(prefix):
            if not cur.delete():  # moves to the next entry; False past the last one
                return

    def delete_shard(self, name: str) -> None:
        """Remove ``name``'s log, snapshot, metadata and stats, and drop its buffered entries.

        A no-op for a shard that was never stored.
        """
        validate_shard_name(name)
        nkey = name.encode()
        prefix = nkey + _SEP
        with self._write_lock:
            self._check_open()

            def body(txn: Any) -> None:
                self._delete_range(txn, self._log, prefix)
                self._delete_range(txn, self._meta, prefix)
                txn.delete(nkey, db=self._snap)
                txn.delete(nkey, db=self._stats)
                txn.delete(_LEGACY + nkey, db=self._info)

            self._write(f"cannot delete shard {name!r}", body)
            with self._buf_lock:
                self._buf[:] = [e for e in self._buf if e[0] != name]
