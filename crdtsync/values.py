"""How Python values are stored in a shard so every replica reads them back exactly.

pycrdt (like Yjs) has one number type: it stores an ``int`` as a float wherever a float holds
it exactly (``3`` reads back as ``3.0``) and panics on ints beyond 64 bits. crdtsync therefore
stores some leaves as tagged binary buffers, which Yjs carries byte for byte:

=================  ==============================================================
Python value       stored in the document as
=================  ==============================================================
``None``, ``bool``  as is
``str``, ``float``  as is (a float is carried as an IEEE double: exact)
``int``             ``b"\\x01"`` + 8-byte big-endian signed (-2**63 .. 2**63-1)
``bytes``           ``b"\\x00"`` + the bytes
``dict``            a nested CRDT ``Map`` (keys must be ``str``): per-key merge
``list``            a CRDT ``Array``
pycrdt types        kept as they are (``Text``, ``Map``, ``Array``, ``Xml*``), returned live
=================  ==============================================================

A buffer written by a Yjs-level user without one of these tags reads back as ``bytes``;
a number written by another Yjs client reads back as ``float`` (or ``int`` when pycrdt kept
it as one). Anything else (a set, a tuple, an object, an int outside 64 bits, a dict with
non-string keys) raises :class:`~crdtsync.errors.UnsupportedValue` *before* anything is
written. This module is the one place that knows the encoding.
"""

from __future__ import annotations

import struct
from typing import Any

import pycrdt

from ._render import Unreadable, render
from .errors import IntOutOfRange, UnsupportedValue

__all__ = ["encode_value", "decode_leaf", "to_plain", "INT_MIN", "INT_MAX", "Unreadable"]

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

_TAG_BYTES = 0
_TAG_INT = 1
_INT = struct.Struct(">q")
_SHARED_TYPES = (pycrdt.Text, pycrdt.Map, pycrdt.Array, pycrdt.XmlFragment, pycrdt.XmlElement, pycrdt.XmlText)


def encode_value(value: Any, _path: str = "value") -> Any:
    """Turn a Python value into what is assigned into a pycrdt container.

    Raises:
        UnsupportedValue: for a type that cannot round-trip exactly (nothing is written).
        IntOutOfRange: for an int outside the signed 64-bit range.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise IntOutOfRange(f"{_path}: int {value} is outside the signed 64-bit range")
        return bytes((_TAG_INT,)) + _INT.pack(value)
    if isinstance(value, float):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes((_TAG_BYTES,)) + bytes(value)
    if isinstance(value, dict):
        items = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsupportedValue(f"{_path}: dict keys must be str, not {type(key).__name__}")
            items[key] = encode_value(item, f"{_path}[{key!r}]")
        return pycrdt.Map(items)
    if isinstance(value, list):
        return pycrdt.Array([encode_value(item, f"{_path}[{i}]") for i, item in enumerate(value)])
    if isinstance(value, _SHARED_TYPES):
        if getattr(value, "_integrated", None) is not None:
            raise UnsupportedValue(f"{_path}: this pycrdt {type(value).__name__} already belongs to a document")
        return value
    raise UnsupportedValue(
        f"{_path}: cannot store a {type(value).__name__}; supported: None, bool, int (64-bit), "
        "float, str, bytes, dict with str keys, list, pycrdt types"
    )


def decode_leaf(value: Any) -> Any:
    """Turn a stored leaf (not a shared type) back into the Python value that was written."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) == 9 and value[0] == _TAG_INT:
            return _INT.unpack_from(value, 1)[0]
        if value and value[0] == _TAG_BYTES:
            return bytes(value[1:])
        return bytes(value)
    if isinstance(value, dict):  # an opaque JSON-like object written by a Yjs-level user
        return {k: decode_leaf(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_leaf(v) for v in value]
    return value


def to_plain(value: Any) -> Any:
    """A plain, detached Python copy of a stored value: Map -> dict, Array -> list, Text and XML
    -> str. Total and iterative: see :mod:`crdtsync._render` for the forms of what cannot be
    shown (too deep, Format items, subdocuments), which render as :class:`Unreadable`."""
    return render(value, decode_leaf)
