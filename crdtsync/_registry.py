"""The shards one agent has open, and the same shards as the gossip core sees them.

:class:`ShardRegistry` owns opening (loading from the store), dropping (a shard handed off by
placement) and listing shards. It *is* the agent's :class:`crdtsync.replica.ReplicaSet`, so the
core reads and changes replicas through it without the registry or the core knowing the agent.
That side (names, digests, diffs, remote updates applied and priced, ``drop``) is the mixin
:class:`~crdtsync._registry_replicas._RegistryReplicas`; this module keeps the agent's side:
opening and loading, value migrations, quarantine, listing, closing.
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator

from . import updates, values
from ._registry_replicas import _RegistryReplicas
from .errors import ClosedError, InvalidUpdate, ShardQuarantined, StoreError
from .names import validate_shard_name
from .shard import DIGEST_META, ROOT, DeltaHook, Shard, ShardHost, load_doc
from .store import Store
from .yjs.limits import PlaceHistory, UpdateLimits

__all__ = ["STORED_LIMITS", "ShardRegistry", "check_stored"]

logger = logging.getLogger(__name__)

#: Store metadata key recording the value format of a shard's data (see :mod:`crdtsync.values`);
#: a shard without it was written by a release before format 2 and is migrated on open.
_VALUES_META = "values_format"
_VALUES_FORMAT = str(values.FORMAT).encode()
#: Store metadata key: every stored entry of the shard passed :data:`STORED_LIMITS` (checked
#: once; a shard created since the limits exist carries it from the start).
_LIMITS_META = "limits_checked"
#: Store metadata key: why the shard is quarantined (UTF-8), see :meth:`ShardRegistry.open`.
_QUARANTINE_META = "quarantine"
#: The limits a stored entry must pass to be loaded: only the shapes whose integration costs
#: super-linear time or memory (same-place fans, mergeable runs), not the size caps, which a
#: compacted snapshot of honest data may exceed and which cost linear work.
STORED_LIMITS = UpdateLimits(
    max_structs=None, max_delete_ranges=None, max_type_depth=None, refuse_format_in_map=False
)


def check_stored(snapshot: bytes | None, log: list[bytes]) -> str | None:
    """Why the stored ``snapshot`` and ``log`` of a shard must not be loaded, or None.

    Each entry is parsed (pure Python, linear) under :data:`STORED_LIMITS` before anything of
    it reaches Yrs: an update stored before the limits existed (issue #11) that would take
    minutes or abort the process on every open is found here instead.
    """
    for i, entry in enumerate(([snapshot] if snapshot else []) + log):
        try:
            updates.parse_update(entry, limits=STORED_LIMITS)
        except InvalidUpdate as exc:
            what = "the snapshot" if snapshot and i == 0 else f"log entry {i - bool(snapshot)}"
            return f"{what} exceeds the work limits: {exc}"[:500]
    return None


#: The update that marks an empty document (:func:`crdtsync.values.migrate` of a new doc): the
#: same bytes on every agent, because the migration's client id derives from the (empty) state.
#: Written out here, not computed at a new shard's open (a migration run on a scratch copy, 0.4-0.6
#: ms of a joining agent's start-up before its first message: issue 17, h-paper);
#: ``tests/test_values_migration.py`` holds it equal to what ``migrate`` writes.
_EMPTY_MARKER = bytes.fromhex(
    "0101a89cd792bbc0b903002801086372647473796e630676616c756573017c4000000000"
)


class ShardRegistry(_RegistryReplicas):
    """Open shards of one store, keyed by name; implements :class:`~crdtsync.replica.ReplicaSet`.

    Args:
        owner: the agent's name, for error messages.
        store: the agent's open store.
        notify: called after every append to the store (the group committer's ``notify``).
        on_delta: called with every change of every shard (see :class:`~crdtsync.shard.Shard`).
        host: what shards call for ``flush``/``compact``/``replicated``.
    """

    def __init__(
        self,
        owner: str,
        store: Store,
        *,
        notify: Callable[[], None],
        on_delta: DeltaHook | None,
        host: ShardHost | None,
    ) -> None:
        self._owner = owner
        self._store = store
        self._notify = notify
        self._on_delta = on_delta
        self._host = host
        self._shards: dict[str, Shard] = {}
        self._closed = False
        #: shard -> its committed digest, for shards not opened yet (see digest()).
        self._stored_digests: dict[str, bytes] | None = None
        #: shard -> reason, for shards whose stored updates exceed the limits (see open()).
        self._quarantined = {
            n: r.decode(errors="replace") for n, r in store.meta_values(_QUARANTINE_META).items()
        }
        # The sorted names (store and open), kept until a shard is opened for the first time
        # or dropped: listing LMDB for every gossip message costs O(shards). The same tuple
        # object is returned while unchanged, so the core can cache what it derives from it.
        self._names: tuple[str, ...] | None = None
        self._name_set: set[str] = set()  # the same names, for holds()
        # Shards whose content changed since the core last asked (take_changed): it keeps
        # its anti-entropy root hash and refreshes only these digests.
        self._changed: set[str] = set()
        self._all_changed = True
        self.applying = False  # inside apply() called by the core: its deltas are not news
        #: Per shard, the value migrations its last rewrite repair knew (_repair_rewrites).
        self._rewriters: dict[str, frozenset[int]] = {}
        #: Work units the last apply() cost (read by the core after each remote apply and
        #: charged to the sender's and the shard's work budget, crdtsync.quotas.WorkBudget):
        #: UpdateInfo.work plus the conflict scans against what earlier updates placed at the
        #: same places (PlaceHistory). Deterministic: the same updates cost the same.
        self.last_apply_work = 0
        # Per shard, the items earlier remote updates placed at each place (the 1,024 shards
        # applied to most recently; a fan being built is in one of them).
        self._places: OrderedDict[str, PlaceHistory] = OrderedDict()

    # -- the agent's side ----------------------------------------------------------------------

    def open(self, name: str) -> Shard:
        """The shard ``name``, loaded from the store (or created empty) on first use.

        A shard stored before the work limits (issue #11) is checked once (:func:`check_stored`)
        before any of it reaches Yrs; one that fails is *quarantined*: not loaded, not served,
        left out of :meth:`names` (so not gossiped), its reason kept in the store and in
        :meth:`quarantined`. Every other shard goes on working.

        Raises:
            InvalidShardName: bad name.
            ClosedError: the registry (its agent) was closed.
            StoreError: the stored shard could not be read.
            ShardQuarantined: the shard is quarantined.
        """
        shard = self._shards.get(name)
        if shard is not None and not self._closed:
            return shard  # (a name in the table is valid: the core asks this very often)
        return self._open(name, mark_new=True)[0]

    def _open(self, name: str, *, mark_new: bool) -> tuple[Shard, bool]:
        """:meth:`open` for a shard not open yet; also whether it was new and left unmarked
        (``mark_new`` False: the caller applies a peer's update first, see :meth:`apply`)."""
        validate_shard_name(name)
        self._check_open()
        if name in self._quarantined:
            raise ShardQuarantined(name, self._quarantined[name])
        loaded = self._store.load(name)
        if loaded is None:
            doc = load_doc(None, [], name)
            self._store.put_meta(name, _LIMITS_META, b"1")
        else:
            if _LIMITS_META not in loaded.meta:
                reason = check_stored(loaded.snapshot, loaded.log)
                if reason is not None:
                    self._quarantine(name, reason)
                self._store.put_meta(name, _LIMITS_META, b"1")
            doc = load_doc(loaded.snapshot, loaded.log, name, trusted=loaded.verified)
            if not loaded.verified:  # written before checksums: validated now, once
                self._store.mark_verified(name)
        shard = Shard(
            name,
            doc,
            self._store,
            notify=self._notify,
            on_delta=self._changed_hook,
            host=self._host,
            agent=self._owner,
            # the digest stored with checksummed entries (empty or absent: not known)
            digest=loaded.meta.get(DIGEST_META) if loaded is not None and loaded.verified else None,
        )
        self._shards[name] = shard
        if self._names is not None and name not in self._name_set:
            # A new shard: inserted into the cached list, not listed from LMDB again (an agent
            # joining a mesh opens thousands in a row: a scan and a sort per shard made the
            # join quadratic in the shards). Only its digest is new to the core's root cache.
            names = self._names
            i = bisect.bisect_left(names, name)
            self._names = names[:i] + (name,) + names[i:]
            self._name_set.add(name)
            self._changed.add(name)
        if loaded is None and not mark_new:
            return shard, True
        if loaded is None:
            # A new shard is marked in its document too: an agent of the previous release that
            # receives it stores it unmarked, and must not "migrate" it once upgraded. Its
            # document is empty, so the marking is the constant update (what migrate writes).
            self._mark_empty(shard)
            self._store.put_meta(name, _VALUES_META, _VALUES_FORMAT)
        elif loaded.meta.get(_VALUES_META) != _VALUES_FORMAT:
            self._migrate_values(shard)
            self._store.put_meta(name, _VALUES_META, _VALUES_FORMAT)
        if loaded is not None:
            self._repair_rewrites(shard)
        return shard, False

    def _mark_received(self, shard: Shard) -> None:
        """Mark a new shard whose first update came from a peer, after applying it.

        Marking an empty document writes the same structs on every agent (the migration's
        client id derives from the empty state), so the result is the very state that marking
        first would give; but a peer's update that carries the marker already (every shard a
        current agent made) needs no write of ours. Marking first made an agent joining a mesh
        write, store and push back one redundant update per shard (5,000 for 5,000 shards).
        """
        if not values.is_marked(shard.doc):
            self._mark_empty(shard)
        self._store.put_meta(shard.name, _VALUES_META, _VALUES_FORMAT)

    def _mark_empty(self, shard: Shard) -> None:
        """Write the marker of an empty document (:data:`_EMPTY_MARKER`) into ``shard``: a
        local change, persisted and gossiped, as :meth:`_migrate_values` of an empty
        document would write it (the same structs), without running the migration."""
        applying, self.applying = self.applying, False
        try:
            shard.doc.apply_update(_EMPTY_MARKER)
        finally:
            self.applying = applying

    def _migrate_values(self, shard: Shard) -> None:
        """Rewrite a shard this store holds from before the value encoding's format 2, or mark
        a new one (see :func:`crdtsync.values.migrate`; a marked document is left alone). A
        local change: persisted and gossiped like a write, even when the core opened the shard
        while applying."""
        applying, self.applying = self.applying, False
        try:
            changed = values.migrate(shard.doc, ROOT)
        finally:
            self.applying = applying
        if changed:
            logger.info(
                "shard %r: %d values migrated to value format %d",
                shard.name,
                changed,
                values.FORMAT,
            )

    def _repair_rewrites(self, shard: Shard) -> None:
        """Delete the extra copies of list elements that migrations of differing old states
        both rewrote (:func:`crdtsync.values.repair_rewrites`; nothing to do, cheaply, unless
        two migrations rewrote values). A local change, persisted and gossiped like a write;
        every replica that repairs deletes the same copies. Only when a migration came that
        the shard's last repair did not know: a migration's marker key is its last struct, so
        its copies are in by then, and only a new migration makes a second copy visible (an
        update that merely names the marker key costs a look at the marker, no parse)."""
        writers = values.rewriters(shard.doc)
        if len(writers) < 2:
            return
        known = frozenset(writers)
        if self._rewriters.get(shard.name) == known:
            return
        self._rewriters[shard.name] = known
        applying, self.applying = self.applying, False
        try:
            deleted = values.repair_rewrites(shard.doc, writers)
        finally:
            self.applying = applying
        if deleted:
            logger.info(
                "shard %r: %d list elements two value migrations both rewrote shown once",
                shard.name,
                deleted,
            )

    def _changed_hook(self, shard: Shard, delta: bytes, origin: str | None) -> None:
        """Every change of every open shard: note it for the core, then the agent's hook."""
        self._changed.add(shard.name)
        if self._on_delta is not None:
            self._on_delta(shard, delta, origin)

    def take_changed(self) -> set[str] | None:
        """The shards whose content changed since the last call (a new shard is one of them),
        or None when shards may have gone (then everything must be recomputed). For the gossip
        core's cached anti-entropy root hash (see :class:`crdtsync.replica.ReplicaSet`)."""
        if self._all_changed:
            self._all_changed = False
            self._changed.clear()
            return None
        changed, self._changed = self._changed, set()
        return changed

    def get(self, name: str) -> Shard | None:
        """The shard if it is open now, else None (never loads)."""
        return self._shards.get(name)

    def names(self) -> list[str]:
        """Every shard in the store or open now, sorted, but the quarantined ones. Raises
        ClosedError once closed."""
        self._check_open()
        return list(self._sorted_names())

    def _sorted_names(self) -> tuple[str, ...]:
        if self._names is None:
            names = set(self._store.shard_names()) | set(self._shards)
            self._names = tuple(sorted(names.difference(self._quarantined)))
            self._name_set = set(self._names)
        return self._names

    def quarantined(self) -> dict[str, str]:
        """``{shard: reason}`` of the quarantined shards (see :meth:`open`)."""
        return dict(self._quarantined)

    def check_all(self) -> dict[str, str]:
        """Check every stored shard not checked against the work limits yet (a store written
        before them: once, parsing its entries without opening it), so that every quarantined
        shard is known before gossip starts and none is listed to peers; returns
        :meth:`quarantined`."""
        checked = self._store.meta_values(_LIMITS_META)
        for name in self._store.shard_names():
            if name in checked or name in self._quarantined or name in self._shards:
                continue
            try:  # parsed only, not opened: no document is kept in memory
                loaded = self._store.load(name)
            except StoreError:
                continue  # damaged: opening it raises (CorruptEntry), the rest is served
            if loaded is None:
                continue
            reason = check_stored(loaded.snapshot, loaded.log)
            if reason is None:
                self._store.put_meta(name, _LIMITS_META, b"1")
                continue
            try:
                self._quarantine(name, reason)
            except ShardQuarantined:
                pass
        return self.quarantined()

    def _quarantine(self, name: str, reason: str) -> None:
        self._quarantined[name] = reason
        self._names = None  # a quarantined shard is not listed
        self._all_changed = True
        self._store.put_meta(name, _QUARANTINE_META, reason.encode())
        self._notify()
        logger.error("shard %r quarantined: %s", name, reason)
        raise ShardQuarantined(name, reason)

    def items(self) -> Iterator[tuple[str, Shard]]:
        """(name, shard) of the open shards."""
        return iter(list(self._shards.items()))

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is open now."""
        return name in self._shards

    def store_digests(self) -> None:
        """Buffer every open shard's digest where the stored one may be stale, for the final
        commit (:meth:`Shard.store_digest`)."""
        for shard in self._shards.values():
            shard.store_digest()

    def close(self) -> None:
        """Close every open shard; later calls raise ClosedError (the store is the owner's)."""
        self._closed = True
        for shard in self._shards.values():
            shard.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"agent {self._owner!r} is closed")
