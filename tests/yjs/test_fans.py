"""The validator's native table of places (``crdtsync/yjs/_fans.c``) against the dict it stands in
for, and what the rest of crdtsync does with it.

``parse_update`` counts a large update's places in ``_fans.Places`` where it is built
(``_native.PLACES``; ``parse.NATIVE_PLACES_MIN`` bytes and up), else in a dict. Here: the
table behaves as the dict would on the same sequence of places (counts, order, reverse order,
lookups, views, equality); ``PlaceHistory`` prices and records the same from either (also
with a non-empty history); a whole map state and an over-limit fan get the same answer from
``parse_update`` either way; the build's rules (not used with ``CRDTSYNC_PURE_PYTHON=1``, nor
when built from another source; built in CI). ``tests/yjs/test_scan_builds.py`` runs every
other kind of input both ways.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Reversible
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.errors import InvalidUpdate
from crdtsync.yjs import _native, parse
from crdtsync.yjs.limits import DEFAULT_LIMITS, PlaceHistory, _shared

PLACES = _native.native_places()
needs_native = pytest.mark.skipif(PLACES is None, reason="the native table is not built here")

#: A few byte strings to cut places from: equal slices at different offsets, the empty one.
DATA = b"abcabcabc\x00\x01\x00\x01xyzxyz" + bytes(range(256)) + b"abc"


def _spans(data: bytes) -> st.SearchStrategy[list[tuple[int, int]]]:
    span = st.integers(0, len(data)).flatmap(
        lambda start: st.tuples(st.just(start), st.integers(0, min(6, len(data) - start)))
    )
    return st.lists(span, max_size=80)


def _both(data: bytes, spans: list[tuple[int, int]]) -> tuple[Any, dict[bytes, int], list[int]]:
    """The table and the dict after the same adds; the table's answers to each add."""
    assert PLACES is not None
    table = PLACES(data)
    model: dict[bytes, int] = {}
    answers = []
    for start, length in spans:
        answers.append(table.add(start, length))
        key = data[start : start + length]
        model[key] = model.get(key, 0) + 1
        assert answers[-1] == model[key]
    return table, model, answers


@needs_native
@settings(max_examples=300, deadline=None)
@given(_spans(DATA), st.binary(max_size=8))
def test_the_table_is_the_dict(spans: list[tuple[int, int]], probe: bytes) -> None:
    table, model, _ = _both(DATA, spans)
    assert len(table) == len(model)
    assert list(table) == list(model)
    assert list(reversed(table)) == list(reversed(model))
    assert list(table.items()) == list(model.items())
    assert list(table.values()) == list(model.values())
    assert table.keys() == model.keys()
    assert table == model and model == table and not (table != model)
    assert table.to_dict() == model and type(table.to_dict()) is dict
    for key in [*model, probe]:
        assert (key in table) == (key in model)
        assert table.get(key) == model.get(key)
        assert table.get(key, -1) == model.get(key, -1)
        if key in model:
            assert table[key] == model[key]
        else:
            with pytest.raises(KeyError):
                table[key]
    assert dict(table) == model


@needs_native
def test_many_places_grow_the_table_and_keep_every_count() -> None:
    data = b"".join(i.to_bytes(4, "big") for i in range(50_000))
    table, model, _ = _both(data, [(4 * (i % 20_000), 4 + (i % 3)) for i in range(50_000)])
    assert table == model and len(table) == len(model)
    table.reserve(100_000)  # a hint only: the contents stay
    assert table == model and list(table) == list(model)


@needs_native
def test_what_the_table_refuses() -> None:
    assert PLACES is not None
    table = PLACES(b"abc")
    for start, length in ((-1, 1), (0, 4), (3, 1), (4, 0), (0, -1)):
        with pytest.raises(ValueError):
            table.add(start, length)
    with pytest.raises(TypeError):
        table.add(0)
    with pytest.raises(TypeError):
        PLACES(bytearray(b"abc"))
    with pytest.raises(ValueError):
        table.reserve(-1)
    assert len(table) == 0 and table.add(3, 0) == 1  # the empty place at the end
    assert "a" not in table and 1 not in table and table.get("a") is None
    with pytest.raises(KeyError):
        table["a"]
    keys = iter(table)
    table.add(0, 1)
    with pytest.raises(RuntimeError, match="changed size"):
        next(keys)
    with pytest.raises(TypeError):
        hash(table)


