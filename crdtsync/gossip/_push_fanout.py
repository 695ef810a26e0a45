"""Fanout links of pushes: one shared queue broadcast per shard and batch, and broadcasts received.

*Fanout links* (:attr:`~crdtsync.gossip.links.Link.fanout`, set by a driver whose medium fans
out, such as an MQTT broker with a topic per shard) share one queue (``Pushes.fanout``),
flushed as one Push per shard and batch for all of them, numbered per origin and shard; a
broadcast Push carries deltas only (acks go as one broadcast Ack, :mod:`~crdtsync.gossip.acks`).
What arrives that way (:meth:`_PushFanout.on_broadcast`) is applied and passed on to the links
that are not fanout links, never broadcast again.

A mixin of :class:`~crdtsync.gossip.push.Pushes` (:class:`_PushFanout`), split from
:mod:`crdtsync.gossip.push` so the per-link send side (queues, windows, batching) and the
broadcast side each read in one module of a few hundred lines; the state is the ``Pushes``
instance's (set in its ``__init__``). :func:`_authors` is shared by both sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import (
    CloseCode,
    InvalidShardName,
    InvalidUpdate,
    ProtocolError,
)
from ..messages import Push
from . import _yjs
from ._push_receive import _refused
from .acks import WANT_ACK, Acks

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link
    from .push import PushQueue
    from .repair import Repairs

__all__: list[str] = []

#: Seconds between two WANT_ACKs a bridge broadcasts for one link and shard (bridge_ask). The
#: tree's half second (Acks.ask_on) made a writer on websockets that waits after each write
#: wait a second for its next ask when it wrote twice within half a second (h-hubfwd).
BRIDGE_ASK_EVERY = 0.1


class _PushFanout:
    """Mixin of :class:`~crdtsync.gossip.push.Pushes`: the fanout links (module docstring).

    The attributes declared below belong to ``Pushes`` (set in its ``__init__``).
    """

    _ctx: Context
    _acks: Acks
    _repairs: Repairs
    fanout: PushQueue
    _fanned: dict[int, bytes]
    _bridge_asks: dict[tuple[str, str], float]

    if TYPE_CHECKING:  # the per-link send side's (push.py); declared for the type checker only

        def enqueue(
            self, conn: Link, shard: str, update: bytes, author: str | None = None
        ) -> None: ...

        def has_fanout(self, shard: str) -> bool: ...

        def push(
            self,
            conn: Link,
            shard: str,
            queued: list[bytes],
            *,
            now: float,
            authors: list[str | None] | None = None,
        ) -> None: ...

    def bridge_ask(self, conn: Link, shard: str, asker: str, now: float) -> None:
        """A bridge (an agent on websockets and a broker, h-hubfwd): a WANT_ACK of ``shard``
        from ``asker`` on the link ``conn`` (not a broadcast link) is broadcast too, so the
        broker's agents answer with their broadcast Acks, which
        :meth:`~crdtsync.gossip.acks.Acks.on_broadcast_ack` relays back to ``conn``: the
        asker's ``replicated()`` counts the agents past the bridge. At most once per link and
        shard and :data:`BRIDGE_ASK_EVERY`: each ask costs every agent on the medium a
        broadcast Ack (as an ask of a broker agent does; an asker repeats it every second
        while it waits, and a writer waiting after each write asks after each)."""
        if conn.fanout or not self.has_fanout(shard):  # (has_fanout: push.py's)
            return
        key = (shard, conn.name)
        last = self._bridge_asks.get(key)
        if last is not None and now < last + BRIDGE_ASK_EVERY:
            return
        if len(self._bridge_asks) > 1024:  # (they only space the repeats)
            self._bridge_asks = {
                k: t for k, t in self._bridge_asks.items() if now < t + BRIDGE_ASK_EVERY
            }
        self._bridge_asks[key] = now
        self._fanned.pop(id(WANT_ACK), None)  # (as want_acks: each ask goes)
        self.enqueue_fanout(shard, WANT_ACK, asker)

    def _bridge_answer(self, conn: Link, shard: str, now: float) -> None:
        """A bridge: the broadcast WANT_ACK of the agent of fanout link ``conn`` also gets it
        the acks of our other links' agents (Acks.bridge_asked), and goes on to those links
        (once per shard and half a second), so that they ack us what they hold."""
        others = [
            c
            for c in self._ctx.links.values()
            if not c.fanout and not c.closing and shard in c.interest
        ]
        if not others:
            return
        self._acks.bridge_asked(conn, shard, now)
        if self._acks.ask_on(shard, conn.name + "\x00broker", now):
            for c in others:
                self.push(c, shard, [WANT_ACK], now=now, authors=[conn.name])

    def enqueue_fanout(self, shard: str, update: bytes, author: str | None = None) -> None:
        """Queue ``update`` once for every fanout link; broadcast at once if the medium was idle
        this window (nothing to batch with), else at the window boundary. ``author``: the
        agent that wrote it (carried in the broadcast Push, so that receivers' change records
        name their writer, as on a link), None if unknown."""
        if id(update) in self._fanned:
            return
        self._fanned[id(update)] = update
        now = self._ctx.now
        q = self.fanout
        if q.queued_bytes + len(update) > self._ctx.config.max_queue_bytes:
            # Back-pressure, as for one link: the medium is not taking our broadcasts; drop
            # them and bring every fanout link up to date by anti-entropy once it drains.
            q.dropped += sum(len(u) for u in q.queue.values()) + 1
            q.queue.clear()
            q.authors.clear()
            q.queued_bytes = 0
            for conn in self._ctx.links.values():
                if conn.fanout:
                    conn.push.resync = True
            self._ctx.schedule_flush(now)
            return
        idle = not q.queue and q.last_push_at < self._ctx.window_start(now)
        q.queue.setdefault(shard, []).append(update)
        q.authors.setdefault(shard, []).append(author)
        q.queued_bytes += len(update)
        if idle and self._fanout_writable():
            self.flush_fanout(now, boundary=False)
        else:
            self._ctx.schedule_flush(now)

    def _fanout_writable(self) -> bool:
        """Whether the driver takes broadcasts (it pauses every fanout link at once)."""
        return all(c.writable for c in self._ctx.links.values() if c.fanout)

    def flush_fanout(self, now: float, *, boundary: bool = True) -> None:
        """Broadcast the shared queue: one Push per shard and batch (at most max_batch_bytes
        and half a frame), numbered per shard. At a window ``boundary`` the record of what was
        fanned out in the window is dropped too."""
        if boundary:
            self._fanned.clear()
        if not self.fanout.queue or not self._fanout_writable():
            return  # (paused: held, up to max_queue_bytes; resume_writing flushes)
        limit = min(self._ctx.config.max_batch_bytes, self._ctx.chunk)
        for shard, queued in self.fanout.queue.items():
            authors = self.fanout.authors.get(shard) or [None] * len(queued)
            batch: list[bytes] = []
            writers: list[str | None] = []
            size = 0
            for u, author in zip(queued, authors, strict=True):
                if batch and size + len(u) > limit:
                    self._broadcast_push(shard, batch, writers)
                    batch, writers, size = [], [], 0
                batch.append(u)
                writers.append(author)
                size += len(u)
            self._broadcast_push(shard, batch, writers)
        self.fanout.queue.clear()
        self.fanout.authors.clear()
        self.fanout.queued_bytes = 0
        self.fanout.last_push_at = now

    def _broadcast_push(self, shard: str, batch: list[bytes], writers: list[str | None]) -> None:
        seq = self.fanout.next_seq(shard)
        self._ctx.broadcast(Push(shard, tuple(batch), None, seq, authors=_authors(writers)))

    def on_broadcast(self, sender: str, conn: Link | None, msg: Push, now: float) -> None:
        """A broadcast Push from ``sender`` (``conn``: our link with it, if any): apply it, pass
        what it changed on to the links that are not fanout links, and check its sequence
        number (per sender and shard).

        Raises:
            ProtocolError: it carries more than deltas (acks, hints, relay flags), or an
                update is invalid; nothing of it was applied.
        """
        infos = self.broadcast_infos(msg, now)
        if infos is None:
            return
        policy = self._ctx.policy
        for i, (u, info) in enumerate(zip(msg.updates, infos, strict=True)):
            if u == WANT_ACK:  # the sender waits in replicated(): one broadcast Ack answers
                self._acks.owe_broadcast(msg.shard, now)
                if conn is not None and not policy.partial:
                    self._bridge_answer(conn, msg.shard, now)
                continue
            # (no map_exceptions here: two generator context managers and an f-string per
            # received update were ~5 % of a swarm process at N = 128; see _refused)
            try:
                delta = self._ctx.replicas.apply(msg.shard, u, sender, info, author=msg.author(i))
            except (InvalidUpdate, InvalidShardName) as exc:
                raise _refused(exc, msg.shard) from exc
            if delta is None:
                continue
            for other in self._ctx.links.values():
                if (
                    not other.fanout
                    and not other.closing
                    and policy.sends_to(other.name, msg.shard)
                ):
                    self.enqueue(other, msg.shard, delta, msg.author(i))
        self.broadcast_applied(sender, conn, msg, now)

    def broadcast_infos(
        self, msg: Push, now: float, *, every: bool = False
    ) -> list[_yjs.UpdateInfo | None] | None:
        """The checks of a broadcast Push before anything of it is applied: the parse of each
        update (validated here when the Push has several, or with ``every``; None for a
        WANT_ACK with ``every``), or None when our policy does not hold its shard.

        Raises:
            ProtocolError: it carries more than deltas, or an update is invalid.
        """
        if msg.durable is not None or msg.relayed or msg.hint is not None or msg.relay:
            raise ProtocolError("a broadcast Push carries deltas only", CloseCode.MALFORMED_FRAME)
        infos: list[_yjs.UpdateInfo | None] = [None] * len(msg.updates)
        if every or len(msg.updates) > 1:
            for i, u in enumerate(msg.updates):
                if every and u == WANT_ACK:
                    continue
                try:  # (as map_exceptions({InvalidUpdate: ...}) would, without its generator)
                    infos[i] = _yjs.validate_update(u)
                except InvalidUpdate as exc:
                    raise ProtocolError(
                        f"invalid update in Push: {exc}", CloseCode.INVALID_UPDATE
                    ) from exc
        self._ctx.broadcast_in_at = now
        if not self._ctx.policy.accepts(msg.shard):
            return None
        return infos

    def broadcast_applied(self, sender: str, conn: Link | None, msg: Push, now: float) -> None:
        """After a broadcast Push's updates were applied: note the shard's interest on our
        link with ``sender`` and check the Push's sequence number (a gap asks a repair)."""
        if conn is not None:
            conn.interest.add(msg.shard)
            conn.rounds.last_push_in = now
        self._repairs.broadcast_sequence(sender, conn, msg.shard, msg.seq, now)


def _authors(writers: list[str | None]) -> tuple[str | None, ...]:
    """Push.authors for a batch: empty when no writer is known (nothing on the wire)."""
    return tuple(writers) if any(w is not None for w in writers) else ()
