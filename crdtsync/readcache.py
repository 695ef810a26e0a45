"""Copies of shards read from other agents, merged by CRDT join (the pycrdt side of reads).

:mod:`crdtsync.query` gathers the answers of a shard's holders as raw updates; this module
turns them into a value. Every answer is applied to one document, which is the join of the
states the holders answered with: a key one holder deleted stays deleted, concurrent edits
of two diverged holders are both there, and the order the answers came in does not matter.
No answer is ever preferred over another ("newest wins" would lose writes).

The document is kept for a while after the read. Within ``ttl`` seconds a repeated read is
answered from it without asking anyone (a burst of reads costs one round trip); after that
it still serves as the base of the next read, whose request carries its state vector so that
holders reply with only what it lacks. Being a join of earlier answers, the base never makes
a read go back in time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pycrdt

from . import updates
from .containers import plain_state
from .yjs.state import EMPTY_STATE_VECTOR

__all__ = ["ReadCache", "EMPTY_STATE_VECTOR", "snapshot_of"]


def snapshot_of(doc: pycrdt.Doc) -> dict[str, Any]:
    """The plain value of a shard document (what :meth:`Shard.snapshot` returns)."""
    return plain_state(doc)


@dataclass(slots=True)
class _Entry:
    doc: pycrdt.Doc
    fetched_at: float
    quorum: int


class ReadCache:
    """Per shard, the join of every answer read so far (see the module docstring).

    Args:
        ttl: seconds during which a read is answered from the cache without asking anyone.
        max_entries: shards kept; the least recently used is forgotten beyond this.
    """

    def __init__(self, *, ttl: float = 0.25, max_entries: int = 256) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def fresh(self, shard: str, now: float, quorum: int = 1) -> dict[str, Any] | None:
        """The cached value if it was read within ``ttl`` with at least ``quorum`` answers."""
        doc = self.fresh_doc(shard, now, quorum)
        return None if doc is None else snapshot_of(doc)

    def fresh_doc(self, shard: str, now: float, quorum: int = 1) -> pycrdt.Doc[Any] | None:
        """:meth:`fresh`'s document itself (the cache's own: read it, never write to it)."""
        e = self._entries.get(shard)
        if e is None or now - e.fetched_at >= self.ttl or e.quorum < quorum:
            return None
        self._entries.move_to_end(shard)
        return e.doc

    def state_vector(self, shard: str) -> bytes:
        """The state vector of the cached copy (empty if none): what to send with a read."""
        e = self._entries.get(shard)
        return EMPTY_STATE_VECTOR if e is None else updates.state_vector(e.doc)

    def join(
        self,
        shard: str,
        answers: Iterable[bytes],
        *,
        now: float,
        quorum: int,
        base: bytes | None = None,
    ) -> pycrdt.Doc[Any]:
        """Apply every answer to the shard's cached copy; return that document (the cache's
        own: read it, never write to it).

        Args:
            answers: the updates the holders replied with (diffs against our state vector).
            now: the time of the read (for ``ttl``).
            quorum: how many holders answered (a later read needing more asks again).
            base: the whole state of a local replica, when this agent holds the shard and
                asked others only to reach a quorum; the join then starts from it, fresh.

        Raises:
            InvalidUpdate: an answer is not a valid update (the core checks them before).

        Answers are applied only when causally ready, whatever order they came in (see
        :func:`_join_ready`); one that never becomes ready is left out of the value.
        """
        e = self._entries.get(shard)
        if e is None or base is not None:
            e = _Entry(pycrdt.Doc(), now, quorum)
            if base is not None:
                updates.apply_update(e.doc, base)
        _join_ready(e.doc, answers)
        e.fetched_at, e.quorum = now, quorum
        self._entries[shard] = e
        self._entries.move_to_end(shard)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return e.doc

    def names(self) -> list[str]:
        """Shards with a cached copy."""
        return list(self._entries)

    def forget(self, shard: str) -> None:
        """Drop the cached copy of ``shard``."""
        self._entries.pop(shard, None)

    def __contains__(self, shard: object) -> bool:
        return shard in self._entries


def _join_ready(doc: pycrdt.Doc, answers: Iterable[bytes]) -> list[bytes]:
    """Apply each answer to ``doc`` once it is causally ready (:func:`updates.apply_if_ready`),
    passing over the rest until none becomes ready; return those never applied.

    Holders' answers are diffs against one state vector, so one may need another's structs
    first. Handed to pycrdt as they come, an answer past a gap would stay pending inside the
    document: invisible to the value, to its state vector and to the next request, and
    pycrdt 0.14.13 crashes the process on some later updates that contradict pending structs
    (a holder's bug or a hostile answer must not do that to the reader).
    """
    pending = list(answers)
    progress = True
    while pending and progress:
        progress = False
        waiting: list[bytes] = []
        for update in pending:
            if updates.apply_if_ready(doc, update) is None:
                progress = True
            else:
                waiting.append(update)
        pending = waiting
    return pending
