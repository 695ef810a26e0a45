"""The Summary root: a hash over an agent's sorted (shard, digest) pairs, and its cache.

Moved out of :mod:`.antientropy` (which re-exports both) to keep that module near its size
rule once the early ask (:mod:`._early_ask`) hooked into it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["RootCache", "root_hash"]


def _entry(shard: str, d: bytes) -> bytes:
    name = shard.encode()
    return len(name).to_bytes(2, "big") + name + len(d).to_bytes(1, "big") + d


def root_hash(shards: Iterable[str], digest: Callable[[str], bytes]) -> bytes:
    """The Summary root: a hash over the sorted (shard, digest) pairs."""
    h = hashlib.blake2b(digest_size=16, person=b"crdtsync.root1")
    for shard in shards:
        h.update(_entry(shard, digest(shard)))
    return h.digest()


class RootCache:
    """The Summary root over all our shards, kept between rounds and refreshed per shard.

    Recomputing the root reads every shard's digest: O(shards) for every Summary sent or
    received, which made an idle round's CPU grow with the shards held. A ReplicaSet with
    ``take_changed()`` (see :class:`crdtsync.replica.ReplicaSet`) says which shards changed
    since it was last asked (None: the set of shards changed too); only their entries are
    recomputed, and an unchanged root is returned as it is. Used only where the root does not
    depend on the peer (no credentials, full replication); otherwise the root is computed.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._entries: dict[str, bytes] = {}  # shard -> its encoded (name, digest) entry
        self._root: bytes | None = None
        self._count = 0

    def usable(self) -> bool:
        """Whether the root is the same for every peer and the replicas report changes."""
        ctx = self._ctx
        return (
            ctx.gate is None
            and not ctx.policy.partial
            and callable(getattr(ctx.replicas, "take_changed", None))
        )

    def get(self) -> tuple[bytes, int]:
        """(root over every shard held, their count); only when :meth:`usable`."""
        changed = self._ctx.replicas.take_changed()  # type: ignore[attr-defined]
        if changed is None:
            self._entries.clear()
            self._root = None
        elif changed:
            for shard in changed:
                self._entries.pop(shard, None)
            self._root = None
        if self._root is None:
            entries = self._entries
            digest = self._ctx.replicas.digest
            names = self._ctx.shard_names()
            h = hashlib.blake2b(digest_size=16, person=b"crdtsync.root1")
            parts = []
            for shard in names:
                e = entries.get(shard)
                if e is None:
                    e = entries[shard] = _entry(shard, digest(shard))
                parts.append(e)
            h.update(b"".join(parts))
            self._root, self._count = h.digest(), len(names)
        return self._root, self._count
