"""A remote read joins the holders' answers only when each is causally ready: answers in any
order give the same value, and an answer past a gap is left out instead of being left pending
inside pycrdt (invisible, and a crash risk with later contradicting updates)."""

from __future__ import annotations

import pycrdt

from crdtsync.readcache import ReadCache, snapshot_of


def _writes() -> tuple[bytes, bytes, bytes]:
    """Three successive updates of one writer: k0, then k1, then k2."""
    doc: pycrdt.Doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    out = []
    for i in range(3):
        before = doc.get_state()
        root[f"k{i}"] = i
        out.append(doc.get_update(before))
    return out[0], out[1], out[2]


def test_answers_in_any_order_join_to_the_same_value() -> None:
    d0, d1, d2 = _writes()
    value = snapshot_of(ReadCache().join("s", [d2, d1, d0], now=0.0, quorum=3))
    assert value == snapshot_of(ReadCache().join("s", [d0, d1, d2], now=0.0, quorum=3))
    assert value == {"k0": 0, "k1": 1, "k2": 2}


def test_an_answer_past_a_gap_is_left_out_not_pending() -> None:
    d0, d1, d2 = _writes()
    cache = ReadCache()
    assert snapshot_of(cache.join("s", [d0, d2], now=0.0, quorum=2)) == {"k0": 0}
    # Nothing is pending in the cached copy: its state vector asks for k1 onwards, and the
    # answers of the next read (k1, k2) complete it.
    joined = cache.join("s", [d2, d1], now=1.0, quorum=2)
    assert snapshot_of(joined) == {"k0": 0, "k1": 1, "k2": 2}
