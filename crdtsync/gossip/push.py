"""Push queues: deltas waiting for the next batching window, per link and shard.

Queues are flushed once per window as one Push per peer and shard, so the number of messages
grows with the number of busy links, not with the write rate. Pushes carry a sequence number
per link and shard (a gap shows the receiver a lost one). Beyond ``max_queue_bytes`` queued
for one peer (a slow or paused link) everything queued is dropped and replaced by an
anti-entropy round once the link drains (*back-pressure*): memory stays bounded and the peer
still converges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["PushQueue"]


@dataclass(slots=True)
class PushQueue:
    """The pushes waiting for one peer."""

    queue: dict[str, list[bytes]] = field(
        default_factory=dict
    )  # shard -> deltas, in order
    queued_bytes: int = 0
    dropped: int = 0  # deltas dropped for back-pressure, ever
    last_push_at: float = -math.inf
    resync: bool = False  # pushes were dropped: run anti-entropy once the link drains
    seq_out: dict[str, int] = field(
        default_factory=dict
    )  # last Push seq sent, per shard
    relay_shards: set[str] = field(
        default_factory=set
    )  # queued shards it relays (Push.relay)
    big: list[tuple[str, bytes]] = field(
        default_factory=list
    )  # deltas too big for one frame

    def add(self, shard: str, update: bytes, max_bytes: int, chunk: int) -> str:
        """Queue ``update``; return "dropped" (back-pressure: everything queued was dropped,
        resync owed), "big" (it goes as DiffChunk pieces) or "queued"."""
        if self.queued_bytes + len(update) > max_bytes:
            self.dropped += sum(len(q) for q in self.queue.values()) + len(self.big) + 1
            self.queue.clear()
            self.big.clear()
            self.relay_shards.clear()
            self.queued_bytes = 0
            self.resync = True
            return "dropped"
        self.queued_bytes += len(update)
        if len(update) > chunk:
            self.big.append((shard, update))
            return "big"
        self.queue.setdefault(shard, []).append(update)
        return "queued"

    def next_seq(self, shard: str) -> int:
        """The sequence number of the next Push of ``shard`` on this link."""
        seq = self.seq_out[shard] = self.seq_out.get(shard, 0) + 1
        return seq

    def drained(self) -> None:
        """The queue went out at a window boundary (big deltas wait for the reply budget)."""
        self.queue.clear()
        self.relay_shards.clear()
        self.queued_bytes = sum(len(u) for _, u in self.big)

    def pop_big(self) -> tuple[str, bytes]:
        shard, update = self.big.pop(0)
        self.queued_bytes -= len(update)
        return shard, update
