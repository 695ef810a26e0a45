"""Updates that would split a UTF-16 surrogate pair: where Yjs and Yrs disagree.

Yjs counts a string's clocks in UTF-16 code units, so a character outside the Basic
Multilingual Plane (an emoji) takes two clocks, its high and its low surrogate. A JavaScript
client may delete, or insert between, just one of them (``text.delete(2, 1)`` on
``"x😀y"``). What each side then does (measured with yjs 13.6 and pycrdt 0.14.13 / Yrs):

* Yjs splits the string item there and replaces each lone half by U+FFFD: the text becomes
  ``"x\\ufffdy"`` (``"x\\ufffdZ\\ufffdy"`` for an insert of ``"Z"`` in the middle).
* Yrs cannot split a Rust string inside a character: applying the same delete gives
  ``"x😀"`` (it deletes the wrong unit), and the insert lands after the whole emoji
  (``"x😀Zy"``). The replicas silently diverge, and Yjs later throws "Unexpected case" on
  the Yrs replica's state.

So the Yjs door refuses such an update (nothing of it is applied; the client is closed with
``INVALID_UPDATE`` and a reason naming this). An update *splits a pair* when one of its
boundaries falls on a low surrogate: a delete range starting or ending there, an item whose
origin is a high surrogate (inserting after it) or whose right origin is a low surrogate
(inserting before it). Low surrogates are known by ID, ``(client, clock)``: IDs never change,
so a set of them, grown from every update a document integrates, says which boundaries are
inside a character. Updates with no 4-byte UTF-8 sequence add nothing to that set, and
documents with no such character cannot be split, so the scan is skipped for them.

Pure Python; reads only updates the strict parser (:mod:`crdtsync.yjs.parse`) accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ._items import ID, walk_items
from ._lib0 import bytes_span
from .state import read_delete_set

__all__ = ["ID", "boundaries", "low_surrogates", "may_have_astral", "splits"]

# The UTF-8 encoding of a character outside the BMP, exactly (RFC 3629): a 4-byte sequence.
# Matching whole sequences, not just a lead byte, matters for binary-heavy updates: in the
# full state of a 200,000-entry map of numbers 7,571 bytes are in F0-F4, but no 4-byte
# sequence is, so its scan is skipped (the walk costs ~2-3 us a struct: 0.45 s for that map).
_ASTRAL = re.compile(
    rb"\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_STRING = 4


def may_have_astral(update: bytes) -> bool:
    """Whether ``update`` may hold a character outside the BMP (it has a 4-byte UTF-8
    sequence somewhere; never False when it does hold one)."""
    return _ASTRAL.search(update) is not None


def _walk(update: bytes, lows: set[ID] | None, bounds: list[ID] | None) -> None:
    """Collect low-surrogate IDs of string items into ``lows`` and split points into
    ``bounds`` (either may be None)."""
    data = update

    def visit(
        client: int,
        clock: int,
        kind: int,
        origin: ID | None,
        right: ID | None,
        start: int,
        end: int,
        length: int,
    ) -> None:
        if bounds is not None:
            if origin is not None:
                bounds.append(
                    (origin[0], origin[1] + 1)
                )  # inserted after unit k: a cut before k + 1
            if right is not None:
                bounds.append(right)
        if kind == _STRING and lows is not None:
            s, e = bytes_span(data, start, "string")
            chunk = data[s:e]
            if not chunk.isascii() and may_have_astral(chunk):
                unit = 0
                for ch in chunk.decode("utf-8"):
                    if ord(ch) > 0xFFFF:
                        lows.add((client, clock + unit + 1))
                        unit += 2
                    else:
                        unit += 1

    pos = walk_items(data, visit)
    if bounds is not None:
        ds, _ = read_delete_set(data, pos, strict=True)
        for c, ranges in ds.items():
            for k, n in ranges:
                bounds.append((c, k))
                bounds.append((c, k + n))


def low_surrogates(update: bytes) -> set[ID]:
    """IDs of the low surrogates of every string item in ``update`` (a validated update)."""
    lows: set[ID] = set()
    if may_have_astral(update):
        _walk(update, lows, None)
    return lows


def boundaries(update: bytes) -> list[ID]:
    """The IDs before which ``update`` cuts (delete range ends, insert positions)."""
    bounds: list[ID] = []
    _walk(update, None, bounds)
    return bounds


def splits(update: bytes, known_lows: set[ID] | Callable[[], set[ID]]) -> ID | None:
    """The first ID where ``update`` would split a surrogate pair, given the low surrogates
    of the document it is applied to, or None.

    ``known_lows`` may be a function that computes them: it is called only when ``update``
    cuts somewhere (an insert after or before an item, a delete), so that an update that
    cannot split anything never makes the caller scan its document."""
    bounds = boundaries(update)
    if not bounds:
        return None
    lows = low_surrogates(update)
    known = known_lows() if callable(known_lows) else known_lows
    if not known and not lows:
        return None
    every = known | lows if lows else known
    for bound in bounds:
        if bound in every:
            return bound
    return None
