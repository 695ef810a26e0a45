"""The agent's shards as the gossip core sees them: the :class:`~crdtsync.replica.ReplicaSet`
side of :class:`~crdtsync._registry.ShardRegistry`.

Names and ``holds`` (cached, O(1)), state vectors, digests (a shard not open answers with the
digest stored with its entries, without being opened), diffs, remote updates applied one by
one or as a batch and priced in deterministic work units against what earlier updates placed
at the same places (:class:`~crdtsync.yjs.limits.PlaceHistory`), durable states, the merge of
the coalescing window, and ``drop`` (a shard handed off by placement).

A mixin of :class:`~crdtsync._registry.ShardRegistry` (:class:`_RegistryReplicas`), split from
:mod:`crdtsync._registry`, which keeps the agent's side (opening, value migrations, quarantine,
listing, closing); the state is the registry's (set in its ``__init__``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from . import updates, values
from .errors import InvalidUpdate, UpdateOverLimit
from .shard import DIGEST_META
from .yjs.doc import squash_own
from .yjs.limits import DEFAULT_LIMITS, PlaceHistory

if TYPE_CHECKING:
    from .shard import Shard
    from .store import Store

__all__: list[str] = []

# Items remote updates may place at one place of a shard over time: max_fan, so that the
# shard's full state, sent as one diff to another agent, stays within max_fan there too
# (a larger history would be refused by every peer it is passed on to).
_MAX_PLACE_ITEMS = DEFAULT_LIMITS.max_fan
#: In an update that brings a value migration which rewrote values (its marker key).
_REWRITES_KEY = values.REWRITES.encode()
#: A delta at least this long is not searched for :data:`_REWRITES_KEY`: the shard's marker is
#: read instead (:meth:`_RegistryReplicas._repair_rewrites`, ~12 us), with the same outcome.
#: The search costs ~0.5 ns per byte: 0.2 ms of the automerge-paper state and 2-3 ms of a
#: 200,000-key map on a joiner's critical path (issue 17, h-paper3); below 32 KiB it is
#: the cheaper of the two.
_SEARCH_MAX_BYTES = 32 * 1024
#: Local deltas merged by ``pycrdt.merge_updates`` at most when the squash does not apply
#: (:meth:`_RegistryReplicas.merge`'s fallback); more go as they are. Its cost per delta grows
#: with their number (map overwrites: 1.8 us at 400, 13.5 at 1,600, 33 at 6,400).
MERGE_MAX = 512
#: Windows of fewer local writes than this are merged by ``pycrdt.merge_updates``, not squashed
#: (:meth:`_RegistryReplicas.merge`): the squash reads the document's whole state twice
#: (``Doc.get_update`` encodes the whole delete set, a walk of every block), so its cost grows
#: with the document (3 map sets: 17 us on an empty doc, 34 at 5,000 keys, 82 at 20,000),
#: where the merge of a few deltas costs a few us whatever the document (3 map sets: 5 us;
#: 8: 10 us; it grows with the deltas, 61-70 us at 50, where the squash is the cheaper on a
#: small doc). A paced writer's windows (1,000 writes/s: 2-3 writes each) paid the squash at
#: every window (issue 17, h-burst9). New map keys merge to the same bytes either way; a run
#: of text characters stays one struct per write (at most 15).
SQUASH_AT = 16


def _may_bring_rewrites(delta: bytes) -> bool:
    """Whether ``delta`` may bring a value migration that rewrote values: then the shard's
    rewrite repair is asked (it reads the marker, and does nothing unless two migrations
    rewrote values and the last repair did not know one of them). A short delta that does not
    name the marker key cannot; a long one is not searched (see :data:`_SEARCH_MAX_BYTES`)."""
    return len(delta) >= _SEARCH_MAX_BYTES or _REWRITES_KEY in delta


class _RegistryReplicas:
    """Mixin of :class:`~crdtsync._registry.ShardRegistry`: the core's side (module docstring).

    The attributes and methods declared below belong to the registry.
    """

    _store: Store
    _shards: dict[str, Shard]
    _closed: bool
    _stored_digests: dict[str, bytes] | None
    _quarantined: dict[str, str]
    _names: tuple[str, ...] | None
    _name_set: set[str]
    _all_changed: bool
    applying: bool
    last_apply_work: int
    _places: OrderedDict[str, PlaceHistory]

    if TYPE_CHECKING:  # ShardRegistry's (_registry.py); for the type checker only

        def open(self, name: str) -> Shard: ...

        def _open(self, name: str, *, mark_new: bool) -> tuple[Shard, bool]: ...

        def _mark_received(self, shard: Shard) -> None: ...

        def _repair_rewrites(self, shard: Shard) -> None: ...

        def get(self, name: str) -> Shard | None: ...

        def _sorted_names(self) -> tuple[str, ...]: ...

        def _check_open(self) -> None: ...

    # -- ReplicaSet: the core's side -----------------------------------------------------------

    def shard_names(self) -> Iterable[str]:
        if self._closed:  # the transport still runs while the agent closes
            return ()
        return self._sorted_names()  # sorted, the same object until a shard comes or goes

    def holds(self, shard: str) -> bool:
        """Whether ``shard`` is in :meth:`shard_names`, in O(1) (optional ReplicaSet method,
        see :class:`crdtsync.replica.ReplicaSet`)."""
        if self._closed:
            return False
        self._sorted_names()
        return shard in self._name_set

    def state_vector(self, shard: str) -> bytes:
        return updates.state_vector(self.open(shard).doc)

    def digest(self, shard: str) -> bytes:
        """The shard's digest. A shard not open is not opened for it: its digest is the one
        stored with its entries (``Shard.capture``, ``Shard.store_digest`` at close; an empty
        one is not known), read for every stored shard in one scan. A shard never closes once
        opened, so a shard not open has not changed since. An agent restarted on 132,000
        shards opened every one of them to answer its first Summary: 20 s with the event loop
        blocked (issue #11)."""
        opened = self._shards.get(shard)
        if opened is None:
            if self._stored_digests is None:
                self._stored_digests = self._store.meta_values(DIGEST_META)
            stored = self._stored_digests.get(shard)
            if stored and shard not in self._quarantined:  # (empty: not known)
                return stored
        return self.open(shard).digest()

    def diff(self, shard: str, state_vector: bytes) -> bytes:
        updates.decode_state_vector(state_vector)  # InvalidUpdate on garbage from a peer
        doc = self.open(shard).doc
        try:
            return doc.get_update(state_vector)
        except Exception as exc:
            raise InvalidUpdate(f"cannot diff against state vector: {exc}") from exc

    def apply(
        self,
        shard: str,
        update: bytes,
        origin: str,
        info: updates.UpdateInfo | None = None,
        *,
        author: str | None = None,
    ) -> bytes | None:
        if shard in self._quarantined:
            return None  # not held: what a peer sends of it is dropped
        if info is None and shard not in self._shards:
            # Validated (with the work limits) before the shard is opened: a refused update
            # must not leave a shard it names open in memory (issue #11: a shard comes into
            # being only once an update for it validated). The parse is passed on, not redone.
            info = updates.validate_update(update)
        if info is None:
            info = updates.validate_update(update)  # parsed once, handed on to the shard
        history = self._history(shard)
        self.last_apply_work = info.work + self._place_cost(history, info)
        # (No time.process_time() around it: the work is charged in deterministic units, and
        # that clock cost a quarter of a refused push's handling in a profile, issue #11.)
        # An empty history (a new shard's first remote update: a joiner's whole state) records
        # the update's places before the apply, while the parse that made them is still in the
        # CPU's caches, and is emptied again if the apply fails: the same history either way.
        # Recorded after pycrdt's apply of a 200,000-key map it cost 2-3 ms of CPU on the
        # joiner's critical path, 0.1 ms before it (issue 17, h-paper3).
        early = not history
        if early:
            history.record(info.places, info.places_most)
        self.applying = True
        opened = self._shards.get(shard)
        unmarked = False
        try:
            if opened is None or self._closed:
                opened, unmarked = self._open(shard, mark_new=False)
            delta = opened.apply_remote(update, origin, info, author=author)
            if not early:
                history.record(info.places, info.places_most)
        except BaseException:
            if early:
                history.clear()
            raise
        finally:
            if unmarked:
                self._mark_received(opened)  # type: ignore[arg-type]
            self.applying = False
        if delta is not None and _may_bring_rewrites(delta):  # a value migration?
            self._repair_rewrites(opened)
        return delta

    def _history(self, shard: str) -> PlaceHistory:
        history = self._places.get(shard)
        if history is None:
            history = self._places[shard] = PlaceHistory(_MAX_PLACE_ITEMS, max_places=512)
            while len(self._places) > 1024:
                self._places.popitem(last=False)
        else:
            self._places.move_to_end(shard)
        return history

    @staticmethod
    def _place_cost(history: PlaceHistory, info: updates.UpdateInfo) -> int:
        """What ``info``'s conflict scans cost against the shard's earlier updates.

        Raises:
            UpdateOverLimit: a place would hold more items than the history's cap (a fan
                built by many updates, each within ``max_fan``); nothing is applied.
        """
        try:
            return history.cost(info.places, info.places_most)
        except ValueError as exc:
            raise UpdateOverLimit(str(exc)) from None

    def apply_batch(
        self,
        shard: str,
        batch: Sequence[bytes],
        origin: str,
        infos: Sequence[updates.UpdateInfo],
        *,
        author: str | None = None,
        authors: Sequence[str | None] | None = None,
    ) -> list[bytes]:
        # Validated by the caller (``infos``), so the shard may be opened first. One pycrdt
        # transaction for the whole batch: one store entry, one notify, one digest reset.
        # (``authors``: a batch of several writers, one transaction per writer's run while
        # somebody listens to the shard's changes: Shard.apply_remote_by_writer.)
        if shard in self._quarantined:
            return []  # not held: what a peer sends of it is dropped
        # Each update is priced against the shard's history *and the batch's updates before
        # it* (_batch_cost; recorded only once the batch is applied): priced against the
        # history alone, k updates each within the cap at one place put k times the cap there
        # in one transaction (found by tests/test_hostile_fuzz.py: 20 x 200 items, 0.88 s,
        # growing quadratically with k). (Priced on a copy of the history before: a copy of
        # its ~512 places per Push of a burst, issue 17.)
        history = self._history(shard)
        self.last_apply_work = self._batch_cost(history, infos)
        self.applying = True
        try:
            opened = self.open(shard)
            if authors is None:
                delta = opened.apply_remote_batch(batch, origin, infos, author=author)
                deltas = [] if delta is None else [delta]
            else:
                deltas = opened.apply_remote_by_writer(batch, origin, infos, authors)
        finally:
            self.applying = False
        for info in infos:
            history.record(info.places, info.places_most)
        for delta in deltas:
            if _may_bring_rewrites(delta):  # it may bring a value migration
                self._repair_rewrites(opened)
                break
        return deltas

    def apply_many(
        self, shard: str, items: Sequence[tuple[bytes, updates.UpdateInfo, str, str | None]]
    ) -> bool:
        """Apply validated updates of several messages for ``shard``, each ``(update, its
        parse, origin, author)``, as :meth:`apply_batch` does for one Push
        (:meth:`Shard.apply_remote_many`: one pycrdt transaction while nobody listens to the
        shard's changes, else one per writer in a row), for the broadcasts one turn of a
        driver brought (:meth:`crdtsync.replica.ReplicaSet.apply_many`,
        ``GossipCore.receive_broadcasts``). Returns False, applying nothing, when the shard
        is not open (a new one is opened and marked by :meth:`apply`, update by update) or
        not held; the caller then applies them one by one.

        Raises:
            InvalidUpdate: one was refused (see Shard.apply_remote_many); the caller applies
                them one by one to find which.
            UpdateOverLimit: as :meth:`apply_batch`, nothing applied.
        """
        opened = self._shards.get(shard)
        if opened is None or self._closed or shard in self._quarantined:
            return False
        history = self._history(shard)
        self.last_apply_work = self._batch_cost(history, [info for _, info, _, _ in items])
        self.applying = True
        try:
            deltas = opened.apply_remote_many(items)
        finally:
            self.applying = False
        for _, info, _, _ in items:
            history.record(info.places, info.places_most)
        if any(_may_bring_rewrites(delta) for delta in deltas):  # a value migration?
            self._repair_rewrites(opened)
        return True

    @classmethod
    def _batch_cost(cls, history: PlaceHistory, infos: Sequence[updates.UpdateInfo]) -> int:
        """The work of applying ``infos`` one after the other: each priced against the
        shard's history and the batch's updates before it, as :meth:`apply_batch` prices on a
        copy of the history. Without the copy: copying a history of hundreds of places for
        every batch was a tenth of a swarm receiver's CPU (issue 14); the batch's own places
        are counted here instead, a few per update for a broadcast write.

        Raises:
            UpdateOverLimit: a place would hold more than the cap; nothing is recorded.
        """
        limit = history.max_items
        earlier: dict[bytes, int] = {}  # places the batch's updates before this one fill
        work = 0
        last = len(infos) - 1
        for i, info in enumerate(infos):
            work += info.work + cls._place_cost(history, info)
            # (Not even the keys of a large update's native table of places when there is
            # nothing earlier: its keys() would first make a dict of every one of them.)
            for key in earlier.keys() & info.places.keys() if earlier else ():
                n = info.places[key]
                prior = earlier[key]
                if limit is not None and history.count(key) + prior + n > limit:
                    raise UpdateOverLimit(
                        f"more than {limit} items at one place over successive updates"
                    )
                work += prior * n
            if i < last:  # (what the last one places is priced against nothing after it)
                for key, n in info.places.items():
                    earlier[key] = earlier.get(key, 0) + n
        return work

    def durable_state(self, shard: str) -> tuple[bytes, bytes]:
        return self.open(shard).durable_state

    def merge(self, shard: str, deltas: Sequence[bytes]) -> bytes | None:
        """One update holding ``deltas``, local writes of ``shard`` (the core's coalescing
        window, :mod:`crdtsync.gossip.coalesce`), runs of items squashed as the shard holds
        them (:func:`crdtsync.updates.squash_local`); None (send them as they are) when
        that would cost more than it saves.

        ``pycrdt.merge_updates``, the fallback when the squash does not apply (deltas of
        another client, or no smaller), costs more per delta the more there are (1.7 us per
        delta at 100 map overwrites, 13.5 at 1,600, 33 at 6,400: issue 17/18, h-wanburst),
        and a WAN window (0.13 s) of a fast writer holds thousands: at most
        :data:`MERGE_MAX` go through it. (The squash merges many deleting deltas' delete
        sets alone: ``crdtsync.yjs.doc.DS_ALONE_AT``.) Fewer than :data:`SQUASH_AT` deltas
        are merged, not squashed: the squash's cost grows with the document's size."""
        if len(deltas) < SQUASH_AT:
            return updates.merge_updates(deltas)
        held = self.get(shard)
        if held is not None:
            squashed = squash_own(held.doc, deltas)
            if squashed is not None:
                return squashed
        return updates.merge_updates(deltas) if len(deltas) <= MERGE_MAX else None

    def drop(self, shard: str) -> None:
        """Forget a shard handed off to its placement holders, in memory and on disk."""
        opened = self._shards.pop(shard, None)
        if opened is not None:
            opened.close()
        if self._stored_digests is not None:
            self._stored_digests.pop(shard, None)
        self._check_open()
        self._store.delete_shard(shard)
        self._names = None
        self._all_changed = True
