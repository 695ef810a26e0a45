"""In-memory replicas of the simulator (:mod:`crdtsync.transports.memory`).

:class:`MemoryReplicas` is an in-memory :class:`~crdtsync.replica.ReplicaSet` over pycrdt
documents with simulated durability (:meth:`MemoryReplicas.commit` snapshots what is "on
disk"); tests and benchmarks use it instead of LMDB. Split from :mod:`crdtsync.transports.memory`,
which re-exports it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pycrdt

from crdtsync import updates
from crdtsync.names import validate_shard_name

__all__ = ["MemoryReplicas"]


class MemoryReplicas:
    """An in-memory :class:`~crdtsync.replica.ReplicaSet`: one pycrdt Doc per shard.

    Every shard an update arrives for is created (full replication). "Durable" state is what
    the last :meth:`commit` snapshotted; :meth:`recover` rebuilds a replica set from it, as an
    agent restarting from its store would. Remote updates that are not causally ready wait in
    a per-shard backlog (:meth:`held`), as in the agent's shards, so a Doc never holds pending
    structs and equal digests mean equal content.

    Args:
        rng: source of pycrdt client ids (determinism); a fresh id per Doc.
        shards: shards to create empty.
    """

    def __init__(self, rng: random.Random | None = None, shards: Iterable[str] = ()) -> None:
        self._rng = rng if rng is not None else random.Random(0)
        self.docs: dict[str, pycrdt.Doc[Any]] = {}
        self._subs: dict[str, Any] = {}
        self._captured: list[bytes] = []
        self._digests: dict[str, bytes] = {}  # cache, dropped by the observer on any change
        self._dirty: dict[str, None] = {}
        #: Shards changed since the driver last cleared this (the simulator does).
        self.changed: dict[str, None] = {}
        self._uncommitted: dict[str, list[bytes]] = {}
        self._log: dict[str, list[bytes]] = {}  # committed deltas per shard: the "disk"
        self._durable_state: dict[str, tuple[bytes, bytes]] = {}
        #: per shard, remote updates not causally ready yet (in memory: lost by a crash)
        self._backlogs: dict[str, updates.Backlog] = {}
        for shard in shards:
            self.doc(shard)

    def doc(self, shard: str) -> pycrdt.Doc[Any]:
        """The Doc of ``shard``, created empty if needed."""
        d = self.docs.get(shard)
        if d is None:
            d = self.docs[shard] = self._new_doc(shard)
        return d

    def _new_doc(self, shard: str) -> pycrdt.Doc[Any]:
        validate_shard_name(shard)
        d: pycrdt.Doc[Any] = pycrdt.Doc(client_id=self._rng.randrange(1, 2**32))
        self._subs[shard] = d.observe(lambda e, s=shard: self._on_txn(s, e))
        return d

    def _on_txn(self, shard: str, event: Any) -> None:
        update = event.update
        if updates.is_noop(update):
            return
        self._captured.append(update)
        self._digests.pop(shard, None)
        self._uncommitted.setdefault(shard, []).append(update)
        self._dirty[shard] = None
        self.changed[shard] = None

    def change(self, shard: str, fn: Callable[[pycrdt.Doc[Any]], None]) -> bytes | None:
        """Make a local change with ``fn(doc)`` in one transaction; return its delta (or None)."""
        d = self.doc(shard)
        self._captured.clear()
        with d.transaction():
            fn(d)
        return _join(self._captured)

    # -- ReplicaSet -------------------------------------------------------------------------------

    def shard_names(self) -> Iterable[str]:
        return list(self.docs)

    def state_vector(self, shard: str) -> bytes:
        return updates.state_vector(self.docs[shard])

    def digest(self, shard: str) -> bytes:
        d = self._digests.get(shard)
        if d is None:
            d = self._digests[shard] = updates.digest(self.docs[shard])
        return d

    def diff(self, shard: str, state_vector: bytes) -> bytes:
        return self.docs[shard].get_update(state_vector)

    def apply(
        self,
        shard: str,
        update: bytes,
        origin: str,
        info: updates.UpdateInfo | None = None,
        *,
        author: str | None = None,
    ) -> bytes | None:
        # Gated on causal readiness, as the agent's Shard.apply_remote is: an update with
        # structs past a gap waits in the shard's backlog instead of being left pending in
        # pycrdt. Yrs shows such structs, yet they are in neither the state vector nor the
        # delete set (so not in the digest) and not in diffs against a state vector: two
        # replicas with equal digests could show different content for good, which
        # anti-entropy can neither see nor repair (a writer crashed before anyone got one of
        # its deltas, and only some agents got its next one).
        if info is None:
            info = updates.parse_update(update)
        self._captured.clear()
        d = self.docs.get(shard)
        if d is None:  # a new shard exists only once an update for it applied cleanly
            d = self._new_doc(shard)
            missing = updates.apply_if_ready(d, update, info)
            self.docs[shard] = d
        else:
            missing = updates.apply_if_ready(d, update, info)
        backlog = self._backlogs.get(shard)
        if missing is not None:
            if backlog is None:
                backlog = self._backlogs[shard] = updates.Backlog()
            backlog.add(update, missing, info)
        elif backlog is not None:
            backlog.apply_ready(d)
        return _join(self._captured)

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
        # Update by update, as before batches were applied in one transaction: the simulator's
        # frames (and so the golden traces) stay what they were.
        deltas = []
        for i, (update, info) in enumerate(zip(batch, infos, strict=True)):
            delta = self.apply(
                shard, update, origin, info, author=authors[i] if authors else author
            )
            if delta is not None:
                deltas.append(delta)
        return deltas

    def apply_many(
        self, shard: str, items: Sequence[tuple[bytes, updates.UpdateInfo, str, str | None]]
    ) -> bool:
        # One by one, as :meth:`apply_batch`: the same deltas and digests as when the core
        # hands each broadcast to apply() itself, so the core's batched path
        # (GossipCore.receive_broadcasts) runs in the simulator's tests with the same outcome.
        for update, info, origin, author in items:
            self.apply(shard, update, origin, info, author=author)
        return True

    def held(self, shard: str) -> int:
        """How many remote updates of ``shard`` wait for what they build on (not applied)."""
        backlog = self._backlogs.get(shard)
        return 0 if backlog is None else len(backlog)

    def durable_state(self, shard: str) -> tuple[bytes, bytes]:
        # Nothing committed yet: the empty state vector and the empty delete set.
        return self._durable_state.get(shard, (b"\x00", b"\x00"))

    def merge(self, shard: str, deltas: Sequence[bytes]) -> bytes:
        """One update holding ``deltas``, local writes of ``shard`` (the core's coalescing
        window, :mod:`crdtsync.gossip.coalesce`), runs of items squashed as the doc holds
        them (:func:`crdtsync.updates.squash_local`)."""
        doc = self.docs.get(shard)
        return updates.merge_updates(deltas) if doc is None else updates.squash_local(doc, deltas)

    def drop(self, shard: str) -> None:
        d = self.docs.pop(shard, None)
        sub = self._subs.pop(shard, None)
        if d is not None and sub is not None:
            d.unobserve(sub)
        for table in (
            self._digests,
            self._dirty,
            self.changed,
            self._uncommitted,
            self._log,
            self._durable_state,
            self._backlogs,
        ):
            table.pop(shard, None)  # type: ignore[attr-defined]

    # -- simulated disk ---------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether some change is not yet "on disk"."""
        return bool(self._dirty)

    def commit(self) -> list[str]:
        """Make every change so far durable; return the shards that changed (sorted)."""
        out = sorted(self._dirty)
        for shard in out:
            d = self.docs[shard]
            log = self._log.setdefault(shard, [])
            log.extend(self._uncommitted.pop(shard, ()))
            if len(log) > 512:  # compact, as the real store does
                log[:] = [pycrdt.merge_updates(*log)]
            self._durable_state[shard] = (updates.state_vector(d), updates.delete_set(d))
        self._dirty.clear()
        return out

    def recover(
        self, *, lose_unflushed: bool = True, rng: random.Random | None = None
    ) -> MemoryReplicas:
        """A new replica set as an agent restarting from its store would have it.

        Docs get fresh client ids: a restarted agent must never reuse clocks it may have
        handed out before the crash.
        """
        fresh = MemoryReplicas(rng if rng is not None else self._rng)
        for shard in self.docs:
            if lose_unflushed:
                if not self._log.get(shard):
                    continue
                snap = pycrdt.merge_updates(*self._log[shard])
            else:
                snap = self.docs[shard].get_update()
            d = fresh.doc(shard)
            updates.apply_update(d, snap)
        fresh._captured.clear()
        fresh.changed.clear()
        fresh.commit()  # what was just loaded is on disk
        return fresh


def _join(captured: list[bytes]) -> bytes | None:
    if not captured:
        return None
    if len(captured) == 1:
        return captured[0]
    return pycrdt.merge_updates(*captured)
