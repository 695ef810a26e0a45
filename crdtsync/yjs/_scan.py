"""The validator's inner loops: the struct section and the delete set of a Yjs update.

Everything :func:`crdtsync.yjs.parse.parse_update` spends its time in, in two modules that
``setup.py`` compiles with mypyc as one group (so the calls between them stay native calls)
while these very files stay the pure-Python fallback, as python-websockets does with its
speedups: this one, and :mod:`crdtsync.yjs._scan_content` (the lib0 readers, strings, Any
values, JSON and item content it reads each struct's fields with; re-exported here, so that
the rest of the package sees one module, ``scan``). :mod:`crdtsync.yjs._native` picks the build;
the public modules (``_lib0``, ``_content``, ``parse``, ``state``) re-export from it. The rules
enforced here, and why, are in the block comment of :mod:`crdtsync.yjs.parse`.

Written for both builds, as ``_scan_content`` is (explicit bounds checks, plain ``int`` and
``bytes`` locals, ``Final`` constants). A malformed input raises
:class:`~crdtsync.yjs._malformed.Malformed` with the offset where it went wrong. Imports only
the standard library, ``_malformed`` and ``_scan_content``.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final, Protocol

from ._malformed import Malformed, OverLimit
from ._scan_content import (
    _CONTENT_ANY,
    _CONTENT_DOC,
    _CONTENT_FORMAT,
    _CONTENT_STRING,
    CONTENT_DELETED,
    CONTENT_TYPE,
    MAX_CLOCK,
    MAX_NESTING,
    MAX_SAFE,
    MAX_VARUINT_BYTES,
    any_value,
    bytes_span,
    content,
    read_uint,
    skip_str,
    skip_varint,
    string_content,
)

__all__ = [
    "CONTENT_DELETED",
    "CONTENT_TYPE",
    "FanCounter",
    "MAX_CLOCK",
    "MAX_NESTING",
    "MAX_SAFE",
    "MAX_VARUINT_BYTES",
    "any_value",
    "bytes_span",
    "content",
    "read_delete_set",
    "read_uint",
    "scan_structs",
    "skip_str",
    "skip_varint",
    "string_content",
]

_INFO_GC: Final = 0
_INFO_SKIP: Final = 10
_HAS_ORIGIN: Final = 0x80
_HAS_RIGHT_ORIGIN: Final = 0x40
_HAS_PARENT_SUB: Final = 0x20
_RESERVED_BIT: Final = 0x10
_ANY_WEIGHT: Final = 32  # an Any value costs Yrs ~32 bytes to copy, a UTF-16 unit of a String ~1

# A client of this many structs or more sizes the native table of places for all of them at
# once. Below, it grows as places come: sized by structs, the paper state (10,972 structs,
# 4,627 places) validated 0.1-0.2 ms slower than with the dict, grown 0-0.02 ms faster.
_RESERVE_MIN: Final = 1 << 16

# ---------------------------------------------------------------------------------------------
# the struct section


def _add_range(los: list[int], his: list[int], clock: int, end: int) -> None:
    """Append [clock, end) to the ascending ranges (los, his), merged with the last if adjacent."""
    if his and his[-1] == clock:
        his[-1] = end
    else:
        los.append(clock)
        his.append(end)


class FanCounter(Protocol):
    """Where :func:`scan_structs` counts the items per place when its caller passes one:
    ``crdtsync.yjs._fans.Places`` (C, optional), a table keyed by the place's bytes in
    ``data`` without a bytes object per place. Without one, a dict counts them here."""

    def add(self, start: int, length: int) -> int:
        """One more item placed at ``data[start:start + length]``; returns how many are
        there now."""
        ...

    def reserve(self, more: int) -> None:
        """Room for ``more`` places (a hint, to grow the table once)."""
        ...

    def __len__(self) -> int: ...


def scan_structs(
    data: bytes,
    pos: int,
    max_structs: int,
    max_fan: int,
    max_depth: int,
    max_merge: int,
    refuse_format_in_map: bool,
    refuse_subdocs: bool,
    fans: FanCounter | None = None,
) -> tuple[
    int,
    dict[int, int],
    dict[int, tuple[int, int, list[int], list[int]]],
    list[tuple[int, int]],
    list[tuple[int, int, int, int]],
    int,
    dict[bytes, int],
    int,
    int,
]:
    """Validate the struct section at ``pos`` (see :func:`crdtsync.yjs.parse.parse_update`).

    A negative ``max_*`` switches that limit off. Returns (number of structs, ends, spans,
    gaps, refs, work, places, the most items at one of the places, new position): the
    fields of :class:`~crdtsync.yjs.parse.UpdateInfo` (its delete set still to be read), the
    work the struct section costs, and the places (placement bytes -> items placed there) of
    every item but those that continue their client's previous clock (empty when ``max_fan``
    is off; the most is then 0). The most is counted here, where it is free: a pass over a
    whole map's places (200,000) cost PlaceHistory 5 ms a time.

    ``fans``: an empty :class:`FanCounter` over ``data`` to count the places in, instead of
    the dict (which is then returned empty; the caller reads the places from ``fans``). The
    same items are counted in the same order, so every decision is the same either way.
    """
    n_data = len(data)
    # The bound method, called as a plain function: no method lookup per item.
    fan_add = fans.add if fans is not None else None
    merge_work = 0
    fan_work = 0  # conflict-scan steps: each item placed by another client next to a fan
    # placement bytes (origin, right origin, parent, key) -> the items placed there so far.
    # Items, not distinct clients: one client's m items at one place (each with the same
    # origin) are cheap among themselves, but each item of a higher client placed there later
    # scans all m (YATA's conflict loop passes every item of a lower client at the same
    # origin), so m + m such items cost m^2 whether they come from 2 clients or from m.
    fan_count: dict[bytes, int] = {}
    most = 0  # the largest value in fan_count (past 1: only repeated places raise it)
    depths: dict[tuple[int, int], int] = {}  # (client, clock) of a type -> nesting in the update
    n_clients, pos = read_uint(data, pos, MAX_SAFE, "number of clients")
    if n_clients > (n_data - pos) // 3:
        raise Malformed(pos, f"{n_clients} clients cannot fit in {n_data - pos} bytes")
    # Counted in one-client updates too: one client cannot make a fan within the update, but
    # its places add to those earlier updates made (PlaceHistory: n one-client updates of n
    # clients at one place cost the last one n conflict-scan steps, issue #11).
    count_fans = max_fan >= 0
    ends: dict[int, int] = {}
    spans: dict[int, tuple[int, int, list[int], list[int]]] = {}
    parents: list[tuple[int, int, int]] = []  # (struct offset, parent client, parent clock)
    gaps: list[tuple[int, int]] = []
    refs: list[tuple[int, int, int, int]] = []
    total = 0
    for _ in range(n_clients):
        n_structs, pos = read_uint(data, pos, MAX_SAFE, "number of structs")
        client_pos = pos
        client, pos = read_uint(data, pos, MAX_SAFE, "client id")
        if client in ends:
            raise Malformed(client_pos, f"client {client} appears twice in the struct section")
        clock, pos = read_uint(data, pos, MAX_CLOCK, "first clock")
        if n_structs > (n_data - pos) >> 1:
            raise Malformed(pos, f"{n_structs} structs cannot fit in {n_data - pos} bytes")
        total += n_structs
        if max_structs >= 0 and total > max_structs:
            raise OverLimit(pos, f"more than {max_structs} structs (the limit)")
        if fans is not None and count_fans and n_structs >= _RESERVE_MIN:
            # The table sized once for a large client's structs, not grown step by step (each
            # growth rehashes every place so far). A hint, never more than one place per 16
            # bytes left: a count declared in a few bytes does not allocate for its own sake.
            fans.reserve(min(n_structs, (n_data - pos) >> 4))
        first = clock
        end = 0
        gaps.append((client, first))
        los: list[int] = []
        his: list[int] = []
        # The run of items Yrs will merge into one (see UpdateLimits.max_merge_work): its
        # weighted length so far, its content kind and its right origin's bytes.
        run = 0
        run_kind = 0
        run_right_at = 0
        run_right_end = 0
        for _ in range(n_structs):
            start = pos
            if pos >= n_data:
                raise Malformed(pos, "input ends where a struct was expected")
            info = data[pos]
            pos += 1
            length = 0
            if info == _INFO_GC or info == _INFO_SKIP:
                run = 0
                length, pos = read_uint(
                    data, pos, MAX_CLOCK, "GC length" if info == 0 else "Skip length"
                )
                if length == 0:
                    name = "GC" if info == 0 else "Skip"
                    raise Malformed(start, f"zero-length {name} of client {client}")
                _add_range(los, his, clock, clock + length)
                if info == _INFO_SKIP:
                    gaps.append((client, clock + length))  # a hole unless the doc fills it
            else:
                kind = info & 0x0F
                if info & _RESERVED_BIT or kind == _INFO_GC or kind == _INFO_SKIP or kind > 10:
                    raise Malformed(start, f"invalid struct info byte 0x{info:02x}")
                # origin = this client's previous clock: typing. Not counted at its place:
                # only one item can continue a given clock, so skipping these undercounts a
                # place by at most one item, and honest typing costs no bookkeeping. Other
                # items placed next to their own client's (a pile of one client's items with
                # one origin, or typing backwards) are counted like any other.
                chained = False
                depth = 0
                if info & _HAS_ORIGIN:
                    ref_client, pos = read_uint(data, pos, MAX_SAFE, "origin client")
                    ref_clock, pos = read_uint(data, pos, MAX_CLOCK, "origin clock")
                    chained = ref_client == client and ref_clock == clock - 1
                    if ref_client != client or ref_clock >= clock:
                        refs.append((client, clock, ref_client, ref_clock))
                right_at = pos
                if info & _HAS_RIGHT_ORIGIN:
                    ref_client, pos = read_uint(data, pos, MAX_SAFE, "right origin client")
                    ref_clock, pos = read_uint(data, pos, MAX_CLOCK, "right origin clock")
                    if ref_client != client or ref_clock >= clock:
                        refs.append((client, clock, ref_client, ref_clock))
                merges = False
                if max_merge >= 0:
                    # The run's right origin is kept as offsets into ``data`` and compared
                    # only for an item that continues the run (no copy per item).
                    if kind != _CONTENT_ANY and kind != _CONTENT_STRING:
                        run = 0
                    elif (
                        chained
                        and run
                        and kind == run_kind
                        and pos - right_at == run_right_end - run_right_at
                        and data[right_at:pos] == data[run_right_at:run_right_end]
                    ):
                        merges = True
                    else:
                        run = 0
                        run_kind = kind
                        run_right_at = right_at
                        run_right_end = pos
                if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
                    parent_info, pos = read_uint(data, pos, 1, "parent info")
                    if parent_info:
                        pos = skip_str(data, pos, "root type name")
                    else:
                        parent_client, pos = read_uint(data, pos, MAX_SAFE, "parent client")
                        parent_clock, pos = read_uint(data, pos, MAX_CLOCK, "parent clock")
                        parents.append((start, parent_client, parent_clock))
                        if parent_client != client or parent_clock >= clock:
                            refs.append((client, clock, parent_client, parent_clock))
                        if max_depth >= 0:
                            depth = depths.get((parent_client, parent_clock), 0)
                    if info & _HAS_PARENT_SUB:
                        pos = skip_str(data, pos, "parent key")
                        if kind == _CONTENT_FORMAT and refuse_format_in_map:
                            raise OverLimit(start, "a Format item as a map value is not accepted")
                if kind == _CONTENT_DOC and refuse_subdocs:
                    raise OverLimit(start, "subdocuments are not accepted")
                if count_fans and not chained:
                    if fan_add is not None:
                        fan = fan_add(start + 1, pos - start - 1)
                    else:
                        key = data[start + 1 : pos]
                        fan = fan_count.get(key, 0) + 1
                        fan_count[key] = fan
                    if fan > 1:
                        fan_work += fan
                        if fan > most:
                            most = fan
                        if fan > max_fan:
                            raise OverLimit(
                                start,
                                f"more than {max_fan} items insert at the same place (the limit)",
                            )
                if max_depth >= 0 and kind == CONTENT_TYPE:
                    depth += 1
                    if depth > max_depth:
                        raise OverLimit(start, f"shared types nested deeper than {max_depth}")
                    depths[(client, clock)] = depth
                length, pos = content(data, pos, kind)
                if max_merge >= 0 and (kind == _CONTENT_ANY or kind == _CONTENT_STRING):
                    # Yrs copies the run merged so far for each item it merges into it.
                    run += length * (_ANY_WEIGHT if kind == _CONTENT_ANY else 1)
                    if merges:
                        merge_work += run
                        if merge_work > max_merge:
                            raise OverLimit(
                                start,
                                f"runs of items that Yrs merges cost more than {max_merge}"
                                " (the limit)",
                            )
                if kind == CONTENT_TYPE or kind == CONTENT_DELETED:
                    _add_range(los, his, clock, clock + length)
            clock += length
            if clock > MAX_CLOCK:
                raise Malformed(start, f"client {client} clock passes {MAX_CLOCK}")
            if info != _INFO_SKIP:
                end = clock
        if clock == first:
            raise Malformed(client_pos, f"client {client} has no structs that span a clock")
        ends[client] = end
        spans[client] = (first, clock, los, his)
    for start, parent_client, parent_clock in parents:
        span = spans.get(parent_client)
        if span is not None and span[0] <= parent_clock < span[1]:
            span_los = span[2]
            i = bisect_right(span_los, parent_clock) - 1
            if i < 0 or parent_clock >= span[3][i]:
                raise Malformed(
                    start,
                    f"parent ({parent_client}, {parent_clock}) is an item of this update"
                    " but not a type",
                )
    if most == 0 and (fan_count or (fans is not None and len(fans))):
        most = 1
    return total, ends, spans, gaps, refs, total + fan_work + merge_work, fan_count, most, pos


# ---------------------------------------------------------------------------------------------
# the delete set


def read_delete_set(
    data: bytes, pos: int, strict: bool, max_ranges: int
) -> tuple[dict[int, list[tuple[int, int]]], int]:
    """Read an encoded delete set at ``pos``; return ({client: [(clock, len), ...]}, new pos).

    See :func:`crdtsync.yjs.state.read_delete_set`; a negative ``max_ranges`` means no cap.
    """
    n_clients, pos = read_uint(data, pos, MAX_SAFE, "number of delete-set clients")
    if n_clients > (len(data) - pos) >> 1:
        raise Malformed(
            pos, f"{n_clients} delete-set clients cannot fit in {len(data) - pos} bytes"
        )
    result: dict[int, list[tuple[int, int]]] = {}
    total = 0
    for _ in range(n_clients):
        client_pos = pos
        client, pos = read_uint(data, pos, MAX_SAFE, "delete-set client id")
        if client in result:
            raise Malformed(client_pos, f"client {client} appears twice in the delete set")
        n_ranges, pos = read_uint(data, pos, MAX_SAFE, "number of deleted ranges")
        if n_ranges > (len(data) - pos) >> 1:
            raise Malformed(pos, f"{n_ranges} deleted ranges cannot fit in {len(data) - pos} bytes")
        total += n_ranges
        if max_ranges >= 0 and total > max_ranges:
            raise OverLimit(pos, f"more than {max_ranges} deleted ranges (the limit)")
        ranges: list[tuple[int, int]] = []
        end = -1
        for _ in range(n_ranges):
            range_pos = pos
            clock, pos = read_uint(data, pos, MAX_CLOCK, "deleted range clock")
            length, pos = read_uint(data, pos, MAX_CLOCK, "deleted range length")
            if length == 0:
                raise Malformed(range_pos, f"empty deleted range of client {client}")
            if clock + length > MAX_CLOCK:
                raise Malformed(range_pos, f"deleted range of client {client} passes {MAX_CLOCK}")
            if strict and clock < end:
                raise Malformed(
                    range_pos,
                    f"deleted ranges of client {client} unsorted or overlapping",
                )
            end = clock + length
            ranges.append((clock, length))
        result[client] = ranges
    return result, pos
