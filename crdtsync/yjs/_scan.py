"""The validator's inner loops: lib0 readers, item content, the struct section, the delete set.

Everything :func:`crdtsync.yjs.parse.parse_update` spends its time in, in one self-contained
module so that it can be compiled with mypyc (``setup.py``) while this very file stays the
pure-Python fallback, as python-websockets does with its speedups. :mod:`crdtsync.yjs._native`
picks the build; the public modules (``_lib0``, ``_content``, ``parse``, ``state``) re-export
from it. The rules enforced here, and why, are in the block comment of
:mod:`crdtsync.yjs.parse`.

Written for both builds: explicit bounds checks instead of ``try``/``except IndexError`` (an
exception is costly in compiled code), plain ``int`` and ``bytes`` locals (mypyc turns them
into C integers and direct byte reads), constants marked ``Final`` (inlined), and no per-byte
Python calls on the common paths (one-byte varuints and ASCII strings are read inline).

Every reader takes ``(data, pos, ...)`` and returns the new position (with the value where
there is one); a malformed input raises :class:`~crdtsync.yjs._malformed.Malformed` with the
offset where it went wrong. Imports only the standard library and ``_malformed``.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from typing import Final, NoReturn, Protocol

from ._malformed import Malformed, OverLimit

__all__ = [
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

#: lib0's Number.MAX_SAFE_INTEGER: the cap on client ids, counts and byte lengths.
MAX_SAFE: Final = 9007199254740991  # 2**53 - 1
#: Yrs clocks are u32, and pycrdt panics on gaps of 2**31: the cap on every clock and length.
MAX_CLOCK: Final = 2147483647  # 2**31 - 1
#: 8 x 7 bits = 56 bits > 53: no longer varuint encodes an accepted value.
MAX_VARUINT_BYTES: Final = 8
#: Deepest nesting of Any arrays/objects and of JSON values accepted in an update.
MAX_NESTING: Final = 100

_INFO_GC: Final = 0
_INFO_SKIP: Final = 10
_HAS_ORIGIN: Final = 0x80
_HAS_RIGHT_ORIGIN: Final = 0x40
_HAS_PARENT_SUB: Final = 0x20
_RESERVED_BIT: Final = 0x10
_ANY_WEIGHT: Final = 32  # an Any value costs Yrs ~32 bytes to copy, a UTF-16 unit of a String ~1

CONTENT_DELETED: Final = 1
_CONTENT_JSON: Final = 2
_CONTENT_BINARY: Final = 3
_CONTENT_STRING: Final = 4
_CONTENT_EMBED: Final = 5
_CONTENT_FORMAT: Final = 6
CONTENT_TYPE: Final = 7
_CONTENT_ANY: Final = 8
_CONTENT_DOC: Final = 9

_TYPE_XML_ELEMENT: Final = 3
# A client of this many structs or more sizes the native table of places for all of them at
# once. Below, it grows as places come: sized by structs, the paper state (10,972 structs,
# 4,627 places) validated 0.1-0.2 ms slower than with the dict, grown 0-0.02 ms faster.
_RESERVE_MIN: Final = 1 << 16

# ---------------------------------------------------------------------------------------------
# lib0 primitives


def read_uint(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    """Read a minimal lib0 varuint no larger than ``limit``; return (value, new position)."""
    n = len(data)
    if pos >= n:
        raise Malformed(pos, f"input ends where {what} (varuint) was expected")
    b = data[pos]
    if b < 0x80:
        if b > limit:
            raise Malformed(pos, f"{what} {b} exceeds {limit}")
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    p = pos + 1
    while True:
        if p >= n:
            raise Malformed(pos, f"input ends inside {what} (varuint)")
        b = data[p]
        p += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if p - pos >= MAX_VARUINT_BYTES:
            raise Malformed(pos, f"{what} (varuint) is longer than {MAX_VARUINT_BYTES} bytes")
    if b == 0:
        raise Malformed(pos, f"{what} (varuint) is not minimally encoded")
    if value > limit:
        raise Malformed(pos, f"{what} {value} exceeds {limit}")
    return value, p


def skip_varint(data: bytes, pos: int, what: str) -> int:
    """Skip a minimal lib0 signed varint of magnitude <= 2**53-1; return the new position."""
    n = len(data)
    if pos >= n:
        raise Malformed(pos, f"input ends where {what} (varint) was expected")
    b = data[pos]
    if b < 0x80:
        return pos + 1  # includes 0x40, lib0's encoding of -0
    value = b & 0x3F
    shift = 6
    p = pos + 1
    while True:
        if p >= n:
            raise Malformed(pos, f"input ends inside {what} (varint)")
        b = data[p]
        p += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if p - pos >= MAX_VARUINT_BYTES:
            raise Malformed(pos, f"{what} (varint) is longer than {MAX_VARUINT_BYTES} bytes")
    if b == 0:
        raise Malformed(pos, f"{what} (varint) is not minimally encoded")
    if value > MAX_SAFE:
        raise Malformed(pos, f"{what} magnitude {value} exceeds {MAX_SAFE}")
    return p


def bytes_span(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read a length-prefixed byte string; return (start, end) of its payload."""
    n, start = read_uint(data, pos, MAX_SAFE, what)
    end = start + n
    if end > len(data):
        raise Malformed(pos, f"{what} of {n} bytes runs past the end of input")
    return start, end


