"""The validator's internal failure types, shared by both of its builds.

Kept apart from :mod:`crdtsync.yjs._scan` and ``_scan_content`` (which may be compiled, see
:mod:`crdtsync.yjs._native`) so that the pure-Python and the compiled scanner raise the *same* classes: a caller catches
:class:`Malformed` whichever build did the parse.

Pure Python, no pycrdt, never compiled.
"""

from __future__ import annotations

__all__ = ["Malformed", "OverLimit"]


class Malformed(Exception):
    """Internal: a parse failure at ``pos``; turned into InvalidUpdate at the public boundary."""

    def __init__(self, pos: int, what: str) -> None:
        super().__init__(pos, what)
        self.pos = pos
        self.what = what


class OverLimit(Malformed):
    """Internal: a well-formed update beyond a work limit (-> UpdateOverLimit)."""
