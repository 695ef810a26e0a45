"""List elements rewritten twice: the extra copies that concurrent rewrites leave, and the
delete-only update that removes them.

A rewrite replaces a list element ``X`` by inserting the new value right before it (so the
new item's *right origin* is ``X``'s ID) and deleting ``X``. Two writers that rewrite the
same element each insert a copy with right origin ``X``: both stay visible, side by side. The
value migration (:func:`crdtsync.values.migrate`) is such a rewrite, and replicas whose old
states differ migrate under different client ids (see there). Given each writer's client id
and the state vector it rewrote (it rewrote every element it held, saw, and whose value
needed it: the same elements on every writer), :func:`extra_copies` names, in a document's
full state, for every rewritten element:

* all its copies, if a writer held ``X`` but made no copy (it saw ``X`` deleted: a delete
  concurrent with the other rewrites), or if the copy of the smallest client id is deleted
  (only a user deletes that one: see below);
* else every copy but the one of the smallest client id.

That is the same decision on every replica holding the same state, and it only grows as a
replica learns more (a replica missing the smallest copy deletes copies the final decision
deletes too), and deletes commute: replicas that repair at different times converge. A map
value rewritten twice is no duplicate (a map key shows one item), and a map entry has no right
origin: it is never named (deleting the entry shown would remove the key). What is not
recovered: a user's delete of a copy that is not the smallest one, made before the other
copies arrived, is undone by the smallest copy.

Pure Python; reads only updates the strict parser (:mod:`crdtsync.yjs.parse`) accepted.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Mapping

from ._items import ID, walk_items
from ._lib0 import MAX_CLOCK
from .state import DeleteSet, encode_delete_set, normalize_delete_set, read_delete_set

__all__ = ["delete_only_update", "extra_copies"]


def _copies(update: bytes, writers: Collection[int]) -> tuple[dict[ID, list[ID]], DeleteSet]:
    """(right origin -> IDs of the one-clock items ``writers`` inserted right before it, the
    delete set). Map entries have no right origin: never named (a key shows one item, and
    deleting the one shown would remove the key)."""
    found: dict[ID, list[ID]] = {}

    def visit(
        client: int,
        clock: int,
        kind: int,
        origin: ID | None,
        right: ID | None,
        start: int,
        end: int,
        length: int,
    ) -> None:
        if right is not None and length == 1 and client in writers:
            found.setdefault(right, []).append((client, clock))

    pos = walk_items(update, visit)
    ds, _ = read_delete_set(update, pos, strict=True)
    return found, ds


def _deleted(ds: DeleteSet, item: ID) -> bool:
    ranges = ds.get(item[0])
    if not ranges:
        return False
    i = bisect_right(ranges, (item[1], MAX_CLOCK + 1)) - 1
    return i >= 0 and ranges[i][0] <= item[1] < ranges[i][0] + ranges[i][1]


def extra_copies(update: bytes, writers: Mapping[int, Mapping[int, int]]) -> DeleteSet:
    """The copies to delete (see the module docstring): ``writers`` maps each rewriter's
    client id to the state vector it rewrote; ``update`` is a document's full state (it holds
    the delete set too). Empty when there is nothing to repair."""
    if len(writers) < 2:
        return {}
    found, ds = _copies(update, writers)
    out: dict[int, list[tuple[int, int]]] = {}
    for (x_client, x_clock), items in found.items():
        copies = sorted(items)
        made = {client for client, _ in copies}
        saw_deleted = any(
            client not in made and sv.get(x_client, 0) > x_clock for client, sv in writers.items()
        )
        doomed = copies if saw_deleted or _deleted(ds, copies[0]) else copies[1:]
        for client, clock in doomed:
            if not _deleted(ds, (client, clock)):
                out.setdefault(client, []).append((clock, 1))
    return {client: sorted(ranges) for client, ranges in sorted(out.items())}


def delete_only_update(ds: DeleteSet) -> bytes:
    """A lib0 v1 update with no structs and the delete set ``ds`` (ranges sorted)."""
    return b"\x00" + encode_delete_set(normalize_delete_set(ds))
