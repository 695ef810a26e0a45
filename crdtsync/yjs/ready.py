"""Causal readiness: apply a remote update only when pycrdt will integrate all of it at once.

:func:`apply_if_ready` applies an update only if it is ready (:func:`is_ready`): structs that
build on something the doc lacks would otherwise stay *pending* inside pycrdt, which can then
crash on hostile input, and deletes of items the doc lacks would stay pending in memory only,
lost by a crash that keeps the rest of their transaction. :class:`Backlog` holds such
updates, bounded, until they are ready.

Every function here takes an optional :class:`~crdtsync.yjs.parse.UpdateInfo`: a caller that
parsed the update already (at the trust boundary) passes it on, and the bytes are not parsed
again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pycrdt

from ..errors import InvalidUpdate
from .doc import apply_validated
from .parse import DEFAULT_LIMITS, UpdateInfo, parse_update
from .state import decode_state_vector

__all__ = ["Backlog", "apply_if_ready", "is_ready"]


# Causal readiness. pycrdt 0.14.13 can crash the process (SIGSEGV) when an update contradicts
# structs it keeps pending, and a hostile peer can send both halves (see the block comment in
# crdtsync.yjs.parse). So a replica never lets a remote update leave structs pending: it applies an
# update only when every struct of it will be integrated at once (Yrs: Update::integrate),
# which is when
#   - each client's structs start at or below the doc's clock for that client, and no Skip
#     of the update reaches past it (no hole between what the doc has and what comes), and
#   - every origin, right origin and parent ID named is in the doc or in a struct of the
#     update, and those named within the update can be integrated in some order (a cycle,
#     which no honest encoder writes, leaves Yrs nothing to start with).
# Two shapes that no encoder writes are taken as not ready although Yrs would integrate them:
# a reference to the struct's own client at or past its own clock (Yrs does not wait for its
# own client), and a Skip at the very end. Structs the doc already holds count too: Yrs checks
# their references before it sees that it can skip them, and parks them if one is missing.
# An update that is not ready is not applied; a later diff against the replica's state vector
# (anti-entropy) is always ready, since it comes from a doc that holds no pending structs.
# Delete sets are gated too: a range naming items the doc does not hold (past its clock for
# that client, and past what the update itself brings) makes the update wait like a missing
# origin. Yrs would apply the rest and keep such a range pending, in memory only: it is in
# neither the transaction's update (what the shard stores and forwards) nor the doc's delete
# set (digest, durable state, diffs), so a crash of the replica before the items arrive
# loses the delete while the rest of the same transaction stays durable. If the writer also
# crashed before its commit, half of a write survived: a "recovered" write without its
# deletes (test_stateful.py::test_a_recovered_write_keeps_its_delete_of_what_the_receiver_lacked).
# Held back whole, the update is applied, stored and forwarded in one piece once the items
# are there, or not at all. An honest delete only names items its writer held, and anti-entropy
# brings them from any replica that has them; a store that committed the delete committed
# them too (its replica applied them first), so a durable delete never waits for ever.


def _info_for(update: bytes, info: UpdateInfo | None) -> UpdateInfo:
    if info is None:
        return parse_update(update, limits=DEFAULT_LIMITS)
    if info.size != len(update):
        raise ValueError("info was not parsed from this update")
    return info


def is_ready(
    state_vector: Mapping[int, int] | bytes,
    update: bytes,
    info: UpdateInfo | None = None,
) -> bool:
    """Whether a doc at ``state_vector`` would integrate all of ``update`` at once.

    True when each client's structs in ``update`` start at or below the doc's clock for that
    client (no gap) and every origin, right origin and parent ID they name is either in the doc
    (clock below its clock for that client) or in a struct of ``update`` that can be integrated
    first. Otherwise pycrdt would keep structs pending, which the replica never allows (see
    :func:`apply_if_ready`). Likewise every range of the delete set must name clocks the doc or
    the update holds: pycrdt would keep a delete of unknown items pending, in memory only.

    Args:
        state_vector: the doc's state vector, encoded (``Doc.get_state()``) or decoded
            (``{client: clock}``, as :func:`~crdtsync.yjs.state.decode_state_vector` returns).
        update: the update; it is validated in the same pass unless ``info`` is given.
        info: :func:`~crdtsync.yjs.parse.parse_update`'s result for ``update``, if at hand.

    Raises:
        InvalidUpdate: ``update`` (or an encoded ``state_vector``) is not well-formed.
    """
    sv = (
        decode_state_vector(state_vector) if isinstance(state_vector, bytes) else dict(state_vector)
    )
    return _info_for(update, info).missing(sv) is None


def apply_if_ready(
    doc: pycrdt.Doc[Any],
    update: bytes,
    info: UpdateInfo | None = None,
    sv: dict[int, int] | None = None,
    apply: Callable[[bytes], None] | None = None,
) -> tuple[int, int] | None:
    """Validate ``update`` and apply it to ``doc`` if it is ready (see :func:`is_ready`).

    Returns None if it was applied. Otherwise nothing was applied, and the result is the ID
    ``(client, clock)`` of a struct that ``doc`` must hold before ``update`` can be ready;
    retrying any sooner is pointless (the update may then still wait for something else).
    Errors as :func:`~crdtsync.yjs.doc.apply_update`. With ``info`` (the update's
    :func:`~crdtsync.yjs.parse.parse_update` result) the bytes are not parsed again. With
    ``sv`` (``doc``'s decoded state vector, e.g. kept across a batch) the doc's is not read
    again, and ``sv`` is brought up to date when the update is applied. With ``apply`` (a
    :func:`~crdtsync.yjs.doc.validated_applier` of ``doc``'s open transaction) the update
    is applied by it rather than by :func:`~crdtsync.yjs.doc.apply_validated`: the same
    apply and errors, without pycrdt's per-update Python wrapper.

    Raises:
        InvalidUpdate: the bytes are not a valid update.
    """
    if info is None or info.size != len(update):  # (_info_for's tests, without its call)
        info = _info_for(update, info)
    missing = info.missing(decode_state_vector(doc.get_state()) if sv is None else sv)
    if missing is None:
        if apply is None:
            apply_validated(doc, update)
        else:
            apply(update)
        if sv is not None:  # a ready update integrates whole: each client reaches its end
            for client, end in info.ends.items():
                if end > sv.get(client, 0):
                    sv[client] = end
    return missing


class _Held:
    """One update in a :class:`Backlog`: its bytes, the ID it waits for, and its parse."""

    __slots__ = ("info", "missing", "update")

    def __init__(self, update: bytes, missing: tuple[int, int], info: UpdateInfo | None) -> None:
        self.update = update
        self.missing = missing  # the ID the doc must hold before it is worth another look
        self.info = info


class Backlog:
    """Remote updates that were not ready yet, held to be applied as soon as they are.

    Gossip may deliver one peer's updates out of order (a push overtakes the one before it, a
    relay forwards what another path has not brought yet). Rather than dropping such an update
    and waiting for anti-entropy to send its content again, a replica parks it here, and after
    each update it applies calls :meth:`apply_ready`. Nothing in here is in the doc, so it can
    hold anything a peer sends; it is bounded (oldest dropped first), and dropping is always
    safe, since anti-entropy repairs whatever is missing.
    """

    __slots__ = ("_bytes", "_entries", "max_bytes", "max_updates")

    def __init__(self, max_updates: int = 64, max_bytes: int = 1 << 20) -> None:
        self.max_updates = max_updates
        self.max_bytes = max_bytes
        self._entries: list[_Held] = []  # oldest first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Total size of the updates held."""
        return self._bytes

    def add(self, update: bytes, missing: tuple[int, int], info: UpdateInfo | None = None) -> None:
        """Hold ``update`` (validated, not ready) until the doc holds ``missing``, as
        :func:`apply_if_ready` returned it. Updates larger than ``max_bytes`` are not held.
        ``info``, the update's parse, saves parsing it again when it is retried."""
        if len(update) > self.max_bytes:
            return
        for entry in self._entries:
            if entry.update == update:
                entry.missing = missing
                if info is not None:
                    entry.info = info
                return
        self._entries.append(_Held(update, missing, info))
        self._bytes += len(update)
        while len(self._entries) > self.max_updates or self._bytes > self.max_bytes:
            self._bytes -= len(self._entries.pop(0).update)

    def apply_ready(self, doc: pycrdt.Doc[Any]) -> int:
        """Apply every held update that has become ready, until none has; return how many.

        An update is looked at again only once ``doc`` holds the ID it was waiting for. One
        that pycrdt refuses (which validation cannot rule out, see
        :func:`~crdtsync.yjs.doc.apply_update`) is dropped: it came from some earlier peer, not
        from the caller's.
        """
        applied = 0
        progress = True
        while progress and self._entries:
            progress = False
            sv = decode_state_vector(doc.get_state())
            for entry in list(self._entries):
                client, clock = entry.missing
                if sv.get(client, 0) <= clock:
                    continue
                update = entry.update
                try:
                    info = entry.info
                    if info is None:
                        info = entry.info = parse_update(update, limits=DEFAULT_LIMITS)
                    missing = info.missing(sv)
                    if missing is not None:
                        entry.missing = missing
                        continue
                    self._entries.remove(entry)
                    self._bytes -= len(update)
                    apply_validated(doc, update)
                except InvalidUpdate:
                    if entry in self._entries:  # (validated when added: not expected)
                        self._entries.remove(entry)
                        self._bytes -= len(update)
                    continue
                applied += 1
                progress = True
                sv = decode_state_vector(doc.get_state())
        return applied
