"""The early ask: a joiner's small shards sent whole with its first anti-entropy message.

A classic round costs a joiner six one-way messages before it holds a shard's state (Hello;
Hello + Summary; Digests; SyncRequest; Diff; with the joiner starting: Summary, Digests,
SyncRequest, Diff after the Hellos). An agent holding at most
:attr:`~.config.GossipConfig.early_sync_shards` shards skips the comparison for its small ones:
with the round it starts on connect, or before the Digests it owes for the first Summary
that differs on a link, it sends each small shard whole (a ``Diff`` without state vector),
then one ``SyncRequest`` with their state vectors. The peer answers as it answers any
SyncRequest, at once, with ``Diff(diff(sv), its state vector)``; it already holds all of ours
(our Diff went first on the same ordered link), so no step 5 is owed. Four one-way messages,
no new message, no new field: a peer of the last release reads them as it always did.

What keeps a big shard from crossing twice is done by the asking side alone (so it holds
against a holder that knows nothing of this):

* our own round leaves out a shard asked early that the peer lists, until the answer came or
  an anti-entropy interval passed (:meth:`EarlyAsks.pending`);
* the peer's own ``SyncRequest`` of a shard we asked early is *held* until our early answer
  came, then answered (:meth:`EarlyAsks.hold`, :meth:`EarlyAsks.answered`): our state vector
  in that answer is then fresh, so the peer's step 5 carries at most its delete set, never
  its state again (an answer lost: released after an interval);
* one live link at a time per shard: two holders of a big state would each send it.

And as the holder, a round leaves out a shard the peer sent whole and then asked for since
our Summary went (:meth:`EarlyAsks.answered_early`): our answer carried our state vector and
the peer has nothing more of it. It only ever sends less.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..messages import Diff, SyncRequest
from ._yjs import EMPTY_STATE_VECTOR, decode_state_vector

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link

__all__ = ["EarlyAsks", "LinkEarly", "MAX_EARLY_ITEMS", "MAX_EARLY_STATE", "MAX_EARLY_VECTOR"]

#: A shard is asked early only if its whole state is at most this many bytes: it then goes
#: with the ask at no round trip's cost; a bigger one waits for the comparison of a round.
MAX_EARLY_STATE = 4 << 10
#: ... and its state vector at most this many bytes (a handful of writers) ...
MAX_EARLY_VECTOR = 64
#: ... and at most this many items (the sum of its state vector's clocks): a joiner's few
#: first writes, not an established agent's shard, which a round compares first.
MAX_EARLY_ITEMS = 16

#: The empty Yjs update: a shard that holds nothing is not sent.
_EMPTY_UPDATE = b"\x00\x00"

#: A shard's digest (None: not held) and its link's ack records of it, before a Diff.
_Before = tuple[bytes | None, int | None, float | None]


@dataclass(slots=True)
class LinkEarly:
    """The early ask's state of one link (kept in its :class:`.antientropy.LinkRounds`)."""

    done: bool = False  # asked (or decided not to) on this link: once per link
    #: Shards the peer sent whole since our last Summary to it (the asker's first half).
    whole_in: set[str] = field(default_factory=set)
    #: Shards the peer sent whole and then asked for since our last Summary: our answer
    #: carried our state vector; our round leaves them out.
    answered: set[str] = field(default_factory=set)


