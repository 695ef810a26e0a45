"""Raw Yjs update bytes: validation, application, state vectors, delete sets and digests.

This is the one module that looks inside the lib0 **v1** update encoding that pycrdt (Yrs)
produces and consumes. Every update that arrives from a peer or from disk goes through
:func:`validate_update` before pycrdt sees it, because pycrdt is not a safe parser of hostile
bytes: it accepts some garbage silently (``bytes(range(256))`` applies as a no-op), panics on
others (``pyo3_runtime.PanicException``, which ``except Exception`` does not catch), and a few
inputs make it allocate without bound. :func:`apply_update` validates first and translates
whatever pycrdt still raises into :class:`~crdtsync.errors.InvalidUpdate`.

:func:`apply_if_ready` applies an update only if pycrdt will integrate all of it at once
(:func:`is_ready`): structs that build on something the doc lacks would otherwise stay
*pending* inside pycrdt, which can then crash on hostile input. :class:`Backlog` holds such
updates, bounded, until they are ready.

The rest summarises a document for the gossip protocol: its state vector, its delete set in a
canonical encoding, a digest of both (equal content gives an equal digest, and unlike the state
vector it changes on a deletion), and :func:`covers` for replication acks.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import pycrdt

from .errors import InvalidUpdate

__all__ = [
    "validate_update",
    "apply_update",
    "state_vector",
    "decode_state_vector",
    "delete_set",
    "decode_delete_set",
    "digest",
    "covers",
    "replay",
    "is_noop",
    "is_ready",
    "apply_if_ready",
    "Backlog",
    "MAX_NESTING",
]

# ---------------------------------------------------------------------------------------------
# The lib0 v1 update encoding, as Yjs (src/utils/encoding.js, src/structs/*.js) and Yrs
# (yrs/src/update.rs, block.rs, any.rs, id_set.rs) read it. All integers are lib0 varuints
# (7 bits a byte, least significant group first, high bit = "more follows") unless noted.
#
#   update      = structs delete_set
#   structs     = n_clients { n_structs client clock struct* }
#   struct      = info:u8 ...
#     info == 0         GC      len                       (collected tombstones)
#     info == 10        Skip    len                       (a hole in a merged update)
#     otherwise         Item:   bit 7 (0x80) origin present, bit 6 (0x40) right origin present,
#                               bit 5 (0x20) parentSub present, bits 0-3 content kind
#         [origin = client clock] [right_origin = client clock]
#         if neither origin: parent_info (1 = root type named by a string, 0 = parent item ID)
#                            then that string or ID, then parentSub string if bit 5
#         content by kind:
#           1 Deleted  len                 4 String  string (length = its UTF-16 code units)
#           2 JSON     n string*           5 Embed   string holding JSON
#           3 Binary   bytes               6 Format  key string, string holding JSON
#           7 Type     type_ref:u8 (3 XmlElement and 5 XmlHook are followed by a name string)
#           8 Any      n any*              9 Doc     guid string, any (options map)
#       Every struct occupies `length` clocks; a client's structs are consecutive from `clock`.
#   delete_set  = n_clients { client n_ranges { clock len }* }
#   string      = len utf8_bytes (length in UTF-8 bytes), bytes = len raw_bytes
#   any         = tag:u8 ...   127 undefined, 126 null, 125 varint, 124 float32 (4 bytes BE),
#                 123 float64 (8 BE), 122 bigint64 (8 BE), 121 false, 120 true, 119 string,
#                 118 object n {key_string any}*, 117 array n any*, 116 bytes
#   varint      = first byte: bit 7 more, bit 6 sign, 6 magnitude bits; then varuint groups
#   state vector = n { client clock }*
#
# What this validator is stricter about than both decoders, and why:
# * Integer ranges. Clocks are u32 in Yrs, and pycrdt panics ("Option::unwrap() on None")
#   when a struct wraps past 2**32-1, and already when a struct starts more than 2**31 clocks
#   beyond what the doc holds of its client. So every clock, length and end clock (of structs,
#   delete ranges, origins, parents, state vectors) must stay <= 2**31-1: two billion
#   operations of one client, far beyond any real document. Client ids and other counts are
#   capped at 2**53-1 like lib0's readVarUint (pycrdt refuses client ids above 53 bits too).
#   Varints must be minimally encoded and at most 8 bytes: every encoder writes them so, and
#   one value has then exactly one encoding.
# * Counts are checked against the bytes left before looping: Yrs pre-allocates from some of
#   them (delete-set ranges, Any arrays and maps), and an absurd count aborts the process.
# * Nesting of Any values and of JSON is limited to MAX_NESTING: Yrs decodes Any recursively on
#   the native stack, and serde_json gives up at 128.
# * Strings must be valid UTF-8 (older Yrs reads them unchecked) and JSON must be JSON that
#   serde_json reads back: no NaN/Infinity, no lone surrogate escapes, no duplicate keys.
# * Where Yjs and Yrs read the same bytes differently, the bytes are refused, because the
#   structure validated here must be the structure pycrdt applies:
#     - JSON content (kind 2, legacy Yjs): Yjs reads n strings, Yrs reads n+1;
#     - XmlHook type (type_ref 5): Yjs reads a hook name after it, Yrs does not;
#     - GC/Skip info bytes with other bits set: Yjs masks them (info & 31), Yrs does not;
#     - bit 4 of an Item's info: Yrs ignores it (info & 15), Yjs takes it as a content kind;
#     - a client listed twice in the struct section: Yjs keeps the last list, Yrs appends.
#   Type refs that only Yrs knows (7 weak link, not compiled into pycrdt; 9 and 15 internal)
#   are refused too; pycrdt's Python API cannot create them.
# * Zero-length GC and Skip structs are refused: Yrs keeps them as blocks that break its
#   clock arithmetic, and no encoder writes them. Zero-length *items* (an empty string, an
#   empty Any list, Deleted 0) are accepted: Yrs drops them on decode, and pycrdt itself
#   writes empty strings when a Text edit splits a multi-byte character (pycrdt's Text
#   offsets count UTF-8 bytes). But a client section must span at least one clock: one with
#   no structs, or only empty items, decodes to an empty block list, and pycrdt panics on it
#   when the doc already knows that client.
# * Delete-set ranges of a client must be sorted, non-empty and non-overlapping: Yrs decodes
#   them with `IdRanges::from_raw`, which assumes exactly that. The same client twice in a
#   delete set (Yrs keeps the last list, Yjs appends) and duplicate keys in an Any object are
#   refused as well.
# * An item whose parent is given as an ID must not name another item *of the same update*
#   unless that one is a shared type (or deleted, GC or Skip): Yrs integrates the update item
#   by item and stops with "block parent must be deleted or shared ref type" half-way, after
#   part of the update is in the doc.
# Beyond that validation checks nothing semantic. An update may name parents or origins this
# replica does not have (pycrdt keeps such structs pending) and may re-send structs it already
# has. Two failures are left that no check of the bytes alone can catch, because they depend
# on what the replica already holds:
# - a parent ID naming an item the replica holds that is not a type: pycrdt refuses the
#   update after applying part of it (see apply_update);
# - structs that contradict structs the replica keeps *pending* (same client and clocks,
#   different boundaries or parents): pycrdt 0.14.13 can crash the process (SIGSEGV) on such
#   input. Honest peers never send it (an ID always names the same content); a hostile or
#   corrupt one can. Never applying updates that would leave anything pending closes that
#   door: see is_ready and apply_if_ready below.
# ---------------------------------------------------------------------------------------------

#: Deepest nesting of Any arrays/objects and of JSON values accepted in an update.
MAX_NESTING = 100

_MAX_SAFE = 2**53 - 1  # lib0's Number.MAX_SAFE_INTEGER: client ids, counts, byte lengths
_MAX_CLOCK = 2**31 - 1  # Yrs clocks are u32; pycrdt panics on gaps of 2**31 (see above)
_MAX_VARUINT_BYTES = 8  # 8 x 7 bits = 56 bits > 53

_INFO_GC = 0
_INFO_SKIP = 10
_HAS_ORIGIN = 0x80
_HAS_RIGHT_ORIGIN = 0x40
_HAS_PARENT_SUB = 0x20
_RESERVED_BIT = 0x10

_CONTENT_DELETED = 1
_CONTENT_JSON = 2
_CONTENT_BINARY = 3
_CONTENT_STRING = 4
_CONTENT_EMBED = 5
_CONTENT_FORMAT = 6
_CONTENT_TYPE = 7
_CONTENT_ANY = 8
_CONTENT_DOC = 9

_TYPE_XML_ELEMENT = 3
_TYPE_REFS_PLAIN = frozenset({0, 1, 2, 4, 6})  # Array, Map, Text, XmlFragment, XmlText

_DIGEST_PERSON = b"crdtsync.digest1"  # blake2b personalisation: 16 bytes


class _Malformed(Exception):
    """Internal: a parse failure at ``pos``; turned into InvalidUpdate at the public boundary."""

    def __init__(self, pos: int, what: str) -> None:
        super().__init__(pos, what)
        self.pos = pos
        self.what = what


# -- primitive readers: each takes (data, pos, ...) and returns (value, new_pos) -------------


def _uint(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    """Read a minimal lib0 varuint no larger than ``limit``."""
    try:
        b = data[pos]
    except IndexError:
        raise _Malformed(pos, f"input ends where {what} (varuint) was expected") from None
    if b < 0x80:
        if b > limit:
            raise _Malformed(pos, f"{what} {b} exceeds {limit}")
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    p = pos + 1
    while True:
        try:
            b = data[p]
        except IndexError:
            raise _Malformed(pos, f"input ends inside {what} (varuint)") from None
        p += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if p - pos >= _MAX_VARUINT_BYTES:
            raise _Malformed(pos, f"{what} (varuint) is longer than {_MAX_VARUINT_BYTES} bytes")
    if b == 0:
        raise _Malformed(pos, f"{what} (varuint) is not minimally encoded")
    if value > limit:
        raise _Malformed(pos, f"{what} {value} exceeds {limit}")
    return value, p


def _int(data: bytes, pos: int, what: str) -> int:
    """Skip a minimal lib0 signed varint of magnitude <= 2**53-1; return the new position."""
    try:
        b = data[pos]
    except IndexError:
        raise _Malformed(pos, f"input ends where {what} (varint) was expected") from None
    if b < 0x80:
        return pos + 1  # includes 0x40, lib0's encoding of -0
    value = b & 0x3F
    shift = 6
    p = pos + 1
    while True:
        try:
            b = data[p]
        except IndexError:
            raise _Malformed(pos, f"input ends inside {what} (varint)") from None
        p += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if p - pos >= _MAX_VARUINT_BYTES:
            raise _Malformed(pos, f"{what} (varint) is longer than {_MAX_VARUINT_BYTES} bytes")
    if b == 0:
        raise _Malformed(pos, f"{what} (varint) is not minimally encoded")
    if value > _MAX_SAFE:
        raise _Malformed(pos, f"{what} magnitude {value} exceeds {_MAX_SAFE}")
    return p


def _bytes_end(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read a length-prefixed byte string; return (start, end) of its payload."""
    n, start = _uint(data, pos, _MAX_SAFE, what)
    end = start + n
    if end > len(data):
        raise _Malformed(pos, f"{what} of {n} bytes runs past the end of input")
    return start, end


