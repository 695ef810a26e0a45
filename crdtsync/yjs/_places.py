"""The native table of places (:mod:`crdtsync.yjs._fans`, C) as a read-only Mapping.

``_fans.Places`` holds what the validator's hot loop needs (``add``, ``reserve``) and what a
mapping is built from (``len``, ``[]``, ``in``, iteration in the order the places were first
seen, ``reversed()``); this subclass makes it a :class:`collections.abc.Mapping`, so that
:attr:`crdtsync.yjs.parse.UpdateInfo.places` is one whichever way the places were counted:
``keys()``, ``items()``, ``values()``, ``get`` and ``==`` are Mapping's, in Python, over the
table's own methods (a bytes object made per key visited; nothing copied to a dict).
:meth:`Places.to_dict` gives the same items as a dict. Kept out of the C module so that the C
stays what only C can do fast (issue 17), and the rest is plain, reviewable Python.

Imported only where the C module is built and current (:func:`crdtsync.yjs._native.native_places`);
importing this module without it raises ImportError. Pure Python, no pycrdt.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import _fans

__all__ = ["Places"]


class Places(_fans.Places, Mapping[bytes, int]):
    """Items per place of one update, keyed by slices of ``data`` (a native hash table)."""

    __slots__ = ()  # no __dict__: an instance is the C table and nothing more

    def to_dict(self) -> dict[bytes, int]:
        """A new dict of the same items, in the same order."""
        return {key: self[key] for key in self}
