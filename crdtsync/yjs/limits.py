"""Limits on the work one remote update may cause (issue #11), checked by the strict parser.

Every limit here refuses a shape that the validator accepted before and that costs pycrdt
(Yrs) time or memory out of proportion to the update's size, or that crdtsync's reads cannot
show. Each default has headroom over honest use: the full state of the automerge-paper editing
trace (259,778 edits) is 376,775 bytes, 10,972 structs, 1 client and 2,639 deleted ranges.

Pure Python, no pycrdt (the sans-I/O core may import it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

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
            shows one as ``Unreadable("<unreadable: subdocument GUID>")``.
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


#: The limits applied to updates from peers (``validate_update``, ``apply_if_ready``).
DEFAULT_LIMITS = UpdateLimits()


class PlaceHistory:
    """The fan that a sequence of updates builds at one place of one shard (issue #11).

    ``max_fan`` bounds the clients placing items at one place within *one* update; YATA's
    conflict scan also visits the items earlier updates put there, so n updates of 32 clients
    each at one place cost 32 x 32 x n steps for the last one (quadratic in all). This keeps,
    per place (the placement bytes of :attr:`UpdateInfo.places
    <crdtsync.yjs.parse.UpdateInfo.places>`), how many items were placed there so far, and
    prices an update's conflict scan against them: deterministic work units (the same input
    always costs the same), charged to the sender and the shard by the gossip core's work
    budget. Honest updates rarely place two items at one place (typing chains each item to
    the last one), so the history stays small; at most ``max_places`` places are kept (the
    least recently used dropped: a fan being built stays hot).

    Args:
        max_items: items at one place (all updates together) beyond which an update adding
            to it is refused (``None``: no cap). The registry uses ``max_fan`` (256): a
            shard's whole state, passed on as one diff, then stays within ``max_fan``.
        max_places: places remembered per shard.
    """

    def __init__(self, max_items: int | None = 4096, max_places: int = 4096) -> None:
        self.max_items = max_items
        self.max_places = max_places
        self._count: OrderedDict[bytes, int] = OrderedDict()

    def copy(self) -> PlaceHistory:
        """An independent copy (at most ``max_places`` entries): to price a batch of updates
        one after the other, each against those before it, and keep it only if the batch
        is applied."""
        twin = PlaceHistory(self.max_items, self.max_places)
        twin._count = self._count.copy()
        return twin

    def cost(self, places: Mapping[bytes, int]) -> int:
        """Steps the conflict scans of an update placing ``places`` cost against what earlier
        updates placed there (its own fan is in ``UpdateInfo.work`` already).

        Only the places both hold are visited (a set intersection, in C): a whole shard's
        diff names a place per map key (50,000 for a 50,000-key map), and a loop over them
        in Python cost as much as pycrdt's apply of that diff.

        Raises:
            ValueError: a place would hold more than ``max_items``; nothing is recorded.
        """
        limit = self.max_items
        count = self._count
        if limit is not None and places and max(places.values()) > limit:
            self._refuse()
        cost = 0
        for key in count.keys() & places.keys():
            prior, n = count[key], places[key]
            if limit is not None and prior + n > limit:
                self._refuse()
            cost += prior * n
        return cost

    def _refuse(self) -> None:
        raise ValueError(
            f"more than {self.max_items} items at one place over successive updates (the limit)"
        )

    def record(self, places: Mapping[bytes, int]) -> None:
        """The update placing ``places`` was applied.

        Every place already remembered is counted and becomes the most recently used (a fan
        being built stays); of the new ones, only the last ``max_places`` are kept (more
        would be dropped as least recently used at once).
        """
        count = self._count
        known = count.keys() & places.keys()
        fresh: list[bytes] = []
        if len(places) > len(known):
            for key in reversed(list(places)):
                if key not in known:
                    fresh.append(key)
                    if len(fresh) == self.max_places:
                        break
        for key in reversed(fresh):
            count[key] = places[key]
        for key in known:  # last: a place being built stays ahead of new ones
            count[key] += places[key]
            count.move_to_end(key)
        while len(count) > self.max_places:
            count.popitem(last=False)
