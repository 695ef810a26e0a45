"""Replies and big updates: the per-window reply budget and DiffChunk transfers.

Digests and Diffs answer a peer's requests. They are kept as requests (coalesced per shard,
:class:`LinkReplies`) and only turned into bytes while the link is writable, within
``reply_budget`` bytes per window: a peer that asks and never reads costs one entry per
shard, not a growing send queue. A Diff (or a single delta) longer than the chunk size goes as
:class:`~crdtsync.messages.DiffChunk` pieces (:class:`Transfer`), which the receiver joins
(:class:`Assembly`, up to ``max_diff_bytes``) before validating and applying the whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CloseCode, ProtocolError
from ..messages import DiffChunk

__all__ = ["Transfer", "Assembly", "LinkReplies", "chunk_size", "receive_piece"]


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

    @classmethod
    def start(
        cls, id: int, shard: str, data: bytes, state_vector: bytes | None, chunk: int
    ) -> Transfer:
        piece = max(1, chunk - (len(state_vector) if state_vector else 0))
        total = max(1, -(-len(data) // piece))
        return cls(id, shard, data, state_vector, piece, total)

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
    reply_bytes: int = 0  # replies sent to it in the current window
    sending: Transfer | None = None  # DiffChunk transfer under way to it
    receiving: Assembly | None = None  # DiffChunk transfer under way from it

    def pending(self) -> bool:
        """Whether replies wait for the next window."""
        return self.sending is not None or self.want_digests or bool(self.replies)


def chunk_size(chunk_bytes: int, max_frame: int) -> int:
    """Largest piece of an update in one frame: chunk_bytes, and half a frame at most."""
    return max(1, min(chunk_bytes, max_frame // 2))


def receive_piece(
    link: LinkReplies, msg: DiffChunk, now: float, max_diff_bytes: int
) -> bytes | None:
    """Collect one DiffChunk piece; return the whole update once its last piece came.

    Raises:
        ProtocolError: OVERSIZE, the transfer is larger than ``max_diff_bytes``.
    """
    asm = link.receiving
    if msg.index == 0:
        # A new transfer; one that was incomplete lost a piece and is abandoned (the repair
        # or round that asked for it asks again).
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
        return None  # (or a duplicate)
    asm.size += len(msg.data)
    if asm.size > max_diff_bytes or msg.total > max_diff_bytes:
        link.receiving = None
        raise ProtocolError(
            f"a Diff of more than {max_diff_bytes} bytes", CloseCode.OVERSIZE
        )
    asm.parts.append(msg.data)
    asm.last_at = now
    if len(asm.parts) == asm.total:
        link.receiving = None
        return b"".join(asm.parts)
    return None
