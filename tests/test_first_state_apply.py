"""What ``ShardRegistry.apply`` does after a joiner's whole state is applied, made cheaper with
the same outcome (issue 17, h-paper3).

A received delta of at least ``_registry_replicas._SEARCH_MAX_BYTES`` is not searched for the
value migrations' rewrite marker key: the shard's rewrite repair reads the marker instead (the
search was 0.2 ms of the automerge-paper state and 2-3 ms of a 200,000-key map on a joiner's
critical path). A long state that brings two rewriting migrations is repaired on arrival, and a
delta without the key changes nothing.

An empty place history records the update's places before the apply (2-3 ms after pycrdt's
apply of that map, 0.1 ms before it): the history is the one recording after would give, and
it is empty again when the apply fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync import InvalidUpdate, updates
from crdtsync import _registry_replicas as RR
from crdtsync import values as V
from crdtsync._registry import ShardRegistry
from crdtsync.shard import Shard
from crdtsync.store import Store
from crdtsync.yjs.limits import PlaceHistory


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


def _map_update(keys: range, *, fan: int = 0) -> bytes:
    """A map's keys set by one client, plus ``fan`` items of other clients at one key (a
    place of several items: the history's second tier)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=21)
    root = doc.get("root", type=pycrdt.Map)
    with doc.transaction():
        for i in keys:
            root[f"k{i}"] = i
    for j in range(fan):
        other: pycrdt.Doc[Any] = pycrdt.Doc(client_id=100 + j)
        other.get("root", type=pycrdt.Map)["pile"] = j
        doc.apply_update(other.get_update())
    return doc.get_update()


def _tiers(history: PlaceHistory) -> tuple[list[tuple[bytes, int]], dict[bytes, int]]:
    return list(history._light.items()), dict(history._heavy)


@pytest.mark.parametrize(("n", "fan"), [(3, 0), (2000, 0), (2000, 3)])
def test_a_first_update_leaves_the_history_recording_after_the_apply_would(
    tmp_path: Path, n: int, fan: int
) -> None:
    """The whole state of a new shard (new and already open), then a second update: the
    registry's history is, each time, the one made by recording each update after it applied
    (the order before h-paper3), and the second update is priced the same."""
    first = _map_update(range(n), fan=fan)
    second = _map_update(range(n - 1, n + 5), fan=2)
    for opened_first in (False, True):
        reg = _registry(tmp_path / str(opened_first))
        try:
            if opened_first:
                reg.open("s")
            want = PlaceHistory(RR._MAX_PLACE_ITEMS, max_places=512)
            for update in (first, second):
                info = updates.validate_update(update)
                work = info.work + want.cost(info.places, info.places_most)
                reg.apply("s", update, "peer")
                want.record(info.places, info.places_most)
                assert reg.last_apply_work == work
                assert _tiers(reg._places["s"]) == _tiers(want)
            assert len(want) > 0
        finally:
            reg.close()


def test_a_failed_first_apply_leaves_the_history_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The places recorded before the apply are forgotten when it raises: the next update is
    priced against an empty history, as if the failed one had never come."""
    update = _map_update(range(50), fan=2)
    reg = _registry(tmp_path)
    inner = Shard.apply_remote

    def refuse(self: Shard, *args: Any, **kwargs: Any) -> Any:
        raise InvalidUpdate("refused for the test")

    try:
        monkeypatch.setattr(Shard, "apply_remote", refuse)
        with pytest.raises(InvalidUpdate):
            reg.apply("s", update, "peer")
        assert len(reg._places["s"]) == 0
        monkeypatch.setattr(Shard, "apply_remote", inner)
        info = updates.validate_update(update)
        reg.apply("s", update, "peer")
        assert reg.last_apply_work == info.work  # nothing earlier at its places
    finally:
        reg.close()
