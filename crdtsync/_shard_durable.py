"""The durable side of :class:`~crdtsync.shard.Shard`: its digest and what is on disk.

:meth:`_DurableState.digest` hashes the shard's content from its state vector and canonical
delete set (memoised, see :meth:`_DurableState._delete_set`). Around a group commit the agent
calls :meth:`_DurableState.capture` (the state the commit makes durable, the "state_vector"
and :data:`DIGEST_META` metadata buffered), then :meth:`_DurableState.mark_durable` or
:meth:`_DurableState.mark_dirty`; :attr:`_DurableState.durable_state` is what acknowledgements
report, computed lazily after a reopen (issue 17), and :meth:`_DurableState.store_digest`
stores the digest before the final commit (issue 11).

A mixin of :class:`~crdtsync.shard.Shard` (:class:`_DurableState`), split from
:mod:`crdtsync.shard` so the shard's local API and its durable bookkeeping each read in one
module of a few hundred lines; the state is the shard's (its slots, set in its ``__init__``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pycrdt

from . import updates
from .yjs.doc import delete_set_of, digest_of, squash_own
from .yjs.state import (
    decode_delete_set,
    decode_state_vector,
    encode_delete_set,
    encode_state_vector,
    normalize_delete_set,
    subtract_delete_set,
)

if TYPE_CHECKING:
    from .store import Store

__all__ = ["DIGEST_META", "FOLD_AT", "FOLD_MAX_DELETING", "LOCAL_RUN_MAX"]

#: Store metadata key of a shard's committed digest (empty: not known, see Shard.capture).
DIGEST_META = "digest"

#: A shard's own writes since its last group commit, kept (by reference, the store's buffer
#: holds the same bytes) up to this many, for :meth:`_DurableState.capture` to fold.
LOCAL_RUN_MAX = 1 << 16
#: Fewest such writes that capture folds into one log entry. Under it they stay one entry
#: each: what they cost the commit is small next to the fold's own fixed work (the doc's
#: state and two encodings, one of them with the whole delete set).
FOLD_AT = 64
#: Most writes of such a run that delete (a map key overwritten, text deleted): their delete
#: sets are merged by pycrdt, at a cost that grows with them; a run with more is stored as
#: it is (an overwrite-heavy stream then keeps one entry per write, as before).
FOLD_MAX_DELETING = 256


class _DurableState:
    """Mixin of :class:`~crdtsync.shard.Shard`: its digest and durable state (module docstring).

    The attributes and methods declared below belong to the shard.
    """

    __slots__ = ()

    name: str
    _doc: pycrdt.Doc
    _store: Store
    _dirty: bool
    _durable: tuple[bytes, bytes] | None
    _since_open: tuple[bytes, list[bytes]] | None
    _closed: bool
    _digest: bytes | None
    _digest_stored: bool
    _ds_memo: tuple[bytes, bytes]
    _local_run: list[bytes]

    def digest(self) -> bytes:
        """A hash of the shard's content, equal on replicas that have seen the same updates."""
        if self._digest is None:
            sv = updates.state_vector(self._doc)
            self._digest = digest_of(sv, self._delete_set(sv))
        return self._digest

    def _delete_set(self, sv: bytes) -> bytes:
        """The canonical delete set (``updates.delete_set``), at state vector ``sv``.

        It is decoded and re-encoded in Python, O(delete set) at every commit and digest: a
        streamed text's grows with every run of deletions. pycrdt's own encoding of it (an
        update against our state vector: the delete set, and pending structs if any) is cheap
        to get and compare; while it is unchanged, so is the canonical one.
        """
        raw = self._doc.get_update(sv)
        if raw != self._ds_memo[0]:
            self._ds_memo = (raw, delete_set_of(raw))
        return self._ds_memo[1]

    def capture(self) -> tuple[bytes, bytes] | None:
        """Before a commit: record the shard's metadata and return the (state vector, delete
        set) that the commit will make durable, or None if nothing changed since the last."""
        if not self._dirty:
            return None
        self._dirty = False
        run, self._local_run = self._local_run, []
        if len(run) >= FOLD_AT:
            # A stream of own writes is stored as ONE log entry per group commit, not one per
            # write (issue 17, the fanout burst: a writer's entry per write cost it an LMDB put
            # and a checksum each, and a compaction replaying the whole shard every thousand
            # entries, ~5 us a write). The fold is the window squash of gossip (squash_own):
            # the doc's own encoding of the writes still buffered, so it integrates as they do
            # (a trusted replay applies it unparsed, see yjs/replay.py).
            fold = partial(squash_own, self._doc, max_deleting=FOLD_MAX_DELETING)
            self._store.fold_tail(self.name, run, fold)
        sv = updates.state_vector(self._doc)
        ds = self._delete_set(sv)
        self._store.put_meta(self.name, "state_vector", sv)
        # The stored digest: written when it is at hand (anti-entropy asked since the last
        # change), else cleared once, so the registry never answers from a stale one. It is
        # not computed here: O(clients) in Python at every group commit was 8% of a
        # receiver's CPU with 128 writers (issue 14); store_digest() writes it at close.
        if self._digest is not None:
            self._store.put_meta(self.name, DIGEST_META, self._digest)
            self._digest_stored = True
        elif self._digest_stored:
            self._store.put_meta(self.name, DIGEST_META, b"")
            self._digest_stored = False
        return sv, ds

    def store_digest(self) -> None:
        """Buffer the shard's digest as its "digest" metadata for the next commit, if the
        stored one may be stale (the agent calls this before its final commit, so a restarted
        agent answers a peer's first Summary without opening every shard, issue 11)."""
        if (self._dirty or not self._digest_stored) and not self._closed:
            self._store.put_meta(self.name, DIGEST_META, self.digest())
            self._digest_stored = True

    def mark_durable(self, state: tuple[bytes, bytes]) -> None:
        """After a commit: ``state`` (from :meth:`capture`) is on disk."""
        self._durable = state
        self._since_open = None

    def mark_dirty(self) -> None:
        """A commit failed: capture this shard again before the next one."""
        self._dirty = True

    @property
    def durable_state(self) -> tuple[bytes, bytes]:
        """(state vector, delete set) of what is on disk, as last committed."""
        if self._durable is None:
            self._durable = self._state_at_open()
        return self._durable

    def _state_at_open(self) -> tuple[bytes, bytes]:
        """(state vector, delete set) of the doc as opened: now, if it has not changed since;
        else the state vector before its first change (in canonical form: the same vector as
        pycrdt's encoding, maybe not the same bytes), and its delete set now without what the
        changes since deleted (an item is deleted once: a change's delete set holds only items
        it deleted, so the rest were deleted before)."""
        sv = updates.state_vector(self._doc)
        ds = self._delete_set(sv)
        if self._since_open is None:
            return sv, ds
        before, deleted = self._since_open
        self._since_open = None
        since: dict[int, list[tuple[int, int]]] = {}
        for part in deleted:
            for client, ranges in decode_delete_set(part).items():
                since.setdefault(client, []).extend(ranges)
        kept = subtract_delete_set(
            normalize_delete_set(decode_delete_set(ds)), normalize_delete_set(since)
        )
        # (pycrdt's state before a change may name our client at clock 0: canonical form)
        return encode_state_vector(decode_state_vector(before)), encode_delete_set(kept)
