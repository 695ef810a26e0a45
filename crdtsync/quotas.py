"""Quotas that hold across connections (issue #11): pure policy objects for the gossip core and
the transports.

Nothing here does I/O or reads a clock: every method takes ``now`` (seconds, any monotonic
origin), so the sans-I/O core and the simulator drive them deterministically. Each refusal
raises :class:`QuotaExceeded` with the close code to use and a message that says which quota,
whose, and the numbers. Keyed by peer *name* (an authenticated identity), never by
connection, so reconnecting does not reset anything.

=====================  =============================================  =====================
policy                 bounds                                         where it is called
=====================  =============================================  =====================
:class:`ShardQuota`    shards a peer may cause to be created, per      before a remote update
                       window, and shards in the store                 creates a shard
:class:`ByteBudget`    bytes a peer may make us apply (or send it),   per Push / Diff /
                       per interval, and all peers together           reply, before the work
:class:`WorkBudget`    integration work (deterministic units) that    before each remote
                       a peer's and a shard's updates cost per        apply
                       second (what one update's check cannot bound)
:class:`TransferCap`   bytes held by unfinished chunked transfers,    per DiffChunk; tick
                       per peer and in all; and their age             ``expire`` on timers
:class:`ConnectionCap`  connections in all, per address, and how      transport accept and
                       long one may stay without a Hello              handshake
=====================  =============================================  =====================

Also here: :class:`ReadPacer` (fair reading between peers in the websocket transport) and
:class:`RefusalLimit` (refused updates a peer may send before it is closed).

:func:`name_pieces` splits a shard list into frames that each fit a byte budget, so that a
Hello (or Holdings) never grows past the frame limit with the number of shards.

The policies live in three private modules, re-exported here (import them from here):
``_quota_buckets`` (the token buckets, :class:`QuotaExceeded` and the budgets of what an
update costs: shards, bytes, work), ``_quota_pacing`` (per-message rates: messages, refused
updates, reading) and ``_quota_caps`` (what is held at once: transfers, connections).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ._quota_buckets import ByteBudget, QuotaExceeded, ShardQuota, WorkBudget
from ._quota_caps import ConnectionCap, TransferCap
from ._quota_pacing import MessageBudget, ReadPacer, RefusalLimit

__all__ = [
    "ByteBudget",
    "ConnectionCap",
    "WorkBudget",
    "MessageBudget",
    "QuotaExceeded",
    "ReadPacer",
    "RefusalLimit",
    "ShardQuota",
    "TransferCap",
    "name_pieces",
]


def name_pieces(names: Iterable[str], max_bytes: int) -> Iterator[tuple[str, ...]]:
    """Split sorted shard ``names`` into pieces whose msgpack encoding (an array of strings)
    stays under ``max_bytes``, so that the list can go out as several messages.

    The size counted per name is its UTF-8 length plus 5 bytes (the longest msgpack string
    header) and 5 for the array header, an upper bound of the encoding.
    """
    if max_bytes < 64:
        raise ValueError("max_bytes must leave room for at least one name")
    piece: list[str] = []
    size = 5
    for name in names:
        n = len(name.encode()) + 5
        if piece and size + n > max_bytes:
            yield tuple(piece)
            piece, size = [], 5
        piece.append(name)
        size += n
    if piece:
        yield tuple(piece)