@needs_native
@settings(max_examples=150, deadline=None)
@given(st.lists(_spans(DATA), min_size=1, max_size=5), st.integers(0, 4))
def test_place_history_prices_and_records_the_same_from_either(
    updates: list[list[tuple[int, int]]], most_known: int
) -> None:
    """A history fed tables and one fed dicts agree on every cost, refusal and tier, with a
    small cap and few remembered places so that evictions and refusals happen."""
    with_table, with_dict = PlaceHistory(6, max_places=3), PlaceHistory(6, max_places=3)
    for spans in updates:
        table, model, _ = _both(DATA, spans)
        most = max(model.values(), default=0) if most_known % 2 else None
        outcomes = []
        for history, places in ((with_table, table), (with_dict, model)):
            try:
                outcomes.append(history.cost(places, most))
            except ValueError as exc:
                outcomes.append(str(exc))
                continue
            history.record(places, most)
        assert outcomes[0] == outcomes[1]
        assert dict(with_table._light) == dict(with_dict._light)
        assert list(with_table._light) == list(with_dict._light)
        assert list(with_table._heavy.items()) == list(with_dict._heavy.items())


@settings(max_examples=300, deadline=None)
@given(st.sets(st.binary(max_size=3)), st.sets(st.binary(max_size=3)))
def test_the_history_meets_a_table_in_the_order_of_a_dict(
    history: set[bytes], update: set[bytes]
) -> None:
    """``_shared`` gives the keys in the order ``dict.keys() & dict.keys()`` does, whichever
    side is larger (a plain mapping stands in for the table: no C needed)."""
    known = dict.fromkeys(history, 1)
    places = dict.fromkeys(update, 1)
    want = list(_shared(known, places)) if known else []
    assert want == list(known.keys() & places.keys())
    assert list(_shared(known, MappingProxyType(places))) == want


def _map_state(keys: int, value: str = "v") -> bytes:
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    with doc.transaction():
        for i in range(keys):
            root[f"k{i}"] = f"{value}{i}"
    return doc.get_update()


def _parse(update: bytes, places: type | None) -> tuple[Any, ...]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parse, "PLACES", places)
        try:
            info = parse.parse_update(update, limits=DEFAULT_LIMITS)
        except InvalidUpdate as exc:
            return ("refused", type(exc).__name__, str(exc))
    used = type(info.places)
    return ("accepted", info.work, list(info.places.items()), info.places_most, used)


@needs_native
@pytest.mark.parametrize("keys", [5_000, 70_000])  # 70,000: one client past _RESERVE_MIN
def test_a_large_update_uses_the_table_and_gets_the_same_answers(keys: int) -> None:
    state = _map_state(keys)
    assert len(state) >= parse.NATIVE_PLACES_MIN
    native, plain = _parse(state, PLACES), _parse(state, None)
    assert native[4] is PLACES and plain[4] is dict  # the table was used, and the dict
    assert native[:4] == plain[:4] and native[3] == 1 and len(native[2]) == keys
    small = _map_state(10)
    assert len(small) < parse.NATIVE_PLACES_MIN
    assert _parse(small, PLACES)[4] is dict  # small updates keep the dict


@needs_native
def test_a_large_over_limit_fan_is_refused_the_same_either_way() -> None:
    """300 clients' items at one map key (a fan past ``max_fan``) after 5,000 honest keys:
    refused with the same message (and byte offset) either way."""
    updates = [_map_state(5_000)]
    for client in range(300):
        writer = pycrdt.Doc(client_id=10_000 + client)
        writer.get("root", type=pycrdt.Map)["k"] = client
        updates.append(writer.get_update())
    merged = pycrdt.merge_updates(*updates)
    assert len(merged) >= parse.NATIVE_PLACES_MIN
    native, plain = _parse(merged, PLACES), _parse(merged, None)
    assert native == plain and native[0] == "refused" and "same place" in native[2]
    assert DEFAULT_LIMITS.max_fan is not None and str(DEFAULT_LIMITS.max_fan) in native[2]


def test_a_table_built_from_another_source_is_not_used() -> None:
    stale = SimpleNamespace(__file__="/x/_fans.cpython-311-x86_64-linux-gnu.so", SOURCE_SHA256="0")
    with pytest.warns(RuntimeWarning, match="another version of _fans.c"):
        sources = [_native._DIR / name for name in _native._FANS_SOURCES]
        assert not _native._current(stale, sources)  # type: ignore[arg-type]


def test_ci_builds_the_table() -> None:
    """CI has a C compiler (``.ci/run``): the native table must be built and used there."""
    if not os.environ.get("CI") or _native.FORCED_PURE:
        pytest.skip("only in CI, without CRDTSYNC_PURE_PYTHON")
    assert _native.PLACES is not None, "CI built no native table: see `pip install -e .`"
    assert parse.PLACES is _native.PLACES


@needs_native
def test_the_c_table_counts_and_python_makes_it_a_mapping() -> None:
    """``_fans.Places`` (C) holds the hot loop's ``add``/``reserve`` and what a mapping is
    built from; ``_places.Places`` makes it a Mapping (keys, items, values, get, == are
    Mapping's), adding no per-instance dict."""
    from crdtsync.yjs import _fans, _places

    assert PLACES is _places.Places and issubclass(PLACES, _fans.Places)
    assert issubclass(PLACES, Mapping) and not hasattr(PLACES(b"x"), "__dict__")
    assert isinstance(PLACES(b"x"), Reversible)  # Mapping's __reversed__ = None is not inherited
