"""PlaceHistory: the fan a sequence of updates builds at one place (issue #11)."""

from __future__ import annotations

import pytest

from crdtsync.yjs.limits import PlaceHistory


def test_a_fan_built_by_many_updates_costs_quadratically_and_is_capped() -> None:
    h = PlaceHistory(max_items=10, max_places=4)
    costs = []
    for _ in range(10):  # ten one-client updates, each placing one item at place P
        costs.append(h.cost({b"P": 1}))
        h.record({b"P": 1})
    assert costs == list(range(10))  # each scans past every item placed there before
    with pytest.raises(ValueError, match="more than 10 items at one place"):
        h.cost({b"P": 1})
    assert h.cost({b"Q": 1}) == 0  # another place is not affected


def test_one_update_over_the_cap_at_a_new_place_is_refused() -> None:
    with pytest.raises(ValueError):
        PlaceHistory(max_items=3).cost({b"P": 4})


def test_record_counts_every_known_place_and_keeps_the_last_new_ones() -> None:
    h = PlaceHistory(max_items=None, max_places=3)
    h.record({b"A": 2})
    # A big update: A is known (counted however far back it comes), five new one-item places
    # of which only the last max_places are kept.
    h.record({b"A": 1, b"n1": 1, b"n2": 1, b"n3": 1, b"n4": 1, b"n5": 1})
    assert h.count(b"A") == 3
    assert [k for k in (b"n1", b"n2", b"n3", b"n4", b"n5") if h.count(k)] == [b"n3", b"n4", b"n5"]


def test_a_flood_of_one_item_places_never_pushes_a_pile_out() -> None:
    h = PlaceHistory(max_items=None, max_places=4)
    h.record({b"pile": 200})
    for i in range(100):
        h.record({f"k{i}-{j}".encode(): 1 for j in range(10)})
    assert h.count(b"pile") == 200
    assert len(h) <= 4 + 1


def test_of_many_piles_those_holding_the_most_stay() -> None:
    h = PlaceHistory(max_items=None, max_places=2)
    h.record({b"big": 50})
    h.record({f"p{i}".encode(): 2 for i in range(5)})  # over 2 * max_places piles: trimmed
    assert h.count(b"big") == 50 and len(h) == 2


def test_cost_visits_only_places_both_hold() -> None:
    h = PlaceHistory(max_items=None, max_places=10)
    h.record({b"A": 3, b"B": 1})
    big = {bytes([i % 256, i // 256]): 1 for i in range(50_000)} | {b"A": 2}
    assert h.cost(big) == 6
