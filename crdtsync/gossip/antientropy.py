"""Anti-entropy rounds: the per-link state of Summary/Digests/SyncRequest/Diff rounds.

A round: A -> B ``Summary(root)`` (a hash over A's sorted (shard, digest) pairs; equal roots:
done), B -> A ``Digests``, A compares and asks (``SyncRequest``) or sends (``Diff``), B answers
with ``Diff(diff(sv_A), sv_B)``, A applies it and, if its digest still differs, sends
``Diff(diff(sv_B))``. In a tree, a periodic round with a neighbour whose pushes flow both ways
without a sequence gap is skipped (the pushes are the anti-entropy), at most
``anti_entropy_skip_max`` rounds in a row.

A round covers ``max_sync_shards`` shards at most. When more differ (an agent joining a mesh
of thousands of shards), the next round starts as soon as this one's Diffs have come and ours
have left, not at the next periodic timer: catching up costs a round trip per
``max_sync_shards`` shards, and small Diffs travel several to a frame (:class:`DiffBatch`).
Continuations stop after ``_STUCK`` in a row that act on exactly the same shards (they do not
converge), and the periodic rounds take over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..messages import Diff, DiffBatch, DiffChunk, Digests, Summary, SyncRequest
from . import _yjs
from ._early_ask import EarlyAsks, LinkEarly
from ._roots import RootCache, root_hash
from ._round_retry import RoundRetries
from ._yjs import EMPTY_STATE_VECTOR
from .overlay import RELAY, TREE
from .transfer import receive_piece

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link
    from .transfer import Replies

__all__ = ["AntiEntropy", "LinkRounds", "RootCache", "root_hash"]  # (the last two: _roots)

#: Cut rounds in a row acting on the same shards after which continuing stops (a shard whose
#: digests never agree must not make rounds run back to back forever). Two are normal: a
#: shard sent whole is often asked back once, for the receiver's own first write to it.
_STUCK = 3


@dataclass(slots=True)
class LinkRounds:
    """Anti-entropy with one peer."""

    last_push_in: float = -math.inf  # when a Push last came from it
    last_round_at: float = -math.inf  # when we last started a round with it
    digests: dict[str, bytes] = field(default_factory=dict)  # from its last Digests
    round_shards: set[str] = field(default_factory=set)  # asked in our round: step 5 owed
    more: bool = False  # our round was cut by max_sync_shards: continue once it is done
    last_cut: frozenset[str] = frozenset()  # the shards the last cut round acted on
    stuck: int = 0  # cut rounds in a row that acted on exactly those shards
    continuing_at: float = -math.inf  # when it last continued a cut round with us
    #: Shards we lack that it may still send whole after our last Digests (its round acts on
    #: at most max_sync_shards shards): those Diffs are answers, not charged to the
    #: shard-creation quota (issue #11), so an agent joining a big mesh is not throttled.
    whole_allowed: int = 0
    #: Shards we sent it whole on this link -> when, until its Digests list them: not sent
    #: again within an interval (see AntiEntropy._in_flight). Per link: what was in flight on
    #: a connection that was replaced may be lost, and is sent again on the new one.
    sent_whole: dict[str, float] = field(default_factory=dict)
    #: The names (Context.names_token) our shards were last added to its interest for, after
    #: equal roots: an idle round adds nothing new, so it is not done again.
    interest_from: object = None
    early: LinkEarly = field(default_factory=LinkEarly)  # the early ask on this link


class AntiEntropy:
    """Anti-entropy rounds of one agent: the periodic timer, the skip rule, and every step
    of a round (see the module docstring).

    Args:
        ctx: the shared context.
        replies: where answers to a peer's requests are queued and served.
    """

    def __init__(self, ctx: Context, replies: Replies) -> None:
        self._ctx = ctx
        self._replies = replies
        self._roots = RootCache(ctx)
        self.early = EarlyAsks(ctx)  # a joiner's small shards sent and asked for at once
        #: A round's lost Digests, SyncRequest or reply Diff tried again (round_retries).
        self.retries = RoundRetries(ctx, self.start_round)
        self.next_round: float | None = None  # the periodic timer (set once linked)
        self.last_round_at = -math.inf  # when we last started a round
        self.hint_at = -math.inf  # when a relay broadcast with a state-vector hint last came
        #: How a Diff's update is applied (and forwarded): set by the core. Arguments: the
        #: link, shard, update, whether to forward, whether we asked for it, its writer if
        #: known (a single delta sent as DiffChunk pieces; None for a Diff); False: a quota
        #: refused it (see :mod:`crdtsync.gossip.guard`).
        self.apply: Callable[[Link, str, bytes, bool, bool, str | None], bool] = (
            lambda conn, shard, update, forward, solicited, author: True
        )

    def start_round(self, conn: Link, now: float) -> None:
        """Step 1: send ``conn`` our Summary (the first round on a link: after the early ask)."""
        if conn.rounds.last_round_at == -math.inf:
            self.early.ask(conn, now)
        self.early.round_started(conn)
        conn.rounds.last_round_at = self.last_round_at = now
        self._ctx.send(conn.name, self.summary(conn.name))

    def on_summary(self, conn: Link, msg: Summary, now: float) -> None:
        """Step 2: a differing root is owed our Digests (a reply: deferred while paused, and
        paced to one per tenth of the anti-entropy interval per peer)."""
        if conn.name < self._ctx.name:  # the side that continues cut rounds (on_digests)
            conn.rounds.continuing_at = now
        if conn.replies.want_digests:
            # Owed already (coalesced): no need to compare again, but served if the pacing
            # allows it by now. The Summary itself was for nothing (issue #11's flood):
            # reading its sender is slowed (Guard.wasted).
            self._ctx.guard.wasted(conn.name)
            self._replies.serve(conn, now)
            return
        if msg.root != self.root_hash(conn.name):
            conn.replies.want_digests = True
            self.retries.owe_digests(conn, now)
            self.early.ask(conn, now)  # (the first Summary on a link only) before the Digests
            self._replies.serve(conn, now)
        else:  # it holds what we hold, no more, no less (the Hello does not list shards)
            conn.rounds.early.done = True
            self.retries.agreed(conn)
            # O(shards) once per set of names and link, not every idle round: where the root
            # is the same for every peer, the names object changes whenever a shard comes.
            token = self._ctx.names_token() if self._roots.usable() else None
            if token is None or conn.rounds.interest_from is not token:
                conn.interest.update(self._round_shards(conn.name))
                conn.rounds.interest_from = token

    def ensure_timer(self, now: float) -> None:
        if self.next_round is None:
            self.next_round = now + self._delay()

    def tick(self, now: float) -> None:
        """Start the periodic round with a random peer that shares a shard, unless skipped."""
        for conn in self.early.expire(now):
            self._replies.serve(conn, now)  # a request held for an answer that did not come
        if self.next_round is None or now < self.next_round:
            return
        self.next_round = now + self._delay()
        ctx = self._ctx
        peers = [c for c in ctx.links.values() if not c.closing and ctx.policy.shares(c.name)]
        if peers:
            conn = ctx.rng.choice(peers)
            if (
                not self.pushes_suffice(conn, now)
                and not self._peer_continues(conn, now)
                and not self._continuing(conn, now)
            ):
                self.start_round(conn, now)

    def _peer_continues(self, conn: Link, now: float) -> bool:
        """Whether ``conn`` is catching us up (rounds back to back, a fraction of an interval
        apart, or whole shards coming from it): a round of ours now would fetch the very shards
        it is sending."""
        return now - conn.rounds.continuing_at < self._ctx.config.anti_entropy_interval / 4

    def _continuing(self, conn: Link, now: float) -> bool:
        """Whether we are continuing a cut round with ``conn`` (:meth:`resume` starts the next
        one): a periodic round on top would send a second Summary, whose Digests, written
        before our Diffs in flight arrive, would make us send those shards again (measured:
        2.4 Diffs per shard for an agent joining 5,000 shards). Not once the continuation has
        stalled for an interval: the periodic rounds take over then."""
        r = conn.rounds
        return bool(r.last_cut) and now - r.last_round_at < self._ctx.config.anti_entropy_interval

    def on_digests(self, conn: Link, msg: Digests, now: float) -> None:
        theirs = dict(msg.digests)
        conn.rounds.digests = theirs
        held = set(self._ctx.shard_names())
        # Interest only in shards held here (what it is asked for: acks, want-acks): a
        # Digests may name any number of others, which a link kept for its lifetime
        # (h-wire's scan: 100,000 names a frame). One we fetch joins when its Diff applies.
        conn.interest.update(s for s in theirs if s in held)
        mine = set(self._ctx.policy.sync_shards(conn.name, sorted(held)))
        # Shards one side lacks entirely first, then those whose digests differ: while an
        # agent catches up, a shard it just received differs only by its own first write
        # (the value-format marker), which its pushes bring anyway.
        whole: list[str] = []
        differ: list[str] = []
        sent = self._in_flight(conn, theirs, now)
        early = self.early
        for shard in sorted(mine | {s for s in theirs if self._ctx.policy.accepts(s)}):
            if shard in theirs and (
                early.pending(conn, shard, now) or early.answered_early(conn, shard)
            ):
                continue  # asked early, either way: the answer brings it (_early_ask)
            if shard not in held or shard not in theirs:
                if shard not in sent:
                    whole.append(shard)
            elif self._ctx.replicas.digest(shard) != theirs[shard]:
                differ.append(shard)
        conn.rounds.early.answered.clear()  # (for this Digests only, whatever sent the Summary)
        budget = self._ctx.config.max_sync_shards
        acted = sorted((whole + differ)[:budget])
        cut = len(whole) + len(differ) > budget
        conn.rounds.more = False
        requests: list[tuple[str, bytes]] = []
        for shard in acted:
            if shard not in held:
                requests.append((shard, EMPTY_STATE_VECTOR))
            elif shard not in theirs:
                conn.replies.replies[shard] = (EMPTY_STATE_VECTOR, False)  # it lacks all of it
                sent[shard] = now
            else:
                requests.append((shard, self._ctx.replicas.state_vector(shard)))
                self._ctx.count_repair(conn.name, shard)
        self._replies.serve(conn, now)
        conn.rounds.round_shards = {s for s, _ in requests}  # their Diffs get our step-5 reply
        if requests:
            self._ctx.send(conn.name, SyncRequest(tuple(requests)))
            self.retries.asked(conn, now)
        r = conn.rounds
        if cut and self._ctx.name < conn.name:
            # Continue at once when done, unless stuck on the same shards. One side of a link
            # continues (the one that starts the on-connect round): both would fetch the same
            # shards twice.
            shards = frozenset(acted)
            r.stuck = r.stuck + 1 if shards == r.last_cut else 0
            r.last_cut = shards
            r.more = r.stuck < _STUCK
            self.resume(conn, now)
        else:
            r.last_cut, r.stuck = frozenset(), 0

    def _in_flight(self, conn: Link, theirs: dict[str, bytes], now: float) -> dict[str, float]:
        """The shards we sent ``conn`` whole less than an interval ago that its Digests
        ``theirs`` do not list yet: on their way (it wrote those Digests before our Diffs
        came). Acting on them again would send them twice: stale Digests made an agent
        joining 5,000 shards receive 2.4 Diffs per shard. One lost is sent again an interval
        later (at once on a new connection)."""
        sent = conn.rounds.sent_whole
        horizon = now - self._ctx.config.anti_entropy_interval
        for shard in [s for s, at in sent.items() if at < horizon or s in theirs]:
            del sent[shard]
        return sent

    def resume(self, conn: Link, now: float) -> None:
        """Start the continuation of a round cut by ``max_sync_shards`` once its Diffs came
        and ours left (ours before the Summary on the link: the peer's Digests cover them)."""
        r = conn.rounds
        if (
            r.more
            and not r.round_shards
            and not conn.replies.pending()
            and not conn.closing
            and conn.writable
        ):
            r.more = False
            self.start_round(conn, now)

    def on_sync_request(self, conn: Link, msg: SyncRequest, now: float) -> None:
        self._ctx.sync_asked_at = now  # (no behaviour here: the tail check's sign of loss)
        self.retries.answered(conn)
        for _, sv in msg.state_vectors:
            _yjs.check_state(sv, None)
        held = set(self._ctx.shard_names())
        for shard, sv in msg.state_vectors:
            if shard in held:
                conn.interest.add(shard)  # (held only: see on_digests)
                self.early.requested(conn, shard)
                if self.early.hold(conn, shard, sv, now):
                    continue  # answered once our early answer came (_early_ask)
                # Coalesced per shard: a peer that asks again before reading gets one answer.
                conn.replies.replies[shard] = (sv, True)
        self._replies.serve(conn, now)

    def on_diff(
        self, conn: Link, msg: Diff, now: float, author: str | None = None, serve: bool = True
    ) -> None:
        """Apply a Diff (``author``: the writer of a single delta that came as DiffChunk
        pieces; a real Diff merges any number of writers, so its changes report None).
        ``serve`` False: the caller serves the step-5 replies it owes (a DiffBatch, at once)."""
        if msg.state_vector is not None:
            _yjs.check_state(msg.state_vector, None)
        self.retries.answered(conn)
        if not self._ctx.policy.accepts(msg.shard):
            return  # partial replication: not held here
        conn.replies.progressed = True
        solicited = msg.shard in conn.rounds.round_shards or msg.shard in conn.repair.repairs
        if not solicited and conn.rounds.whole_allowed > 0 and not self._ctx.holds(msg.shard):
            conn.rounds.whole_allowed -= 1  # a shard it found us lacking, after our Digests
            solicited = True
            if conn.name < self._ctx.name:  # its cut round goes on: ours would fetch the same
                conn.rounds.continuing_at = now
        before = self.early.before_diff(conn, msg.shard, now)
        if not self.apply(conn, msg.shard, msg.update, self._ctx.mode() == TREE, solicited, author):
            return  # refused by a quota: the repair or a later round asks again
        conn.repair.answered(msg.shard, now)  # timed: the repair timeout under loss
        self.early.applied(conn, msg.shard, before, msg.state_vector is None)
        if msg.state_vector is not None and self.early.answered(conn, msg.shard) and serve:
            self._replies.serve(conn, now)  # a request held for this answer (_early_ask)
        # Step 5 of our own round only (a repair needs no reply): it has what we sent for.
        if msg.state_vector is not None and msg.shard in conn.rounds.round_shards:
            conn.rounds.round_shards.discard(msg.shard)
            if conn.rounds.digests.get(msg.shard) != self._ctx.replicas.digest(msg.shard):
                conn.replies.replies[msg.shard] = (msg.state_vector, False)
                if serve:
                    self._replies.serve(conn, now)
            if not conn.rounds.round_shards and serve:
                self.resume(conn, now)

    def on_diff_batch(self, conn: Link, msg: DiffBatch, now: float) -> None:
        """Several shards' Diffs in one frame: each handled as if it had come alone."""
        for diff in msg.diffs:
            self.on_diff(conn, diff, now, serve=False)
        self._replies.serve(conn, now)  # the step-5 replies owed, batched too
        if not conn.rounds.round_shards:
            self.resume(conn, now)

    def on_chunk(self, conn: Link, msg: DiffChunk, now: float) -> None:
        """Collect DiffChunk pieces; the whole update is then handled as a Diff."""
        update = receive_piece(
            conn.replies, msg, now, self._ctx.config.max_diff_bytes, self._ctx.guard, conn.name
        )
        if update is not None:
            self.on_diff(conn, Diff(msg.shard, update, msg.state_vector), now, msg.author)

    def pushes_suffice(self, conn: Link, now: float) -> bool:
        """Whether a periodic round with ``conn`` can be skipped.

        In a tree every change reaching a neighbour is pushed on to us (apply() returns it,
        we are not its source), and sequence numbers reveal a lost Push at the next one. A
        link busy both ways with no repair outstanding therefore carries everything a round
        would find. A full mesh does not forward, so there rounds always run; and a forced
        round comes every anti_entropy_skip_max intervals whatever the traffic.

        Over a medium that fans out (a broadcast link: a broker) every write reaches every
        agent as one broadcast, numbered per writer and shard, so a lost one shows as a gap
        at that writer's next (a repair). While broadcasts keep coming, a round finds
        differences that are only broadcasts still queued on their way (to us or to the
        peer: under a backlog, always), and its SyncRequest and two Diffs carry again what
        those broadcasts bring (issue 14: 0.35-0.75 Diffs per write at N = 128). So rounds
        over a broadcast link are skipped while broadcasts come and no repair is
        outstanding, with a forced one every anti_entropy_skip_max intervals (a writer's
        last broadcast lost shows in no gap).
        """
        cfg = self._ctx.config
        window = cfg.anti_entropy_interval
        if self._ctx.policy.partial:  # holders do not relay: pushes are no anti-entropy
            return False
        if conn.fanout:
            return (
                now - self._ctx.broadcast_in_at < window
                and not any(c.repair.repairs for c in self._ctx.links.values())
                and now - conn.rounds.last_round_at < window * cfg.anti_entropy_skip_max
            )
        mode = self._ctx.mode()
        if mode == RELAY:
            # Relay broadcasts carry the relay's state vector: while they keep coming, every
            # lost batch is noticed at the next one. Not a lost delete (state vectors do not
            # show deletes): hence a forced round every anti_entropy_skip_max intervals.
            return (
                now - self.hint_at < window
                and not any(c.repair.repairs for c in self._ctx.links.values())
                and now - self.last_round_at < window * cfg.anti_entropy_skip_max
            )
        return (
            mode == TREE
            and not conn.repair.repairs
            and now - conn.rounds.last_push_in < window
            and now - conn.push.last_push_at < window
            and now - conn.rounds.last_round_at < window * cfg.anti_entropy_skip_max
            and conn.rounds.last_round_at > -math.inf
        )

    def _delay(self) -> float:
        j = self._ctx.config.anti_entropy_jitter
        return self._ctx.config.anti_entropy_interval * (1 + j * (2 * self._ctx.rng.random() - 1))

    def _round_shards(self, peer: str | None) -> list[str]:
        # With credentials, over the shards the peer may read only: it cannot hold any other,
        # so a root over all of ours would never match its own.
        shards = self._ctx.shard_names()
        if peer is not None:
            shards = self._ctx.readable(peer, list(self._ctx.policy.sync_shards(peer, shards)))
        return shards

    def root_hash(self, peer: str | None = None) -> bytes:
        if self._roots.usable():
            return self._roots.get()[0]
        return root_hash(self._round_shards(peer), self._ctx.replicas.digest)

    def summary(self, peer: str | None = None) -> Summary:
        if self._roots.usable():
            return Summary(*self._roots.get())
        shards = self._round_shards(peer)
        return Summary(root_hash(shards, self._ctx.replicas.digest), len(shards))
