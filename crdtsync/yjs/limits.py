"""Limits on the work one remote update may cause (issue #11), checked by the strict parser.

Every limit here refuses a shape that the validator accepted before and that costs pycrdt
(Yrs) time or memory out of proportion to the update's size, or that crdtsync's reads cannot
show. Each default has headroom over honest use: the full state of the automerge-paper editing
trace (259,778 edits) is 376,775 bytes, 10,972 structs, 1 client and 2,639 deleted ranges.

Pure Python, no pycrdt (the sans-I/O core may import it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping, Reversible
from dataclasses import dataclass
from functools import cached_property

__all__ = ["DEFAULT_LIMITS", "PlaceHistory", "UpdateLimits"]


@dataclass(frozen=True)
class UpdateLimits:
    """What one update from a peer may hold; ``None`` for a field switches that check off.

    Attributes:
        max_structs: structs (items, GC, Skip) in the struct section. Yrs integrates ~2.7 M
            one-value items of a 16 MB push in 4.5 s, and this pure-Python parser needs ~5 us
            a struct; 500,000 bounds both (about 2.5 s of parse, 1 s of integration, the worst
            case) and is 45 times the whole paper trace.
        max_delete_ranges: deleted ranges, all clients together; a 14 MB delete set cost 2.2 s
            of CPU. 500,000 is 190 times the paper trace's.
        max_fan: items at the same place (origin, right origin, or parent and key) in one
            update, whichever clients they are of; items continuing their own client's
            previous clock (typing) are not counted (one per place at most). YATA's conflict
            loop (Yrs ``Item::integrate``) scans, for each item, every earlier sibling at the
            same origin of a lower client: n such items after n others cost n^2 steps
            (measured: 8,000 + 8,000 one-value items of as many clients, 160 KB, 7.7 s).
            Items, not clients: one client's m items at one origin followed by a higher
            client's m cost m^2 as well (found by the fuzz generators of
            ``tests/test_hostile_fuzz.py``: 2 x 4,000 items, 24 KB each, 1.15 s; counting
            clients had let them through). Honest updates hold one item per client that wrote
            concurrently at one spot, and a full-state diff holds all of them, so the cap is
            the number of agents that may write at one spot at the same moment: 256 (two
            such updates cost 65,536 steps, ~10 ms). This bounds one update; the fan built
            by many updates over time is bounded by :class:`PlaceHistory` (and priced by
            :class:`crdtsync.quotas.WorkBudget`).
        max_merge_work: what merging runs of items may cost, in bytes copied. Yrs squashes
            consecutive items of one client that continue each other (origin = the previous
            clock, same right origin, both String or both Any) when a transaction ends, copying
            the merged run for each item: time and memory quadratic in the run. Measured: 5,000
            one-value Any items (35 KB) took 0.87 s and 582 MiB, 10,000 took 2.3 GiB; 50,000
            one-character String items (333 KB) took 3.7 s and 1.37 GiB, 100,000 aborted a
            process capped at 3 GiB. pycrdt and Yjs squash before they encode, so honest
            updates have no such runs (10,000 appends, one transaction each, encode as one
            struct). Each merged item costs the run's length so far, an Any value counting 32
            and a UTF-16 unit 1; 64 MiB in all is one run of ~2,000 one-value Any items or
            ~11,500 characters, under 100 MB and 0.5 s at worst.
        max_type_depth: nesting of shared types whose parents are named inside the update (a
            map in a map in a map ...): deeper values cannot be read back (``snapshot()`` stops
            at ``crdtsync._render.MAX_READ_DEPTH``, also 64) and recursive readers crash.
        refuse_subdocs: refuse Doc content (subdocuments). Off by default: pycrdt writes them
            (a Yjs-level user may), crdtsync does not sync their contents, and ``snapshot()``
            shows one as ``{"$subdoc": GUID}`` (on every replica, after restarts too).
        refuse_format_in_map: refuse Format content as a map value (an item with a parent
            key): no Yjs API writes that, and pycrdt's ``Map.items()`` raises KeyError on it.
    """

    max_structs: int | None = 500_000
    max_delete_ranges: int | None = 500_000
    max_fan: int | None = 256
    max_merge_work: int | None = 64 << 20
    max_type_depth: int | None = 64
    refuse_subdocs: bool = False
    refuse_format_in_map: bool = True

    @cached_property
    def scan_args(self) -> tuple[int, int, int, int, bool, bool]:
        """The struct scan's arguments for these limits (``None`` as -1), made once: the
        parser passes them with every update (issue 17)."""
        no = -1
        return (
            no if self.max_structs is None else self.max_structs,
            no if self.max_fan is None else self.max_fan,
            no if self.max_type_depth is None else self.max_type_depth,
            no if self.max_merge_work is None else self.max_merge_work,
            self.refuse_format_in_map,
            self.refuse_subdocs,
        )


#: The limits applied to updates from peers (``validate_update``, ``apply_if_ready``).
DEFAULT_LIMITS = UpdateLimits()


def _shared(known: dict[bytes, int], places: Mapping[bytes, int]) -> Collection[bytes]:
    """The places ``known`` and ``places`` both hold, nothing at all for an empty history.

    A set intersection in C for a dict. For the validator's native table
    (``crdtsync.yjs._places.Places``, a large update's places) ``known.keys() & places.keys()``
    would first make a dict of all of its keys (a whole map's 200,000, a bytes object each:
    its ``keys()`` is the view of a dict it builds on demand), so the set is
    built here the way CPython builds ``known.keys() & places.keys()`` of two dicts: a new set,
    filled in the order of the smaller of the two (``known`` when ``places`` is larger), each
    key looked up in the other. The same keys added in the same order: the same set, iterated in
    the same order, so the history promotes places to its piles in the same order either way
    (the order settles ties when piles are dropped).
    """
    if not known:
        return ()
    if isinstance(places, dict):
        return known.keys() & places.keys()
    if len(places) > len(known):
        return {key for key in known if key in places}
    return {key for key in places if key in known}


#: At most this many places (a dict's) are priced one by one rather than by set intersections.
_FEW = 8


class PlaceHistory:
    """The fan that a sequence of updates builds at one place of one shard (issue #11).

    ``max_fan`` bounds the items placed at one place within *one* update; YATA's conflict
    scan also visits the items earlier updates put there, so n updates of 32 items each at
    one place cost 32 x 32 x n steps for the last one (quadratic in all). This keeps, per
    place (the placement bytes of :attr:`UpdateInfo.places
    <crdtsync.yjs.parse.UpdateInfo.places>`), how many items were placed there so far, and
    prices an update's conflict scan against them: deterministic work units (the same input
    always costs the same), charged to the sender and the shard by the gossip core's work
    budget.

    Memory is bounded in two tiers, so that forgetting is cheap for honest shards and costly
    to force. Places holding one item (what honest updates make: typing chains each item to
    the last one, a map key is its own place) are kept up to ``max_places``, the least
    recently used dropped. Places holding two or more (a fan being built) are kept up to
    ``2 * max_places``; beyond that, those holding the fewest are dropped (down to
    ``max_places``): a flood of
    fresh places never pushes a pile out (it only evicts one-item places), and to push out
    a pile of c items a peer must first build ``2 * max_places`` places of more than c items
    each, work the budget charges it for.

    Args:
        max_items: items at one place (all updates together) beyond which an update adding
            to it is refused (``None``: no cap). The registry uses ``max_fan`` (256): a
            shard's whole state, passed on as one diff, then stays within ``max_fan``.
        max_places: one-item places remembered per shard (and half the cap on piles).
    """

    def __init__(self, max_items: int | None = 4096, max_places: int = 4096) -> None:
        self.max_items = max_items
        self.max_places = max_places
        self._light: OrderedDict[bytes, int] = OrderedDict()  # places of one item, LRU
        self._heavy: dict[bytes, int] = {}  # places of two items or more

    def copy(self) -> PlaceHistory:
        """An independent copy: to price a batch of updates one after the other, each
        against those before it, and keep it only if the batch is applied."""
        twin = PlaceHistory(self.max_items, self.max_places)
        twin._light = self._light.copy()
        twin._heavy = self._heavy.copy()
        return twin

    def __len__(self) -> int:
        return len(self._light) + len(self._heavy)

    def clear(self) -> None:
        """Forget every place (back to a new history)."""
        self._light = OrderedDict()
        self._heavy = {}

    def count(self, place: bytes) -> int:
        """Items remembered at ``place`` (0: none, or forgotten)."""
        return self._heavy.get(place) or self._light.get(place, 0)

    def cost(self, places: Mapping[bytes, int], most: int | None = None) -> int:
        """Steps the conflict scans of an update placing ``places`` cost against what earlier
        updates placed there (its own fan is in ``UpdateInfo.work`` already).

        ``most``: ``max(places.values())`` if known (``UpdateInfo.places_most``, counted by
        the parser); a pass over a whole map's places to find it cost 5 ms at 200,000.

        Only the places both hold are visited (set intersections, in C): a whole shard's
        diff names a place per map key (50,000 for a 50,000-key map), and a loop over them
        in Python cost as much as pycrdt's apply of that diff.

        Raises:
            ValueError: a place would hold more than ``max_items``; nothing is recorded.
        """
        limit = self.max_items
        if most is None:
            most = max(places.values(), default=0)
        if limit is not None and most > limit:
            self._refuse()
        cost = 0
        if type(places) is dict and len(places) <= _FEW:
            # An update of the live path places a few items (a map set: one): each looked up
            # in the two tiers, without the two sets the intersections make. The same sum
            # and the same refusal (a place is in one tier at most, see record).
            heavy, light = self._heavy, self._light
            for key, n in places.items():
                prior = heavy.get(key) or light.get(key)
                if prior:
                    if limit is not None and prior + n > limit:
                        self._refuse()
                    cost += prior * n
            return cost
        for known in (self._heavy, self._light):
            for key in _shared(known, places):
                prior, n = known[key], places[key]
                if limit is not None and prior + n > limit:
                    self._refuse()
                cost += prior * n
        return cost

    def _refuse(self) -> None:
        raise ValueError(
            f"more than {self.max_items} items at one place over successive updates (the limit)"
        )

    def record(self, places: Mapping[bytes, int], most: int | None = None) -> None:
        """The update placing ``places`` was applied (``most``: as in :meth:`cost`).

        Every place already remembered is counted; of the new one-item places, only the
        last ``max_places`` are kept (more would be dropped at once).
        """
        light, heavy = self._light, self._heavy
        if type(places) is dict and len(places) <= 1:
            # The live path's one place (a map set's), or none (typing): what the steps below
            # do for it, without their sets, list and iterators (one place: no order to keep).
            for key, n in places.items():
                if key in heavy:
                    heavy[key] += n
                elif key in light:
                    heavy[key] = light.pop(key) + n
                elif n > 1:
                    heavy[key] = n
                elif self.max_places > 0:
                    light[key] = 1
        else:
            self._record_many(places, most)
        while len(light) > self.max_places:
            light.popitem(last=False)
        if len(heavy) > 2 * self.max_places:
            self._drop_piles()

    def _record_many(self, places: Mapping[bytes, int], most: int | None) -> None:
        """:meth:`record`'s general steps, for any number of places: the places remembered
        counted, the new ones added (one-item places: the last ``max_places``); the caller
        trims the tiers."""
        light, heavy = self._light, self._heavy
        for key in _shared(heavy, places):
            heavy[key] += places[key]
        for key in _shared(light, places):
            heavy[key] = light.pop(key) + places[key]
        fresh: list[bytes] = []
        if most is None:
            most = max(places.values(), default=0)
        piles = most > 1  # any new place of several items?
        # (Reversed in place: a list of a whole map's places to reverse cost 4 ms at 200,000.
        # The validator's native table reverses in place too, making a key per step.)
        for key in reversed(places) if isinstance(places, Reversible) else reversed(list(places)):
            if key in heavy or key in light:
                continue
            if places[key] > 1:
                heavy[key] = places[key]
            elif len(fresh) < self.max_places:
                fresh.append(key)
            elif not piles:
                break
        for key in reversed(fresh):
            light[key] = 1

    def _drop_piles(self) -> None:
        """Down to ``max_places`` piles: those holding the most stay (a stable sort: of equal
        ones, the earlier)."""
        kept = sorted(self._heavy.items(), key=lambda kv: kv[1], reverse=True)
        self._heavy = dict(kept[: self.max_places])
