"""Compaction: fold a shard's snapshot and log into one update (:func:`replay`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pycrdt

from ..errors import InvalidUpdate
from .doc import PASS_THROUGH, apply_validated, apply_validated_many, doc_delete_set
from .parse import parse_update
from .state import DeleteSet, decode_state_vector, ds_within

__all__ = ["replay", "replay_trusted"]


def replay(snapshot: bytes | None, log: Iterable[bytes]) -> bytes:
    """Apply ``snapshot`` and then each update of ``log`` to a fresh Doc; return its full update.

    This is how a shard's log is compacted into a new snapshot: one pass, linear in the input,
    unlike ``pycrdt.merge_updates``. An empty or missing snapshot means "start empty". The
    scratch Doc lives and dies in the calling thread (pycrdt objects are bound to theirs).

    Applying the result to an empty doc gives the same state as applying the inputs in order,
    also when some input could not be integrated (a struct whose predecessors never came, a
    delete of something absent): pycrdt keeps such parts pending but leaves them out of
    ``get_update()``, so the inputs holding them are merged into the result.

    Raises:
        InvalidUpdate: the snapshot or one of the log entries is not a valid update.
    """
    return _replay(snapshot, log, trusted=False)


def replay_trusted(snapshot: bytes | None, log: Iterable[bytes]) -> bytes:
    """:func:`replay` for a store's own, checksum-verified entries: the log is not parsed.

    Only for what a shard's store holds: ``snapshot`` an earlier result of :func:`replay` and
    each log entry the update of one transaction of a doc that held the snapshot and the
    entries before it (``TransactionEvent.update``), or a run of that doc's own transactions
    folded into one (:func:`crdtsync.yjs.doc.squash_own`: the doc's own encoding of their
    structs, with their delete sets; see :meth:`crdtsync.store.Store.fold_tail`). Each of them
    was validated before it was stored (or made here), and a transaction's update holds only
    what that doc integrated (pycrdt leaves parts it keeps pending out of it, and puts them in
    the transaction that integrates them), so replayed in order every entry integrates
    completely. Only the snapshot may hold parts that
    never did (merged into it by an earlier :func:`replay`), so it alone is parsed, for the
    check at the end. The bytes are applied without validation: never pass anything that did
    not come out of the store with its checksum intact.
    """
    return _replay(snapshot, log, trusted=True)


def _replay(snapshot: bytes | None, log: Iterable[bytes], *, trusted: bool) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    # (update, struct ends, delete set) of every input that changes anything; kept to find,
    # at the end, the inputs pycrdt could not integrate completely.
    inputs: list[tuple[bytes, dict[int, int], DeleteSet]] = []
    # One transaction per update (trusted: per APPLY_BATCH updates): a single transaction
    # around all of them is much slower on text, as pycrdt's per-transaction bookkeeping
    # grows with it.
    if trusted:
        if snapshot:
            info = parse_update(snapshot)
            apply_validated(doc, snapshot)
            if info.changes_anything:
                inputs.append((snapshot, info.ends, info.delete_set))
        apply_validated_many(doc, log if isinstance(log, list) else list(log))
        return _with_leftovers(doc, inputs)
    for update in itertools.chain([snapshot] if snapshot else [], log):
        info = parse_update(update)
        apply_validated(doc, update)
        if info.changes_anything:
            inputs.append((update, info.ends, info.delete_set))
    return _with_leftovers(doc, inputs)


def _with_leftovers(
    doc: pycrdt.Doc[Any], inputs: list[tuple[bytes, dict[int, int], DeleteSet]]
) -> bytes:
    """``doc``'s full update, merged with every input that ``doc`` did not integrate fully."""
    result: bytes = doc.get_update()
    if not inputs:  # nothing that could have been left out (a trusted log with no snapshot)
        return result
    have_clocks = decode_state_vector(doc.get_state())
    have_deleted = doc_delete_set(doc)
    starts = {client: [clock for clock, _ in ranges] for client, ranges in have_deleted.items()}
    leftovers = [
        update
        for update, ends, ds in inputs
        if any(have_clocks.get(client, 0) < end for client, end in ends.items())
        or not ds_within(ds, have_deleted, starts)
    ]
    if leftovers:
        try:
            result = pycrdt.merge_updates(result, *leftovers)
        except PASS_THROUGH:
            raise
        except BaseException as exc:  # validated inputs: pycrdt failing here is its bug
            raise InvalidUpdate(f"pycrdt could not merge pending updates: {exc}") from exc
    return result