def _probe() -> None:
    """Only here to tell the builds apart (see :data:`_COMPILED`)."""


#: Whether this very module runs compiled: mypyc turns functions into builtins without
#: ``__code__``. Only the choice of a faster path hangs on it, never a result.
_COMPILED: Final = not hasattr(_probe, "__code__")
#: Strings up to this many bytes are checked byte by byte in the compiled build.
_SHORT: Final = 64


def _ascii(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` is all ASCII.

    Compiled, a short span is read in place (a C loop over the bytes): the slice that
    ``isascii`` needs was a third of the compiled scan of a 200,000-key map (three strings
    per entry: the root's name, the key, the value). Interpreted, the slice is the fast way.
    """
    if _COMPILED and end - start <= _SHORT:
        for i in range(start, end):
            if data[i] >= 0x80:
                return False
        return True
    return data[start:end].isascii()


def _utf8_error(data: bytes, start: int, end: int, what: str) -> None:
    """Raise Malformed if ``data[start:end]`` is not UTF-8 (where it fails, and why)."""
    try:
        data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(start + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None


def skip_str(data: bytes, pos: int, what: str) -> int:
    """Validate a length-prefixed UTF-8 string without keeping it; return the new position."""
    if pos < len(data) and data[pos] < 0x80:  # fast path: a one-byte length (as bytes_span)
        start = pos + 1
        end = start + data[pos]
        if end > len(data):
            raise Malformed(pos, f"{what} of {data[pos]} bytes runs past the end of input")
    else:
        start, end = bytes_span(data, pos, what)
    if not _ascii(data, start, end):
        _utf8_error(data, start, end, what)
    return end


def string_content(data: bytes, pos: int) -> tuple[int, int]:
    """Read String item content; return (its length in UTF-16 code units, new position).

    Yjs counts a String's clocks in UTF-16 code units, while lib0 prefixes it with its length
    in UTF-8 bytes; ASCII (the common case) is the same in both.
    """
    if pos < len(data) and data[pos] < 0x80:  # fast path: a one-byte length (as bytes_span)
        start = pos + 1
        end = start + data[pos]
        if end > len(data):
            raise Malformed(pos, f"string content of {data[pos]} bytes runs past the end of input")
    else:
        start, end = bytes_span(data, pos, "string content")
    if _ascii(data, start, end):
        return end - start, end
    try:
        text = data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(
            start + exc.start, f"string content is not valid UTF-8 ({exc.reason})"
        ) from None
    return len(text.encode("utf-16-le")) >> 1, end


# ---------------------------------------------------------------------------------------------
# item content: Any values and JSON


def any_value(data: bytes, pos: int, depth: int) -> int:
    """Validate one lib0 Any value; return the new position."""
    if pos >= len(data):
        raise Malformed(pos, "input ends where an Any value was expected")
    tag = data[pos]
    p = pos + 1
    if tag == 127 or tag == 126 or tag == 121 or tag == 120:  # undefined, null, false, true
        return p
    if tag == 119:
        return skip_str(data, p, "Any string")
    if tag == 125:
        return skip_varint(data, p, "Any integer")
    if tag == 124 or tag == 123 or tag == 122:  # float32, float64, bigint64
        end = p + (4 if tag == 124 else 8)
        if end > len(data):
            raise Malformed(pos, "input ends inside an Any number")
        return end
    if tag == 116:
        return bytes_span(data, p, "Any bytes")[1]
    if tag == 118 or tag == 117:
        if depth >= MAX_NESTING:
            raise Malformed(pos, f"Any value nested deeper than {MAX_NESTING}")
        if tag == 117:
            n, p = read_uint(data, p, MAX_SAFE, "Any array length")
            if n > len(data) - p:
                raise Malformed(pos, f"Any array of {n} items cannot fit in {len(data) - p} bytes")
            for _ in range(n):
                p = any_value(data, p, depth + 1)
            return p
        n, p = read_uint(data, p, MAX_SAFE, "Any object size")
        if n > (len(data) - p) >> 1:
            raise Malformed(pos, f"Any object of {n} entries cannot fit in {len(data) - p} bytes")
        keys: set[str] = set()
        for _ in range(n):
            key_pos = p
            start, p = bytes_span(data, p, "Any object key")
            try:
                key = data[start:p].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Malformed(
                    start + exc.start, f"Any object key is not valid UTF-8 ({exc.reason})"
                ) from None
            if key in keys:
                raise Malformed(key_pos, f"Any object repeats key {key!r}")
            keys.add(key)
            p = any_value(data, p, depth + 1)
        return p
    raise Malformed(pos, f"unknown Any tag {tag}")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _checked_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _checked_int(text: str) -> int:
    value = int(text)
    if not math.isfinite(float(value)):  # float() raises OverflowError past ~1.8e308
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("object repeats a key")
    return result


_JSON_DECODER: Final = json.JSONDecoder(
    parse_float=_checked_float,
    parse_int=_checked_int,
    parse_constant=_reject_constant,
    object_pairs_hook=_unique_pairs,
)


def _json_depth_ok(value: object) -> bool:
    """True if ``value`` nests at most MAX_NESTING deep and holds no lone surrogates."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return False
        elif isinstance(item, (list, dict)):
            if depth >= MAX_NESTING:
                return False
            if isinstance(item, dict):
                for key, child in item.items():
                    stack.append((key, depth + 1))
                    stack.append((child, depth + 1))
            else:
                for child in item:
                    stack.append((child, depth + 1))
    return True


def _json(data: bytes, pos: int, what: str) -> int:
    """Validate a length-prefixed string that must hold one JSON value."""
    start, end = bytes_span(data, pos, what)
    try:
        text = data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(start + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None
    try:
        value = _JSON_DECODER.decode(text)
    except (ValueError, RecursionError, OverflowError) as exc:
        raise Malformed(pos, f"{what} is not valid JSON ({exc})") from None
    if not _json_depth_ok(value):
        raise Malformed(pos, f"{what} nests deeper than {MAX_NESTING} or has a lone surrogate")
    return end


def content(data: bytes, pos: int, kind: int) -> tuple[int, int]:
    """Validate an Item's content of ``kind``; return (its length in clocks, new position)."""
    if kind == _CONTENT_STRING:
        return string_content(data, pos)
    if kind == _CONTENT_ANY:
        n, p = read_uint(data, pos, MAX_CLOCK, "Any content count")
        if n > len(data) - p:
            raise Malformed(pos, f"Any content of {n} values cannot fit in {len(data) - p} bytes")
        for _ in range(n):
            p = any_value(data, p, 0)
        return n, p
    if kind == CONTENT_DELETED:
        return read_uint(data, pos, MAX_CLOCK, "Deleted content length")
    if kind == CONTENT_TYPE:
        if pos >= len(data):
            raise Malformed(pos, "input ends where a type ref was expected")
        ref = data[pos]
        # Array, Map, Text, XmlFragment, XmlText
        if ref == 0 or ref == 1 or ref == 2 or ref == 4 or ref == 6:
            return 1, pos + 1
        if ref == _TYPE_XML_ELEMENT:
            return 1, skip_str(data, pos + 1, "XmlElement name")
        if ref == 5:
            raise Malformed(pos, "XmlHook type (Yjs and Yrs encode it differently) is not accepted")
        raise Malformed(pos, f"unknown or unsupported type ref {ref}")
    if kind == _CONTENT_FORMAT:
        p = skip_str(data, pos, "Format key")
        return 1, _json(data, p, "Format value")
    if kind == _CONTENT_EMBED:
        return 1, _json(data, pos, "Embed value")
    if kind == _CONTENT_BINARY:
        return 1, bytes_span(data, pos, "Binary content")[1]
    if kind == _CONTENT_DOC:
        p = skip_str(data, pos, "subdocument guid")
        if p >= len(data):
            raise Malformed(p, "input ends where subdocument options were expected")
        tag = data[p]
        if tag != 118:
            raise Malformed(p, f"subdocument options must be an Any object, not tag {tag}")
        return 1, any_value(data, p, 0)
    if kind == _CONTENT_JSON:
        raise Malformed(
            pos,
            "legacy JSON content (Yjs and Yrs decode it differently) is not accepted",
        )
    raise Malformed(pos - 1, f"unknown content kind {kind}")


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
