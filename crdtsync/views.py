"""Live dict- and list-like views over a shard's CRDT maps and arrays.

A view reads and writes the pycrdt container underneath it, encoding values on the way in
and decoding them on the way out (see :mod:`crdtsync.values`), so agent code works with
ordinary Python values while every change is a CRDT operation. Views hold no state of their
own: two views of the same container always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping, MutableSequence
from typing import Any, overload

import pycrdt

from .errors import UnsupportedValue
from .values import decode_leaf, encode_value, to_plain

__all__ = ["MapView", "ListView", "wrap"]


def wrap(value: Any) -> Any:
    """A live view for a stored container, the decoded value for a leaf.

    Maps and arrays become :class:`MapView` / :class:`ListView`; other pycrdt types
    (``Text``, ``Xml*``) are returned live as they are, so Yjs-level users lose nothing.
    """
    if isinstance(value, pycrdt.Map):
        return MapView(value)
    if isinstance(value, pycrdt.Array):
        return ListView(value)
    if isinstance(value, (pycrdt.Text, pycrdt.XmlFragment, pycrdt.XmlElement, pycrdt.XmlText)):
        return value
    return decode_leaf(value)


class MapView(MutableMapping[str, Any]):
    """A CRDT map seen as a ``dict``: concurrent writes to different keys all survive."""

    __slots__ = ("crdt",)

    def __init__(self, crdt: pycrdt.Map) -> None:
        self.crdt = crdt  #: the underlying ``pycrdt.Map``

    def __getitem__(self, key: str) -> Any:
        return wrap(self.crdt[key])

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise UnsupportedValue(f"map keys must be str, not {type(key).__name__}")
        self.crdt[key] = encode_value(value, repr(key))

    def __delitem__(self, key: str) -> None:
        if key not in self.crdt:
            raise KeyError(key)
        del self.crdt[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.crdt.keys()))

    def __len__(self) -> int:
        return len(self.crdt)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.crdt

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        """Set several keys in one transaction (one delta), validating every value first."""
        items = dict(other, **kwargs)
        encoded = {}
        for key, value in items.items():
            if not isinstance(key, str):
                raise UnsupportedValue(f"map keys must be str, not {type(key).__name__}")
            encoded[key] = encode_value(value, repr(key))
        with _transaction(self.crdt):
            for key, value in encoded.items():
                self.crdt[key] = value

    def to_py(self) -> dict[str, Any]:
        """A plain, detached copy."""
        return to_plain(self.crdt)  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MapView):
            return self.to_py() == other.to_py()
        if isinstance(other, dict):
            return self.to_py() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MapView({self.to_py()!r})"


class ListView(MutableSequence[Any]):
    """A CRDT array seen as a ``list``: concurrent inserts all survive, in a converged order."""

    __slots__ = ("crdt",)

    def __init__(self, crdt: pycrdt.Array) -> None:
        self.crdt = crdt  #: the underlying ``pycrdt.Array``

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [wrap(v) for v in self.crdt[index]]
        return wrap(self.crdt[self._index(index)])

    def __setitem__(self, index: int | slice, value: Any) -> None:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("slice assignment is not supported; use del and insert")
        i = self._index(index)
        encoded = encode_value(value, f"[{i}]")
        with _transaction(self.crdt):
            del self.crdt[i]
            self.crdt.insert(i, encoded)

    def __delitem__(self, index: int | slice) -> None:  # type: ignore[override]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.crdt))
            if step != 1:
                raise TypeError("extended slice deletion is not supported")
            if stop > start:
                del self.crdt[start:stop]
            return
        del self.crdt[self._index(index)]

    def __len__(self) -> int:
        return len(self.crdt)

    def insert(self, index: int, value: Any) -> None:
        n = len(self.crdt)
        index = max(0, min(n, index + n if index < 0 else index))
        self.crdt.insert(index, encode_value(value, f"[{index}]"))

    def append(self, value: Any) -> None:
        self.crdt.append(encode_value(value, f"[{len(self.crdt)}]"))

    def extend(self, values: Iterable[Any]) -> None:
        """Append several values in one transaction, validating all of them first."""
        encoded = [encode_value(v, f"[+{i}]") for i, v in enumerate(values)]
        with _transaction(self.crdt):
            for item in encoded:
                self.crdt.append(item)

    def to_py(self) -> list[Any]:
        """A plain, detached copy."""
        return to_plain(self.crdt)  # type: ignore[no-any-return]

    def _index(self, index: int) -> int:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"list indices must be integers, not {type(index).__name__}")
        n = len(self.crdt)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError("list index out of range")
        return i

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListView):
            return self.to_py() == other.to_py()
        if isinstance(other, list):
            return self.to_py() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ListView({self.to_py()!r})"


def _transaction(crdt: pycrdt.Map | pycrdt.Array) -> Any:
    doc = crdt.doc
    return doc.transaction()
