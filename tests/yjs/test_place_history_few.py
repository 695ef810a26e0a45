"""PlaceHistory's few-place steps and a batch's pricing against the general steps (issue 17).

A live update places one item or a few (a map set: one place), and ``PlaceHistory.cost`` and
``record`` take it without the set intersections of the general steps; ``apply_batch`` prices
a Push's updates with ``_RegistryReplicas._batch_cost`` and records them after the apply
instead of pricing them on a copy of the history. Each must give what the general steps give:
the same prices, the same refusals and the same two tiers, in the same order (the order
decides which places are dropped later). The general steps are reached through a mapping that
is not a dict (a ``MappingProxyType`` of the same places), which the fast steps never take.
"""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync._registry_replicas import _RegistryReplicas
from crdtsync.errors import UpdateOverLimit
from crdtsync.yjs.limits import PlaceHistory

KEYS = [bytes([i]) for i in range(12)]  # few keys: places meet again, tiers overflow
places_st = st.dictionaries(st.sampled_from(KEYS), st.integers(1, 4), max_size=10)


def _state(h: PlaceHistory) -> tuple[list[tuple[bytes, int]], list[tuple[bytes, int]]]:
    return list(h._light.items()), list(h._heavy.items())


def _price(h: PlaceHistory, places: Any) -> int | str:
    try:
        return h.cost(places, max(places.values(), default=0))
    except ValueError as exc:
        return str(exc)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(places_st, max_size=40),
    st.integers(1, 5),
    st.sampled_from([None, 6, 12]),
    st.booleans(),
)
def test_few_place_steps_equal_the_general_steps(
    seq: list[dict[bytes, int]], max_places: int, max_items: int | None, pass_most: bool
) -> None:
    fast = PlaceHistory(max_items, max_places)
    general = PlaceHistory(max_items, max_places)
    for places in seq:
        proxy = MappingProxyType(places)
        assert _price(fast, places) == _price(general, proxy)
        most = max(places.values(), default=0) if pass_most else None
        fast.record(places, most)
        general.record(proxy, most)
        assert _state(fast) == _state(general)


def test_the_one_place_step_is_taken_and_matches_on_a_paced_stream() -> None:
    # What a paced map writer makes: a fresh place per update, now and then one met again.
    fast, general = PlaceHistory(8, 16), PlaceHistory(8, 16)
    for i in range(400):
        places = {f"k{i % 37 if i % 5 else i}".encode(): 1 + (i % 7 == 0)}
        assert _price(fast, places) == _price(general, MappingProxyType(places))
        fast.record(places)
        general.record(MappingProxyType(places))
        assert _state(fast) == _state(general)
    assert len(fast._heavy) > 0 and len(fast._light) == 16


def _info(places: dict[bytes, int], work: int = 3) -> Any:
    return SimpleNamespace(places=places, places_most=max(places.values(), default=0), work=work)


def _trial_price(history: PlaceHistory, infos: list[Any]) -> tuple[int | str, PlaceHistory]:
    """How apply_batch priced a batch before: on a copy of the history, each update recorded
    on it after its price (the copy kept as the history once applied)."""
    trial = history.copy()
    work = 0
    try:
        for info in infos:
            work += info.work + trial.cost(info.places, info.places_most)
            trial.record(info.places, info.places_most)
    except ValueError:
        return "refused", trial
    return work, trial


@settings(max_examples=300, deadline=None)
@given(st.lists(places_st, max_size=6), st.lists(places_st, min_size=1, max_size=6))
def test_batch_cost_prices_a_batch_as_the_copy_did(
    before: list[dict[bytes, int]], batch: list[dict[bytes, int]]
) -> None:
    # max_places above every key drawn: no place is evicted inside the batch (where the copy
    # forgot a place the batch met again, _batch_cost, pricing the history as it stood, is
    # higher: not drawn here).
    history = PlaceHistory(12, max_places=len(KEYS) + 1)
    for places in before:
        if isinstance(_price(history, places), str):  # refused: never recorded
            continue
        history.record(places)
    infos = [_info(p) for p in batch]
    expected, trial = _trial_price(history, infos)
    try:
        got: int | str = _RegistryReplicas._batch_cost(history, infos)
    except UpdateOverLimit:
        got = "refused"
    assert got == expected
    if got != "refused":  # apply_batch then records each update, in order
        for info in infos:
            history.record(info.places, info.places_most)
        assert _state(history) == _state(trial)
