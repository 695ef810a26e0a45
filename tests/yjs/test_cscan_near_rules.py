"""Struct sections built field by field from values on the rules' boundaries (h-csplit).

A hypothesis strategy for ``test_cscan_accepts``'s property (the C scan accepts whatever the
reference accepts) and ``test_cscan.check``'s converse: updates put together from the same
builders as ``test_cscan_accepts.OVER``, every field drawn from a few values on each side of
its rule: strings (ASCII, the edges of UTF-8 around the surrogates and U+10FFFF, surrogates,
bad bytes), ids and clocks at and past their caps, varuints minimal or not, Any values of
every tag (unknown ones too; integers at +-(2**53 - 1) and past, non-minimal; objects with
repeated keys; nesting to 99-101), type refs 0-9, info bytes with the reserved and flag
bits, GC and Skip of length 0 and at the caps, parents that are or are not types of the
update, two clients (the same id, sometimes), under no limits, the defaults and tight ones.
So an input with exactly one field just over one rule, the rest valid, comes up often: relax
that rule in the reference and the C still hands such an update back (see the history
section for which planted relaxations it finds alone).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cscan import CSCAN, DEFAULTS, NO_LIMITS, TIGHT, check
from test_cscan_accepts import (
    EDGES,
    MAX_CLOCK,
    MAX_SAFE,
    SURROGATE,
    accepts,
    padded,
    parented,
    with_origin,
)
from test_updates import NULL, vi, vs, vu

pytestmark = pytest.mark.skipif(CSCAN is None, reason="the C scan is not built here")


def mostly(good: list[Any], bad: list[Any], weight: int = 6) -> st.SearchStrategy[Any]:
    """A value from ``good`` (``weight`` times as likely), now and then one from ``bad``:
    an update then often has exactly one field over one rule."""
    return st.sampled_from(good * weight + bad)


STRINGS = mostly([b"", b"k", b"key", *EDGES], [SURROGATE, b"a\xff", b"\xf4\x90\x80\x80"], 4)
CLOCKS = mostly([0, 1, 5, MAX_CLOCK - 1, MAX_CLOCK], [2**31])
IDS = mostly([0, 3, 7, 9, MAX_SAFE], [2**53])


def uint(n: int) -> st.SearchStrategy[bytes]:
    """n as a varuint: minimal, or (rarely) one byte longer than it needs."""
    return mostly([vu(n)], [padded(n, 1)], 20)


ANY_SCALARS = mostly(
    [
        b"\x7f",
        NULL,
        b"\x79",
        b"\x78",
        b"\x7d" + vi(MAX_SAFE),
        b"\x7d" + vi(-MAX_SAFE),
        b"\x7d\x40",
        b"\x7c\x00\x00\x80\x3f",
        b"\x7b" + b"\x00" * 8,
        b"\x7a" + b"\xff" * 8,
        b"\x74\x02ab",
    ],
    # an integer not minimal, one past the cap, unknown tags
    [b"\x7d\x81\x00", b"\x7d" + vi(2**53), b"\x73", b"\x80"],
    2,
) | STRINGS.map(lambda s: b"\x77" + vs(s))


def _container(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    array = st.lists(children, max_size=3).map(lambda xs: b"\x75" + vu(len(xs)) + b"".join(xs))
    obj = st.lists(st.tuples(STRINGS, children), max_size=3).map(
        lambda kv: b"\x76" + vu(len(kv)) + b"".join(vs(k) + v for k, v in kv)
    )
    return array | obj


_TREES = st.recursive(ANY_SCALARS, _container, max_leaves=6)
ANY = st.one_of(*[_TREES] * 8, st.integers(99, 101).map(lambda depth: b"\x75\x01" * depth + NULL))


@st.composite
def contents(draw: Any) -> tuple[int, bytes]:
    """(content kind, its bytes)."""
    kind = draw(st.sampled_from([1, 3, 4, 4, 7, 8, 8, 8, 9]))
    if kind == 1:
        return kind, draw(uint(draw(mostly([1, 2, 40], [0, MAX_CLOCK - 1]))))
    if kind == 3:
        return kind, vs(b"\x00\xff")
    if kind == 4:
        return kind, vs(draw(STRINGS))
    if kind == 7:
        ref = draw(mostly([0, 1, 2, 3, 4, 6], [5, 7, 8, 9], 2))
        return kind, bytes([ref]) + (vs(draw(STRINGS)) if ref == 3 else b"")
    if kind == 9:
        options = draw(mostly([b"\x76\x00", b"\x76\x01\x02gc\x78"], [b"\x75\x00"], 3))
        return kind, vs(draw(STRINGS)) + options
    values = draw(st.lists(ANY, min_size=1, max_size=3))
    return kind, draw(uint(len(values))) + b"".join(values)


@st.composite
def structs(draw: Any) -> bytes:
    """One struct: GC, Skip, or an item under a root, in a map, after an origin, before a
    right origin, or under a parent ID."""
    shape = draw(mostly(["root", "map", "origin", "right", "parent"], ["gc", "skip"], 3))
    if shape in ("gc", "skip"):
        length = draw(mostly([1, 3, 200], [0, MAX_CLOCK, 2**31], 3))
        return (b"\x00" if shape == "gc" else b"\x0a") + vu(length)
    kind, body = draw(contents())
    if shape == "root":
        flags = draw(mostly([0], [0x10, 0x20], 20))
        return bytes([kind | flags]) + vu(1) + vs(draw(STRINGS)) + body
    if shape == "map":
        return bytes([kind | 0x20]) + vu(1) + vs(b"m") + vs(draw(STRINGS)) + body
    if shape in ("origin", "right"):
        return with_origin(kind, (draw(IDS), draw(CLOCKS)), body, right=shape == "right")
    return parented((draw(IDS), draw(mostly([0, 1, 2, MAX_CLOCK], [2**31]))), kind, body)


@st.composite
def updates(draw: Any) -> bytes:
    """One or two clients (now and then the same id twice) of one to four structs."""
    clients = []
    ids = draw(st.lists(mostly([7, 9, 11, MAX_SAFE], [7], 2), min_size=1, max_size=2))
    for client in ids:
        items = draw(st.lists(structs(), min_size=1, max_size=4))
        clock = draw(mostly([0, 1, 6], [MAX_CLOCK - 3], 4))
        clients.append(vu(len(items)) + vu(client) + draw(uint(clock)) + b"".join(items))
    return vu(len(clients)) + b"".join(clients) + draw(st.sampled_from([b"\x00", b""]))


@settings(max_examples=500, deadline=None)
@given(updates(), st.sampled_from([NO_LIMITS, DEFAULTS]) | TIGHT)
def test_struct_sections_near_every_rule(data: bytes, limits: tuple[Any, ...]) -> None:
    accepts(data, limits)
    check(data, limits)
