"""Push queues: deltas waiting for the next batching window, per link and shard.

Queues are flushed once per window as one Push per peer and shard, so the number of messages
grows with the number of busy links, not with the write rate. Pushes carry a sequence number
per link and shard (a gap shows the receiver a lost one). Beyond ``max_queue_bytes`` queued
for one peer (a slow or paused link) everything queued is dropped and replaced by an
anti-entropy round once the link drains (*back-pressure*): memory stays bounded and the peer
still converges.

*Fanout links* (:attr:`~crdtsync.gossip.links.Link.fanout`, set by a driver whose medium fans
out, such as an MQTT broker with a topic per shard): what would be queued for any of them goes
to one shared queue instead, flushed as one Push per shard and batch for all of them
(:meth:`GossipCore.broadcasts_to_send`), numbered per origin and shard rather than per link,
with no ack riding on it (acks go as one broadcast Ack, :mod:`~crdtsync.gossip.acks`). It
leaves at once when no broadcast went out in the current window, else at the boundary. What
arrives that way (:meth:`Pushes.on_broadcast`) is never broadcast again; what arrives on any
other link is (an agent on both websockets and a broker bridges them). Without fanout links
nothing here changes what is sent.

This module is the per-link send side; the fanout links' shared queue and the broadcasts
received are the mixin :mod:`~crdtsync.gossip._push_fanout`, and what a received Push goes
through (checks, quotas, apply) the mixin :mod:`~crdtsync.gossip._push_receive`, both bases
of :class:`Pushes` (the receive side's passing on, its base :mod:`~crdtsync.gossip._push_forward`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..messages import Push, RelayedAck
from ._push_fanout import _authors, _PushFanout
from ._push_receive import _PushReceive
from .acks import WANT_ACK, Acks
from .coalesce import Coalescer
from .overlay import FULL, TREE

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link
    from .repair import Repairs

__all__ = ["PushQueue", "Pushes"]


@dataclass(slots=True)
class PushQueue:
    """The pushes waiting for one peer."""

    queue: dict[str, list[bytes]] = field(default_factory=dict)  # shard -> deltas, in order
    #: shard -> the writer of each queued delta (parallel to ``queue``), None if unknown.
    authors: dict[str, list[str | None]] = field(default_factory=dict)
    queued_bytes: int = 0
    dropped: int = 0  # deltas dropped for back-pressure, ever
    last_push_at: float = -math.inf
    resync: bool = False  # pushes were dropped: run anti-entropy once the link drains
    seq_out: dict[str, int] = field(default_factory=dict)  # last Push seq sent, per shard
    relay_shards: set[str] = field(default_factory=set)  # queued shards it relays (Push.relay)
    #: deltas too big for one frame: (shard, delta, its writer)
    big: list[tuple[str, bytes, str | None]] = field(default_factory=list)

    def add(
        self, shard: str, update: bytes, max_bytes: int, chunk: int, author: str | None = None
    ) -> str:
        """Queue ``update`` (written by ``author``, None if unknown); return "dropped"
        (back-pressure: everything queued was dropped, resync owed), "big" (it goes as
        DiffChunk pieces) or "queued"."""
        if self.queued_bytes + len(update) > max_bytes:
            self.dropped += sum(len(q) for q in self.queue.values()) + len(self.big) + 1
            self.queue.clear()
            self.authors.clear()
            self.big.clear()
            self.relay_shards.clear()
            self.queued_bytes = 0
            self.resync = True
            return "dropped"
        self.queued_bytes += len(update)
        if len(update) > chunk:
            self.big.append((shard, update, author))
            return "big"
        self.queue.setdefault(shard, []).append(update)
        self.authors.setdefault(shard, []).append(author)
        return "queued"

    def next_seq(self, shard: str) -> int:
        """The sequence number of the next Push of ``shard`` on this link."""
        seq = self.seq_out[shard] = self.seq_out.get(shard, 0) + 1
        return seq

    def drained(self) -> None:
        """The queue went out at a window boundary (big deltas wait for the reply budget)."""
        self.queue.clear()
        self.authors.clear()
        self.relay_shards.clear()
        self.queued_bytes = sum(len(u) for _, u, _ in self.big)

    def take(self, shard: str) -> tuple[list[bytes], list[str | None]]:
        """Remove and return the deltas queued for ``shard`` and their writers."""
        return self.queue.pop(shard), self.authors.pop(shard)

    def pop_big(self) -> tuple[str, bytes, str | None]:
        """The oldest delta too big for one frame: (shard, delta, its writer)."""
        shard, update, author = self.big.pop(0)
        self.queued_bytes -= len(update)
        return shard, update, author


class Pushes(_PushReceive, _PushFanout):
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
        #: A numbered Push of a shard went to a link, with its updates: set by the core (the
        #: tail check, _tail_check.py).
        self.on_pushed: Callable[[Link, str, float, tuple[bytes, ...]], None] = (
            lambda conn, shard, now, updates: None
        )
        #: The shared queue of the fanout links (its seq_out numbers broadcasts per shard).
        self.fanout = PushQueue()
        #: Deltas broadcast or queued since the last window boundary, by id (held, so an id is
        #: not reused): one delta queued for several fanout links goes once.
        self._fanned: dict[int, bytes] = {}
        #: A fanout link was ever accepted (a cheap test before looking for one).
        self.any_fanout = False
        #: (shard, link) -> when a WANT_ACK from that link was last broadcast (a bridge:
        #: _push_fanout.py, bridge_ask).
        self._bridge_asks: dict[tuple[str, str], float] = {}
        #: Local writes of a stream wait here for the end of their window (LAN configs), or
        #: for the window's flush (aligned windows, in a full mesh: coalesce.py).
        cfg = ctx.config
        lan = cfg.send_when_idle and not cfg.align_windows
        aligned = cfg.align_windows and not cfg.send_when_idle and cfg.push_interval > 0
        self.coalescer = Coalescer(cfg.push_interval if lan else 0.0, aligned=aligned)

        #: Rotating relay under the hub term: the hub a writer's batch that reached us after
        #: our turn ended goes on to (None: passed on to everyone; relay.Relay.hand_on).
        self.hand_on: Callable[[float], str | None] = lambda now: None
        #: A relay broadcast came (rotating relay; set by the core, relay.py: it may repeat
        #: it in ours).
        self.on_relay_news: Callable[
            [Link, str, tuple[bytes, ...], float, tuple[str | None, ...]], None
        ] = lambda conn, shard, updates, now, authors: None
        #: A relay broadcast came, every update of it (and what of it was news to us): under
        #: the hub term, a hub keeps what the last hub's broadcasts brought to repeat it
        #: (relay.Relay.hub_inherit, _relay_hub.py).
        self.on_hub_broadcast: Callable[
            [Link, str, tuple[bytes, ...], list[bytes], float, tuple[str | None, ...]], None
        ] = lambda conn, shard, updates, news, now, authors: None

    def has_fanout(self, shard: str) -> bool:
        """Whether a fanout link holds ``shard``."""
        if not self.any_fanout:
            return False
        policy = self._ctx.policy
        return any(
            c.fanout and not c.closing and policy.sends_to(c.name, shard)
            for c in self._ctx.links.values()
        )

    def local(self, shard: str, deltas: Sequence[bytes], now: float) -> None:
        """Deltas made here (handed over together): queue them, merged, for every peer that
        holds the shard, at once or at the end of the coalescing window
        (:mod:`~crdtsync.gossip.coalesce`)."""
        held = self.coalescer
        if held.aligned and not self.any_fanout and self._ctx.mode() in (FULL, TREE):
            # Aligned windows: held to the window's flush, merged there (coalesce.py). A
            # shard's first write of the window asks for the flush; one no link takes is
            # not held (nothing would be queued for it: as before, no flush either). A
            # fanout medium (a broker) sends a window's first write at once: not held. In a
            # tree too (h-fans): the merged update is queued at the flush, after what the
            # window forwarded (one Push per link all the same). The rotating relay holds
            # its own writes itself and merges them at the boundary (relay.py).
            if shard not in held.held:
                if not self._wanted(shard):
                    return
                self._ctx.schedule_flush(now)
            held.hold_aligned(shard, deltas)
            return
        if held.hold(shard, deltas, now) and self._ctx.links:
            # (no link, no merge: an agent whose only clients are Yjs-door clients)
            self._send_local(shard, self.merged(shard, deltas), now)

    def _wanted(self, shard: str) -> bool:
        """Whether a link would queue a local write of ``shard`` now, in a full mesh or a
        tree (see _send_local)."""
        ctx = self._ctx
        return any(not c.closing and ctx.policy.sends_to(c.name, shard) for c in ctx.links.values())

    def flush_local(self, now: float) -> None:
        """The coalescing window ended (or the driver closes): the held deltas go, one
        merged update per shard. Aligned windows: queued for the flush under way (the
        caller's), with the rest of the window."""
        aligned = self.coalescer.aligned
        for shard, deltas in self.coalescer.take(now).items():
            if self._ctx.links:
                self._send_local(shard, self.merged(shard, deltas), now, window_end=not aligned)

    def merged(self, shard: str, deltas: Sequence[bytes]) -> list[bytes]:
        """``deltas`` as one update (the ReplicaSet's optional ``merge``), else as they are
        (also when ``merge`` returns None: it would cost more than it saves)."""
        merge = getattr(self._ctx.replicas, "merge", None)
        if len(deltas) > 1 and merge is not None:
            one = merge(shard, deltas)
            if one is not None:
                return [one]
        return list(deltas)

    def _send_local(
        self, shard: str, deltas: list[bytes], now: float, *, window_end: bool = False
    ) -> None:
        ctx = self._ctx
        name, chunk = ctx.name, ctx.chunk
        # Worked out once for every link, not per link (issue 17/18: a write's Pushes to its
        # peers were most of its cost at the writer): enqueue's idle-link test and the Push.
        idle_before = ctx.window_start(ctx.now) if ctx.config.send_when_idle else None
        forward = ctx.mode() == TREE
        skip = ctx.shortcuts()[1] if forward else frozenset()  # a top agent's (tree_writer_top)
        hub = None if forward else ctx.client_hub()  # (a client: it passes our writes on)
        for conn in ctx.links.values():
            if conn.closing or not ctx.policy.sends_to(conn.name, shard) or conn.name in skip:
                continue
            if len(deltas) == 1 and not window_end and self._idle(conn, deltas[0], idle_before):
                self._push_one(conn, shard, deltas[0], name, forward or conn.name == hub)
                continue
            if (
                window_end
                and conn.writable
                and not conn.fanout
                and not conn.push.queue
                and all(len(d) <= chunk for d in deltas)
            ):
                # The window's end: local writes went at most once a window, and nothing else
                # waits on this link, so the held deltas need not wait for another one.
                self.push(conn, shard, deltas, now=now, authors=[name] * len(deltas))
                continue
            for delta in deltas:
                self.enqueue(conn, shard, delta, name)

    def want_acks(self, shard: str, now: float) -> None:
        """Ask every peer holding ``shard`` for its ack (a Push of WANT_ACK, see acks.py): we
        wait in ``replicated()`` for changes we did not make, which it owes acks to their
        writer only."""
        for conn in self._ctx.links.values():
            if not conn.closing and shard in conn.interest and not conn.fanout:
                self.push(conn, shard, [WANT_ACK], now=now, authors=[self._ctx.name])
        if self.any_fanout:  # one broadcast asks every agent on the medium, link or not
            # Each ask goes: the record of what was fanned out is only dropped at a window
            # boundary, which an idle writer (waiting here) may not reach for a long time.
            self._fanned.pop(id(WANT_ACK), None)
            self.enqueue_fanout(shard, WANT_ACK, self._ctx.name)

    def enqueue(
        self, conn: Link, shard: str, update: bytes, author: str | None = None, hold: bool = False
    ) -> None:
        """Queue ``update`` of ``shard`` for ``conn``; ``author``: the agent that wrote it
        (this agent for its own deltas), None if unknown. ``hold``: queued even on an idle
        link (a tree's relay passing a batch on: its updates leave together at the flush the
        caller asks for, not the first alone; GossipConfig.tree_relay_wait)."""
        # Back-pressure ("dropped"): the peer is not keeping up; anti-entropy brings it up to
        # date once it drains, instead of our memory growing. "big": too big for one frame, it
        # goes as DiffChunk pieces, with the replies (in order).
        if conn.fanout:
            self.enqueue_fanout(shard, update, author)
            return
        cfg = self._ctx.config
        idle_before = self._ctx.window_start(self._ctx.now) if cfg.send_when_idle else None
        if not hold and self._idle(conn, update, idle_before):
            self._push_one(conn, shard, update, author, self.asks_forward(conn))
            return
        if conn.push.add(shard, update, cfg.max_queue_bytes, self._ctx.chunk, author) != "queued":
            self._ctx.schedule_flush(self._ctx.now)
            return
        if (
            cfg.send_when_idle
            and not hold
            and conn.writable
            and conn.push.queued_bytes == len(update)
            and conn.push.last_push_at < self._ctx.window_start(self._ctx.now)
        ):
            # Idle link: nothing to batch with, so waiting for the boundary only adds latency.
            conn.push.take(shard)
            conn.push.queued_bytes = 0
            self.push(conn, shard, [update], now=self._ctx.now, authors=[author])
            return
        self._ctx.schedule_flush(self._ctx.now)

    def _idle(self, conn: Link, update: bytes, idle_before: float | None) -> bool:
        """Whether ``update`` goes to ``conn`` at once: ``send_when_idle`` (``idle_before``:
        the start of the current window, None without it), the link writable, nothing queued
        on it and nothing pushed this window, and the update fits one Push. The same case as
        queueing it and finding it alone on an idle link (see enqueue), decided before
        queueing, so it is not queued and taken back."""
        out = conn.push
        return (
            idle_before is not None
            and not conn.fanout
            and conn.writable
            and out.queued_bytes == 0
            and not out.queue
            and not out.big
            and len(update) <= self._ctx.chunk
            and len(update) <= self._ctx.config.max_queue_bytes
            and out.last_push_at < idle_before
        )

    def asks_forward(self, conn: Link) -> bool:
        """Whether our Pushes to ``conn`` ask it to pass them on (``Push.forward``): in a
        tree, always; in a full mesh, if we do not listen and ``conn`` is our hub
        (:meth:`~crdtsync.gossip._context.Context.client_hub`)."""
        ctx = self._ctx
        return ctx.mode() == TREE or conn.name == ctx.client_hub()

    def _push_one(
        self, conn: Link, shard: str, update: bytes, author: str | None, forward: bool
    ) -> None:
        """:meth:`push` of one update that fits a Push, with the ack pending for ``conn``:
        the same message, without push's batching (``forward``: as push works it out)."""
        durable = None
        ack = conn.acks.take_pending(shard)
        if ack is not None:
            ack = self._acks.on_wire(conn, ack)
            durable = (ack.state_vector, ack.delete_set)
        out = conn.push
        self._ctx.send(
            conn.name,
            Push(
                shard,
                (update,),
                durable,
                out.next_seq(shard),
                (),
                forward,
                None,
                False,
                authors=() if author is None else (author,),
            ),
        )
        out.last_push_at = self._ctx.now
        self.on_pushed(conn, shard, self._ctx.now, (update,))

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
        authors: list[str | None] | None = None,
    ) -> None:
        """Send ``queued`` deltas of ``shard`` to ``conn`` as Pushes of at most max_batch_bytes
        (and half a frame), with our ack of the shard (``durable``, or else the one pending for
        ``conn``), ``relayed`` acks and ``hint`` riding on the last one. ``forward`` None:
        as the overlay says (a tree relays everything). ``authors``: the writer of each delta
        (parallel to ``queued``; None: unknown)."""
        if forward is None:
            forward = self.asks_forward(conn)
        if authors is None or len(authors) != len(queued):
            authors = [None] * len(queued)
        limit = min(self._ctx.config.max_batch_bytes, self._ctx.chunk)
        batch: list[bytes] = []
        writers: list[str | None] = []
        size = 0
        for u, author in zip(queued, authors, strict=True):
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
                        authors=_authors(writers),
                    ),
                )
                batch, writers, size = [], [], 0
            batch.append(u)
            writers.append(author)
            size += len(u)
        if durable is None:
            ack = conn.acks.take_pending(shard)
            if ack is not None:
                ack = self._acks.on_wire(conn, ack)
                durable = (ack.state_vector, ack.delete_set)
        seq = conn.push.next_seq(shard)
        last = tuple(batch)
        self._ctx.send(
            conn.name,
            Push(
                shard,
                last,
                durable,
                seq,
                relayed,
                forward,
                hint,
                relay,
                authors=_authors(writers),
            ),
        )
        conn.push.last_push_at = now
        self.on_pushed(conn, shard, now, last)