class EarlyAsks:
    """The early asks of one agent, across its links (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        #: shard -> (peer, its link's ``since``, when): asked early, answer not yet come.
        self.asked: dict[str, tuple[str, float, float]] = {}
        #: (peer, shard) -> (its state vector, when): its SyncRequest held for our answer.
        self.held: dict[tuple[str, str], tuple[bytes, float]] = {}

    def _live(self, peer: str, since: float) -> Link | None:
        conn = self._ctx.links.get(peer)
        return conn if conn is not None and conn.since == since and not conn.closing else None

    def _eligible(self, conn: Link) -> bool:
        ctx = self._ctx
        limit = ctx.config.early_sync_shards
        return (
            limit > 0
            and ctx.gate is None  # with credentials each shard's Diff is checked alone
            and not ctx.policy.partial
            and not conn.fanout
            and conn.writable
            and not conn.closing
            and len(ctx.shard_names()) <= limit
        )

    def ask(self, conn: Link, now: float) -> None:
        """Send ``conn`` our small shards whole, then one SyncRequest for its side of them;
        once per link (called with the round we start on connect, or before the Digests of
        the first differing Summary on a link)."""
        early = conn.rounds.early
        if early.done:
            return
        early.done = True
        if now - conn.since >= self._ctx.config.anti_entropy_interval or not self._eligible(conn):
            return
        ctx = self._ctx
        interval = ctx.config.anti_entropy_interval
        requests: list[tuple[str, bytes]] = []
        for shard in ctx.shard_names():
            other = self.asked.get(shard)
            if (
                other is not None
                and now - other[2] < interval
                and self._live(other[0], other[1]) is not None
            ):
                continue  # asked on another live link: one link at a time per shard
            sv = ctx.replicas.state_vector(shard)
            if (
                len(sv) > MAX_EARLY_VECTOR
                or sum(decode_state_vector(sv).values()) > MAX_EARLY_ITEMS
            ):
                continue
            state = ctx.replicas.diff(shard, EMPTY_STATE_VECTOR)
            if state == _EMPTY_UPDATE or len(state) > MAX_EARLY_STATE:
                continue
            ctx.send(conn.name, Diff(shard, state, None))
            requests.append((shard, sv))
            self.asked[shard] = (conn.name, conn.since, now)
        if requests:
            ctx.send(conn.name, SyncRequest(tuple(requests)))

    def pending(self, conn: Link, shard: str, now: float) -> bool:
        """Whether ``shard`` was asked early on ``conn`` and its answer has not come (within
        an interval): our round leaves it out, the answer brings it."""
        entry = self.asked.get(shard)
        return (
            entry is not None
            and entry[0] == conn.name
            and entry[1] == conn.since
            and now - entry[2] < self._ctx.config.anti_entropy_interval
        )

    def hold(self, conn: Link, shard: str, sv: bytes, now: float) -> bool:
        """Whether the peer's request of ``shard`` (state vector ``sv``, already validated)
        waits for our early answer: answered now, our state vector would be stale and the
        peer's step 5 would send its whole state again."""
        if sv == EMPTY_STATE_VECTOR or not self.pending(conn, shard, now):
            return False
        self.held[(conn.name, shard)] = (sv, now)
        return True

    def answered(self, conn: Link, shard: str) -> bool:
        """A Diff with a state vector (an answer) of ``shard`` came from ``conn``, applied:
        if it was our early ask's, the held request of it is owed now. Whether one is."""
        entry = self.asked.get(shard)
        if entry is not None and entry[0] == conn.name and entry[1] == conn.since:
            del self.asked[shard]
        held = self.held.pop((conn.name, shard), None)
        if held is None:
            return False
        conn.replies.replies[shard] = (held[0], True)
        return True

    def before_diff(self, conn: Link, shard: str, now: float) -> _Before | None:
        """A Diff of ``shard`` comes from ``conn`` (not applied yet): on a new link (within an
        interval of the connection), where early asks and their answers come, what
        :meth:`applied` needs to tell whether it changed anything; None: not on one."""
        if now - conn.since >= self._ctx.config.anti_entropy_interval:
            return None
        ctx, acks = self._ctx, conn.acks
        digest = ctx.replicas.digest(shard) if ctx.holds(shard) else None
        return digest, acks.wanted.get(shard), acks.upstream.get(shard)

    def applied(self, conn: Link, shard: str, before: _Before | None, whole: bool) -> None:
        """That Diff was applied (``whole``: it had no state vector, maybe the first half of
        an early ask). If it changed nothing, it earns its sender no acks: the early asks of a
        tree's new links, and their answers, repeating what the other side holds, made
        parents owe acks to children (acks sent down a tree: tests/test_ack_scope.py). A
        Push always earns them."""
        if before is None:
            return
        if whole:
            conn.rounds.early.whole_in.add(shard)
        digest, wanted, upstream = before
        if digest is None or digest != self._ctx.replicas.digest(shard):
            entry = self.asked.get(shard)
            if not whole and entry is not None and entry[:2] == (conn.name, conn.since):
                # Our early ask's answer brought something: the shard differed, and this was
                # its repair (counted as the round's SyncRequest would have been).
                self._ctx.count_repair(conn.name, shard)
            return
        acks = conn.acks
        if wanted is None:
            acks.wanted.pop(shard, None)
        else:
            acks.wanted[shard] = wanted
        if upstream is None:
            acks.upstream.pop(shard, None)
        else:
            acks.upstream[shard] = upstream

    def requested(self, conn: Link, shard: str) -> None:
        """``conn`` asked for ``shard``: after sending it whole, that is an early ask, which
        our answer settles both ways (see :meth:`answered_early`)."""
        early = conn.rounds.early
        if shard in early.whole_in:
            early.answered.add(shard)

    def answered_early(self, conn: Link, shard: str) -> bool:
        """Whether our round may leave ``shard`` out: the peer asked it early since our
        Summary went and got our state vector with the answer."""
        return shard in conn.rounds.early.answered

    def round_started(self, conn: Link) -> None:
        """Our Summary went to ``conn``: what it sends from now is compared by that round."""
        early = conn.rounds.early
        early.whole_in.clear()
        early.answered.clear()

    def expire(self, now: float) -> list[Link]:
        """Forget asks whose answer did not come within an interval (or whose link is gone);
        the requests held for them are owed now: returns the links to serve."""
        if not self.asked and not self.held:
            return []
        owed: list[Link] = []
        horizon = now - self._ctx.config.anti_entropy_interval
        for shard, (peer, since, at) in list(self.asked.items()):
            if at <= horizon or self._live(peer, since) is None:
                del self.asked[shard]
        for (peer, shard), (sv, at) in list(self.held.items()):
            entry = self.asked.get(shard)
            if entry is not None and entry[0] == peer and at > horizon:
                continue
            del self.held[(peer, shard)]
            conn = self._ctx.links.get(peer)
            if conn is not None and not conn.closing:
                conn.replies.replies[shard] = (sv, True)
                owed.append(conn)
        return owed
