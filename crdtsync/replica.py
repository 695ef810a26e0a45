"""The interface between the pure gossip core and the replicas it synchronises.

The gossip core (``crdtsync.gossip``) never touches pycrdt, LMDB or sockets; it reads and
changes replicas only through this protocol. The agent implements it over durable shards; tests
and the simulator may implement it over plain in-memory documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from .yjs.parse import UpdateInfo

__all__ = ["ReplicaSet"]


class ReplicaSet(Protocol):
    """The shards one agent holds, as the gossip core sees them."""

    def shard_names(self) -> Iterable[str]:
        """Names of the shards this agent replicates."""

    def state_vector(self, shard: str) -> bytes:
        """The shard's encoded state vector (pycrdt ``Doc.get_state()``)."""

    def digest(self, shard: str) -> bytes:
        """A short hash of the shard's state vector *and* delete set.

        Equal digests mean equal content; unlike the state vector it changes on deletions.
        """

    def diff(self, shard: str, state_vector: bytes) -> bytes:
        """An update holding everything the shard has that ``state_vector`` lacks,
        plus the shard's whole delete set (pycrdt ``Doc.get_update(state_vector)``)."""

    def apply(
        self,
        shard: str,
        update: bytes,
        origin: str,
        info: UpdateInfo | None = None,
        *,
        author: str | None = None,
    ) -> bytes | None:
        """Validate, apply and persist a remote ``update`` received from peer ``origin``.

        ``author`` is the agent that wrote it, as the message that carried it says (a
        :class:`~crdtsync.messages.Push` passes it on hop by hop), or None when unknown: an
        anti-entropy diff merges the changes of any number of writers. It is only reported
        (:attr:`crdtsync.changes.Change.author`), never trusted for anything else.

        An update that is not causally ready (structs past a gap, or naming items the shard
        lacks: :func:`crdtsync.yjs.ready.is_ready`) must not be left pending in pycrdt: it is
        held back (:class:`crdtsync.yjs.ready.Backlog`) until what it builds on has come.
        pycrdt shows pending structs, yet they are in neither the state vector nor the digest,
        nor in :meth:`diff`: the core takes equal digests for equal content, and anti-entropy
        could neither see nor repair such a difference.

        Creates the shard if this agent should hold it but does not yet. Returns the delta
        that changed local state (to be forwarded), or None when the update held nothing new.
        Raises :class:`crdtsync.errors.InvalidUpdate` (nothing applied, nothing stored) when
        the bytes are not a valid update, :class:`crdtsync.errors.InvalidShardName` for a bad
        name.

        ``info`` is the update's :func:`crdtsync.yjs.parse.parse_update` result when the
        caller validated it already (the core does, at the trust boundary); the bytes are then
        not parsed again. It must have been parsed from exactly these bytes.
        """

    def apply_batch(
        self,
        shard: str,
        batch: Sequence[bytes],
        origin: str,
        infos: Sequence[UpdateInfo],
        *,
        author: str | None = None,
        authors: Sequence[str | None] | None = None,
    ) -> list[bytes]:
        """:meth:`apply` for every update of one Push (``author``: their writer, as for
        :meth:`apply`; already validated: ``infos`` are their
        parses, in order), as one unit where the replica can: the agent applies them in ONE
        pycrdt transaction, so its commit, observers, store append and digest invalidation run
        once per batch. Returns the deltas that changed local state, in order, to forward
        (one combined delta for a single transaction; empty when nothing was new).

        ``authors`` (given instead of ``author``, only for a Push that names several
        writers: the core passes it then and only then): the writer of each update. The
        agent then applies each run of one writer's updates in its own transaction while
        somebody listens to the shard's changes, so that each change names its writer
        (one delta per transaction); while nobody listens, one transaction, as above.

        Raises as :meth:`apply`; updates applied before a failing one stay applied.
        """

    def apply_many(
        self, shard: str, items: Sequence[tuple[bytes, UpdateInfo, str, str | None]]
    ) -> bool:
        """Apply validated updates of several messages for ``shard``, each ``(update, its
        parse, origin, author)``, in order: the broadcasts one turn of a driver brought
        (``GossipCore.receive_broadcasts``). A replica may apply them as one unit (the agent:
        one pycrdt transaction while nobody listens to the shard's changes) or one by one as
        :meth:`apply` would (the simulator). Nothing to forward is returned: the core takes
        this path only when every link is a broadcast link, where what came by broadcast
        reached everyone already.

        Returns True when they were applied, False when the replica did not batch them and
        applied nothing (the agent: a shard that is not open yet, or not held); the core then
        applies them one by one through :meth:`apply`.

        Raises as :meth:`apply` (the core then applies them one by one to find the refused
        one; updates applied before it stay applied, and come again as duplicates).
        """

    def durable_state(self, shard: str) -> tuple[bytes, bytes]:
        """(state vector, delete set) of what this agent has *on disk* for the shard;
        what replication acks report."""

    def drop(self, shard: str) -> None:
        """Forget the shard: its replica, in memory and on disk (partial replication calls
        this only once the shard's placement holders acked everything this agent holds)."""

    # Optional, not part of the protocol (the core looks it up): ``take_changed() -> set[str] |
    # None``, the shards whose digest changed since the last call (a shard that came counts
    # as changed), or None when shards went (or it cannot tell). With it the core keeps its
    # anti-entropy root hash between rounds instead of reading every digest again
    # (gossip/antientropy.py, RootCache). A ReplicaSet whose shard_names() returns the same
    # tuple object while its shards stay the same lets the core cache what it derives from the
    # names (gossip/_context.py); one with ``holds(shard) -> bool`` (whether ``shard`` is in
    # shard_names(), in O(1)) spares the core a rebuild of that cache per new shard. One with
    # ``merge(shard, deltas) -> bytes | None`` (one update holding several local deltas of the
    # shard; None: not worth it, they go as they are) lets the core send a coalesced stream
    # of local writes as one update per window (gossip/coalesce.py); without it they go as a
    # batch of updates.
