"""Validation of an Item's content: the nine content kinds, lib0 Any values, and JSON.

Part of the strict v1 parser (:mod:`crdtsync.yjs.parse`, whose block comment explains each
rule); content is the one part of an update whose shape depends on a kind byte rather than on
the struct layout. The code lives in :mod:`crdtsync.yjs._scan_content` (compiled with mypyc
where it could be built, see :mod:`crdtsync.yjs._native`) and is re-exported here. Every function takes
``(data, pos, ...)`` and returns the new position (and, for :func:`content`, the length in
clocks); a malformed input raises :class:`~crdtsync.yjs._malformed.Malformed`.

Pure Python, no pycrdt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import _scan as scan
else:
    from ._native import scan

__all__ = ["CONTENT_DELETED", "CONTENT_TYPE", "MAX_NESTING", "any_value", "content"]

#: Deepest nesting of Any arrays/objects and of JSON values accepted in an update.
MAX_NESTING = scan.MAX_NESTING
CONTENT_DELETED = scan.CONTENT_DELETED
CONTENT_TYPE = scan.CONTENT_TYPE
any_value = scan.any_value
content = scan.content
