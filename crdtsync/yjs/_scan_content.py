"""The validator's readers of values: lib0 primitives, strings, Any values, JSON, item content.

Split from :mod:`crdtsync.yjs._scan` (which reads the struct section and the delete set with
these) so that each stays a module of a few hundred lines; ``setup.py`` compiles both with mypyc
as one group, so ``_scan``'s calls into this module stay native calls, and this very file stays
the pure-Python fallback. :mod:`crdtsync.yjs._native` picks the build and refuses a compiled
group built from another version of either source. The public modules (``_lib0``,
``_content``) re-export these through ``_scan``. The rules enforced here, and why, are in the
block comment of :mod:`crdtsync.yjs.parse`.

Written for both builds: explicit bounds checks instead of ``try``/``except IndexError`` (an
exception is costly in compiled code), plain ``int`` and ``bytes`` locals (mypyc turns them
into C integers and direct byte reads), constants marked ``Final`` (inlined, in ``_scan`` too),
and no per-byte Python calls on the common paths (one-byte varuints and ASCII strings are read
inline).

Every reader takes ``(data, pos, ...)`` and returns the new position (with the value where
there is one); a malformed input raises :class:`~crdtsync.yjs._malformed.Malformed` with the
offset where it went wrong. Imports only the standard library and ``_malformed``.
"""

from __future__ import annotations

import json
import math
from typing import Final, NoReturn

from ._malformed import Malformed

__all__ = [
    "CONTENT_DELETED",
    "CONTENT_TYPE",
    "MAX_CLOCK",
    "MAX_NESTING",
    "MAX_SAFE",
    "MAX_VARUINT_BYTES",
    "any_value",
    "bytes_span",
    "content",
    "read_uint",
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
