"""lib0 primitives: the varuint, varint and string readers and the varuint encoder.

Yjs updates, state vectors and delete sets are all built from lib0's variable-length integers
(7 bits a byte, least significant group first, high bit = "more follows") and
length-prefixed byte strings. Every reader takes ``(data, pos, ...)`` and returns the value
and the position after it; a malformed input raises :class:`Malformed` with the offset where
it went wrong, which the public functions of :mod:`crdtsync.yjs.parse` and
:mod:`crdtsync.yjs.state` turn into :class:`~crdtsync.errors.InvalidUpdate`.

The readers are strict: varuints must be minimally encoded and at most
:data:`MAX_VARUINT_BYTES` long, so that one value has exactly one encoding, and every value is
checked against a caller-given limit before it is used (see the block comment in
:mod:`crdtsync.yjs.parse` for why each limit is what it is).

Pure Python, no pycrdt: the sans-I/O gossip core imports this layer.
"""

from __future__ import annotations

__all__ = [
    "MAX_CLOCK",
    "MAX_SAFE",
    "MAX_VARUINT_BYTES",
    "Malformed",
    "OverLimit",
    "bytes_span",
    "encode_uint",
    "read_str",
    "read_uint",
    "skip_str",
    "skip_varint",
    "string_content",
]

#: lib0's Number.MAX_SAFE_INTEGER: the cap on client ids, counts and byte lengths.
MAX_SAFE = 2**53 - 1
#: Yrs clocks are u32, and pycrdt panics on gaps of 2**31: the cap on every clock and length.
MAX_CLOCK = 2**31 - 1
#: 8 x 7 bits = 56 bits > 53: no longer varuint encodes an accepted value.
MAX_VARUINT_BYTES = 8


class Malformed(Exception):
    """Internal: a parse failure at ``pos``; turned into InvalidUpdate at the public boundary."""

    def __init__(self, pos: int, what: str) -> None:
        super().__init__(pos, what)
        self.pos = pos
        self.what = what


class OverLimit(Malformed):
    """Internal: well formed, but beyond a work limit (``crdtsync.yjs.limits``); turned into
    UpdateOverLimit at the public boundary, so a peer that sends it is not cut off for it."""


def read_uint(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    """Read a minimal lib0 varuint no larger than ``limit``; return (value, new position)."""
    try:
        b = data[pos]
    except IndexError:
        raise Malformed(pos, f"input ends where {what} (varuint) was expected") from None
    if b < 0x80:
        if b > limit:
            raise Malformed(pos, f"{what} {b} exceeds {limit}")
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    p = pos + 1
    while True:
        try:
            b = data[p]
        except IndexError:
            raise Malformed(pos, f"input ends inside {what} (varuint)") from None
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
    try:
        b = data[pos]
    except IndexError:
        raise Malformed(pos, f"input ends where {what} (varint) was expected") from None
    if b < 0x80:
        return pos + 1  # includes 0x40, lib0's encoding of -0
    value = b & 0x3F
    shift = 6
    p = pos + 1
    while True:
        try:
            b = data[p]
        except IndexError:
            raise Malformed(pos, f"input ends inside {what} (varint)") from None
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


def read_str(data: bytes, pos: int, what: str) -> tuple[str, int]:
    """Read a length-prefixed UTF-8 string (length in bytes); return (text, new position)."""
    start, end = bytes_span(data, pos, what)
    try:
        return data[start:end].decode("utf-8"), end
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
    chunk = data[start:end]
    if not chunk.isascii():
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Malformed(
                start + exc.start, f"{what} is not valid UTF-8 ({exc.reason})"
            ) from None
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
    chunk = data[start:end]
    if chunk.isascii():
        return end - start, end
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(
            start + exc.start, f"string content is not valid UTF-8 ({exc.reason})"
        ) from None
    return len(text.encode("utf-16-le")) >> 1, end


def encode_uint(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) to ``out`` as a minimal lib0 varuint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
