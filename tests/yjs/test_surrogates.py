"""crdtsync.yjs.surrogates: the 4-byte-sequence prefilter never misses an astral character,
and a document's low surrogates are only computed for an update that cuts somewhere."""

from __future__ import annotations

from typing import Any

import pycrdt
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.yjs import surrogates


@given(st.text())
def test_the_prefilter_finds_every_astral_character(text: str) -> None:
    data = b"\x00\xf0\xff" + text.encode("utf-8", "surrogatepass") + b"\xf4"
    if any(ord(ch) > 0xFFFF for ch in text):
        assert surrogates.may_have_astral(data)


def test_binary_lead_bytes_alone_are_not_astral() -> None:
    assert not surrogates.may_have_astral(bytes([0xF0, 0x00, 0xF4, 0x41, 0xF1, 0x80, 0x80]))
    assert surrogates.may_have_astral("😀".encode())


def test_the_documents_lows_are_asked_for_only_when_the_update_cuts() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    text += "x😀y"
    asked: list[int] = []

    def lows() -> set[surrogates.ID]:
        asked.append(1)
        return surrogates.low_surrogates(doc.get_update())

    other: pycrdt.Doc[Any] = pycrdt.Doc()
    other.get("m", type=pycrdt.Map)["k"] = 1  # a root-level map entry: no origin, no delete
    assert surrogates.splits(other.get_update(), lows) is None
    assert asked == []
    state = doc.get_state()
    text += "z"  # an insert after "y": it has an origin, so it cuts (between whole characters)
    assert surrogates.splits(doc.get_update(state), lows) is None
    assert asked == [1]