def _str(data: bytes, pos: int, what: str) -> tuple[str, int]:
    """Read a length-prefixed UTF-8 string (length in bytes)."""
    start, end = _bytes_end(data, pos, what)
    try:
        return data[start:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise _Malformed(start + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None


def _skip_str(data: bytes, pos: int, what: str) -> int:
    """Validate a length-prefixed UTF-8 string without keeping it; return the new position."""
    start, end = _bytes_end(data, pos, what)
    chunk = data[start:end]
    if not chunk.isascii():
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Malformed(start + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None
    return end


def _string_content(data: bytes, pos: int) -> tuple[int, int]:
    """Read String content; return (length in UTF-16 code units, new position)."""
    start, end = _bytes_end(data, pos, "string content")
    chunk = data[start:end]
    if chunk.isascii():
        return end - start, end
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Malformed(start + exc.start, f"string content is not valid UTF-8 ({exc.reason})") from None
    return len(text.encode("utf-16-le")) >> 1, end


def _any(data: bytes, pos: int, depth: int) -> int:
    """Validate one lib0 Any value; return the new position."""
    try:
        tag = data[pos]
    except IndexError:
        raise _Malformed(pos, "input ends where an Any value was expected") from None
    p = pos + 1
    if tag == 127 or tag == 126 or tag == 121 or tag == 120:  # undefined, null, false, true
        return p
    if tag == 119:
        return _skip_str(data, p, "Any string")
    if tag == 125:
        return _int(data, p, "Any integer")
    if tag == 124 or tag == 123 or tag == 122:  # float32, float64, bigint64
        end = p + (4 if tag == 124 else 8)
        if end > len(data):
            raise _Malformed(pos, "input ends inside an Any number")
        return end
    if tag == 116:
        return _bytes_end(data, p, "Any bytes")[1]
    if tag == 118 or tag == 117:
        if depth >= MAX_NESTING:
            raise _Malformed(pos, f"Any value nested deeper than {MAX_NESTING}")
        if tag == 117:
            n, p = _uint(data, p, _MAX_SAFE, "Any array length")
            if n > len(data) - p:
                raise _Malformed(pos, f"Any array of {n} items cannot fit in {len(data) - p} bytes")
            for _ in range(n):
                p = _any(data, p, depth + 1)
            return p
        n, p = _uint(data, p, _MAX_SAFE, "Any object size")
        if n > (len(data) - p) >> 1:
            raise _Malformed(pos, f"Any object of {n} entries cannot fit in {len(data) - p} bytes")
        keys: set[str] = set()
        for _ in range(n):
            key_pos = p
            key, p = _str(data, p, "Any object key")
            if key in keys:
                raise _Malformed(key_pos, f"Any object repeats key {key!r}")
            keys.add(key)
            p = _any(data, p, depth + 1)
        return p
    raise _Malformed(pos, f"unknown Any tag {tag}")


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


_JSON_DECODER = json.JSONDecoder(
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
                stack.extend((child, depth + 1) for child in item)
    return True


def _json(data: bytes, pos: int, what: str) -> int:
    """Validate a length-prefixed string that must hold one JSON value."""
    text, end = _str(data, pos, what)
    try:
        value = _JSON_DECODER.decode(text)
    except (ValueError, RecursionError, OverflowError) as exc:
        raise _Malformed(pos, f"{what} is not valid JSON ({exc})") from None
    if not _json_depth_ok(value):
        raise _Malformed(pos, f"{what} nests deeper than {MAX_NESTING} or has a lone surrogate")
    return end


def _content(data: bytes, pos: int, kind: int) -> tuple[int, int]:
    """Validate an Item's content of ``kind``; return (its length in clocks, new position)."""
    if kind == _CONTENT_STRING:
        return _string_content(data, pos)
    if kind == _CONTENT_ANY:
        n, p = _uint(data, pos, _MAX_CLOCK, "Any content count")
        if n > len(data) - p:
            raise _Malformed(pos, f"Any content of {n} values cannot fit in {len(data) - p} bytes")
        for _ in range(n):
            p = _any(data, p, 0)
        return n, p
    if kind == _CONTENT_DELETED:
        return _uint(data, pos, _MAX_CLOCK, "Deleted content length")
    if kind == _CONTENT_TYPE:
        try:
            ref = data[pos]
        except IndexError:
            raise _Malformed(pos, "input ends where a type ref was expected") from None
        if ref in _TYPE_REFS_PLAIN:
            return 1, pos + 1
        if ref == _TYPE_XML_ELEMENT:
            return 1, _skip_str(data, pos + 1, "XmlElement name")
        if ref == 5:
            raise _Malformed(pos, "XmlHook type (Yjs and Yrs encode it differently) is not accepted")
        raise _Malformed(pos, f"unknown or unsupported type ref {ref}")
    if kind == _CONTENT_FORMAT:
        p = _skip_str(data, pos, "Format key")
        return 1, _json(data, p, "Format value")
    if kind == _CONTENT_EMBED:
        return 1, _json(data, pos, "Embed value")
    if kind == _CONTENT_BINARY:
        return 1, _bytes_end(data, pos, "Binary content")[1]
    if kind == _CONTENT_DOC:
        p = _skip_str(data, pos, "subdocument guid")
        try:
            tag = data[p]
        except IndexError:
            raise _Malformed(p, "input ends where subdocument options were expected") from None
        if tag != 118:
            raise _Malformed(p, f"subdocument options must be an Any object, not tag {tag}")
        return 1, _any(data, p, 0)
    if kind == _CONTENT_JSON:
        raise _Malformed(pos, "legacy JSON content (Yjs and Yrs decode it differently) is not accepted")
    raise _Malformed(pos - 1, f"unknown content kind {kind}")


def _structs(
    data: bytes, pos: int, sv: dict[int, int] | None = None
) -> tuple[int, dict[int, int], int, tuple[int, int] | None]:
    """Validate the struct section.

    Returns (number of structs, {client: clock after its last struct that is not a Skip},
    new position, missing). ``missing`` is None unless ``sv`` (a decoded state vector) is
    given: then it is None when the structs are causally ready for a doc at ``sv``, else an
    ID (client, clock) such a doc must hold first (see :func:`is_ready`).
    """
    n_clients, pos = _uint(data, pos, _MAX_SAFE, "number of clients")
    if n_clients > (len(data) - pos) // 3:
        raise _Malformed(pos, f"{n_clients} clients cannot fit in {len(data) - pos} bytes")
    ends: dict[int, int] = {}
    # For the parent check: per client the first clock, the clock after the last struct, and
    # the ranges of the structs that may be a parent ([lo, hi) pairs in two lists, ascending
    # and with adjacent ranges merged, for bisection); and every parent given as an ID.
    spans: dict[int, tuple[int, int, list[int], list[int]]] = {}
    parents: list[tuple[int, int, int]] = []
    # For readiness (only with ``sv``): the first gap found (structs starting past ``sv``, or a
    # Skip reaching past it), and every reference (origin, right origin, parent ID) that ``sv``
    # does not cover, as (client, clock of the struct, referenced client, referenced clock), in
    # struct order. A reference to an earlier clock of the struct's own client is left out:
    # without a gap, that struct is in this update and integrated before.
    ready_check = sv is not None
    have: dict[int, int] = sv if sv is not None else {}
    missing: tuple[int, int] | None = None
    waits: list[tuple[int, int, int, int]] = []
    total = 0
    for _ in range(n_clients):
        n_structs, pos = _uint(data, pos, _MAX_SAFE, "number of structs")
        client_pos = pos
        client, pos = _uint(data, pos, _MAX_SAFE, "client id")
        if client in ends:
            raise _Malformed(client_pos, f"client {client} appears twice in the struct section")
        clock, pos = _uint(data, pos, _MAX_CLOCK, "first clock")
        if n_structs > (len(data) - pos) >> 1:
            raise _Malformed(pos, f"{n_structs} structs cannot fit in {len(data) - pos} bytes")
        total += n_structs
        first = clock
        end = 0
        known = have.get(client, 0)
        if ready_check and first > known and missing is None:
            missing = (client, first - 1)
        los: list[int] = []
        his: list[int] = []
        for _ in range(n_structs):
            start = pos
            try:
                info = data[pos]
            except IndexError:
                raise _Malformed(pos, "input ends where a struct was expected") from None
            pos += 1
            if info == _INFO_GC or info == _INFO_SKIP:
                length, pos = _uint(data, pos, _MAX_CLOCK, "GC length" if info == 0 else "Skip length")
                if length == 0:
                    raise _Malformed(start, f"zero-length {'GC' if info == 0 else 'Skip'} of client {client}")
                if his and his[-1] == clock:
                    his[-1] = clock + length
                else:
                    los.append(clock)
                    his.append(clock + length)
                if info == _INFO_SKIP and ready_check and clock + length > known and missing is None:
                    missing = (client, clock + length - 1)  # a hole neither doc nor update fills
            else:
                kind = info & 0x0F
                if info & _RESERVED_BIT or kind == _INFO_GC or kind == _INFO_SKIP or kind > 10:
                    raise _Malformed(start, f"invalid struct info byte 0x{info:02x}")
                if info & _HAS_ORIGIN:
                    ref_client, pos = _uint(data, pos, _MAX_SAFE, "origin client")
                    ref_clock, pos = _uint(data, pos, _MAX_CLOCK, "origin clock")
                    if ready_check and ref_clock >= have.get(ref_client, 0) and (
                        ref_client != client or ref_clock >= clock
                    ):
                        waits.append((client, clock, ref_client, ref_clock))
                if info & _HAS_RIGHT_ORIGIN:
                    ref_client, pos = _uint(data, pos, _MAX_SAFE, "right origin client")
                    ref_clock, pos = _uint(data, pos, _MAX_CLOCK, "right origin clock")
                    if ready_check and ref_clock >= have.get(ref_client, 0) and (
                        ref_client != client or ref_clock >= clock
                    ):
                        waits.append((client, clock, ref_client, ref_clock))
                if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
                    parent_info, pos = _uint(data, pos, 1, "parent info")
                    if parent_info:
                        pos = _skip_str(data, pos, "root type name")
                    else:
                        parent_client, pos = _uint(data, pos, _MAX_SAFE, "parent client")
                        parent_clock, pos = _uint(data, pos, _MAX_CLOCK, "parent clock")
                        parents.append((start, parent_client, parent_clock))
                        if ready_check and parent_clock >= have.get(parent_client, 0) and (
                            parent_client != client or parent_clock >= clock
                        ):
                            waits.append((client, clock, parent_client, parent_clock))
                    if info & _HAS_PARENT_SUB:
                        pos = _skip_str(data, pos, "parent key")
                length, pos = _content(data, pos, kind)
                if kind == _CONTENT_TYPE or kind == _CONTENT_DELETED:
                    if his and his[-1] == clock:
                        his[-1] = clock + length
                    else:
                        los.append(clock)
                        his.append(clock + length)
            clock += length
            if clock > _MAX_CLOCK:
                raise _Malformed(start, f"client {client} clock passes {_MAX_CLOCK}")
            if info != _INFO_SKIP:
                end = clock
        if clock == first:
            raise _Malformed(client_pos, f"client {client} has no structs that span a clock")
        ends[client] = end
        spans[client] = (first, clock, los, his)
    for start, parent_client, parent_clock in parents:
        span = spans.get(parent_client)
        if span is not None and span[0] <= parent_clock < span[1]:
            los, his = span[2], span[3]
            i = bisect_right(los, parent_clock) - 1
            if i < 0 or parent_clock >= his[i]:
                raise _Malformed(
                    start, f"parent ({parent_client}, {parent_clock}) is an item of this update but not a type"
                )
    if waits and missing is None:
        missing = _first_missing(have, spans, waits)
    return total, ends, pos, missing


def _first_missing(
    sv: dict[int, int],
    spans: dict[int, tuple[int, int, list[int], list[int]]],
    waits: list[tuple[int, int, int, int]],
) -> tuple[int, int] | None:
    """Whether Yrs would integrate every struct of an update, given the references it makes
    that ``sv`` does not cover; None if so, else an ID the doc must hold first.

    Called once the update has no gap of its own (each client's structs start within ``sv``
    and no Skip reaches past it). Yrs then integrates the structs of each client in clock
    order, and a struct whose origin, right origin or parent ID (of another client; here also
    of its own, past itself) is not integrated yet waits for it; if that is in no client's
    remaining structs, or the waits form a cycle, it and every struct it blocks stay *pending*.
    This
    simulates that: a client advances freely up to its next struct with an unmet reference,
    and waits there (in a heap of the referenced client) until that client has passed the
    referenced clock. Each wait is pushed and popped once: O(n log n) in the references.
    """
    by_client: dict[int, list[tuple[int, int, int]]] = {}
    for client, clock, ref_client, ref_clock in waits:
        span = spans.get(ref_client)
        if span is None or ref_clock >= span[1]:
            return ref_client, ref_clock  # in neither the doc nor this update
        by_client.setdefault(client, []).append((clock, ref_client, ref_clock))
    index = dict.fromkeys(by_client, 0)

    def reached(client: int) -> int:
        """The clock up to which ``client``'s structs are integrated (simulated)."""
        known = sv.get(client, 0)
        pending = by_client.get(client)
        if pending is None or index[client] == len(pending):
            return max(known, spans[client][1])
        return max(known, pending[index[client]][0])

    heaps: dict[int, list[tuple[int, int]]] = {}
    work = list(by_client)
    while work:
        client = work.pop()
        pending = by_client[client]
        i = index[client]
        while i < len(pending):
            _, ref_client, ref_clock = pending[i]
            if ref_clock >= reached(ref_client):
                heapq.heappush(heaps.setdefault(ref_client, []), (ref_clock, client))
                break
            i += 1
            index[client] = i
        heap = heaps.get(client)
        if heap:
            now = reached(client)
            while heap and heap[0][0] < now:
                work.append(heapq.heappop(heap)[1])
    for client, pending in by_client.items():
        if index[client] < len(pending):
            _, ref_client, ref_clock = pending[index[client]]
            return ref_client, ref_clock  # a cycle: no order integrates these structs
    return None


def _delete_set(
    data: bytes, pos: int, *, strict: bool
) -> tuple[dict[int, list[tuple[int, int]]], int]:
    """Read an encoded delete set; return ({client: [(clock, len), ...]}, new position).

    With ``strict`` (inside an update) each client's ranges must already be sorted and
    non-overlapping, as Yrs assumes; otherwise they are returned as read.
    """
    n_clients, pos = _uint(data, pos, _MAX_SAFE, "number of delete-set clients")
    if n_clients > (len(data) - pos) >> 1:
        raise _Malformed(pos, f"{n_clients} delete-set clients cannot fit in {len(data) - pos} bytes")
    result: dict[int, list[tuple[int, int]]] = {}
    for _ in range(n_clients):
        client_pos = pos
        client, pos = _uint(data, pos, _MAX_SAFE, "delete-set client id")
        if client in result:
            raise _Malformed(client_pos, f"client {client} appears twice in the delete set")
        n_ranges, pos = _uint(data, pos, _MAX_SAFE, "number of deleted ranges")
        if n_ranges > (len(data) - pos) >> 1:
            raise _Malformed(pos, f"{n_ranges} deleted ranges cannot fit in {len(data) - pos} bytes")
        ranges: list[tuple[int, int]] = []
        end = -1
        for _ in range(n_ranges):
            range_pos = pos
            clock, pos = _uint(data, pos, _MAX_CLOCK, "deleted range clock")
            length, pos = _uint(data, pos, _MAX_CLOCK, "deleted range length")
            if length == 0:
                raise _Malformed(range_pos, f"empty deleted range of client {client}")
            if clock + length > _MAX_CLOCK:
                raise _Malformed(range_pos, f"deleted range of client {client} passes {_MAX_CLOCK}")
            if strict and clock < end:
                raise _Malformed(range_pos, f"deleted ranges of client {client} unsorted or overlapping")
            end = clock + length
            ranges.append((clock, length))
        result[client] = ranges
    return result, pos


# (number of structs, struct ends per client, delete set, missing: see _structs)
_Summary = tuple[int, dict[int, int], dict[int, list[tuple[int, int]]], "tuple[int, int] | None"]


def _parse_update(update: object, max_size: int | None, sv: dict[int, int] | None = None) -> _Summary:
    """Validate ``update``; return its summary, with readiness for a doc at ``sv`` if given."""
    if not isinstance(update, bytes):
        raise InvalidUpdate(f"an update must be bytes, not {type(update).__name__}")
    if not update:
        raise InvalidUpdate("an update cannot be empty")
    if max_size is not None and len(update) > max_size:
        raise InvalidUpdate(f"update of {len(update)} bytes exceeds the limit of {max_size}")
    try:
        n_structs, ends, pos, missing = _structs(update, 0, sv)
        ds, pos = _delete_set(update, pos, strict=True)
        if pos != len(update):
            raise _Malformed(pos, f"{len(update) - pos} trailing bytes after the delete set")
    except _Malformed as exc:
        raise InvalidUpdate(f"invalid update at byte {exc.pos} of {len(update)}: {exc.what}") from None
    except RecursionError as exc:  # not reachable with MAX_NESTING well below the limit
        raise InvalidUpdate("invalid update: nested too deeply") from exc
    return n_structs, ends, ds, missing


def _checked_parse(update: object, max_size: int | None, sv: dict[int, int] | None = None) -> _Summary:
    try:
        return _parse_update(update, max_size, sv)
    except InvalidUpdate:
        raise
    except Exception as exc:  # a bug here must still look like a refusal, never a crash
        raise InvalidUpdate(f"update could not be validated: {exc!r}") from exc


# -- public API --------------------------------------------------------------------------------


def validate_update(update: bytes, *, max_size: int | None = None) -> None:
    """Check that ``update`` is a well-formed lib0 v1 update that pycrdt can apply safely.

    A strict parse of the whole input: struct section, every kind of item content, Any values,
    and the delete set, with nothing left over. See the block comment above for what is
    refused beyond the plain encoding and why. Apart from parents named within the update
    itself, semantic questions (does the parent exist here?) are left to pycrdt, which keeps
    structs it cannot place yet pending.

    Args:
        update: the bytes to check; must be ``bytes`` (not a mutable buffer that could change
            between validation and application).
        max_size: refuse updates longer than this many bytes.

    Raises:
        InvalidUpdate: anything wrong, with the byte offset and what was found there. Nothing
            else is ever raised.
    """
    _checked_parse(update, max_size)


# Exceptions that must pass through apply_update untouched: interpreter control flow, task
# cancellation, and exception groups, which is how pycrdt reports errors raised by observer
# callbacks; the update *was* applied then, and the callback's error is not the peer's fault.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError, BaseExceptionGroup)


def apply_update(doc: pycrdt.Doc, update: bytes) -> None:
    """Validate ``update`` and apply it to ``doc``.

    Whatever pycrdt raises on an update that passed validation (``ValueError``,
    ``RuntimeError``, a Rust panic as ``pyo3_runtime.PanicException``) becomes InvalidUpdate
    with the original as ``__cause__``. An update refused by validation never reaches the doc;
    one refused by pycrdt's decoder leaves it unchanged too, since Yrs decodes fully before it
    integrates anything. The exception: an update whose item names as its parent an item the
    doc holds that is not a shared type. Yrs finds that only while integrating and stops
    there, so the structs integrated before it stay in the doc (and reach its observers as a
    normal transaction). That part is itself valid CRDT data, as if a shorter update had
    arrived; the doc stays consistent, but "nothing was applied" does not hold for it.

    Errors raised by ``doc``'s observers reach the caller unchanged (pycrdt wraps them in an
    ``ExceptionGroup``); the update was applied in that case.

    Structs that build on something ``doc`` lacks are kept *pending* by pycrdt, which can
    crash on later input (see the block comment at the top); updates from peers go through
    :func:`apply_if_ready` instead.

    Raises:
        InvalidUpdate: the bytes are not a valid update.
    """
    validate_update(update)
    _apply_validated(doc, update)


def _apply_validated(doc: pycrdt.Doc, update: bytes) -> None:
    try:
        doc.apply_update(update)
    except _PASS_THROUGH:
        raise
    except BaseException as exc:  # PanicException derives from BaseException only
        raise InvalidUpdate(f"pycrdt refused the update: {type(exc).__name__}: {exc}") from exc


# Causal readiness. pycrdt 0.14.13 can crash the process (SIGSEGV) when an update contradicts
# structs it keeps pending, and a hostile peer can send both halves (see the block comment at
# the top). So a replica never lets a remote update leave structs pending: it applies an
# update only when every struct of it will be integrated at once (Yrs: Update::integrate),
# which is when
#   - each client's structs start at or below the doc's clock for that client, and no Skip
#     of the update reaches past it (no hole between what the doc has and what comes), and
#   - every origin, right origin and parent ID named is in the doc or in a struct of the
#     update, and those named within the update can be integrated in some order (a cycle,
#     which no honest encoder writes, leaves Yrs nothing to start with).
# Two shapes that no encoder writes are taken as not ready although Yrs would integrate them:
# a reference to the struct's own client at or past its own clock (Yrs does not wait for its
# own client), and a Skip at the very end. Structs the doc already holds count too: Yrs checks
# their references before it sees that it can skip them, and parks them if one is missing.
# An update that is not ready is not applied; a later diff against the replica's state vector
# (anti-entropy) is always ready, since it comes from a doc that holds no pending structs.
# Delete sets are not gated: a range naming items the doc does not have yet stays pending in
# Yrs as a plain range and is applied when they arrive. That was fuzzed (random ranges of
# known and unknown clients, before and between causally ordered updates of texts, arrays
# and nested maps): no crash, and the same state and digest as deleting afterwards.


def is_ready(state_vector: Mapping[int, int] | bytes, update: bytes) -> bool:
    """Whether a doc at ``state_vector`` would integrate all of ``update`` at once.

    True when each client's structs in ``update`` start at or below the doc's clock for that
    client (no gap) and every origin, right origin and parent ID they name is either in the doc
    (clock below its clock for that client) or in a struct of ``update`` that can be integrated
    first. Otherwise pycrdt would keep structs pending, which the replica never allows (see
    :func:`apply_if_ready`). The delete set plays no part.

    Args:
        state_vector: the doc's state vector, encoded (``Doc.get_state()``) or decoded
            (``{client: clock}``, as :func:`decode_state_vector` returns).
        update: the update; it is validated in the same pass.

    Raises:
        InvalidUpdate: ``update`` (or an encoded ``state_vector``) is not well-formed.
    """
    sv = decode_state_vector(state_vector) if isinstance(state_vector, bytes) else dict(state_vector)
    return _checked_parse(update, None, sv)[3] is None


def apply_if_ready(doc: pycrdt.Doc, update: bytes) -> tuple[int, int] | None:
    """Validate ``update`` and apply it to ``doc`` if it is ready (see :func:`is_ready`).

    Returns None if it was applied. Otherwise nothing was applied, and the result is the ID
    ``(client, clock)`` of a struct that ``doc`` must hold before ``update`` can be ready;
    retrying any sooner is pointless (the update may then still wait for something else).
    Errors as :func:`apply_update`.

    Raises:
        InvalidUpdate: the bytes are not a valid update.
    """
    missing = _checked_parse(update, None, _decode_sv(doc.get_state()))[3]
    if missing is None:
        _apply_validated(doc, update)
    return missing


class Backlog:
    """Remote updates that were not ready yet, held to be applied as soon as they are.

    Gossip may deliver one peer's updates out of order (a push overtakes the one before it, a
    relay forwards what another path has not brought yet). Rather than dropping such an update
    and waiting for anti-entropy to send its content again, a replica parks it here, and after
    each update it applies calls :meth:`apply_ready`. Nothing in here is in the doc, so it can
    hold anything a peer sends; it is bounded (oldest dropped first), and dropping is always
    safe, since anti-entropy repairs whatever is missing.
    """

    __slots__ = ("max_updates", "max_bytes", "_entries", "_bytes")

    def __init__(self, max_updates: int = 64, max_bytes: int = 1 << 20) -> None:
        self.max_updates = max_updates
        self.max_bytes = max_bytes
        # [update, ID the doc must hold before it is worth another look], oldest first
        self._entries: list[list[Any]] = []
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Total size of the updates held."""
        return self._bytes

    def add(self, update: bytes, missing: tuple[int, int]) -> None:
        """Hold ``update`` (validated, not ready) until the doc holds ``missing``, as
        :func:`apply_if_ready` returned it. Updates larger than ``max_bytes`` are not held."""
        if len(update) > self.max_bytes:
            return
        for entry in self._entries:
            if entry[0] == update:
                entry[1] = missing
                return
        self._entries.append([update, missing])
        self._bytes += len(update)
        while len(self._entries) > self.max_updates or self._bytes > self.max_bytes:
            self._bytes -= len(self._entries.pop(0)[0])

    def apply_ready(self, doc: pycrdt.Doc) -> int:
        """Apply every held update that has become ready, until none has; return how many.

        An update is looked at again only once ``doc`` holds the ID it was waiting for. One
        that pycrdt refuses (which validation cannot rule out, see :func:`apply_update`) is
        dropped: it came from some earlier peer, not from the caller's.
        """
        applied = 0
        progress = True
        while progress and self._entries:
            progress = False
            sv = _decode_sv(doc.get_state())
            for entry in list(self._entries):
                client, clock = entry[1]
                if sv.get(client, 0) <= clock:
                    continue
                update: bytes = entry[0]
                try:
                    missing = _checked_parse(update, None, sv)[3]
                    if missing is not None:
                        entry[1] = missing
                        continue
                    self._entries.remove(entry)
                    self._bytes -= len(update)
                    _apply_validated(doc, update)
                except InvalidUpdate:
                    if entry in self._entries:  # (validated when added: not expected)
                        self._entries.remove(entry)
                        self._bytes -= len(update)
                    continue
                applied += 1
                progress = True
                sv = _decode_sv(doc.get_state())
        return applied


def state_vector(doc: pycrdt.Doc) -> bytes:
    """The encoded state vector of ``doc`` (pycrdt ``Doc.get_state()``).

    It says how many clocks of each client the doc holds; deletions do not change it.
    """
    return doc.get_state()


def _decode_sv(sv: object) -> dict[int, int]:
    if not isinstance(sv, bytes):
        raise InvalidUpdate(f"a state vector must be bytes, not {type(sv).__name__}")
    if not sv:
        raise InvalidUpdate("a state vector cannot be empty")
    try:
        n, pos = _uint(sv, 0, _MAX_SAFE, "number of state-vector entries")
        if n > (len(sv) - pos) >> 1:
            raise _Malformed(pos, f"{n} state-vector entries cannot fit in {len(sv) - pos} bytes")
        entries: dict[int, int] = {}
        for _ in range(n):
            client_pos = pos
            client, pos = _uint(sv, pos, _MAX_SAFE, "state-vector client id")
            if client in entries:
                raise _Malformed(client_pos, f"client {client} appears twice in the state vector")
            entries[client], pos = _uint(sv, pos, _MAX_CLOCK, "state-vector clock")
        if pos != len(sv):
            raise _Malformed(pos, f"{len(sv) - pos} trailing bytes after the state vector")
    except _Malformed as exc:
        raise InvalidUpdate(f"invalid state vector at byte {exc.pos}: {exc.what}") from None
    return {client: entries[client] for client in sorted(entries) if entries[client]}


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode an encoded state vector into ``{client: clock}``, sorted by client.

    Clients at clock 0 are left out: holding nothing of a client is the same as not knowing it.

    Raises:
        InvalidUpdate: ``sv`` is not a well-formed state vector.
    """
    try:
        return _decode_sv(sv)
    except InvalidUpdate:
        raise
    except Exception as exc:
        raise InvalidUpdate(f"state vector could not be decoded: {exc!r}") from exc


def _normalize(ds: dict[int, list[tuple[int, int]]]) -> dict[int, list[tuple[int, int]]]:
    """Sort clients and ranges, and merge overlapping or adjacent ranges."""
    result: dict[int, list[tuple[int, int]]] = {}
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


def _encode_uint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _encode_ds(ds: dict[int, list[tuple[int, int]]]) -> bytes:
    """Encode a normalized delete set (lib0 v1 layout, clients ascending)."""
    out = bytearray()
    _encode_uint(out, len(ds))
    for client, ranges in ds.items():
        _encode_uint(out, client)
        _encode_uint(out, len(ranges))
        for clock, length in ranges:
            _encode_uint(out, clock)
            _encode_uint(out, length)
    return bytes(out)


def _doc_delete_set(doc: pycrdt.Doc) -> dict[int, list[tuple[int, int]]]:
    # An update against the doc's own state vector carries no structs (beyond any pending
    # ones) and the doc's whole delete set; its tail is the part we want.
    update = doc.get_update(doc.get_state())
    try:
        pos = 1 if update[:1] == b"\x00" else _structs(update, 0)[2]
        ds, _ = _delete_set(update, pos, strict=False)
    except _Malformed as exc:  # pycrdt produced something we cannot read: a bug, not a peer
        raise RuntimeError(f"cannot read pycrdt's own delete set: {exc.what}") from None
    return _normalize(ds)


def delete_set(doc: pycrdt.Doc) -> bytes:
    """The canonical encoding of ``doc``'s delete set.

    lib0 v1 delete-set layout with clients ascending and each client's ranges sorted and merged,
    so equal delete sets give equal bytes however the doc came to hold them.
    """
    return _encode_ds(_doc_delete_set(doc))


def decode_delete_set(ds: bytes) -> dict[int, list[tuple[int, int]]]:
    """Decode an encoded delete set into ``{client: [(clock, length), ...]}``.

    Clients come out ascending, each client's ranges sorted with overlapping and adjacent ones
    merged, and clients without ranges left out: the normal form that :func:`covers` and
    :func:`digest` compare.

    Raises:
        InvalidUpdate: ``ds`` is not a well-formed delete set.
    """
    if not isinstance(ds, bytes):
        raise InvalidUpdate(f"a delete set must be bytes, not {type(ds).__name__}")
    if not ds:
        raise InvalidUpdate("a delete set cannot be empty")
    try:
        decoded, pos = _delete_set(ds, 0, strict=False)
        if pos != len(ds):
            raise _Malformed(pos, f"{len(ds) - pos} trailing bytes after the delete set")
    except _Malformed as exc:
        raise InvalidUpdate(f"invalid delete set at byte {exc.pos}: {exc.what}") from None
    except Exception as exc:
        raise InvalidUpdate(f"delete set could not be decoded: {exc!r}") from exc
    return _normalize(decoded)


def digest(doc: pycrdt.Doc) -> bytes:
    """A 16-byte hash of ``doc``'s state vector and delete set.

    Both are put in normal form first (clients ascending, clock-0 entries dropped, ranges sorted
    and merged), so two replicas holding the same updates have equal digests whatever order
    the updates arrived in; a deletion changes the digest although it leaves the state vector
    alone. blake2b, personalised so these digests cannot be mistaken for other hashes.
    """
    sv = _decode_sv(doc.get_state())
    out = bytearray()
    _encode_uint(out, len(sv))
    for client, clock in sv.items():
        _encode_uint(out, client)
        _encode_uint(out, clock)
    out += _encode_ds(_doc_delete_set(doc))
    return hashlib.blake2b(bytes(out), digest_size=16, person=_DIGEST_PERSON).digest()


def covers(sv_a: bytes, ds_a: bytes, sv_b: bytes, ds_b: bytes) -> bool:
    """Whether replica A holds everything replica B holds.

    True when A's clock is at least B's for every client and every range B has deleted lies
    inside A's delete set. An ack that reports (sv, ds) of a peer's disk can then be checked
    against a local (sv, ds): equal state vectors are not enough, since a lost delete leaves
    the state vector alone.

    Raises:
        InvalidUpdate: one of the arguments is not well-formed.
    """
    clocks_a = decode_state_vector(sv_a)
    for client, clock in decode_state_vector(sv_b).items():
        if clocks_a.get(client, 0) < clock:
            return False
    return _ds_within(decode_delete_set(ds_b), decode_delete_set(ds_a))


def _ds_within(
    inner: dict[int, list[tuple[int, int]]],
    outer: dict[int, list[tuple[int, int]]],
    starts: dict[int, list[int]] | None = None,
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


def replay(snapshot: bytes | None, log: Iterable[bytes]) -> bytes:
    """Apply ``snapshot`` and then each update of ``log`` to a fresh Doc; return its full update.

    This is how a shard's log is compacted into a new snapshot: one pass, linear in the input,
    unlike ``pycrdt.merge_updates``. An empty or missing snapshot means "start empty". The
    scratch Doc lives and dies in the calling thread (pycrdt objects are bound to theirs).

    Applying the result to an empty doc gives the same state as applying the inputs in order,
    also when some input could not be integrated (a struct whose predecessors never came, a
    delete of something absent): pycrdt keeps such parts pending but leaves them out of
    ``get_update()``, so the inputs holding them are merged into the result.

    Raises:
        InvalidUpdate: the snapshot or one of the log entries is not a valid update.
    """
    doc = pycrdt.Doc()
    # (update, struct ends, delete set) of every input that changes anything; kept to find,
    # at the end, the inputs pycrdt could not integrate completely.
    inputs: list[tuple[bytes, dict[int, int], dict[int, list[tuple[int, int]]]]] = []
    # One transaction per update: a single transaction around all of them is slower (about
    # 2x on a 260k-update log), as pycrdt's per-transaction bookkeeping grows with it.
    for update in itertools.chain([snapshot] if snapshot else [], log):
        n_structs, ends, ds, _ = _checked_parse(update, None)
        _apply_validated(doc, update)
        if n_structs or any(ds.values()):
            inputs.append((update, ends, ds))
    result = doc.get_update()
    have_clocks = _decode_sv(doc.get_state())
    have_deleted = _doc_delete_set(doc)
    starts = {client: [clock for clock, _ in ranges] for client, ranges in have_deleted.items()}
    leftovers = [
        update
        for update, ends, ds in inputs
        if any(have_clocks.get(client, 0) < end for client, end in ends.items())
        or not _ds_within(ds, have_deleted, starts)
    ]
    if leftovers:
        try:
            result = pycrdt.merge_updates(result, *leftovers)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:  # validated inputs: pycrdt failing here is its bug
            raise InvalidUpdate(f"pycrdt could not merge pending updates: {exc}") from exc
    return result


def is_noop(update: bytes) -> bool:
    """Whether ``update`` is a well-formed update with no structs and no deleted ranges.

    pycrdt reports such updates for transactions that changed nothing; they need neither
    storing nor forwarding. Cheap: it looks at the first byte, and reads the delete set only
    when there are no structs. Anything that is not bytes or not a well-formed empty update
    gives False; it never raises.
    """
    if not isinstance(update, bytes) or len(update) < 2 or update[0] != 0:
        return False  # an update with a client section holds at least one struct
    if update == b"\x00\x00":
        return True
    try:
        ds, pos = _delete_set(update, 1, strict=True)
    except _Malformed:
        return False
    return pos == len(update) and not any(ds.values())
