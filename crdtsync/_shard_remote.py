"""The remote side of :class:`~crdtsync.shard.Shard`: updates received from peers, applied.

:meth:`_RemoteApply.apply_remote` validates one peer update, :meth:`_RemoteApply.apply_remote_batch`
applies the updates of one Push in one pycrdt transaction,
:meth:`_RemoteApply.apply_remote_many` those of several messages (issue 14), and
:meth:`_RemoteApply.apply_remote_by_writer` a Push of several writers, one transaction per
writer while somebody listens (so that every change record names its writer). An update that is
not causally ready waits in the shard's bounded backlog; one that deletes clocks of this
replica's own client beyond its state is refused before anything is applied (issue 10). What
an applied update then goes through (persisted, announced) is the shard's one transaction
observer, in :mod:`crdtsync.shard`.

A mixin of :class:`~crdtsync.shard.Shard` (:class:`_RemoteApply`), split from
:mod:`crdtsync.shard` so the shard's local API and its remote-apply path each read in one
module of a few hundred lines; the state is the shard's (its slots, set in its ``__init__``).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pycrdt

from . import updates
from .changes import ChangeFeed
from .errors import ClosedError, InvalidUpdate, UsageError
from .yjs.doc import apply_validated, validated_applier
from .yjs.parse import UpdateInfo

__all__: list[str] = []


#: The smallest received update that :meth:`_RemoteApply._apply_whole` persists as received.
#: pycrdt's re-encoding it saves costs about 3 us per KiB; below this, unsubscribing and
#: resubscribing the observer and the checks cost as much, and the live receive path (one
#: small update per Push) measured 2 % more CPU with it on every update (issue 17, h-paper).
WHOLE_MIN_BYTES = 16 * 1024


class _RemoteApply:
    """Mixin of :class:`~crdtsync.shard.Shard`: applying peers' updates (module docstring).

    The attributes and methods declared below belong to the shard.
    """

    __slots__ = ()

    name: str
    _doc: pycrdt.Doc
    _client_id: int
    _feed: ChangeFeed
    _origin: str | None
    _author: str | None
    _last_delta: bytes | None
    _sv_memo: tuple[int, dict[int, int]]
    _changes: int
    _backlog: updates.Backlog
    _held: dict[bytes, tuple[str | None, tuple[tuple[int, int], ...]]]
    _held_lost: bool
    _durable: object
    _tx_sub: pycrdt.Subscription

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

        def _on_transaction(self, event: pycrdt.TransactionEvent) -> None: ...

        def _changed_by(self, update: bytes) -> None: ...

    def apply_remote(
        self,
        update: bytes,
        origin: str,
        info: UpdateInfo | None = None,
        *,
        author: str | None = None,
    ) -> bytes | None:
        """Validate and apply an update received from peer ``origin``; persist and announce it.

        ``author`` is the agent that wrote the update, as far as the message carrying it
        says (None: unknown, e.g. an anti-entropy diff); listeners see it as
        :attr:`Change.author <crdtsync.changes.Change.author>`.

        An update that builds on changes this replica lacks (not causally ready, see
        :func:`crdtsync.updates.is_ready`) is not applied: pycrdt would keep it pending, and a
        hostile peer can crash pycrdt through pending structs. It waits in a small bounded
        backlog instead, and is applied by the call that brings what it lacks; if it was
        dropped from there meanwhile, gossip's gap detection and anti-entropy send it again.

        Returns the part of ``update`` that changed this replica, with any held-back updates
        it made ready (to forward), or None. ``info`` (the update's parse, if the caller has
        it) saves parsing the bytes again.

        Raises:
            InvalidUpdate: the bytes are not a valid update; nothing was applied or stored.
            ClosedError: the shard was closed.
        """
        if info is None:
            self._check_open()  # (before the parse; with ``info``, apply_remote_batch checks)
            # A peer's update: parsed once, with the work limits (not parsed again below)
            info = updates.validate_update(update)
        return self.apply_remote_batch((update,), origin, (info,), author=author)

    def apply_remote_batch(
        self,
        batch: Sequence[bytes],
        origin: str,
        infos: Sequence[UpdateInfo],
        *,
        author: str | None = None,
    ) -> bytes | None:
        """:meth:`apply_remote` for the updates of one Push, in ONE pycrdt transaction
        (``author``: the writer of all of them, None if unknown or several).

        Each update of ``batch`` (parsed as ``infos``, in the same order) goes through the same
        steps as in :meth:`apply_remote` (the delete check, applied if causally ready or held
        back, held-back updates it makes ready applied after it), but the transaction commits
        once: the observer persists one store entry, invalidates the digest, notifies the
        group committer and the change feed once per batch instead of once per update.

        Every update's delete check runs before anything is applied, so a refused batch
        changes nothing. Returns the combined delta (what the batch changed, to forward) or
        None.

        Raises:
            InvalidUpdate: one update deletes in this replica's future (nothing applied), or
                pycrdt refused one (those before it stay applied, persisted and announced).
            ClosedError: the shard was closed.
        """
        self._check_open()
        if len(batch) != len(infos):
            raise UsageError("apply_remote_batch needs one parse per update")
        own = self._client_id
        for info in infos:
            if info.delete_set.get(own):  # (the check's own first test, without its call)
                self._refuse_future_deletes(info)
        self._last_delta = None
        self._origin = origin
        self._author = author
        try:
            if (
                len(batch) == 1
                and infos[0].size >= WHOLE_MIN_BYTES  # (_apply_whole's first test)
                and self._apply_whole(batch[0], infos[0])
            ):
                delta, self._last_delta = self._last_delta, None
                return delta
            # One transaction, so that held-back updates these make ready are in the delta
            # returned (the gossip core forwards that, not what the observer hears), and so
            # that the observer's work runs once for the whole batch.
            with self._doc.transaction() as txn:
                # pycrdt's Rust apply with this transaction: no per-update Python wrapper
                apply = validated_applier(self._doc, txn)
                # The state vector is read once and kept up to date through the batch (re-read
                # only after held-back updates were applied). Decoding it is O(clients) in
                # Python: with a hundred writers that was a tenth of a receiver's CPU, so
                # the one the last batch ended with is reused while no transaction changed
                # the doc since (any other change, local or not, misses). Counted by the
                # doc's observer rather than read as pycrdt's encoded state: two get_state()
                # per batch were 5-9 % of a swarm process at N = 128 (issue 14).
                memo, self._sv_memo = self._sv_memo, (-1, {})
                before = self._changes
                sv = (
                    memo[1]
                    if memo[0] == before
                    else updates.decode_state_vector(self._doc.get_state())
                )
                for update, info in zip(batch, infos, strict=True):
                    missing = updates.apply_if_ready(self._doc, update, info, sv, apply)
                    if missing is None:
                        if self._backlog:
                            sv = self._apply_held() or sv
                    else:
                        self._backlog.add(update, missing, info)
                        self._hold(update, info, author)
            # This batch is at most one change. (More would be an observer writing back,
            # which pycrdt refuses today: then the next batch decodes the state again.)
            if self._changes - before <= 1:
                self._sv_memo = (self._changes, sv)
        except BaseExceptionGroup as group:
            # pycrdt groups the errors of the Doc's observers; ours raises ClosedError.
            closed: BaseException | None = group.subgroup(ClosedError)
            if closed is None:
                raise
            while isinstance(closed, BaseExceptionGroup):
                closed = closed.exceptions[0]
            raise closed from group
        finally:
            self._origin = None
            self._author = None
        delta, self._last_delta = self._last_delta, None
        return delta

    def _hold(self, update: bytes, info: UpdateInfo, author: str | None) -> None:
        """Note the writer of ``update``, just held back, and where its structs end, so that
        :meth:`_apply_held` can tell whose updates it applied (h-mixauth). Bounded: beyond
        twice the backlog's own bound the oldest note is forgotten, and until the backlog
        empties the writers of what it releases count as unknown."""
        held = self._held
        if len(self._backlog) <= 1:  # (it holds this update only)
            held.clear()
            self._held_lost = False
        held[update] = (author, tuple(info.ends.items()))
        if len(held) > 2 * self._backlog.max_updates:
            del held[next(iter(held))]
            self._held_lost = True

    def _apply_held(self) -> dict[int, int] | None:
        """Apply the held-back updates made ready, in the open transaction; the doc's state
        vector after them, or None when none was.

        They join the transaction of the update that made them ready, so its change record
        keeps naming that update's writer only if each of them was that writer's too (a
        writer's later batch that overtook its earlier one, as a rotating relay's echoes and
        second copies do); else the record's author is None. An update is known applied once
        the doc holds all its structs; one of deletes only counts as applied at every
        release until the backlog empties (its writer may make the record's None, never
        wrong).
        """
        if not self._backlog.apply_ready(self._doc):
            return None
        sv = updates.decode_state_vector(self._doc.get_state())
        author = self._author
        if self._held_lost:
            author = None
        held = self._held
        for update, (writer, ends) in list(held.items()):
            if not ends:
                if writer != author:
                    author = None
            elif all(sv.get(client, 0) >= end for client, end in ends):
                del held[update]
                if writer != author:
                    author = None
        self._author = author
        if not self._backlog:
            held.clear()
            self._held_lost = False
        return sv

    def _apply_whole(self, update: bytes, info: UpdateInfo) -> bool:
        """Apply a received update that will change the doc by exactly itself, and persist and
        announce the update's own bytes; False (nothing done) for any other update.

        Such an update is at least :data:`WHOLE_MIN_BYTES` long, causally ready, every
        struct of it new here (each client's first clock is this doc's), with nothing held back
        and no transaction open around it: pycrdt then integrates all of it, deletes included
        (readiness: every deleted clock is here or in the update). What our observer would
        store is pycrdt's re-encoding of the same change, which pycrdt makes for every observer
        of a transaction (2-4 ms per MB: 1 ms of the automerge-paper state, 15 ms of a
        200,000-key map, on a joiner's critical path: issue 17, h-paper). So the observer is
        off for this one transaction and the received, validated bytes are persisted and
        announced instead (``Shard._changed_by``): the same path, one encoding fewer. Other
        observers of the doc are unchanged.
        """
        doc = self._doc
        if (
            info.size < WHOLE_MIN_BYTES
            or not info.n_structs
            or self._durable is None  # (its observer notes what changed since the open)
            or self._backlog
            or getattr(doc, "_txn", None) is not None
        ):
            return False
        before = doc.get_state()
        sv = self._sv_memo[1] if self._sv_memo[0] == self._changes else None
        if sv is None:
            sv = updates.decode_state_vector(before)
        first = info.first_clocks()
        if any(clock != sv.get(client, 0) for client, clock in first.items()):
            return False  # (a struct we hold already, or a gap: the general path)
        if info.missing(sv) is not None:
            return False
        doc.unobserve(self._tx_sub)
        try:
            with doc.transaction():
                apply_validated(doc, update)
        except BaseException:
            self._tx_sub = doc.observe(self._on_transaction)
            # pycrdt refused it after applying a part (its structs come before its deletes):
            # persist and announce that part, as the observer would have
            if doc.get_state() != before:
                self._changed_by(doc.get_update(before))
            raise
        self._tx_sub = doc.observe(self._on_transaction)
        for client, end in info.ends.items():
            if end > sv.get(client, 0):
                sv[client] = end
        self._changed_by(update)
        self._sv_memo = (self._changes, sv)
        return True

    def apply_remote_many(
        self, items: Sequence[tuple[bytes, UpdateInfo, str, str | None]]
    ) -> builtins.list[bytes]:
        """:meth:`apply_remote_batch` for updates of several messages, each ``(update, its
        parse, origin, author)``: the broadcasts of many writers that one turn of a driver's
        event loop brought (issue 14: a pycrdt transaction per update was a fifth of a
        receiver's CPU under backlog).

        One transaction for all of them while nobody listens to the change feed. A change
        record names one origin and one author, so while somebody does, each run of updates
        with the same origin and author is its own transaction: every record still says who
        wrote what. Returns the delta of each transaction that changed the doc, in order.

        Raises as :meth:`apply_remote_batch` (every update's delete check runs before its
        transaction applies anything: a refused update leaves its transaction unapplied,
        those of the runs before it stay applied).
        """
        if not items:
            return []
        runs: builtins.list[Sequence[tuple[bytes, UpdateInfo, str, str | None]]] = [items]
        if self._feed.active:
            runs, start = [], 0
            for i in range(1, len(items) + 1):
                if i == len(items) or items[i][2:] != items[start][2:]:
                    runs.append(items[start:i])
                    start = i
        deltas = []
        for run in runs:
            author = run[0][3]
            delta = self.apply_remote_batch(
                [u for u, *_ in run],
                run[0][2],
                [f for _, f, *_ in run],
                author=author if all(it[3] == author for it in run) else None,
            )
            if delta is not None:
                deltas.append(delta)
        return deltas

    def apply_remote_by_writer(
        self,
        batch: Sequence[bytes],
        origin: str,
        infos: Sequence[UpdateInfo],
        authors: Sequence[str | None],
    ) -> builtins.list[bytes]:
        """:meth:`apply_remote_batch` for the updates of one Push that name several writers
        (``authors``, one per update): a rotating relay's broadcast, a tree's or a hub's batch
        of several agents' deltas (issue 17, h-mixauth).

        While somebody listens to the change feed, each run of consecutive updates of one
        writer is its own transaction (order kept), so that each change record names its
        writer (:attr:`Change.author <crdtsync.changes.Change.author>`): one transaction
        for the batch made one record with author None. While nobody listens, one
        transaction for all, exactly :meth:`apply_remote_batch` (no record is made). Each
        transaction appends its store entry and notifies the group committer, which still
        commits once for all of them.

        Every update's delete check runs before anything is applied, as in
        :meth:`apply_remote_batch`: a refused batch changes nothing. Returns the delta of
        each transaction that changed the doc, in order (to forward).

        Raises:
            InvalidUpdate, ClosedError: as :meth:`apply_remote_batch` (pycrdt refused an
                update: the runs before its own stay applied, persisted and announced).
        """
        if not self._feed.active:
            delta = self.apply_remote_batch(batch, origin, infos)
            return [] if delta is None else [delta]
        self._check_open()
        if not len(batch) == len(infos) == len(authors):
            raise UsageError("apply_remote_by_writer needs one parse and one author per update")
        for info in infos:
            self._refuse_future_deletes(info)
        return self.apply_remote_many(
            [(u, f, origin, a) for u, f, a in zip(batch, infos, authors, strict=True)]
        )

    def _refuse_future_deletes(self, info: UpdateInfo) -> None:
        """Refuse a delete set over clocks of this replica's own client it has not reached.

        Every item of our own client id was made here (a replica opens under a fresh random
        client id), so no honest peer can delete one we do not have yet. Such a range would
        "mute" this replica: its next writes would vanish on arrival everywhere (issue 10).
        Deletes over *other* clients' clocks beyond ours stay allowed: they are the honest
        out-of-order deletes (the item is on its way).

        Raises:
            InvalidUpdate: the update deletes in our future; nothing was applied.
        """
        ranges = info.delete_set.get(self._client_id)
        if not ranges:
            return
        own = updates.decode_state_vector(self._doc.get_state()).get(self._client_id, 0)
        if any(clock + length > own for clock, length in ranges):
            raise InvalidUpdate(
                f"the update deletes clocks of {self.name!r}'s own client beyond {own}: "
                "items that do not exist yet (a 'mute' attack)"
            )
