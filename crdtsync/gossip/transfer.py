"""Replies and big updates: the per-window reply budget and DiffChunk transfers.

Digests and Diffs answer a peer's requests. They are kept as requests (coalesced per shard,
:class:`LinkReplies`) and only turned into bytes while the link is writable, within
``reply_budget`` bytes per window: a peer that asks and never reads costs one entry per
shard, not a growing send queue. A Diff (or a single delta) longer than the chunk size goes as
:class:`~crdtsync.messages.DiffChunk` pieces (:class:`Transfer`), which the receiver joins
(:class:`Assembly`, up to ``max_diff_bytes``) before validating and applying the whole. Small
Diffs owed at the same time leave together as a :class:`~crdtsync.messages.DiffBatch` of up to
a chunk's size (not in a mesh with credentials, where each shard's Diff is checked alone): an
agent catching up thousands of small shards gets a few frames, not one per shard.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import CloseCode, ProtocolError
from ..messages import Diff, DiffBatch, DiffChunk, Digests

if TYPE_CHECKING:
    from ._context import Context
    from .guard import Guard
    from .links import Link

__all__ = [
    "Assembly",
    "LinkReplies",
    "Replies",
    "Transfer",
    "WASTE_PIECE_BYTES",
    "chunk_size",
    "receive_piece",
]


@dataclass(slots=True)
class Transfer:
    """An update being sent as DiffChunk pieces (the last one carries the state vector)."""

    id: int
    shard: str
    data: bytes
    state_vector: bytes | None
    piece: int
    total: int
    index: int = 0
    author: str | None = None  # the writer of a single big delta (on the last piece)

    @classmethod
    def start(
        cls,
        id: int,
        shard: str,
        data: bytes,
        state_vector: bytes | None,
        chunk: int,
        author: str | None = None,
    ) -> Transfer:
        extra = (len(state_vector) if state_vector else 0) + (len(author) if author else 0)
        piece = max(1, chunk - extra)
        total = max(1, -(-len(data) // piece))
        return cls(id, shard, data, state_vector, piece, total, author=author)

    def next_piece(self) -> tuple[DiffChunk, bool]:
        """The next piece to send, and whether it is the last."""
        data = self.data[self.index * self.piece : (self.index + 1) * self.piece]
        last = self.index == self.total - 1
        msg = DiffChunk(
            self.shard,
            self.id,
            self.index,
            self.total,
            data,
            self.state_vector if last else None,
            self.author if last else None,
        )
        self.index += 1
        return msg, last


@dataclass(slots=True)
class Assembly:
    """DiffChunk pieces received so far of one transfer."""

    transfer: int
    shard: str
    total: int
    parts: list[bytes]
    size: int
    last_at: float


@dataclass(slots=True)
class LinkReplies:
    """What one peer asked of us and has not got yet, and transfers to and from it."""

    #: shard -> (its state vector, whether to send ours): Diffs owed, coalesced per shard.
    replies: dict[str, tuple[bytes, bool]] = field(default_factory=dict)
    want_digests: bool = False  # it sent a Summary that differs: Digests owed
    digests_at: float = -math.inf  # when Digests last went to it (paced: see serve)
    #: Diffs came from it since our last Digests: its round made progress, so the Summary
    #: of the round it continues with is answered at once (not paced).
    progressed: bool = False
    #: Diffs that brought it something (not the empty update) since our last Digests. A peer
    #: that sorts first continues a cut round by asking (SyncRequest), not by sending: once
    #: it made us send a whole round's worth (max_sync_shards), its next Summary is answered
    #: at once too. One cheap SyncRequest does not buy that (issue #11's Summary flood).
    served: int = 0
    reply_bytes: int = 0  # replies sent to it in the current window
    sending: Transfer | None = None  # DiffChunk transfer under way to it
    receiving: Assembly | None = None  # DiffChunk transfer under way from it

    def pending(self) -> bool:
        """Whether replies wait for the next window."""
        return self.sending is not None or self.want_digests or bool(self.replies)


#: Bytes of an abandoned DiffChunk transfer that count as one wasted frame (Guard.wasted):
#: the 8 MiB a peer sends and never completes cost it 128 frames' worth of reading.
WASTE_PIECE_BYTES = 64 << 10


def chunk_size(chunk_bytes: int, max_frame: int) -> int:
    """Largest piece of an update in one frame: chunk_bytes, and half a frame at most."""
    return max(1, min(chunk_bytes, max_frame // 2))


def receive_piece(
    link: LinkReplies,
    msg: DiffChunk,
    now: float,
    max_diff_bytes: int,
    guard: Guard | None = None,
    peer: str = "",
) -> bytes | None:
    """Collect one DiffChunk piece; return the whole update once its last piece came.

    ``guard`` (with the sender's name ``peer``) holds the bytes of every unfinished transfer
    of every connection to its caps and timeout (:class:`~crdtsync.quotas.TransferCap`).

    Raises:
        ProtocolError: OVERSIZE, the transfer is larger than ``max_diff_bytes``, or the
            unfinished transfers of ``peer`` or of all peers would hold more than their cap.
    """
    asm = link.receiving
    if msg.index == 0:
        # A new transfer; one that was incomplete lost a piece and is abandoned (the repair
        # or round that asked for it asks again).
        if asm is not None and guard is not None:
            guard.finish_transfer(peer, asm.transfer)
            guard.wasted(peer, asm.size / WASTE_PIECE_BYTES)  # held and read for nothing
        asm = link.receiving = Assembly(msg.transfer, msg.shard, msg.total, [], 0, now)
    elif asm is None or (asm.transfer, asm.shard, asm.total) != (
        msg.transfer,
        msg.shard,
        msg.total,
    ):
        return None  # a piece of a transfer whose start we missed: wait for it to be resent
    elif msg.index != len(asm.parts):
        if msg.index > len(asm.parts):
            link.receiving = None  # a piece was lost
            if guard is not None:
                guard.finish_transfer(peer, asm.transfer)
                guard.wasted(peer, asm.size / WASTE_PIECE_BYTES)
        return None  # (or a duplicate)
    asm.size += len(msg.data)
    if asm.size > max_diff_bytes or msg.total > max_diff_bytes:
        link.receiving = None
        if guard is not None:
            guard.finish_transfer(peer, asm.transfer)
        raise ProtocolError(f"a Diff of more than {max_diff_bytes} bytes", CloseCode.OVERSIZE)
    if guard is not None:
        try:
            guard.add_piece(peer, asm.transfer, len(msg.data), now)
        except ProtocolError:
            link.receiving = None
            raise
    asm.parts.append(msg.data)
    asm.last_at = now
    if len(asm.parts) == asm.total:
        link.receiving = None
        if guard is not None:
            guard.finish_transfer(peer, asm.transfer)
        return b"".join(asm.parts)
    return None


class Replies:
    """Serves what peers asked for (Digests, Diffs, DiffChunk pieces, big deltas) within each
    window's reply budget (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._next_id = 0  # ids of DiffChunk transfers we start
        #: peer -> when its paced Digests may go (see :meth:`paced_deadline`): the one flush
        #: a peer owed paced Digests gets, instead of one every window until then.
        self.paced: dict[str, float] = {}
        #: Called when a serve() left nothing owed to a peer (anti-entropy then continues a
        #: round that was cut by max_sync_shards): set by the core.
        self.on_drained: Callable[[Link, float], None] = lambda conn, now: None

    def serve(self, conn: Link, now: float) -> None:
        """Send what ``conn`` asked for (Digests, Diffs, DiffChunk pieces, big deltas) within
        this window's :attr:`GossipConfig.reply_budget`.

        Replies are kept as requests (shard and state vector, coalesced per shard) and only
        turned into bytes here, while the link is writable: a peer that keeps asking without
        reading costs us one entry per shard, not a growing send queue. What does not fit
        waits for the next window (or for resume_writing).
        """
        if not conn.writable or conn.closing:
            return
        budget = self._ctx.config.reply_budget
        min_gap = self._ctx.config.anti_entropy_interval / 10
        guard = self._ctx.guard
        held: set[str] | None = None
        batch = _Batch(self._ctx.chunk if self._ctx.gate is None else 0)
        while conn.replies.reply_bytes < budget:
            if not guard.reply_room(conn.name, now):
                break  # all peers together are over the reply budget: a later window
            before = conn.replies.reply_bytes
            if not conn.replies.replies or conn.replies.sending is not None:
                self._send_batch(conn, batch)
            if conn.replies.sending is not None:
                conn.replies.reply_bytes += self._send_piece(conn)
            elif conn.replies.want_digests and (
                conn.replies.progressed
                or conn.replies.served >= self._ctx.config.max_sync_shards
                or now - conn.replies.digests_at >= min_gap
            ):
                # Paced: a peer sending Summaries back to back gets one Digests per gap
                # (issue #11: each 27-byte Summary made us list every shard), unless the last
                # round moved a round's worth of Diffs (a cut round continued: an agent
                # joining a big mesh), whichever side it asked them from.
                conn.replies.want_digests = False
                self.paced.pop(conn.name, None)
                conn.replies.progressed = False
                conn.replies.served = 0
                conn.replies.digests_at = now
                conn.rounds.whole_allowed = self._ctx.config.max_sync_shards
                shards = self._ctx.policy.sync_shards(conn.name, self._ctx.shard_names())
                digests = tuple((s, self._ctx.replicas.digest(s)) for s in shards)
                conn.replies.reply_bytes += 8 + sum(len(s) + len(d) + 4 for s, d in digests)
                self._ctx.send(conn.name, Digests(digests))
            elif conn.push.big:
                shard, update, author = conn.push.pop_big()
                self._start(conn, shard, update, None, author)
            elif conn.replies.replies:
                shard = next(iter(conn.replies.replies))
                their_sv, send_ours = conn.replies.replies.pop(shard)
                if held is None:
                    held = set(self._ctx.shard_names())
                if shard not in held:
                    continue
                update = self._ctx.replicas.diff(shard, their_sv)
                if update != _EMPTY_UPDATE:
                    conn.replies.served += 1
                ours = self._ctx.replicas.state_vector(shard) if send_ours else None
                size = len(update) + (len(ours) if ours else 0) + len(shard) + 8
                if size - len(shard) - 8 <= self._ctx.chunk:
                    conn.replies.reply_bytes += size
                    if not batch.add(Diff(shard, update, ours), size):
                        self._send_batch(conn, batch)
                        batch.add(Diff(shard, update, ours), size)
                else:
                    self._send_batch(conn, batch)
                    self._start(conn, shard, update, ours)
            else:
                self._send_batch(conn, batch)
                if conn.replies.want_digests:
                    # Digests owed but paced (see above): served at a later window, not lost.
                    self._pace(conn)
                    return
                self.on_drained(conn, now)
                return
            guard.replied(conn.name, conn.replies.reply_bytes - before)
        self._send_batch(conn, batch)
        if conn.replies.sending is not None or conn.push.big or conn.replies.replies:
            self._ctx.schedule_flush(now)  # the rest in the next window
        elif conn.replies.want_digests:
            if now - conn.replies.digests_at >= min_gap:
                self._ctx.schedule_flush(now)  # over the budget: the next window
            else:
                self._pace(conn)
        else:
            self.on_drained(conn, now)

    def _pace(self, conn: Link) -> None:
        """``conn`` is owed Digests that are paced: ask for the flush that will serve them,
        at the first window boundary where the gap since its last Digests has passed, not
        for one every window until then. Issue #11: a Summary flooder's paced Digests asked
        for a flush at every flush (every 2 ms on a LAN), and every Summary it sent asked
        again; now a peer owed Digests drives one flush per gap, however much it sends."""
        if conn.name in self.paced:
            return
        at = conn.replies.digests_at
        min_gap = self._ctx.config.anti_entropy_interval / 10
        due = at + min_gap
        w = self._ctx.window(due)
        while due - at < min_gap:  # (rounding) serve's test must pass at this very time
            due = math.nextafter(due, math.inf)
        if w > 0 and self._ctx.config.align_windows:
            # The boundary a flush every window would have served them at (the same
            # comparison as serve's, so that the flush finds them due).
            k = self._ctx.window_index(due)
            while k * w - at < min_gap:
                k += 1
            due = k * w
        self.paced[conn.name] = due

    def paced_deadline(self) -> float | None:
        """When the earliest paced Digests are due (None: none are paced)."""
        return min(self.paced.values()) if self.paced else None

    def take_due(self, now: float) -> float | None:
        """Forget the paced Digests due by ``now``; the earliest of their times (the core
        then flushes at once), or None if none is due."""
        due = [peer for peer, at in self.paced.items() if at <= now]
        if not due:
            return None
        first = min(self.paced[peer] for peer in due)
        for peer in due:
            del self.paced[peer]
        return first

    def _send_batch(self, conn: Link, batch: _Batch) -> None:
        """Send the Diffs gathered so far: one alone as a Diff, several as a DiffBatch."""
        if len(batch.diffs) == 1:
            self._ctx.send(conn.name, batch.diffs[0])
        elif batch.diffs:
            self._ctx.send(conn.name, DiffBatch(tuple(sorted(batch.diffs, key=_shard_of))))
        batch.diffs, batch.size = [], 0

    def _start(
        self,
        conn: Link,
        shard: str,
        update: bytes,
        state_vector: bytes | None,
        author: str | None = None,
    ) -> None:
        """Start sending ``update`` as DiffChunk pieces (the last one carries the state vector
        and, for a single delta, its writer)."""
        self._next_id += 1
        conn.replies.sending = Transfer.start(
            self._next_id, shard, update, state_vector, self._ctx.chunk, author
        )

    def _send_piece(self, conn: Link) -> int:
        t = conn.replies.sending
        assert t is not None
        msg, last = t.next_piece()
        self._ctx.send(conn.name, msg)
        if last:
            conn.replies.sending = None
        return len(msg.data) + len(t.shard) + 16


#: The empty Yjs update (no structs, no deletes): a Diff of it brought the peer nothing.
_EMPTY_UPDATE = b"\x00\x00"

#: Most Diffs in one DiffBatch.
_BATCH_DIFFS = 128


@dataclass(slots=True)
class _Batch:
    """Small Diffs waiting to leave together (at most ``limit`` bytes; 0: each alone)."""

    limit: int
    diffs: list[Diff] = field(default_factory=list)
    size: int = 0

    def add(self, diff: Diff, size: int) -> bool:
        """Take ``diff`` unless the batch is non-empty and would outgrow the limit (bytes, or
        _BATCH_DIFFS Diffs: a frame the receiver applies in one go should not stall it)."""
        if self.diffs and (self.size + size > self.limit or len(self.diffs) >= _BATCH_DIFFS):
            return False
        self.diffs.append(diff)
        self.size += size
        return True


def _shard_of(diff: Diff) -> str:
    return diff.shard
