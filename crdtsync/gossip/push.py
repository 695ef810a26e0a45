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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import CloseCode, InvalidShardName, InvalidUpdate, map_exceptions
from ..messages import Push, RelayedAck, ShardState
from . import _yjs
from .acks import WANT_ACK, WANTED_COMMITS, Acks
from .overlay import RELAY, TREE

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link
    from .repair import Repairs

__all__ = ["PushQueue", "Pushes"]

_INVALID_UPDATE: dict[type[Exception], CloseCode] = {InvalidUpdate: CloseCode.INVALID_UPDATE}
_INVALID_SHARD: dict[type[Exception], CloseCode] = {InvalidShardName: CloseCode.INVALID_SHARD}


@dataclass(slots=True)
class PushQueue:
    """The pushes waiting for one peer."""

    queue: dict[str, list[bytes]] = field(default_factory=dict)  # shard -> deltas, in order
    queued_bytes: int = 0
    dropped: int = 0  # deltas dropped for back-pressure, ever
    last_push_at: float = -math.inf
    resync: bool = False  # pushes were dropped: run anti-entropy once the link drains
    seq_out: dict[str, int] = field(default_factory=dict)  # last Push seq sent, per shard
    relay_shards: set[str] = field(default_factory=set)  # queued shards it relays (Push.relay)
    big: list[tuple[str, bytes]] = field(default_factory=list)  # deltas too big for one frame

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


