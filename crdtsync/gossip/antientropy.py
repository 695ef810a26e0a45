"""Anti-entropy rounds: the per-link state of Summary/Digests/SyncRequest/Diff rounds.

A round: A -> B ``Summary(root)`` (a hash over A's sorted (shard, digest) pairs; equal roots:
done), B -> A ``Digests``, A compares and asks (``SyncRequest``) or sends (``Diff``), B answers
with ``Diff(diff(sv_A), sv_B)``, A applies it and, if its digest still differs, sends
``Diff(diff(sv_B))``. In a tree, a periodic round with a neighbour whose pushes flow both ways
without a sequence gap is skipped (the pushes are the anti-entropy), at most
``anti_entropy_skip_max`` rounds in a row.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["LinkRounds", "root_hash"]


@dataclass(slots=True)
class LinkRounds:
    """Anti-entropy with one peer."""

    last_push_in: float = -math.inf  # when a Push last came from it
    last_round_at: float = -math.inf  # when we last started a round with it
    digests: dict[str, bytes] = field(default_factory=dict)  # from its last Digests
    round_shards: set[str] = field(
        default_factory=set
    )  # asked in our round: step 5 owed


def root_hash(shards: Iterable[str], digest: Callable[[str], bytes]) -> bytes:
    """The Summary root: a hash over the sorted (shard, digest) pairs."""
    h = hashlib.blake2b(digest_size=16, person=b"crdtsync.root1")
    for shard in shards:
        name = shard.encode()
        d = digest(shard)
        h.update(len(name).to_bytes(2, "big") + name + len(d).to_bytes(1, "big") + d)
    return h.digest()
