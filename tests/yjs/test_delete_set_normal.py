"""The canonical delete set taken from pycrdt's own encoding when that is in normal form.

``crdtsync.yjs.doc.delete_set_of`` returns pycrdt's bytes as they are when the set they encode
is in normal form (:func:`~crdtsync.yjs.state.is_normal_delete_set`), instead of normalizing
and encoding it again in Python (issue 17: 1-2 ms per group commit of a streamed text). These
tests hold it to the slow path's bytes on documents of one and of several writers.
"""

from __future__ import annotations

import random

import pycrdt
import pytest

from crdtsync.yjs.doc import delete_set, delete_set_of
from crdtsync.yjs.state import (
    encode_delete_set,
    is_normal_delete_set,
    normalize_delete_set,
    read_delete_set,
    subtract_delete_set,
)


def slow(doc: pycrdt.Doc) -> bytes:
    """The canonical encoding, always normalized and encoded in Python (the old path)."""
    update = doc.get_update(doc.get_state())
    assert update[:1] == b"\x00"
    ds, _ = read_delete_set(update, 1, strict=False)
    return encode_delete_set(normalize_delete_set({c: list(r) for c, r in ds.items()}))


@pytest.mark.parametrize(
    ("ds", "normal"),
    [
        ({}, True),
        ({5: [(0, 1)]}, True),
        ({5: [(0, 1), (2, 3)]}, True),
        ({5: [(0, 1), (1, 3)]}, False),  # adjacent: merged in normal form
        ({5: [(0, 2), (1, 3)]}, False),  # overlapping
        ({5: [(4, 1), (0, 1)]}, False),  # unsorted
        ({5: [(0, 0)]}, False),  # empty range
        ({5: []}, False),  # a client without ranges
        ({7: [(0, 1)], 5: [(0, 1)]}, False),  # clients descending
        ({5: [(0, 1)], 5 + 1: [(0, 1)]}, True),
    ],
)
def test_normal_form_is_recognised(ds: dict[int, list[tuple[int, int]]], normal: bool) -> None:
    assert is_normal_delete_set(ds) is normal
    if normal:
        assert normalize_delete_set(ds) is ds
    else:  # normalized as before (a new mapping)
        assert normalize_delete_set(ds) is not ds


@pytest.mark.parametrize("seed", range(12))
def test_pycrdts_bytes_equal_the_canonical_ones(seed: int) -> None:
    """Text streams of one writer (the fast path) and of three (pycrdt lists their clients
    in its own order: often the slow path), deletions at random: after every step the
    canonical bytes equal the slow path's, whichever path gave them."""
    rnd = random.Random(seed)
    docs = [pycrdt.Doc() for _ in range(1 if seed % 2 else 3)]
    texts = [d.get("t", type=pycrdt.Text) for d in docs]
    fast = 0
    for step in range(300):
        i = rnd.randrange(len(docs))
        text, doc = texts[i], docs[i]
        n = len(text)
        if n and rnd.random() < 0.3:
            at = rnd.randrange(n)
            del text[at : min(n, at + rnd.randint(1, 4))]
        else:
            text.insert(rnd.randint(0, n), rnd.choice(["a", "bc", "xyz"]))
        if len(docs) > 1 and step % 7 == 0:  # sync everyone
            for a in docs:
                for b in docs:
                    if a is not b:
                        b.apply_update(a.get_update(b.get_state()))
        own = doc.get_update(doc.get_state())
        assert delete_set_of(own) == delete_set(doc) == slow(doc)
        ds, _ = read_delete_set(own, 1, strict=False)
        fast += is_normal_delete_set(ds)
    if len(docs) == 1:
        assert fast == 300  # one writer: always pycrdt's own bytes


@pytest.mark.parametrize("seed", range(200))
def test_subtract_delete_set_is_the_set_difference(seed: int) -> None:
    """``subtract_delete_set`` (a reopened shard's durable delete set, issue 17) against the
    difference of the two sets of deleted clocks, on random normalized sets."""
    rng = random.Random(seed)

    def random_set(clients: tuple[int, ...]) -> dict[int, list[tuple[int, int]]]:
        out = {}
        for client in clients:
            points = sorted(rng.sample(range(80), 2 * rng.randrange(0, 7)))
            ranges = [(points[k], points[k + 1] - points[k]) for k in range(0, len(points), 2)]
            if ranges:
                out[client] = ranges
        return normalize_delete_set(out)

    def clocks(ds: dict[int, list[tuple[int, int]]]) -> set[tuple[int, int]]:
        return {
            (c, x)
            for c, ranges in ds.items()
            for start, n in ranges
            for x in range(start, start + n)
        }

    a, b = random_set((1, 2)), random_set((1, 3))
    got = subtract_delete_set(a, b)
    assert clocks(got) == clocks(a) - clocks(b)
    assert normalize_delete_set(got) == got
