"""Round retries: an anti-entropy round's lost step tried again, a bounded number of times.

A round (:mod:`.antientropy`) is Summary, Digests, SyncRequest, Diff. A lost Push shows as a
sequence gap at the next Push and its repair is asked again every ``repair_timeout`` until it
comes (:mod:`.repair`), but a round whose Digests, SyncRequest or reply Diff is lost just
ended: the next round with that peer came about degree x ``anti_entropy_interval`` later
(each agent starts a round every interval with one random neighbour). Seen at 64 agents in a
tree at 10 % loss (benchmarks/history/fanout-32-64.md, issue 17, h-loss64): a relay that
missed a stream's last Push waited 5.05 -> 11.29 s for a round whose SyncRequest was lost,
and 10.18 -> 27.84 s for one whose Digests were lost, with the whole subtree below it.

So, ``round_retries`` times at most, each the link's repair timeout apart (adaptive under
loss: :meth:`.repair.Repairs.timeout`, passed in by the core):

- **the initiator** whose SyncRequest has not brought every Diff it asked for (``round_shards``
  still lists some: the request or the reply was lost) asks again for those, with its state
  vectors of now; not while one of them is arriving in DiffChunk pieces;
- **the peer that sent Digests** and got neither a SyncRequest nor a Diff back since (the
  Digests or the request was lost, or the initiator found nothing to do) starts a round of its
  own with it: a Summary, which costs one small frame when the two agree by then (with pushes
  in flight the initiator often catches up before the Digests come: sending the Digests again
  instead was measured, WAN settings at 65 agents: 6-15 Digests sent again per run next to
  1-5 SyncRequests asked again),
  and whose own steps are retried in turn. At most ``round_retries`` in a row per link,
  counted until an answer comes.

Not retried: a lost Summary (equal roots get no answer, so the initiator cannot tell a loss
from agreement) and a lost step-5 Diff (nobody waits for it); the next round finds those.
Only while loss was seen lately (:meth:`.Context.lossy`, a sequence gap within
``LOSS_MEMORY``): nothing is recorded otherwise, so a lossless link (TCP) sends nothing new
and gets no extra timer; a slow answer there is not a loss. Off (0) in the class defaults.

Measured (simulator, h-aeretry): a lost step is now followed by its retry within one timeout
instead of a later round, but with ``lan()`` at 25 and 64 agents the time until every agent
holds every key did not move measurably: the slow keys wait for a round between the right two
agents (one random neighbour per round), not for a round that lost a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..messages import SyncRequest
from ._yjs import EMPTY_STATE_VECTOR

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link

__all__ = ["RoundRetries"]

#: A link's timeout: (link, now) -> seconds (Repairs.timeout).
Timeout = Callable[["Link", float], float]


class RoundRetries:
    """The round retries of one agent (see the module docstring).

    Args:
        ctx: the shared context.
        start_round: starts a round with a peer (:meth:`.AntiEntropy.start_round`).
    """

    def __init__(self, ctx: Context, start_round: Callable[[Link, float], None]) -> None:
        self._ctx = ctx
        self._start_round = start_round
        #: link name -> (link, when our round's SyncRequest last went, asked again so far)
        self.asking: dict[str, tuple[Link, float, int]] = {}
        #: link name -> (link, when its Summary that our Digests answer came, rounds started
        #: in a row for want of an answer): our Digests count as sent once
        #: ``replies.digests_at`` is at or after it
        self.listing: dict[str, tuple[Link, float, int]] = {}
        #: link name -> rounds we started in a row because our Digests got no answer
        self._chained: dict[str, int] = {}
        self.asked_again = 0  # SyncRequests sent again, ever (for measurements)
        self.listed_again = 0  # rounds started for want of an answer, ever (for measurements)

    def _on(self, now: float) -> bool:
        return self._ctx.config.round_retries > 0 and self._ctx.lossy(now)

    # -- what the round's steps report ----------------------------------------------------

    def asked(self, conn: Link, now: float) -> None:
        """Our round's SyncRequest went to ``conn`` (its ``round_shards`` are owed)."""
        if self._on(now):
            self.asking[conn.name] = (conn, now, 0)

    def owe_digests(self, conn: Link, now: float) -> None:
        """``conn``'s Summary differed from ours: Digests are owed (sent now or paced)."""
        if self._on(now):
            self.listing[conn.name] = (conn, now, self._chained.get(conn.name, 0))
        else:
            self.listing.pop(conn.name, None)

    def agreed(self, conn: Link) -> None:
        """``conn``'s Summary equals ours: no Digests are owed to it."""
        self.listing.pop(conn.name, None)

    def answered(self, conn: Link) -> None:
        """A SyncRequest or Diff came from ``conn``: our Digests, if sent, were read."""
        entry = self.listing.get(conn.name)
        if entry is not None and conn.replies.digests_at >= entry[1]:
            del self.listing[conn.name]
        self._chained.pop(conn.name, None)

    # -- the timer ---------------------------------------------------------------------------

    def _asking_due(self, conn: Link, at: float, timeout: Timeout, now: float) -> float | None:
        """When the SyncRequest to ``conn`` asked at ``at`` is due again (None: done)."""
        shards = conn.rounds.round_shards
        if not shards or conn.closing or self._ctx.links.get(conn.name) is not conn:
            return None
        t = timeout(conn, now)
        asm = conn.replies.receiving
        if asm is not None and asm.shard in shards:
            at = max(at, asm.last_at)  # its answer is arriving, in pieces
        return at + t

    def _listing_due(self, conn: Link, since: float, timeout: Timeout, now: float) -> float | None:
        """When our Digests to ``conn`` have waited too long for an answer (None: done;
        inf: not sent yet)."""
        if conn.closing or self._ctx.links.get(conn.name) is not conn:
            return None
        sent = conn.replies.digests_at
        if conn.replies.want_digests or sent < since:
            return math.inf  # still owed (paced): its sending is the reply path's timer
        return sent + timeout(conn, now)

    def deadlines(self, timeout: Timeout) -> list[float]:
        """When :meth:`retry` has work (nothing unless loss was seen lately)."""
        now = self._ctx.now
        if not (self.asking or self.listing) or not self._ctx.lossy(now):
            return []
        times = []
        for conn, at, _ in self.asking.values():
            due = self._asking_due(conn, at, timeout, now)
            if due is not None:
                times.append(due)
        for conn, since, _ in self.listing.values():
            due = self._listing_due(conn, since, timeout, now)
            if due is not None and due < math.inf:
                times.append(due)
        return times

    def retry(self, now: float, timeout: Timeout) -> None:
        """Try again every round step whose answer did not come within its timeout; drop
        what is done, spent (``round_retries``), or no longer under loss."""
        if not (self.asking or self.listing):
            return
        tries = self._ctx.config.round_retries
        lossy = self._ctx.lossy(now)
        for name, (conn, at, n) in list(self.asking.items()):
            due = self._asking_due(conn, at, timeout, now)
            if due is None:
                del self.asking[name]
            elif now >= due:
                if not lossy or n >= tries:
                    del self.asking[name]
                    continue
                self._ask_again(conn)
                self.asking[name] = (conn, now, n + 1)
        for name, (conn, since, n) in list(self.listing.items()):
            due = self._listing_due(conn, since, timeout, now)
            if due is None:
                del self.listing[name]
            elif now >= due:
                if not lossy or n >= tries:
                    del self.listing[name]
                    continue
                del self.listing[name]
                self.listed_again += 1
                self._chained[name] = n + 1
                self._start_round(conn, now)

    def _ask_again(self, conn: Link) -> None:
        """Ask ``conn`` again for the Diffs our round's SyncRequest has not brought."""
        ctx = self._ctx
        held = set(ctx.shard_names())
        requests = tuple(
            (shard, ctx.replicas.state_vector(shard) if shard in held else EMPTY_STATE_VECTOR)
            for shard in sorted(conn.rounds.round_shards)
        )
        self.asked_again += 1
        ctx.send(conn.name, SyncRequest(requests))
