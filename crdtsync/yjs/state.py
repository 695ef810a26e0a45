"""State vectors and delete sets: decoding, the canonical encoding, and :func:`covers`.

A *state vector* says how many clocks of each client a replica holds (lib0: ``n {client
clock}*``); a *delete set* lists the clock ranges it has deleted (lib0: ``n {client n {clock
len}*}*``). The gossip protocol compares both: a replica holds everything another holds when
its clocks are at least as high and its delete set contains the other's
(:func:`covers`), and equal content must give equal bytes, so delete sets are put in one
normal form (clients ascending, ranges sorted and merged) before they are encoded.

Pure Python, no pycrdt: the sans-I/O gossip core imports this module. The pycrdt side
(reading these off a ``Doc``) is :mod:`crdtsync.yjs.doc`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import InvalidUpdate
from ._lib0 import MAX_CLOCK, MAX_SAFE, Malformed, encode_uint, read_uint

if TYPE_CHECKING:
    from . import _scan as scan
else:
    from ._native import scan

__all__ = [
    "sv_covers",
    "EMPTY_STATE_VECTOR",
    "DeleteSet",
    "covers",
    "decode_delete_set",
    "decode_state_vector",
    "ds_within",
    "encode_delete_set",
    "encode_state_vector",
    "is_normal_delete_set",
    "normalize_delete_set",
    "read_delete_set",
    "subtract_delete_set",
]

#: The encoded state vector of an empty document (no clients).
EMPTY_STATE_VECTOR = b"\x00"

#: A decoded delete set: ``{client: [(clock, length), ...]}``.
DeleteSet = dict[int, list[tuple[int, int]]]


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode an encoded state vector into ``{client: clock}``, sorted by client.

    Clients at clock 0 are left out: holding nothing of a client is the same as not knowing it.

    Raises:
        InvalidUpdate: ``sv`` is not a well-formed state vector.
    """
    if not isinstance(sv, bytes):
        raise InvalidUpdate(f"a state vector must be bytes, not {type(sv).__name__}")
    if not sv:
        raise InvalidUpdate("a state vector cannot be empty")
    try:
        n, pos = read_uint(sv, 0, MAX_SAFE, "number of state-vector entries")
        if n > (len(sv) - pos) >> 1:
            raise Malformed(pos, f"{n} state-vector entries cannot fit in {len(sv) - pos} bytes")
        entries: dict[int, int] = {}
        for _ in range(n):
            client_pos = pos
            client, pos = read_uint(sv, pos, MAX_SAFE, "state-vector client id")
            if client in entries:
                raise Malformed(client_pos, f"client {client} appears twice in the state vector")
            entries[client], pos = read_uint(sv, pos, MAX_CLOCK, "state-vector clock")
        if pos != len(sv):
            raise Malformed(pos, f"{len(sv) - pos} trailing bytes after the state vector")
    except Malformed as exc:
        raise InvalidUpdate(f"invalid state vector at byte {exc.pos}: {exc.what}") from None
    except Exception as exc:  # a bug here must still look like a refusal, never a crash
        raise InvalidUpdate(f"state vector could not be decoded: {exc!r}") from exc
    return {client: entries[client] for client in sorted(entries) if entries[client]}


def encode_state_vector(sv: Mapping[int, int]) -> bytes:
    """Encode ``{client: clock}`` as lib0 does, in the mapping's order (canonical if sorted)."""
    out = bytearray()
    encode_uint(out, len(sv))
    for client, clock in sv.items():
        encode_uint(out, client)
        encode_uint(out, clock)
    return bytes(out)


def read_delete_set(
    data: bytes, pos: int, *, strict: bool, max_ranges: int | None = None
) -> tuple[DeleteSet, int]:
    """Read an encoded delete set at ``pos``; return ({client: [(clock, len), ...]}, new pos).

    With ``strict`` (inside an update) each client's ranges must already be sorted and
    non-overlapping, as Yrs assumes; otherwise they are returned as read. ``max_ranges`` caps
    the ranges of all clients together, checked before any of a client's ranges are read.

    The loop is :func:`crdtsync.yjs._scan.read_delete_set` (compiled where it could be built).

    Raises:
        Malformed: the bytes are not a delete set.
    """
    return scan.read_delete_set(data, pos, strict, -1 if max_ranges is None else max_ranges)


def is_normal_delete_set(ds: DeleteSet) -> bool:
    """Whether ``ds`` is in normal form already: clients ascending, none without ranges, each
    client's ranges sorted with neither overlaps nor adjacent ones (and none empty).

    One pass with no allocation: the delete set pycrdt encodes for a document of one writer
    (a streamed text) is in normal form, and sorting and rebuilding it at every group commit
    and every received ack was the larger part of deriving it (issue 17, stream row).
    """
    last = -1
    for client, ranges in ds.items():
        if client <= last or not ranges:
            return False
        last = client
        end = -1
        for clock, length in ranges:
            if clock <= end or length <= 0:  # overlapping, adjacent (==), or empty
                return False
            end = clock + length
    return True


