"""The native table of places (:mod:`crdtsync.yjs._fans`, C) as a read-only Mapping.

``_fans.Places`` holds what the validator's hot loop needs (``add``, ``reserve``), what a
mapping is built from (``len``, ``[]``, ``in``, iteration in the order the places were first
seen, ``reversed()``) and ``_as_dict()`` (its items as a dict, made once until the next
``add``). This subclass makes it a :class:`collections.abc.Mapping`, so that
:attr:`crdtsync.yjs.parse.UpdateInfo.places` is one whichever way the places were counted:
``keys()``, ``items()`` and ``values()`` are that dict's views (the registry's batch pricing
intersects a large update's ``keys()`` with a dict's, which a dict's view does from the
smaller side: Mapping's own ``items()`` loop was 3.5 times slower over a 200,000-key map),
``get`` and ``==`` are Mapping's, and :meth:`Places.to_dict` a copy. Kept out of the C module
so that the C stays what only C does fast (issue 17) and the rest plain, reviewable Python.

Imported only where the C module is built and current
(:func:`crdtsync.yjs._native.native_places`); without it, importing this raises ImportError.
Pure Python, no pycrdt.
"""

from __future__ import annotations

from collections.abc import ItemsView, KeysView, Mapping, ValuesView

from . import _fans

__all__ = ["Places"]


class Places(_fans.Places, Mapping[bytes, int]):
    """Items per place of one update, keyed by slices of ``data`` (a native hash table)."""

    __slots__ = ()  # no __dict__: an instance is the C table and nothing more

    def keys(self) -> KeysView[bytes]:
        return self._as_dict().keys()

    def items(self) -> ItemsView[bytes, int]:
        return self._as_dict().items()

    def values(self) -> ValuesView[int]:
        return self._as_dict().values()

    def to_dict(self) -> dict[bytes, int]:
        """A new dict of the same items, in the same order."""
        return dict(self._as_dict())
