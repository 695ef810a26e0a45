"""Tail checks: a tree link's last Push confirmed by the receiver's ack, or pushed again.

A lost Push shows as a sequence gap at the next Push on the link (:mod:`.repair`), but the
*last* Push of a stream has no next one. In a tree nothing else tells the receiver it missed
it: its neighbours below lack it too (equal Summary roots), acks climb back towards the writer
and never come down, and the periodic anti-entropy round picks one random neighbour every
``anti_entropy_interval`` (5 s), so it meets the one that holds the news after about degree x
5 s, and each hop of the tree below waits its own turn. At 64 agents (a tree of fanout 5) and
10 % loss, the write's last key took 18-52 s to reach every agent (simulator, virtual time;
benchmarks/history/fanout-32-64.md, issue 17, h-loss64).

The sender knows more: every Push asks the receiver for its next acks (:mod:`.acks`, ``want``),
which carry its durable state vector. So ``tail_check`` after the last Push of a shard on a
tree link (re-armed by every later Push of it: while a stream flows, the next Push's sequence
number shows a loss), the sender compares the receiver's latest ack with the state vector it
had when it sent that Push. The receiver's next commit after that Push is acked to us (a Push
asks for the next two) and holds what it had then, which covers what it had sent us before: so
an ack that does not cover that state vector means our Push was lost (or its ack: below), and
we push again what the ack lacks, as a Push
of exactly what the ack lacks (``diff(ack)``) with the link's *last* sequence number (the one
that may have been lost: no gap, so no repair request crosses it), and check again after the
same delay, :data:`TAIL_TRIES` times at most; then the periodic anti-entropy is left. A lost
ack makes it push what the receiver has: an apply that finds nothing new, so no commit and no
ack of its own, and in a tree every try is spent on it. (In a full mesh the receiver sees the
link's last sequence number again and owes its ack again, ``Acks.owe_again``, h-meshtail.)

Only while loss was seen lately (``LOSS_MEMORY``: a repair asked, or a SyncRequest came from
a peer): over TCP nothing is lost and nothing is armed, so a receiver whose commit and ack take
longer than ``tail_check`` (an agent commits received updates within 0.2 s) costs nothing
there. A stream whose every Push but the lost last one came through shows no loss to anyone
(a lone write lost is left to anti-entropy).

In a full mesh (``tail_check_full``, h-meshtail) the same check compares less: a full-mesh
peer's acks to us stop two commits after our last Push, and it gets the others' writes from
them, not from us, so its last ack to us lacks what we got from them since and our whole
state vector would make a stale ack look like a loss (measured so, 25 agents at 10 % loss with
a different writer for every write: 2.5 Pushes per update pushed again, +5 % messages,
h-loss64). So there the sender keeps, per link and shard, what its *last* Push carried: the end
clock of each client's structs in it and its deletes (an earlier Push lost shows as a gap at
that one). The receiver's ack after that Push covers exactly those if the Push arrived, however
many other writers there are: anything else in its state is not compared. What it lacks of
them is pushed again as a diff against our state vector with those clients' clocks lowered to
the ack's (only their missing structs, and our delete set, which is in every diff), with the
link's last sequence number and ``forward=False`` (a full mesh passes nothing on), the same
:data:`TAIL_TRIES` times at most, under the same loss gate. A receiver that gets such a Push
again with nothing new in it (its ack was lost, or it got the news from a third agent's repair
Diff and acked it to that one) owes us its ack again (``Acks.owe_again``): without that, 98-99
% of the Pushes sent again with many writers went to receivers that held the news, up to 4 to
each (h-meshtail).

Not in the rotating relay, over fanout links (a broker), nor with partial replication.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..messages import Push
from . import _yjs
from ._context import LOSS_MEMORY
from .overlay import FULL, TREE
from .repair import sv_covers

if TYPE_CHECKING:
    from ._context import Context
    from .acks import Acks
    from .links import Link

__all__ = ["TAIL_TRIES", "TailChecks"]

#: Pushes again after one tail at most (each ``tail_check`` apart) before the periodic
#: anti-entropy is left to find what is still missing. 2 left a link whose last two Pushes
#: and both pushes again were lost (10 % loss: 1 in 10,000 tails) to anti-entropy: 7.2 s
#: (64 agents, seed 2). A lost ack costs up to this many Pushes of what the receiver has in a
#: tree, one in a full mesh (the receiver acks again: Acks.owe_again).
TAIL_TRIES = 4


class TailChecks:
    """The tail checks of one agent (see the module docstring).

    ``due``: when :meth:`check` next has work (None: nothing armed); the core reads it on
    every call. It is the earliest armed check or a little before (a Push re-arms its check
    later without moving ``due``: :meth:`check` then finds nothing due and sets it again).
    """

    def __init__(self, ctx: Context, acks: Acks) -> None:
        self._ctx = ctx
        self._acks = acks
        #: link name -> shard -> (when its last Push went, our state vector then, pushes
        #: again so far)
        self._armed: dict[str, dict[str, tuple[float, bytes, int]]] = {}
        #: Full mesh: link name -> shard -> (when its last Push went, what that Push carried:
        #: {client: end clock of its structs} and its delete set, pushes again so far)
        self._full: dict[str, dict[str, tuple[float, dict[int, int], _yjs.DeleteSet, int]]] = {}
        #: The last update whose clocks were read, and them: a write goes to every link as one
        #: bytes object, read once.
        self._last_read: tuple[bytes, dict[int, int], _yjs.DeleteSet] | None = None
        self.due: float | None = None
        self.pushed_again = 0  # Pushes sent again by a tail check, ever (for measurements)
        cfg = ctx.config
        self.delay = cfg.tail_check if cfg.tail_check > 0 else math.inf
        self.full = cfg.tail_check_full

    def pushed(self, conn: Link, shard: str, now: float, updates: tuple[bytes, ...] = ()) -> None:
        """A Push of ``shard`` carrying ``updates`` went to ``conn`` (numbered: it re-arms the
        link's check)."""
        if self.delay == math.inf or conn.fanout:
            return
        if self._ctx.mode() != TREE:
            if self.full and self._ctx.mode() == FULL:
                self._pushed_full(conn, shard, now, updates)
            return
        ctx = self._ctx
        if ctx.policy.partial:
            return
        if now - max(ctx.loss_seen_at, ctx.sync_asked_at) >= LOSS_MEMORY:
            return  # no loss seen lately (over TCP, never): no state vector taken per Push
        self._armed.setdefault(conn.name, {})[shard] = (now, self._ctx.state_vector(shard), 0)
        if self.due is None:
            self.due = now + self.delay

    def check(self, now: float) -> None:
        """Push again what a receiver's ack shows it lacks, once its link's last Push of the
        shard is ``tail_check`` old; set :attr:`due` to the next check."""
        if self.due is None or now < self.due:
            return
        ctx = self._ctx
        first = math.inf
        for name in list(self._armed):
            shards = self._armed[name]
            conn = ctx.links.get(name)
            if conn is None or conn.closing or ctx.mode() != TREE:
                del self._armed[name]
                continue
            for shard, (at, sv, tries) in list(shards.items()):
                if now < at + self.delay:
                    first = min(first, at + self.delay)
                    continue
                if conn.push.queue.get(shard) or not conn.writable:
                    first = min(first, now + self.delay)  # a Push is on its way: it re-arms
                    shards[shard] = (now, sv, tries)
                    continue
                if tries < TAIL_TRIES and self._push_missing(conn, shard, sv):
                    shards[shard] = (now, sv, tries + 1)
                    first = min(first, now + self.delay)
                else:
                    del shards[shard]
            if not shards:
                del self._armed[name]
        if self._full:
            first = min(first, self._check_full(now))
        self.due = None if first == math.inf else first

    def _push_missing(self, conn: Link, shard: str, sv: bytes) -> bool:
        """Push ``conn`` what its latest ack of ``shard`` lacks of ours if that ack does
        not cover ``sv`` (ours at our last Push); False if it does (or it never acked:
        nothing to compare)."""
        ctx = self._ctx
        acked = self._acks.acked.get(conn.name, {}).get(shard)
        if acked is None or not ctx.holds(shard):
            return False
        if sv_covers(acked.state_vector, sv):
            return False
        update = ctx.replicas.diff(shard, acked.state_vector)
        if len(update) > min(ctx.chunk, ctx.config.max_batch_bytes):
            return False  # too big for one Push: left to anti-entropy (its Diff is chunked)
        self.pushed_again += 1
        seq = conn.push.seq_out.get(shard, 0)  # the last one sent: perhaps the lost one
        # forward=True: the receiver passes on what is news to it, as a tree relay does.
        ctx.send(conn.name, Push(shard, (update,), None, seq, (), True))
        return True

    # -- the full mesh (tail_check_full; see the module docstring) ----------------------------

    def _pushed_full(self, conn: Link, shard: str, now: float, updates: tuple[bytes, ...]) -> None:
        """Arm (or re-arm) the full mesh's check of ``conn``'s last Push of ``shard``."""
        ctx = self._ctx
        if ctx.policy.partial:
            return
        if now - max(ctx.loss_seen_at, ctx.sync_asked_at) >= LOSS_MEMORY:
            return  # no loss seen lately (over TCP, never): nothing read per Push
        ends: dict[int, int] = {}
        deletes: _yjs.DeleteSet = {}
        for u in updates:
            e, d = self._read(u)
            for client, end in e.items():
                if end > ends.get(client, 0):
                    ends[client] = end
            for client, ranges in d.items():
                deletes.setdefault(client, []).extend(ranges)
        shards = self._full.setdefault(conn.name, {})
        if not ends and not deletes:
            # Nothing to confirm (a WANT_ACK): an earlier Push lost shows as this one's gap.
            shards.pop(shard, None)
            if not shards:
                del self._full[conn.name]
            return
        shards[shard] = (now, ends, deletes, 0)
        if self.due is None:
            self.due = now + self.delay

    def _read(self, update: bytes) -> tuple[dict[int, int], _yjs.DeleteSet]:
        """The end clock of each client's structs in ``update`` (ours: valid) and its
        deletes; the last one read is kept (a write goes to every link)."""
        last = self._last_read
        if last is not None and last[0] is update:
            return last[1], last[2]
        info = _yjs.validate_update(update, limits=None)
        self._last_read = (update, info.ends, info.delete_set)
        return info.ends, info.delete_set

    def _check_full(self, now: float) -> float:
        """:meth:`check` of the full mesh's links; returns when the next one is due."""
        ctx = self._ctx
        first = math.inf
        for name in list(self._full):
            shards = self._full[name]
            conn = ctx.links.get(name)
            if conn is None or conn.closing or ctx.mode() != FULL:
                del self._full[name]
                continue
            for shard, (at, ends, deletes, tries) in list(shards.items()):
                if now < at + self.delay:
                    first = min(first, at + self.delay)
                    continue
                if conn.push.queue.get(shard) or not conn.writable:
                    first = min(first, now + self.delay)  # a Push is on its way: it re-arms
                    shards[shard] = (now, ends, deletes, tries)
                    continue
                if tries < TAIL_TRIES and self._push_missing_full(conn, shard, ends, deletes):
                    shards[shard] = (now, ends, deletes, tries + 1)
                    first = min(first, now + self.delay)
                else:
                    del shards[shard]
            if not shards:
                del self._full[name]
        return first

    def _push_missing_full(
        self, conn: Link, shard: str, ends: dict[int, int], deletes: _yjs.DeleteSet
    ) -> bool:
        """Push ``conn`` what its latest ack of ``shard`` lacks of what our last Push to it
        carried (``ends``, ``deletes``); False if the ack covers that (or it never acked)."""
        ctx = self._ctx
        acked = self._acks.acked.get(conn.name, {}).get(shard)
        if acked is None or not ctx.holds(shard):
            return False
        have = _yjs.decode_state_vector(acked.state_vector)
        lacks = {c: have.get(c, 0) for c, end in ends.items() if have.get(c, 0) < end}
        if not lacks and (
            not deletes or _yjs.ds_within(deletes, _yjs.decode_delete_set(acked.delete_set))
        ):
            return False
        # Our state vector with the clients it lacks lowered to the ack's clocks: the diff
        # holds only their missing structs (and our delete set, which every diff carries).
        ours = _yjs.decode_state_vector(ctx.state_vector(shard))
        ours.update(lacks)
        update = ctx.replicas.diff(shard, _yjs.encode_state_vector(dict(sorted(ours.items()))))
        if len(update) > min(ctx.chunk, ctx.config.max_batch_bytes):
            return False  # too big for one Push: left to anti-entropy (its Diff is chunked)
        self.pushed_again += 1
        seq = conn.push.seq_out.get(shard, 0)  # the last one sent: perhaps the lost one
        ctx.send(conn.name, Push(shard, (update,), None, seq, (), False))
        return True
