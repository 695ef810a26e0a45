"""Validation of an Item's content: the nine content kinds, lib0 Any values, and JSON.

Part of the strict v1 parser (:mod:`crdtsync.yjs.parse`, whose block comment explains each
rule); split out because content is the one part of an update whose shape depends on a
kind byte rather than on the struct layout. Every function takes ``(data, pos, ...)`` and
returns the new position (and, for :func:`content`, the length in clocks); a malformed input
raises :class:`~crdtsync.yjs._lib0.Malformed`.

Pure Python, no pycrdt.
"""

from __future__ import annotations

import json
import math
from typing import NoReturn

from ._lib0 import (
    MAX_CLOCK,
    MAX_SAFE,
    Malformed,
    bytes_span,
    read_str,
    read_uint,
    skip_str,
    skip_varint,
    string_content,
)

__all__ = ["CONTENT_DELETED", "CONTENT_TYPE", "MAX_NESTING", "any_value", "content"]

#: Deepest nesting of Any arrays/objects and of JSON values accepted in an update.
MAX_NESTING = 100

CONTENT_DELETED = 1
_CONTENT_JSON = 2
_CONTENT_BINARY = 3
_CONTENT_STRING = 4
_CONTENT_EMBED = 5
_CONTENT_FORMAT = 6
CONTENT_TYPE = 7
_CONTENT_ANY = 8
_CONTENT_DOC = 9

_TYPE_XML_ELEMENT = 3
_TYPE_REFS_PLAIN = frozenset({0, 1, 2, 4, 6})  # Array, Map, Text, XmlFragment, XmlText


def any_value(data: bytes, pos: int, depth: int) -> int:
    """Validate one lib0 Any value; return the new position."""
    try:
        tag = data[pos]
    except IndexError:
        raise Malformed(pos, "input ends where an Any value was expected") from None
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
            key, p = read_str(data, p, "Any object key")
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
    text, end = read_str(data, pos, what)
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
        try:
            ref = data[pos]
        except IndexError:
            raise Malformed(pos, "input ends where a type ref was expected") from None
        if ref in _TYPE_REFS_PLAIN:
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
        try:
            tag = data[p]
        except IndexError:
            raise Malformed(p, "input ends where subdocument options were expected") from None
        if tag != 118:
            raise Malformed(p, f"subdocument options must be an Any object, not tag {tag}")
        return 1, any_value(data, p, 0)
    if kind == _CONTENT_JSON:
        raise Malformed(
            pos,
            "legacy JSON content (Yjs and Yrs decode it differently) is not accepted",
        )
    raise Malformed(pos - 1, f"unknown content kind {kind}")