class Pushes:
    """Pushes of one agent: queueing for the window, batching into Push messages, applying
    received ones and forwarding what they changed (see the module docstring).

    Args:
        ctx: the shared context.
        acks: told of the acks that ride on pushes. repairs: told of sequence numbers.
    """

    def __init__(self, ctx: Context, acks: Acks, repairs: Repairs) -> None:
        self._ctx = ctx
        self._acks = acks
        self._repairs = repairs
        #: A relay broadcast's state-vector hint (Push.hint) came: set by the core (relay.py).
        self.on_hint: Callable[[Link, str, bytes, float], None] = lambda conn, shard, hint, now: (
            None
        )
        #: A relay broadcast came (rotating relay; set by the core, relay.py: it may repeat
        #: it in ours).
        self.on_broadcast: Callable[[Link, str, tuple[bytes, ...], float], None] = (
            lambda conn, shard, updates, now: None
        )

    def local(self, shard: str, delta: bytes) -> None:
        """A delta made here: queue it for every peer that holds the shard."""
        for conn in self._ctx.links.values():
            if not conn.closing and self._ctx.policy.sends_to(conn.name, shard):
                self.enqueue(conn, shard, delta)

    def on_push(self, conn: Link, msg: Push, now: float) -> None:
        # Check everything before applying anything: the ack, and every update of a batch
        # (a single update is validated by ReplicaSet.apply itself, atomically).
        if msg.durable is not None:
            _yjs.check_state(*msg.durable)
        for r in msg.relayed:
            _yjs.check_state(r.state.state_vector, r.state.delete_set)
        if msg.hint is not None:
            _yjs.check_state(msg.hint, None)
        # The parse of a batch's updates is carried on to ReplicaSet.apply: each update is
        # parsed once on receipt (a single update is parsed there, atomically with its apply).
        infos: list[_yjs.UpdateInfo | None] = [None] * len(msg.updates)
        if len(msg.updates) > 1:
            for i, u in enumerate(msg.updates):
                with map_exceptions(_INVALID_UPDATE, "invalid update in Push: "):
                    infos[i] = _yjs.validate_update(u)
        # Every push in a tree, and in a flood, passes on what it changes; a writer's push to
        # the window's relay is passed on as it is (see Push.relay).
        forward = msg.forward or self._ctx.mode() == TREE
        accepted = self._ctx.policy.accepts(msg.shard)
        if accepted:
            news: list[bytes] = []
            for u, info in zip(msg.updates, infos, strict=True):
                delta = self.apply(conn, msg.shard, u, forward=forward and not msg.relay, info=info)
                if delta is not None:
                    news.append(delta)
            if msg.hint is not None and not forward and news:
                # A little redundancy against loss (rotating relay, relay.py): the next two
                # relays repeat in theirs what a broadcast brought them that was news (news
                # only: a delta is repeated once per relay that lacked it, never in a loop).
                self.on_broadcast(conn, msg.shard, tuple(news), now)
            if msg.relay:
                for other in self._ctx.links.values():
                    if (
                        other is not conn
                        and not other.closing
                        and self._ctx.policy.sends_to(other.name, msg.shard)
                    ):
                        for u in msg.updates:
                            self.enqueue(other, msg.shard, u)
        # Acks after the deltas: what they cover of this batch is no sign of a loss.
        if msg.durable is not None:
            self._acks.learn(
                conn.name,
                ShardState(msg.shard, *msg.durable, msg.durable_signature),
                conn,
                forward or msg.relay,
                now,
            )
        for r in msg.relayed:
            self._acks.learn(r.agent, r.state, conn, forward or msg.relay, now, r.hops)
        if not accepted:
            return  # partial replication: not held here (the sender's view is behind)
        conn.rounds.last_push_in = now
        if msg.updates == (WANT_ACK,):
            self._acks.owe_now(conn, msg.shard, now)
        if msg.hint is not None:
            self.on_hint(conn, msg.shard, msg.hint, now)
        # (rotating relay: a writer's batches are confirmed by the relay's hint instead)
        check_gap = msg.hint is None and not (msg.relay and self._ctx.mode() == RELAY)
        self._repairs.sequence(conn, msg.shard, msg.seq, check_gap, now)

    def apply(
        self,
        conn: Link,
        shard: str,
        update: bytes,
        *,
        forward: bool,
        info: _yjs.UpdateInfo | None = None,
    ) -> bytes | None:
        """Apply ``update`` from ``conn``; forward what changed our state as the overlay says.
        Returns that change (None: nothing new)."""
        with (
            map_exceptions(_INVALID_SHARD),
            map_exceptions(_INVALID_UPDATE, f"invalid update for {shard!r}: "),
        ):
            delta = self._ctx.replicas.apply(shard, update, conn.name, info)
        conn.interest.add(shard)
        conn.acks.wanted[shard] = WANTED_COMMITS  # it sent us the shard: it may wait on our ack
        if delta is None:
            return None
        # Forward what changed our state when asked to: in a tree every agent relays, in the
        # rotating relay the writer asks the window's relay. In a full mesh (and from a relay)
        # the origin reached everyone itself. Never back to where it came from.
        targets = self._ctx.policy.forward_to(conn.name, shard)
        if targets is not None:  # partial replication: the holders it did not reach itself
            for name in targets:
                other = self._ctx.links.get(name)
                if other is not None and other is not conn and not other.closing:
                    self.enqueue(other, shard, delta)
        elif forward:
            for other in self._ctx.links.values():
                if other is not conn and not other.closing:
                    self.enqueue(other, shard, delta)
        return delta

    def want_acks(self, shard: str, now: float) -> None:
        """Ask every peer holding ``shard`` for its ack (a Push of WANT_ACK, see acks.py): we
        wait in ``replicated()`` for changes we did not make, which it owes acks to their
        writer only."""
        for conn in self._ctx.links.values():
            if not conn.closing and shard in conn.interest:
                self.push(conn, shard, [WANT_ACK], now=now)

    def enqueue(self, conn: Link, shard: str, update: bytes) -> None:
        # Back-pressure ("dropped"): the peer is not keeping up; anti-entropy brings it up to
        # date once it drains, instead of our memory growing. "big": too big for one frame, it
        # goes as DiffChunk pieces, with the replies (in order).
        cfg = self._ctx.config
        if conn.push.add(shard, update, cfg.max_queue_bytes, self._ctx.chunk) != "queued":
            self._ctx.schedule_flush(self._ctx.now)
            return
        if (
            cfg.send_when_idle
            and conn.writable
            and conn.push.queued_bytes == len(update)
            and conn.push.last_push_at < self._ctx.window_start(self._ctx.now)
        ):
            # Idle link: nothing to batch with, so waiting for the boundary only adds latency.
            del conn.push.queue[shard]
            conn.push.queued_bytes = 0
            self.push(conn, shard, [update], now=self._ctx.now)
            return
        self._ctx.schedule_flush(self._ctx.now)

    def push(
        self,
        conn: Link,
        shard: str,
        queued: list[bytes],
        *,
        now: float,
        forward: bool | None = None,
        hint: bytes | None = None,
        relayed: tuple[RelayedAck, ...] = (),
        durable: tuple[bytes, bytes] | None = None,
        relay: bool = False,
    ) -> None:
        """Send ``queued`` deltas of ``shard`` to ``conn`` as Pushes of at most max_batch_bytes
        (and half a frame), with our ack of the shard (``durable``, or else the one pending for
        ``conn``), ``relayed`` acks and ``hint`` riding on the last one. ``forward`` None:
        as the overlay says (a tree relays everything)."""
        if forward is None:
            forward = self._ctx.mode() == TREE
        limit = min(self._ctx.config.max_batch_bytes, self._ctx.chunk)
        batch: list[bytes] = []
        size = 0
        for u in queued:
            if batch and size + len(u) > limit:
                self._ctx.send(
                    conn.name,
                    Push(
                        shard,
                        tuple(batch),
                        None,
                        conn.push.next_seq(shard),
                        forward=forward,
                        relay=relay,
                    ),
                )
                batch, size = [], 0
            batch.append(u)
            size += len(u)
        if durable is None:
            ack = conn.acks.take_pending(shard)
            if ack is not None:
                durable = (ack.state_vector, ack.delete_set)
        seq = conn.push.next_seq(shard)
        self._ctx.send(
            conn.name,
            Push(shard, tuple(batch), durable, seq, relayed, forward, hint, relay),
        )
        conn.push.last_push_at = now
