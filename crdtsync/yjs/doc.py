"""The pycrdt side of the Yjs layer: apply updates safely, and summarise a ``pycrdt.Doc``.

:func:`apply_update` validates first (:mod:`crdtsync.yjs.parse`) and translates whatever pycrdt
still raises into :class:`~crdtsync.errors.InvalidUpdate`. :func:`state_vector`,
:func:`delete_set` and :func:`digest` summarise a document for the gossip protocol: its state
vector, its delete set in the canonical encoding of :mod:`crdtsync.yjs.state`, and a digest of
both (equal content gives an equal digest, and unlike the state vector it changes on a
deletion).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from itertools import compress, repeat
from operator import itemgetter
from typing import Any

import pycrdt

from ..errors import InvalidUpdate
from ._lib0 import MAX_SAFE, Malformed, encode_uint, read_uint
from .parse import _NO_LIMITS, UpdateInfo, _structs, parse_update
from .state import (
    DeleteSet,
    decode_state_vector,
    encode_delete_set,
    encode_state_vector,
    is_normal_delete_set,
    normalize_delete_set,
    read_delete_set,
)

__all__ = [
    "DS_ALONE_AT",
    "PASS_THROUGH",
    "apply_update",
    "apply_validated",
    "apply_validated_many",
    "validated_applier",
    "APPLY_BATCH",
    "delete_set",
    "delete_set_of",
    "digest",
    "digest_of",
    "doc_delete_set",
    "merge_updates",
    "squash_local",
    "squash_own",
    "state_vector",
]

_DIGEST_PERSON = b"crdtsync.digest1"  # blake2b personalisation: 16 bytes

#: Exceptions that must pass through apply_update untouched: interpreter control flow, task
#: cancellation, and exception groups, which is how pycrdt reports errors raised by observer
#: callbacks; the update *was* applied then, and the callback's error is not the peer's fault.
PASS_THROUGH = (
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    asyncio.CancelledError,
    BaseExceptionGroup,
)


def apply_update(doc: pycrdt.Doc[Any], update: bytes, info: UpdateInfo | None = None) -> None:
    """Validate ``update`` and apply it to ``doc``.

    Whatever pycrdt raises on an update that passed validation (``ValueError``,
    ``RuntimeError``, a Rust panic as ``pyo3_runtime.PanicException``) becomes InvalidUpdate
    with the original as ``__cause__``. An update refused by validation never reaches the doc;
    one refused by pycrdt's decoder leaves it unchanged too, since Yrs decodes fully before it
    integrates anything. The exception: an update whose item names as its parent an item the
    doc holds that is not a shared type. Yrs finds that only while integrating and stops
    there, so the structs integrated before it stay in the doc (and reach its observers as a
    normal transaction). That part is itself valid CRDT data, as if a shorter update had
    arrived; the doc stays consistent, but "nothing was applied" does not hold for it.

    Errors raised by ``doc``'s observers reach the caller unchanged (pycrdt wraps them in an
    ``ExceptionGroup``); the update was applied in that case.

    Structs that build on something ``doc`` lacks are kept *pending* by pycrdt, which can
    crash on later input (see :mod:`crdtsync.yjs.ready`); updates from peers go through
    :func:`crdtsync.yjs.ready.apply_if_ready` instead.

    Args:
        info: the result of :func:`~crdtsync.yjs.parse.parse_update` for these bytes, if the
            caller parsed them already; then they are not parsed again.

    Raises:
        InvalidUpdate: the bytes are not a valid update.
    """
    if info is None:
        parse_update(update)
    elif info.size != len(update):
        raise ValueError("info was not parsed from this update")
    apply_validated(doc, update)


def apply_validated(doc: pycrdt.Doc[Any], update: bytes) -> None:
    """Apply an update that already passed validation; pycrdt's errors become InvalidUpdate."""
    try:
        doc.apply_update(update)
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # PanicException derives from BaseException only
        raise InvalidUpdate(f"pycrdt refused the update: {type(exc).__name__}: {exc}") from exc


#: Updates per transaction in :func:`apply_validated_many`. One transaction per update pays
#: pycrdt's per-transaction commit each time; one transaction around a whole log is far worse
#: for text (its commit-time bookkeeping grows with the transaction: 12 s instead of 1.3 s for
#: the 259,778 edits of automerge-paper). Batches of 100 were the fastest measured (0.4 s).
APPLY_BATCH = 100


