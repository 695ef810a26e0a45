"""The on-disk format of :class:`crdtsync.store.Store`: records, checksums, format versions.

The stored form of updates (a crc32, then the update: :func:`_seal` / :func:`_unseal`), the
fixed-size per-shard stats record, and the layout versions (format 1: no checksums, upgraded in
place on open by :mod:`crdtsync._store_env`; format 2: checksums). Pure: no LMDB here. See
"Layout" and "Checksums" in the :mod:`crdtsync.store` docstring; that module
re-exports :class:`ShardStats` and :class:`LoadedShard`.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Final

from .errors import CorruptEntry

__all__ = ["ShardStats", "LoadedShard"]

_FORMAT: Final = b"2"
_FORMAT_UNCHECKED: Final = b"1"  # entries without checksums; upgraded on open
_LEGACY: Final = b"legacy\x00"  # info key prefix: shard written in format 1, not verified yet
_CRC: Final = struct.Struct(">I")
_LOCK_FILE: Final = "LOCK"
_SEP: Final = b"\x00"
# log_count, log_bytes, snapshot_bytes, total_updates, last_compaction (NaN = never)
_STATS: Final = struct.Struct(">QQQQd")


@dataclass(frozen=True)
class ShardStats:
    """Sizes and counters of one shard as committed (a buffered entry is not counted)."""

    name: str
    log_count: int
    """Updates in the append-only log now (since the last compaction)."""
    log_bytes: int
    """Total bytes of those updates."""
    snapshot_bytes: int
    """Size of the compacted snapshot (0 if none)."""
    total_updates: int
    """Updates ever appended and committed (monotonic; survives compaction)."""
    last_compaction: float | None
    """Wall-clock ``time.time()`` of the last compaction, None if never compacted."""


@dataclass(frozen=True)
class LoadedShard:
    """Everything committed for one shard: replay ``snapshot`` then ``log`` to rebuild it."""

    snapshot: bytes | None
    log: list[bytes]
    """Updates in append order, all appended after the snapshot was taken."""
    meta: dict[str, bytes]
    """Whatever :meth:`Store.put_meta` stored."""
    stats: ShardStats
    verified: bool = True
    """Whether every entry carries a checksum that matched, so each is exactly what was
    validated before it was stored. False for a shard written before checksums (format 1)
    that :meth:`Store.mark_verified` was not called for yet: validate its entries."""


def _seal(update: bytes) -> bytes:
    """The stored form of an update: its crc32, then the update."""
    return _CRC.pack(zlib.crc32(update)) + update


def _unseal(raw: bytes, name: str, what: str) -> bytes:
    """The update stored in ``raw``; CorruptEntry if its checksum does not match."""
    payload = raw[4:]
    if len(raw) < 4 or _CRC.unpack_from(raw)[0] != zlib.crc32(payload):
        raise CorruptEntry(
            f"shard {name!r}: {what} fails its checksum; the data directory is damaged "
            "(restore it from a backup or a peer)"
        )
    return payload


def _stats_from(name: str, raw: bytes | None) -> ShardStats:
    if raw is None:
        return ShardStats(name, 0, 0, 0, 0, None)
    count, nbytes, snap, total, last = _STATS.unpack(raw)
    return ShardStats(name, count, nbytes, snap, total, None if math.isnan(last) else last)


def _stats_to(s: ShardStats) -> bytes:
    last = math.nan if s.last_compaction is None else s.last_compaction
    return _STATS.pack(s.log_count, s.log_bytes, s.snapshot_bytes, s.total_updates, last)


def _as_bytes(value: object, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, not {type(value).__name__}")


# A buffered entry: (shard name, meta key or None for a log entry, value).
_Entry = tuple[str, "str | None", bytes]