def normalize_delete_set(ds: DeleteSet) -> DeleteSet:
    """Sort clients and ranges, merge overlapping or adjacent ranges, drop empty clients.

    A delete set in normal form already (:func:`is_normal_delete_set`) is returned as it is,
    not copied.
    """
    if is_normal_delete_set(ds):
        return ds
    result: DeleteSet = {}
    for client in sorted(ds):
        merged: list[tuple[int, int]] = []
        start = end = -1
        for clock, length in sorted(ds[client]):
            if clock <= end:
                end = max(end, clock + length)
            else:
                if end >= 0:
                    merged.append((start, end - start))
                start, end = clock, clock + length
        if end >= 0:
            merged.append((start, end - start))
            result[client] = merged
    return result


def subtract_delete_set(ds: DeleteSet, minus: DeleteSet) -> DeleteSet:
    """``ds`` without the ranges of ``minus``, both normalized (:func:`normalize_delete_set`);
    the result is normalized too. Ranges of ``minus`` outside ``ds`` are ignored."""
    result: DeleteSet = {}
    for client, ranges in ds.items():
        cuts = minus.get(client)
        if not cuts:
            result[client] = ranges
            continue
        kept: list[tuple[int, int]] = []
        i = 0
        for clock, length in ranges:
            start, end = clock, clock + length
            while i < len(cuts) and cuts[i][0] + cuts[i][1] <= start:
                i += 1  # cuts wholly before this range
            j = i
            while start < end and j < len(cuts) and cuts[j][0] < end:
                cut_start, cut_end = cuts[j][0], cuts[j][0] + cuts[j][1]
                if cut_start > start:
                    kept.append((start, cut_start - start))
                start = max(start, cut_end)
                j += 1
            if start < end:
                kept.append((start, end - start))
        if kept:
            result[client] = kept
    return result


def encode_delete_set(ds: DeleteSet) -> bytes:
    """Encode a normalized delete set (lib0 v1 layout, in the mapping's order)."""
    out = bytearray()
    encode_uint(out, len(ds))
    for client, ranges in ds.items():
        encode_uint(out, client)
        encode_uint(out, len(ranges))
        for clock, length in ranges:
            encode_uint(out, clock)
            encode_uint(out, length)
    return bytes(out)


def decode_delete_set(ds: bytes) -> DeleteSet:
    """Decode an encoded delete set into ``{client: [(clock, length), ...]}``.

    Clients come out ascending, each client's ranges sorted with overlapping and adjacent ones
    merged, and clients without ranges left out: the normal form that :func:`covers` and
    :func:`crdtsync.yjs.doc.digest` compare.

    Raises:
        InvalidUpdate: ``ds`` is not a well-formed delete set.
    """
    if not isinstance(ds, bytes):
        raise InvalidUpdate(f"a delete set must be bytes, not {type(ds).__name__}")
    if not ds:
        raise InvalidUpdate("a delete set cannot be empty")
    try:
        decoded, pos = read_delete_set(ds, 0, strict=False)
        if pos != len(ds):
            raise Malformed(pos, f"{len(ds) - pos} trailing bytes after the delete set")
    except Malformed as exc:
        raise InvalidUpdate(f"invalid delete set at byte {exc.pos}: {exc.what}") from None
    except Exception as exc:
        raise InvalidUpdate(f"delete set could not be decoded: {exc!r}") from exc
    return normalize_delete_set(decoded)


def covers(sv_a: bytes, ds_a: bytes, sv_b: bytes, ds_b: bytes) -> bool:
    """Whether replica A holds everything replica B holds.

    True when A's clock is at least B's for every client and every range B has deleted lies
    inside A's delete set. An ack that reports (sv, ds) of a peer's disk can then be checked
    against a local (sv, ds): equal state vectors are not enough, since a lost delete leaves
    the state vector alone.

    Raises:
        InvalidUpdate: one of the arguments is not well-formed.
    """
    return sv_covers(sv_a, sv_b) and ds_within(decode_delete_set(ds_b), decode_delete_set(ds_a))


def sv_covers(sv_a: bytes, sv_b: bytes) -> bool:
    """Whether state vector A's clock is at least B's for every client of B.

    Raises:
        InvalidUpdate: one of the arguments is not a well-formed state vector.
    """
    clocks_a = decode_state_vector(sv_a)
    return all(
        clocks_a.get(client, 0) >= clock for client, clock in decode_state_vector(sv_b).items()
    )


def ds_within(
    inner: Mapping[int, list[tuple[int, int]]],
    outer: Mapping[int, list[tuple[int, int]]],
    starts: Mapping[int, list[int]] | None = None,
) -> bool:
    """Whether every range of ``inner`` lies inside ``outer`` (normalized: merged ranges).

    ``starts`` ({client: the start clocks of outer's ranges}) may be passed in when many sets
    are checked against the same ``outer``.
    """
    for client, ranges in inner.items():
        if not ranges:
            continue
        have = outer.get(client)
        if not have:
            return False
        have_starts = starts[client] if starts is not None else [clock for clock, _ in have]
        for clock, length in ranges:
            i = bisect_right(have_starts, clock) - 1
            if i < 0:
                return False
            have_clock, have_length = have[i]
            if clock + length > have_clock + have_length:
                return False
    return True