def validated_applier(doc: pycrdt.Doc[Any], txn: pycrdt.Transaction) -> Callable[[bytes], None]:
    """A function that applies an update that already passed validation to ``doc`` inside
    ``txn``, the transaction of ``doc`` open around the call (``with doc.transaction() as
    txn``), as :func:`apply_validated` does: pycrdt's errors become InvalidUpdate.

    It calls pycrdt's Rust method with the open transaction, without the Python wrapper of
    ``Doc.apply_update`` around it (its model check, a nested transaction's enter and exit, a
    read-transaction check: per update as much time as a small update's apply; issue 17,
    benchmarks/history/fanout-receive.md, h-recv4). A pycrdt without these internals, or a doc with a model,
    gets :func:`apply_validated` itself. Valid only while ``txn`` is open.
    """
    raw_doc, raw_txn = getattr(doc, "_doc", None), getattr(txn, "_txn", None)
    if (
        raw_doc is None
        or raw_txn is None
        or getattr(doc, "_Model", None) is not None
        or isinstance(txn, pycrdt.ReadTransaction)
    ):
        return partial(apply_validated, doc)  # the public way
    apply = raw_doc.apply_update

    def applied(update: bytes) -> None:
        try:
            apply(raw_txn, update)
        except PASS_THROUGH:
            raise
        except BaseException as exc:  # PanicException derives from BaseException only
            raise InvalidUpdate(f"pycrdt refused the update: {type(exc).__name__}: {exc}") from exc

    return applied


def apply_validated_many(
    doc: pycrdt.Doc[Any], updates: Sequence[bytes], batch: int = APPLY_BATCH
) -> None:
    """Apply updates that already passed validation, in order, ``batch`` per transaction.

    The same as :func:`apply_validated` for each, grouped in transactions of ``doc`` (pycrdt's
    nested transactions are the enclosing one), without the per-update Python wrapper of
    ``Doc.apply_update`` (a transaction object, its checks and its exit per update: as much
    time as the apply itself for small updates). For a store's own entries on reopen and
    compaction. (The loop calls the Rust method itself rather than a
    :func:`validated_applier`: one Python call less per entry of a long log.)

    Raises:
        InvalidUpdate: pycrdt refused one of them (those before it were applied).
    """
    for start in range(0, len(updates), batch):
        chunk = updates[start : start + batch]
        with doc.transaction() as txn:
            raw_doc, raw_txn = getattr(doc, "_doc", None), getattr(txn, "_txn", None)
            if raw_doc is None or raw_txn is None or getattr(doc, "_Model", None) is not None:
                for update in chunk:  # a pycrdt without these internals: the public way
                    apply_validated(doc, update)
                continue
            apply = raw_doc.apply_update
            try:
                for update in chunk:
                    apply(raw_txn, update)
            except PASS_THROUGH:
                raise
            except BaseException as exc:  # PanicException derives from BaseException only
                raise InvalidUpdate(
                    f"pycrdt refused the update: {type(exc).__name__}: {exc}"
                ) from exc


def merge_updates(deltas: Sequence[bytes]) -> bytes:
    """One update holding every one of ``deltas`` (pycrdt ``merge_updates``: consecutive items
    of one client become one struct, so a stream of one-character writes merges to a few
    bytes). Our own deltas only: their validity is not checked here."""
    if len(deltas) == 1:
        return deltas[0]
    merged: bytes = pycrdt.merge_updates(*deltas)
    return merged


def squash_local(doc: pycrdt.Doc[Any], deltas: Sequence[bytes]) -> bytes:
    """One update holding ``deltas``, local writes of ``doc`` in the order made, with each run
    of consecutive items encoded as one struct, as ``doc`` holds it.

    ``pycrdt.merge_updates`` keeps every item of the deltas as a struct of its own: 100
    one-character writes stay 100 structs, which every receiver validates one by one and Yrs
    then squashes, copying the run so far for each item (quadratic; priced as such by the
    validator's ``work``, so a fast honest stream ran out of its peers' work budget, issue 17).
    Here the struct section is ``doc``'s own encoding of everything from the deltas' first
    clock on (squashed when each transaction ended), and the delete set is the deltas' own
    (not the document's whole one). Deltas of more than one client (an update applied through
    the Yjs door) are merged as they are. The struct section may hold later local writes too
    (not handed over yet): they arrive twice, which Yjs ignores.

    Only the deltas that delete go through ``merge_updates`` (for the window's delete set;
    beyond :data:`DS_ALONE_AT` of them, their delete sets alone):
    merging all of a window's 150 one-character writes cost 1.1 ms of the 1.4 ms this took
    per window of a streaming writer (issue 17's stream row). The others are only looked at:
    their first bytes say they hold structs of ``doc``'s client alone, their last byte that
    they delete nothing.
    """
    if len(deltas) < 2:
        return merge_updates(deltas)
    squashed = squash_own(doc, deltas)
    return merge_updates(deltas) if squashed is None else squashed


