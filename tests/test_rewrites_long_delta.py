"""A received delta of at least ``_registry_replicas._SEARCH_MAX_BYTES`` is not searched for the
value migrations' rewrite marker key: the shard's rewrite repair reads the marker instead
(issue 17, h-paper3: the search was 0.2 ms of the automerge-paper state and 2-3 ms of a
200,000-key map on a joiner's critical path). The outcome is the same: a long state that brings
two rewriting migrations is repaired on arrival, and a delta without the key changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync import _registry_replicas as RR
from crdtsync import values as V
from crdtsync._registry import ShardRegistry
from crdtsync.store import Store


def _v1_int(value: int) -> bytes:
    """An int as format 1 stored it (a tagged 9-byte buffer)."""
    return b"\x01" + value.to_bytes(8, "big", signed=True)


def _two_rewriting_migrations(padding: int) -> bytes:
    """The full state of a document two replicas of one old (format-1) list migrated apart, one
    of them after an old-release insert the other lacked, merged without repair (every rewritten
    element twice), plus a string of ``padding`` characters under another key."""
    old: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    old.get("root", type=pycrdt.Map)["list"] = pycrdt.Array([_v1_int(1), _v1_int(2)])
    a: pycrdt.Doc[Any] = pycrdt.Doc(client_id=11)
    b: pycrdt.Doc[Any] = pycrdt.Doc(client_id=12)
    for doc in (a, b):
        doc.apply_update(old.get_update())
    b.get("root", type=pycrdt.Map)["list"].append(_v1_int(3))
    for doc in (a, b):
        V.migrate(doc, "root")
    merged: pycrdt.Doc[Any] = pycrdt.Doc(client_id=13)
    merged.apply_update(a.get_update())
    merged.apply_update(b.get_update())
    assert len(V.rewriters(merged)) == 2
    merged.get("root", type=pycrdt.Map)["pad"] = "x" * padding
    return merged.get_update()


def _registry(tmp_path: Path) -> ShardRegistry:
    return ShardRegistry("j", Store(tmp_path / "j"), notify=lambda: None, on_delta=None, host=None)


@pytest.mark.parametrize("padding", [0, 2 * RR._SEARCH_MAX_BYTES])
def test_a_state_with_two_rewriting_migrations_is_repaired_short_or_long(
    tmp_path: Path, padding: int
) -> None:
    state = _two_rewriting_migrations(padding)
    assert (len(state) >= RR._SEARCH_MAX_BYTES) == bool(padding)
    expected: pycrdt.Doc[Any] = pycrdt.Doc()
    expected.apply_update(state)
    assert V.repair_rewrites(expected) > 0  # there is something to repair
    want = V.to_plain(expected.get("root", type=pycrdt.Map))["list"]
    reg = _registry(tmp_path)
    try:
        reg.apply("s", state, "peer")
        shard = reg.open("s")
        got = V.to_plain(shard.doc.get("root", type=pycrdt.Map))["list"]
        assert sorted(got) == sorted(want) == [1, 2, 3]  # each element once
    finally:
        reg.close()


def test_the_repair_is_asked_for_long_deltas_and_for_short_ones_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which applied deltas ask the repair: a short one without the key does not, a long one
    does (it reads the marker and changes nothing here: no migration rewrote values)."""
    asked: list[str] = []
    inner = ShardRegistry._repair_rewrites

    def spy(self: ShardRegistry, shard: Any) -> None:
        asked.append(shard.name)
        inner(self, shard)

    monkeypatch.setattr(ShardRegistry, "_repair_rewrites", spy)
    src: pycrdt.Doc[Any] = pycrdt.Doc()
    root = src.get("root", type=pycrdt.Map)
    sent: list[bytes] = []
    src.observe(lambda e: sent.append(e.update))
    root["short"] = "y"
    root["long"] = "z" * (2 * RR._SEARCH_MAX_BYTES)
    root["named"] = V.REWRITES  # a short delta that merely names the key
    short, long, named = sent
    assert len(short) < RR._SEARCH_MAX_BYTES <= len(long) and len(named) < RR._SEARCH_MAX_BYTES
    reg = _registry(tmp_path)
    try:
        reg.apply("s", short, "peer")
        assert asked == []
        before = reg.open("s").doc.get_update()
        reg.apply("s", long, "peer")
        assert asked == ["s"]
        reg.apply("s", named, "peer")
        assert asked == ["s", "s"]
        doc = reg.open("s").doc
        assert doc.get("root", type=pycrdt.Map).to_py() == {
            "short": "y",
            "long": "z" * (2 * RR._SEARCH_MAX_BYTES),
            "named": V.REWRITES,
        }
        assert doc.get_update() != before
    finally:
        reg.close()
