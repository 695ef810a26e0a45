"""The receive path of pushes: check a received Push, apply it, hand on what it changed.

Everything of a Push is checked before anything is applied (its ack, hint, relayed acks and, in
a batch, every update), so a refused message changes nothing. Applying goes through the
quotas of :mod:`~crdtsync.gossip.guard` (a new shard is charged to the peer that caused it,
and comes into being only once its first update validated); what changed our state is passed
on by :mod:`~crdtsync.gossip._push_forward` (the base of this mixin) where the overlay (or a
partial :class:`~crdtsync.gossip.policy.ReplicationPolicy`) wants it, never back to where it
came from. Anti-entropy's Diffs are applied here too (:meth:`_PushReceive.apply`,
``solicited``).

A mixin of :class:`~crdtsync.gossip.push.Pushes` (:class:`_PushReceive`), split from
:mod:`crdtsync.gossip.push` so the send side (queues, windows, batching, fanout) and the
receive side each read in one module; the state is the ``Pushes`` instance's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from ..errors import (
    CloseCode,
    InvalidShardName,
    InvalidUpdate,
    ProtocolError,
    UpdateOverLimit,
)
from ..messages import Push, ShardState
from ..names import validate_shard_name
from . import _yjs
from ._push_forward import _PushForward
from .acks import WANT_ACK, Acks, _given
from .overlay import RELAY, TREE

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link
    from .repair import Repairs

__all__: list[str] = []


def _refused(exc: InvalidUpdate | InvalidShardName, shard: str) -> ProtocolError:
    """The ProtocolError for a remote update of ``shard`` that a replica refused (INVALID_UPDATE,
    an UpdateOverLimit included: callers tell it by the cause) or for its bad shard name
    (INVALID_SHARD); the caller raises it ``from exc``. Called from an ``except`` clause, so
    the path that applies costs nothing for it; ``map_exceptions`` would cost two generator
    context managers and an f-string per received update (~5 % of a swarm process at
    N = 128, issue 14)."""
    if isinstance(exc, InvalidShardName):
        return ProtocolError(str(exc), CloseCode.INVALID_SHARD)
    return ProtocolError(f"invalid update for {shard!r}: {exc}", CloseCode.INVALID_UPDATE)


class _PushReceive(_PushForward):
    """Mixin of :class:`~crdtsync.gossip.push.Pushes`: received pushes (module docstring).

    The attributes declared below belong to ``Pushes`` (set in its ``__init__``).
    """

    _ctx: Context
    _acks: Acks
    _repairs: Repairs
    on_hint: Callable[[Link, str, bytes, float], None]
    on_relay_news: Callable[[Link, str, tuple[bytes, ...], float, tuple[str | None, ...]], None]
    on_hub_broadcast: Callable[
        [Link, str, tuple[bytes, ...], list[bytes], float, tuple[str | None, ...]], None
    ]
    hand_on: Callable[[float], str | None]
    any_fanout: bool

    if TYPE_CHECKING:  # the send side's (push.py); declared for the type checker only

        def bridge_ask(self, conn: Link, shard: str, asker: str, now: float) -> None: ...

    def on_push(self, conn: Link, msg: Push, now: float) -> None:
        # Check everything before applying anything: the ack, and every update of a batch
        # (a single update is validated by ReplicaSet.apply itself, atomically).
        if msg.durable is not None:
            _yjs.check_state(msg.durable[0], _given(msg.durable[1]))
        for r in msg.relayed:
            _yjs.check_state(r.state.state_vector, r.state.delete_set)
        if msg.hint is not None:
            _yjs.check_state(msg.hint, None)
        # The parse of a batch's updates is carried on to ReplicaSet.apply: each update is
        # parsed once on receipt (a single update is parsed there, atomically with its apply).
        infos: list[_yjs.UpdateInfo | None] = [None] * len(msg.updates)
        if len(msg.updates) > 1:
            for i, u in enumerate(msg.updates):
                # (as map_exceptions({InvalidUpdate: INVALID_UPDATE}, ...) did, without its two
                # generator context managers per update of a burst's batch: see _refused)
                try:
                    infos[i] = _yjs.validate_update(u)
                except UpdateOverLimit:
                    self._ctx.guard.refused_update(conn.name, now)
                    return  # beyond the work limits: the whole batch is dropped
                except InvalidUpdate as exc:
                    raise ProtocolError(
                        f"invalid update in Push: {exc}", CloseCode.INVALID_UPDATE
                    ) from exc
        # Every push in a tree, and in a flood, passes on what it changes; a writer's push to
        # the window's relay is passed on as it is (see Push.relay).
        forward = msg.forward or self._ctx.mode() == TREE
        accepted = self._ctx.policy.accepts(msg.shard)
        if accepted:
            news: list[bytes] = []
            news_by: list[str | None] = []  # the writer of each of news (Push.authors)
            refused = False  # a quota refused an update: nothing of it is repeated
            if len(msg.updates) > 1:  # validated above: applied as one unit (one transaction)
                parsed = [i for i in infos if i is not None]
                writers = set(msg.authors[: len(msg.updates)])  # ({msg.author(i) ...})
                if len(msg.authors) < len(msg.updates):
                    writers.add(None)
                # A grid passes each writer's updates along that writer's tree: a batch of
                # several writers is passed on as its updates, each to its writer's children
                # (their one combined delta could name no single writer).
                by_writer = len(writers) > 1 and self._ctx.grid() is not None
                one_writer = next(iter(writers)) if len(writers) == 1 else None
                applied = self.apply_batch(
                    conn,
                    msg.shard,
                    msg.updates,
                    parsed,
                    forward and not msg.relay and not by_writer,
                    one_writer,
                    msg.authors if len(writers) > 1 else None,  # (h-mixauth: each named)
                )
                refused = applied is None
                news = applied or []
                news_by = [one_writer] * len(news)
                if by_writer and news and forward and not msg.relay:
                    for i, u in enumerate(msg.updates):
                        self._forward(conn, msg.shard, u, True, msg.author(i))
            else:
                for i, (u, info) in enumerate(zip(msg.updates, infos, strict=True)):
                    author = msg.author(i)
                    one = self.apply(
                        conn,
                        msg.shard,
                        u,
                        forward=forward and not msg.relay,
                        info=info,
                        author=author,
                    )
                    if one is None:
                        refused = True
                    elif one:
                        news += one
                        news_by += [author] * len(one)
            if msg.hint is not None and not forward and news:
                # A little redundancy against loss (rotating relay, relay.py): the next two
                # relays repeat in theirs what a broadcast brought them that was news (news
                # only: a delta is repeated once per relay that lacked it, never in a loop).
                self.on_relay_news(conn, msg.shard, tuple(news), now, tuple(news_by))
            if msg.hint is not None and not forward and not refused:
                self.on_hub_broadcast(  # _relay_hub.py
                    conn, msg.shard, msg.updates, news, now, msg.authors
                )
            hub = self.hand_on(now) if msg.relay else None
            if hub is not None:
                # Our hub term ended before this batch came: the hub passes it on (one frame
                # instead of a broadcast of our own outside the turns; _relay_hub.py).
                other = self._ctx.links.get(hub)
                if other is not None and not other.closing and other is not conn:
                    for i, u in enumerate(msg.updates):
                        self.enqueue(other, msg.shard, u, msg.author(i))
                    other.push.relay_shards.add(msg.shard)
            elif msg.relay:
                for other in self._ctx.links.values():
                    if (
                        other is not conn
                        and not other.closing
                        and not (conn.fanout and other.fanout)
                        and self._ctx.policy.sends_to(other.name, msg.shard)
                    ):
                        for i, u in enumerate(msg.updates):
                            self.enqueue(other, msg.shard, u, msg.author(i))
        # Acks after the deltas: what they cover of this batch is no sign of a loss.
        if msg.durable is not None:
            whole = conn.acks.resolve(ShardState(msg.shard, *msg.durable, msg.durable_signature))
            if whole is not None:
                self._acks.learn(conn.name, whole, conn, forward or msg.relay, now)
        for r in msg.relayed:
            self._acks.learn(r.agent, r.state, conn, forward or msg.relay, now, r.hops)
        if not accepted:
            return  # partial replication: not held here (the sender's view is behind)
        conn.rounds.last_push_in = now
        if (
            msg.seq
            and not news
            and self._ctx.config.tail_check > 0
            and msg.seq <= conn.repair.seq_in.get(msg.shard, 0)
            and msg.hint is None
            and not msg.relay
            and not conn.fanout
        ):
            # Its last Push again (numbered no further), with nothing new to us: the sender's
            # tail check (_tail_check.py) saw no ack of ours covering that Push, so ours was
            # lost, or we got that news from another agent (a repair's Diff) and acked it to
            # that one. Owe it our ack again, or it pushes again until its tries end. (Only
            # where tail checks may run: a duplicated frame costs an Ack at most. A full
            # mesh only: see Acks.owe_again.)
            self._acks.owe_again(conn, msg.shard, now)
        if msg.updates == (WANT_ACK,):
            # (a full mesh: a client asks its hub to ask the hub's other clients; _context.py)
            of_client = msg.forward and self._ctx.clients_only(conn)
            self._acks.owe_now(conn, msg.shard, now, hub=of_client)
            if (of_client or self._ctx.mode() == TREE) and not self._ctx.policy.partial:
                self.pass_ask(conn, msg.shard, msg.author(0) or conn.name, now)
            if self.any_fanout and not self._ctx.policy.partial:  # a bridge: onto the broker
                self.bridge_ask(conn, msg.shard, msg.author(0) or conn.name, now)
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
        solicited: bool = False,
        author: str | None = None,
    ) -> list[bytes] | None:
        """Apply a remote ``update`` of ``shard`` from ``conn`` (written by ``author``, None if
        unknown: a Diff) and pass on what changed our state, with its writer, where the
        overlay wants it.

        Returns what changed our state ([] if nothing), or None when a quota refused it
        (nothing applied; counted in the guard, see :mod:`crdtsync.gossip.guard`):
        anti-entropy brings it again later. ``solicited``: a
        Diff we asked for (not charged to the shard-creation quota).

        Raises:
            ProtocolError: INVALID_SHARD or INVALID_UPDATE; nothing applied.
        """
        ctx, guard, now = self._ctx, self._ctx.guard, self._ctx.now
        if not guard.admit_update(conn.name, len(update), now, shard):
            return None
        try:
            delta = self._apply(conn, shard, update, info, solicited, author)
        except ProtocolError as exc:
            if not isinstance(exc.__cause__, UpdateOverLimit):
                raise
            # Well formed but beyond the work limits: dropped and counted, not a reason to
            # close (the peer may be passing on what another built over many updates).
            guard.refused_update(conn.name, now, solicited=solicited)
            return None
        if delta is False:
            return None
        guard.applied(conn.name, shard, getattr(ctx.replicas, "last_apply_work", 0), now)
        conn.interest.add(shard)
        conn.acks.want(shard, now)  # it sent us the shard: it may wait on our ack
        if delta is None:
            return []
        self._forward(conn, shard, delta, forward, author, solicited)
        return [delta]

    def apply_batch(
        self,
        conn: Link,
        shard: str,
        batch: tuple[bytes, ...],
        infos: list[_yjs.UpdateInfo],
        forward: bool,
        author: str | None = None,
        authors: tuple[str | None, ...] | None = None,
    ) -> list[bytes] | None:
        """The updates of one Push, validated, applied as one unit (ReplicaSet.apply_batch)
        under the same quotas as :meth:`apply` (charged for the whole batch); ``author``: the
        writer of every update of it, None if unknown or several; ``authors``: for a batch of
        several writers, each update's (the replica set names each change's writer with
        them). Returns what changed our state, or None when a quota refused it.
        """
        ctx, guard, now = self._ctx, self._ctx.guard, self._ctx.now
        if not guard.admit_update(conn.name, sum(map(len, batch)), now, shard):
            return None
        try:
            try:
                if self._admit_new(conn, shard, batch[0], infos[0], False) is False:
                    return None
                if authors is None:
                    deltas = ctx.replicas.apply_batch(shard, batch, conn.name, infos, author=author)
                else:
                    deltas = ctx.replicas.apply_batch(
                        shard, batch, conn.name, infos, authors=authors
                    )
            except (InvalidUpdate, InvalidShardName) as exc:
                raise _refused(exc, shard) from exc
        except ProtocolError as exc:
            if not isinstance(exc.__cause__, UpdateOverLimit):
                raise
            guard.refused_update(conn.name, now)
            return None
        guard.applied(conn.name, shard, getattr(ctx.replicas, "last_apply_work", 0), now)
        conn.interest.add(shard)
        conn.acks.want(shard, now)  # it sent us the shard: it may wait on our ack
        together = len(deltas) > 1
        for delta in deltas:
            self._forward(conn, shard, delta, forward, author, together=together)
        return deltas

    def _apply(
        self,
        conn: Link,
        shard: str,
        update: bytes,
        info: _yjs.UpdateInfo | None,
        solicited: bool,
        author: str | None,
    ) -> bytes | None | Literal[False]:
        """The quota checks of a new shard, then the apply: the delta, or False (refused).

        Raises:
            ProtocolError: INVALID_SHARD or INVALID_UPDATE (caused by UpdateOverLimit: well
                formed, beyond the work limits).
        """
        try:
            if solicited or shard in self._ctx.guard.known:  # (_admit_new's answer then)
                admitted: _yjs.UpdateInfo | None | Literal[False] = info
            else:
                admitted = self._admit_new(conn, shard, update, info, solicited)
            if admitted is False:
                return False
            return self._ctx.replicas.apply(shard, update, conn.name, admitted, author=author)
        except (InvalidUpdate, InvalidShardName) as exc:
            raise _refused(exc, shard) from exc

    def _admit_new(
        self,
        conn: Link,
        shard: str,
        update: bytes,
        info: _yjs.UpdateInfo | None,
        solicited: bool,
    ) -> _yjs.UpdateInfo | None | Literal[False]:
        """False if the shard-creation quota refuses ``update``, else its parse (``info``, or
        the parse made here for a new shard; None: not parsed yet): a shard comes into being
        only once its first update validated, and counts against the quota of the peer that
        caused it. The parse is handed on so the apply does not parse the bytes again. Raises
        what validation raises (the caller maps it)."""
        ctx, guard, now = self._ctx, self._ctx.guard, self._ctx.now
        if solicited or not guard.is_new(shard, ctx.replicas.shard_names, now):
            return info
        validate_shard_name(shard)
        if not guard.may_create(conn.name, now):
            return False
        if info is None:
            info = _yjs.validate_update(update)
        return info if guard.admit_new_shard(conn.name, shard, now) else False