def squash_own(
    doc: pycrdt.Doc[Any], deltas: Sequence[bytes], max_deleting: int | None = None
) -> bytes | None:
    """:func:`squash_local`'s squash alone: one update equivalent to ``deltas``, or None when
    it does not apply (a delta of another client, more than ``max_deleting`` deltas that
    delete: their delete sets are merged by ``pycrdt.merge_updates``, whose cost grows with
    them; or a result no smaller than the deltas).

    ``deltas`` must be local writes of ``doc``, in the order made, and, for the result to hold
    nothing more than they do, the latest of ``doc``'s own writes (a shard folds the log entries
    of its own writes since its last group commit into one this way, see
    :meth:`crdtsync.store.Store.fold_tail`).
    """
    deleting = list(compress(deltas, map(_LAST_BYTE, deltas)))
    if max_deleting is not None and len(deleting) > max_deleting:
        return None
    first = _own_first_clock(deltas, doc.client_id)
    if first is None:
        return None
    state: bytes = doc.get_state()
    start = decode_state_vector(state)
    start[doc.client_id] = first
    full: bytes = doc.get_update(encode_state_vector(start))
    tail: bytes = doc.get_update(state)  # no structs, then the document's whole delete set
    if tail[:1] != b"\x00" or not full.endswith(tail[1:]):
        return None
    # A delete set ends with a range's length (a varuint >= 1, minimally encoded: its last
    # byte is not 0); an empty one is the single byte 0. So the last byte tells which delete.
    if not deleting:
        window_ds = b"\x00"
    elif len(deleting) <= DS_ALONE_AT:
        merged = merge_updates(deleting)
        window_ds = merged[_structs(merged, 0, _NO_LIMITS)[1] :]
    else:
        window_ds = _merged_delete_sets(deleting)
    squashed = full[: len(full) - len(tail) + 1] + window_ds
    return squashed if len(squashed) <= sum(map(len, deltas)) else None


_LAST_BYTE = itemgetter(-1)

#: Beyond this many deleting deltas, :func:`squash_own` merges their delete sets alone
#: (:func:`_merged_delete_sets`): ``pycrdt.merge_updates`` of whole deltas costs more per delta
#: the more there are (map overwrites: 1.8 us per delta at 400, 13.5 at 1,600, 33 at 6,400),
#: their delete sets alone 1.5-4.5 us with the Python that finds them; below it, the whole
#: deltas are the cheaper (0.8-1.2 us per delta on automerge-paper's windows). The result is
#: the same delete set (issue 17/18, h-wanburst: an aligned WAN window holds thousands).
DS_ALONE_AT = 512


def _merged_delete_sets(deltas: Sequence[bytes]) -> bytes:
    """The delete set of ``pycrdt.merge_updates(deltas)``, merged from the deltas' delete sets
    alone (each as an update without structs: a 0 then its delete set)."""
    only = [b"\x00" + d[_structs(d, 0, _NO_LIMITS)[1] :] for d in deltas]
    merged = merge_updates(only)
    return merged[_structs(merged, 0, _NO_LIMITS)[1] :]


