"""Live dict- and list-like views over a shard's CRDT maps and arrays.

A view reads and writes the pycrdt container underneath it, encoding values on the way in
and decoding them on the way out (see :mod:`crdtsync.values`), so agent code works with
ordinary Python values while every change is a CRDT operation. Views hold no state of their
own: two views of the same container always agree.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, MutableMapping, MutableSequence
from typing import Any, overload

import pycrdt

from .errors import ClosedError, LostUpdate, UnsupportedValue
from .values import check_text, decode_leaf, encode_value, to_plain

__all__ = ["MapView", "ListView", "wrap", "LostUpdate", "mark_closed"]

#: Documents of closed shards: every view refuses to write to them, before changing anything.
_CLOSED: weakref.WeakSet[pycrdt.Doc] = weakref.WeakSet()


def mark_closed(doc: pycrdt.Doc) -> None:
    """Make every view of ``doc`` refuse writes with :class:`ClosedError` (the shard closed)."""
    _CLOSED.add(doc)


def _writable(crdt: Any) -> None:
    doc = crdt.doc
    if doc is not None and doc in _CLOSED:
        raise ClosedError("the shard is closed; nothing was written")


_LIVE = (pycrdt.Text, pycrdt.XmlFragment, pycrdt.XmlElement, pycrdt.XmlText)


class _ReadNumber:
    """Mixin of the numbers a map view returns: arithmetic on them remembers the key read."""

    __slots__ = ()
    _source: tuple[int, str]

    def _derive(self, result: Any) -> Any:
        if isinstance(result, bool) or not isinstance(result, (int, float)):
            return result
        derived = (_DerivedInt if isinstance(result, int) else _DerivedFloat)(result)
        derived._source = self._source
        return derived

    def __add__(self, other: Any) -> Any:
        return self._derive(super().__add__(other))  # type: ignore[misc]

    def __radd__(self, other: Any) -> Any:
        return self._derive(super().__radd__(other))  # type: ignore[misc]

    def __sub__(self, other: Any) -> Any:
        return self._derive(super().__sub__(other))  # type: ignore[misc]


class _DerivedInt(_ReadNumber, int):
    pass


class _DerivedFloat(_ReadNumber, float):
    pass


def _read_number(value: Any, crdt: Any, key: str) -> Any:
    """``value`` marked as read from ``crdt[key]`` when it is a number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    marked = (_DerivedInt if isinstance(value, int) else _DerivedFloat)(value)
    marked._source = _source_of(crdt, key)
    return marked


def _source_of(crdt: Any, key: str) -> tuple[int, str]:
    # pycrdt hands out a new wrapper per access, so the document and the key identify
    # "where the number was read"; a false match (same key in another map of the same
    # shard) only refuses a write, never loses one.
    return (id(crdt.doc), key)


def _maybe_live(value: Any) -> bool:
    """Whether ``value`` may be a live container (a leaf, a write's common case, never is:
    checked before the stored value is read, which costs pycrdt two transactions)."""
    if type(value) in _LEAVES:  # (MapView is an ABC: its isinstance is slow, see _LEAVES)
        return False
    return isinstance(value, (MapView, ListView, pycrdt.Map, pycrdt.Array, *_LIVE))


def _set_leaf(crdt: pycrdt.Map, key: str, value: Any) -> None:
    """``crdt[key] = value`` for an encoded leaf (a primitive: what :func:`encode_value` makes
    of a ``_LEAVES`` value, never a shared type or a document), in one pycrdt transaction as
    pycrdt's ``Map.__setitem__`` does it, the primitive inserted through the transaction's
    own handle. pycrdt's wrapper opens a second, nested transaction object, checks that it is
    not read-only and dispatches on the value's type (ABC ``isinstance``) per set: ~1 us of
    the ~4.3 us a bare pycrdt map set costs (benchmarks/history/hostile-and-misc.md, branch h-review). Commit,
    observers and their errors are pycrdt's, as before. A read-only transaction (a write from
    an observer) or a pycrdt without these internals takes the public path, which refuses
    the write or does the same."""
    with crdt.doc.transaction() as txn:
        raw = getattr(txn, "_txn", None)
        if raw is None or type(txn) is not pycrdt.Transaction:
            crdt[key] = value
        else:
            crdt.integrated.insert(raw, key, value)


#: Leaf types: never a live container. ``isinstance`` against the views (``MutableMapping``
#: and ``MutableSequence`` subclasses, i.e. ABCs) walks the ABC registry; a plain write of a
#: leaf, the common case, is answered by this set lookup instead.
_LEAVES: frozenset[type] = frozenset({str, bytes, int, float, bool, type(None)})


def _same_live(current: Any, value: Any) -> bool:
    """Whether ``value`` is the live container already stored as ``current`` (``+=`` on a
    Text, a ListView...: the in-place operator already wrote; the assignment must not)."""
    if isinstance(value, (MapView, ListView)):
        value = value.crdt
    if not isinstance(value, (pycrdt.Map, pycrdt.Array, *_LIVE)) or not value.is_integrated:
        return False
    if type(current) is not type(value) or current.doc is not value.doc:
        return False
    return bool(to_plain(current) == to_plain(value))


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
        return _read_number(wrap(self.crdt[key]), self.crdt, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise UnsupportedValue(f"map keys must be str, not {type(key).__name__}")
        check_text(key, f"key {key!r}")
        _writable(self.crdt)
        if type(value) in _LEAVES:  # a write's common case (a number read here is no leaf)
            _set_leaf(self.crdt, key, encode_value(value, repr(key)))
            return
        if isinstance(value, _ReadNumber) and value._source == _source_of(self.crdt, key):
            raise LostUpdate(
                f"{key!r}: a read-modify-write of a stored number (like view[{key!r}] += 1) "
                "loses concurrent increments of other agents; nothing was written. Use "
                f"shard.counter({key!r}).increment(n), or view[{key!r}] = int(view[{key!r}]) + n "
                "if last-writer-wins is what you mean"
            )
        if _maybe_live(value) and key in self.crdt and _same_live(self.crdt[key], value):
            return  # ``view[key] += ...`` on a Text or list: already appended in place
        self.crdt[key] = encode_value(value, repr(key))

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if present, else store ``default`` and return it *live* (a dict or
        list comes back as the view of the stored container, so appending to it sticks)."""
        if key not in self:
            self[key] = default
        return self[key]

    def __delitem__(self, key: str) -> None:
        _writable(self.crdt)
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
        _writable(self.crdt)
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
        _writable(self.crdt)
        with _transaction(self.crdt):
            del self.crdt[i]
            self.crdt.insert(i, encoded)

    def __delitem__(self, index: int | slice) -> None:  # type: ignore[override]
        _writable(self.crdt)
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
        encoded = encode_value(value, f"[{index}]")
        _writable(self.crdt)
        self.crdt.insert(index, encoded)

    def append(self, value: Any) -> None:
        encoded = encode_value(value, f"[{len(self.crdt)}]")
        _writable(self.crdt)
        self.crdt.append(encoded)

    def extend(self, values: Iterable[Any]) -> None:
        """Append several values in one transaction, validating all of them first."""
        encoded = [encode_value(v, f"[+{i}]") for i, v in enumerate(values)]
        _writable(self.crdt)
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
