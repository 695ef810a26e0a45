"""The read path of :class:`crdtsync.store.Store`: shard names, stats, metadata, whole shards.

Every read runs in one LMDB read transaction (``Store._read``, held off only while the map is
resized), concurrently with commits. :meth:`_StoreRead.load` and
:meth:`_StoreRead._read_entries` (also what :meth:`~crdtsync.store.Store.compact` folds)
verify every entry's checksum with C-level maps, no Python frame per entry; the layout they
read is described in :mod:`crdtsync.store`'s docstring, the records in
:mod:`crdtsync._store_format`.

A mixin of :class:`~crdtsync.store.Store` (:class:`_StoreRead`), split from
:mod:`crdtsync.store` as :mod:`crdtsync._store_space` is; the state (the environment and its
named databases) is the ``Store`` instance's.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final

from ._store_format import (
    _CRC,
    _LEGACY,
    _SEP,
    LoadedShard,
    ShardStats,
    _stats_from,
    _unseal,
)
from .names import validate_shard_name

__all__: list[str] = []

_HEAD: Final = itemgetter(slice(0, 4))  # a stored entry's checksum
_PAYLOAD: Final = itemgetter(slice(4, None))  # and its update


class _StoreRead:
    """Mixin of :class:`~crdtsync.store.Store`: reading committed shards (module docstring).

    The attributes declared below belong to ``Store`` (set when its environment opens).
    """

    _log: Any
    _snap: Any
    _meta: Any
    _stats: Any
    _info: Any

    if TYPE_CHECKING:  # Store's (store.py); declared for the type checker only

        def _read(self, what: str) -> AbstractContextManager[Any]: ...

    def shard_names(self) -> list[str]:
        """Names of all committed shards, sorted by their UTF-8 bytes."""
        with self._read("cannot list shards") as txn:
            return [bytes(k).decode() for k in txn.cursor(db=self._stats).iternext(values=False)]

    def load(self, name: str) -> LoadedShard | None:
        """Everything committed for ``name``, or None if the shard was never stored.

        Entries appended but not yet committed are not included.
        """
        validate_shard_name(name)
        key = name.encode()
        prefix = key + _SEP
        with self._read(f"cannot load shard {name!r}") as txn:
            raw = txn.get(key, db=self._stats)
            if raw is None:
                return None
            stats = _stats_from(name, raw)
            snapshot, log = self._read_entries(txn, name, stats.log_count)
            meta = {
                bytes(k[len(prefix) :]).decode(): bytes(v)
                for k, v in self._range(txn, self._meta, prefix)
            }
            verified = txn.get(_LEGACY + key, db=self._info) is None
        return LoadedShard(snapshot=snapshot, log=log, meta=meta, stats=stats, verified=verified)

    def _read_entries(
        self, txn: Any, name: str, count: int | None = None
    ) -> tuple[bytes | None, list[bytes]]:
        """The snapshot and log of ``name``, checksums verified (CorruptEntry if one fails).

        ``count``: the log's entry count from the shard's stats, if the caller read them: the
        log is then read as exactly that many values from its first key, and only the last key
        is checked to still be the shard's (every key between is, the range being contiguous),
        and the one after it not to be. Otherwise (or if they disagree) the log is walked key by
        key.
        """
        key = name.encode()
        prefix = key + _SEP
        raw = txn.get(key, db=self._snap)
        snapshot = None if raw is None else _unseal(bytes(raw), name, "the snapshot")
        stored: list[bytes] | None = None
        if count is not None:
            cur = txn.cursor(db=self._log)
            if not cur.set_range(prefix) or not cur.key().startswith(prefix):
                stored = []
            elif count > 0:
                stored = list(islice(cur.iternext(keys=False), count))
                if (
                    len(stored) != count
                    or not cur.key().startswith(prefix)
                    or (cur.next() and cur.key().startswith(prefix))
                ):
                    stored = None  # the stats disagree with the log: walk it key by key
        if stored is None:
            stored = [v for _, v in self._range(txn, self._log, prefix)]
        # Strip and verify every checksum with C-level maps, no Python frame per entry (this
        # is most of a reopen's own cost besides pycrdt). An entry shorter than 4 bytes has a
        # head shorter than any packed crc, so it fails too.
        log = list(map(_PAYLOAD, stored))
        if list(map(_HEAD, stored)) != list(map(_CRC.pack, map(zlib.crc32, log))):
            for k, v in self._range(txn, self._log, prefix):  # name the first bad entry
                seq = int.from_bytes(k[len(prefix) :], "big")
                _unseal(bytes(v), name, f"log entry {seq}")  # raises CorruptEntry
        return snapshot, log

    def meta_values(self, key: str) -> dict[str, bytes]:
        """``{shard: value}`` of metadata ``key`` over every committed shard that has it (one
        scan of the metadata, no log read)."""
        suffix = _SEP + key.encode()
        with self._read(f"cannot read metadata {key!r}") as txn:
            return {
                bytes(k[: -len(suffix)]).decode(): bytes(v)
                for k, v in txn.cursor(db=self._meta)
                if bytes(k).endswith(suffix)
            }

    @staticmethod
    def _range(txn: Any, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, in key order."""
        cur = txn.cursor(db=db)
        if not cur.set_range(prefix):
            return
        for k, v in cur:
            if not k.startswith(prefix):
                return
            yield k, v

    def stats(self, name: str) -> ShardStats:
        """Committed stats of ``name`` (all zero for a shard never committed); no log scan."""
        validate_shard_name(name)
        with self._read(f"cannot read stats of {name!r}") as txn:
            return _stats_from(name, txn.get(name.encode(), db=self._stats))
