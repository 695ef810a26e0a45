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

The readers are those of :mod:`crdtsync.yjs._scan_content` (compiled with mypyc where it could
be built, see :mod:`crdtsync.yjs._native`), re-exported here.

Pure Python, no pycrdt: the sans-I/O gossip core imports this layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._malformed import Malformed

__all__ = [
    "MAX_CLOCK",
    "MAX_SAFE",
    "MAX_VARUINT_BYTES",
    "Malformed",
    "bytes_span",
    "encode_uint",
    "read_str",
    "read_uint",
    "skip_str",
    "skip_varint",
    "string_content",
]

if TYPE_CHECKING:
    from . import _scan as scan
else:
    from ._native import scan

MAX_SAFE = scan.MAX_SAFE
MAX_CLOCK = scan.MAX_CLOCK
MAX_VARUINT_BYTES = scan.MAX_VARUINT_BYTES
read_uint = scan.read_uint
skip_varint = scan.skip_varint
bytes_span = scan.bytes_span
skip_str = scan.skip_str
string_content = scan.string_content


def read_str(data: bytes, pos: int, what: str) -> tuple[str, int]:
    """Read a length-prefixed UTF-8 string (length in bytes); return (text, new position)."""
    start, end = bytes_span(data, pos, what)
    try:
        return data[start:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise Malformed(start + exc.start, f"{what} is not valid UTF-8 ({exc.reason})") from None


def encode_uint(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) to ``out`` as a minimal lib0 varuint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