def _own_first_clock(deltas: Sequence[bytes], client: int) -> int | None:
    """The first clock of ``deltas``' structs if every struct in them is ``client``'s and at
    least one delta has structs; else None. Reads only each delta's first bytes (a delta of
    one client starts: 1, number of structs, client, first clock)."""
    own = bytearray(b"\x01\x01")  # one client, one struct: the usual local write
    encode_uint(own, client)
    prefix = bytes(own)
    try:
        usual = bool(deltas) and all(map(bytes.startswith, deltas, repeat(prefix)))
    except TypeError:  # (a delta that is not bytes: the loop below reads it)
        usual = False
    if usual:
        # The usual case, checked in C (a Python loop over a window's hundreds of writes was
        # most of a writer's squash, issue 17's burst): one struct of ours in each delta.
        try:
            return read_uint(deltas[0], len(prefix), MAX_SAFE, "first clock")[0]
        except Malformed:
            return None
    first: int | None = None
    for d in deltas:
        if d[:1] == b"\x00":
            continue  # no structs (a delete only)
        if d.startswith(prefix):
            at = len(prefix)
        else:  # one client, several structs? (else: not ours alone)
            try:
                n_clients, at = read_uint(d, 0, MAX_SAFE, "number of clients")
                _, at = read_uint(d, at, MAX_SAFE, "number of structs")
                who, at = read_uint(d, at, MAX_SAFE, "client id")
            except Malformed:
                return None
            if n_clients != 1 or who != client:
                return None
        if first is None:
            try:
                first, _ = read_uint(d, at, MAX_SAFE, "first clock")
            except Malformed:
                return None
    return first


def state_vector(doc: pycrdt.Doc[Any]) -> bytes:
    """The encoded state vector of ``doc`` (pycrdt ``Doc.get_state()``).

    It says how many clocks of each client the doc holds; deletions do not change it.
    """
    state: bytes = doc.get_state()
    return state


def _own_delete_set(update: bytes) -> tuple[DeleteSet, int, int]:
    """The delete set of ``update``, pycrdt's encoding of a doc against its own state vector
    (no structs but any pending ones, then the doc's whole delete set), as read (not
    normalized), and where it starts and ends in ``update``."""
    try:
        pos = 1 if update[:1] == b"\x00" else _structs(update, 0, _NO_LIMITS)[1]
        ds, end = read_delete_set(update, pos, strict=False)
    except Malformed as exc:  # pycrdt produced something we cannot read: a bug, not a peer
        raise RuntimeError(f"cannot read pycrdt's own delete set: {exc.what}") from None
    return ds, pos, end


def doc_delete_set(doc: pycrdt.Doc[Any]) -> DeleteSet:
    """``doc``'s delete set, decoded and normalized (clients ascending, ranges merged)."""
    return normalize_delete_set(_own_delete_set(doc.get_update(doc.get_state()))[0])


def delete_set(doc: pycrdt.Doc[Any]) -> bytes:
    """The canonical encoding of ``doc``'s delete set.

    lib0 v1 delete-set layout with clients ascending and each client's ranges sorted and merged,
    so equal delete sets give equal bytes however the doc came to hold them.
    """
    return delete_set_of(doc.get_update(doc.get_state()))


def delete_set_of(own_update: bytes) -> bytes:
    """:func:`delete_set` from ``doc.get_update(doc.get_state())`` already at hand.

    Where pycrdt's own encoding is in normal form already (one writer's document: a streamed
    text), it *is* the canonical encoding (the same lib0 layout, minimal varints), and is
    returned as it is; only otherwise is the set normalized and encoded again in Python,
    which cost a streaming agent 1-2 ms at every group commit (issue 17).
    """
    ds, pos, end = _own_delete_set(own_update)
    if end == len(own_update) and is_normal_delete_set(ds):
        return own_update[pos:]
    return encode_delete_set(normalize_delete_set(ds))


def digest(doc: pycrdt.Doc[Any]) -> bytes:
    """A 16-byte hash of ``doc``'s state vector and delete set.

    Both are put in normal form first (clients ascending, clock-0 entries dropped, ranges sorted
    and merged), so two replicas holding the same updates have equal digests whatever order
    the updates arrived in; a deletion changes the digest although it leaves the state vector
    alone. blake2b, personalised so these digests cannot be mistaken for other hashes.
    """
    return digest_of(doc.get_state(), delete_set(doc))


def digest_of(state_vector: bytes, delete_set: bytes) -> bytes:
    """:func:`digest` from a doc's :func:`state_vector` and :func:`delete_set` already at hand
    (the delete set is the costly part: a group commit needs both, and the digest)."""
    data = encode_state_vector(decode_state_vector(state_vector)) + delete_set
    return hashlib.blake2b(data, digest_size=16, person=_DIGEST_PERSON).digest()
