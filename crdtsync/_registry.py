"""The shards one agent has open, and the same shards as the gossip core sees them.

:class:`ShardRegistry` owns opening (loading from the store), dropping (a shard handed off by
placement) and listing shards. It *is* the agent's :class:`crdtsync.replica.ReplicaSet`, so the
core reads and changes replicas through it without the registry or the core knowing the agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from . import updates, values
from .errors import ClosedError, InvalidUpdate
from .names import validate_shard_name
from .shard import ROOT, DeltaHook, Shard, ShardHost, load_doc
from .store import Store

__all__ = ["ShardRegistry"]

logger = logging.getLogger(__name__)

#: Store metadata key recording the value format of a shard's data (see :mod:`crdtsync.values`);
#: a shard without it was written by a release before format 2 and is migrated on open.
_VALUES_META = "values_format"
_VALUES_FORMAT = str(values.FORMAT).encode()


class ShardRegistry:
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
        self.applying = False  # inside apply() called by the core: its deltas are not news

    # -- the agent's side ----------------------------------------------------------------------

    def open(self, name: str) -> Shard:
        """The shard ``name``, loaded from the store (or created empty) on first use.

        Raises:
            InvalidShardName: bad name.
            ClosedError: the registry (its agent) was closed.
            StoreError: the stored shard could not be read.
        """
        validate_shard_name(name)
        self._check_open()
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        loaded = self._store.load(name)
        if loaded is None:
            doc = load_doc(None, [], name)
        else:
            doc = load_doc(loaded.snapshot, loaded.log, name, trusted=loaded.verified)
            if not loaded.verified:  # written before checksums: validated now, once
                self._store.mark_verified(name)
        shard = Shard(
            name,
            doc,
            self._store,
            notify=self._notify,
            on_delta=self._on_delta,
            host=self._host,
            agent=self._owner,
        )
        self._shards[name] = shard
        if loaded is None or loaded.meta.get(_VALUES_META) != _VALUES_FORMAT:
            # A new shard is marked in its document too: an agent of the previous release that
            # receives it stores it unmarked, and must not "migrate" it once upgraded.
            self._migrate_values(shard)
            self._store.put_meta(name, _VALUES_META, _VALUES_FORMAT)
        return shard

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

    def get(self, name: str) -> Shard | None:
        """The shard if it is open now, else None (never loads)."""
        return self._shards.get(name)

    def names(self) -> list[str]:
        """Every shard in the store or open now, sorted. Raises ClosedError once closed."""
        self._check_open()
        return sorted(set(self._store.shard_names()) | set(self._shards))

    def items(self) -> Iterator[tuple[str, Shard]]:
        """(name, shard) of the open shards."""
        return iter(list(self._shards.items()))

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is open now."""
        return name in self._shards

    def close(self) -> None:
        """Close every open shard; later calls raise ClosedError (the store is the owner's)."""
        self._closed = True
        for shard in self._shards.values():
            shard.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"agent {self._owner!r} is closed")

    # -- ReplicaSet: the core's side -----------------------------------------------------------

    def shard_names(self) -> Iterable[str]:
        if self._closed:  # the transport still runs while the agent closes
            return ()
        return self.names()

    def state_vector(self, shard: str) -> bytes:
        return updates.state_vector(self.open(shard).doc)

    def digest(self, shard: str) -> bytes:
        return self.open(shard).digest()

    def diff(self, shard: str, state_vector: bytes) -> bytes:
        updates.decode_state_vector(state_vector)  # InvalidUpdate on garbage from a peer
        doc = self.open(shard).doc
        try:
            return doc.get_update(state_vector)
        except Exception as exc:
            raise InvalidUpdate(f"cannot diff against state vector: {exc}") from exc

    def apply(
        self, shard: str, update: bytes, origin: str, info: updates.UpdateInfo | None = None
    ) -> bytes | None:
        if info is None and shard not in self._shards:
            # Validated (with the work limits) before the shard is opened: a refused update
            # must not leave a shard it names open in memory (issue #11: a shard comes into
            # being only once an update for it validated). The parse is passed on, not redone.
            info = updates.validate_update(update)
        self.applying = True
        try:
            return self.open(shard).apply_remote(update, origin, info)
        finally:
            self.applying = False

    def apply_batch(
        self,
        shard: str,
        batch: Sequence[bytes],
        origin: str,
        infos: Sequence[updates.UpdateInfo],
    ) -> list[bytes]:
        # Validated by the caller (``infos``), so the shard may be opened first. One pycrdt
        # transaction for the whole batch: one store entry, one notify, one digest reset.
        self.applying = True
        try:
            delta = self.open(shard).apply_remote_batch(batch, origin, infos)
        finally:
            self.applying = False
        return [] if delta is None else [delta]

    def durable_state(self, shard: str) -> tuple[bytes, bytes]:
        return self.open(shard).durable_state

    def drop(self, shard: str) -> None:
        """Forget a shard handed off to its placement holders, in memory and on disk."""
        opened = self._shards.pop(shard, None)
        if opened is not None:
            opened.close()
        self._check_open()
        self._store.delete_shard(shard)
