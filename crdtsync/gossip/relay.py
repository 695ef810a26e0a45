"""The rotating relay (overlay mode RELAY): one agent per batching window relays for all.

Everyone connects to everyone, and the agents take turns, in rank order, as the *relay* of one
batching window each. At a window boundary a writer sends its batch of the window that ended
to the coming window's relay only (``Push.relay``); the relay passes on, at the end of its
window, everything it got to every other agent, with its own writes and its state vector as
``Push.hint``. A writer pushes a batch again (up to :data:`RELAY_ATTEMPTS` times) when no
broadcast covering it came back within ``relay_retry``. While we are not connected to
everyone, relays flood instead (``Push.forward``).

That is the whole protocol on a lossless network, and this module holds it: the turns, the
batches, their confirmation by the broadcasts' hints and their retries. What the relay adds
against loss (repeats, second copies, the silence timer, patient repair requests) is the mixin
:class:`~crdtsync.gossip._relay_loss._RelayLoss`, a base of :class:`Relay`, split off so each
half reads in one module; its constants are re-exported here. Whose turn a window is (the
rank order, and who may relay with credentials) is the mixin
:class:`~crdtsync.gossip._relay_turns._RelayTurns`: a function of the view and the links,
none of the batches' state.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _yjs
from ._relay_hub import HUB_REPEATS, _RelayHub
from ._relay_loss import (
    HINT_PATIENCE,
    REPEATS,
    SECOND_COPY,
    SILENT_WINDOWS,
    _first_client,
    _RelayLoss,
)
from ._relay_turns import _RelayTurns
from .overlay import RELAY
from .repair import sv_covers

if TYPE_CHECKING:
    from ._context import Context
    from .antientropy import AntiEntropy
    from .links import Link
    from .push import Pushes
    from .repair import Repairs

__all__ = [
    "HUB_REPEATS",
    "RELAY_ATTEMPTS",
    "REPEATS",
    "SECOND_COPY",
    "SILENT_WINDOWS",
    "Relay",
    "Sent",
]

#: A batch is pushed to a relay at most this many times; then anti-entropy.
RELAY_ATTEMPTS = 6

#: Hub term: a batch pushed again is echoed alone only once it was lost this many times more
#: than the first (h-glom4 experiment).
HUB_ECHO_AFTER = 1


@dataclass(slots=True)
class Sent:
    """Own deltas pushed to a relay, kept until a broadcast shows it had them."""

    at: float
    shard: str
    state_vector: bytes  # ours right after the push: a broadcast covering it confirms it
    deltas: list[bytes]
    attempts: int
    relay: str | None = None  # the relay it was pushed to: its broadcast's hint settles it
    #: (our Yjs client id, our clock after the batch), read from the batch: a later relay's
    #: hint below that clock lacks the batch itself (see Relay.on_hint); None if unknown
    own: tuple[int, int] | None = None
    #: hub term (_relay_hub.py): when the broadcast of the boundary it was aimed at comes
    #: back; an earlier broadcast of the same hub is no sign of a loss. None: not aimed.
    due: float | None = None


class Relay(_RelayLoss, _RelayHub, _RelayTurns):
    """Our side of the rotating relay (see the module docstring).

    Args:
        ctx: the shared context. pushes: where batches are queued.
        ae: told when hinted broadcasts come (they let it skip rounds). repairs: asked when a
            hint shows we lack something.
        order: the live agents and us in rank order (the turns), from the overlay view.
    """

    def __init__(
        self,
        ctx: Context,
        pushes: Pushes,
        ae: AntiEntropy,
        repairs: Repairs,
        order: Callable[[], tuple[str, ...]],
    ) -> None:
        self._ctx = ctx
        self._pushes = pushes
        self._ae = ae
        self._repairs = repairs
        self._order = order
        # With credentials: whether an agent may be the relay (_relay_turns.py)
        self._eligible: dict[str, tuple[int, object, bool]] = {}
        # Own deltas wait here for the boundary, where the window's relay is known; retry
        # counts of re-queued ones; batches awaiting a broadcast that confirms them.
        self.own: dict[str, list[bytes]] = {}
        self.own_bytes = 0
        #: ids of the deltas of :attr:`own` written here (only those are merged, _merged_own)
        self._mine: set[int] = set()
        self.own_attempts: dict[str, int] = {}
        #: update -> its writer, for the updates we hold to send again (ours and others'
        #: repeats): each goes on with its own ``Push.authors`` entry (_RelayLoss.note)
        self.writers: dict[bytes, str] = {}
        self.writers_bytes = 0
        self.unconfirmed: list[Sent] = []
        #: Our batch pushed to the last window's relay: pushed again, once, to the next one
        #: (a second path against loss, see dispatch_own).
        self.echo: dict[str, list[bytes]] = {}
        #: the echo goes at the next boundary even without a batch of ours (a retried batch)
        self.echo_due = False
        #: Window index of a later turn of ours -> what we repeat in that turn's broadcast
        #: (on_broadcast: the third relay after a broadcast and beyond).
        self.later: dict[int, dict[str, list[bytes]]] = {}
        #: shard -> when a relay broadcast of it last came (under loss only; see watch)
        self.heard: dict[str, float] = {}
        #: shard -> asks made in the silence under way (hub term; see watch)
        self.silent_asks: dict[str, int] = {}
        #: shard -> (when, hint, its relay): a broadcast's hint showed we lack something; the
        #: next relays repeat it (under loss only; see on_hint and watch)
        self.lacking: dict[str, tuple[float, bytes, str]] = {}
        #: (when, shard, news) of the last broadcasts before a loss was noticed: repeated
        #: once when it is (see on_broadcast)
        self.recent: deque[tuple[float, str, tuple[bytes, ...]]] = deque()
        #: our last broadcasts as hub, repeated in the next ones (_relay_hub.py)
        self.hub_sent: deque[tuple[int, dict[str, list[bytes]]]] = deque()
        self.hub_rtt = math.inf
        self.hub_rtt_n = 0

    def local(self, shard: str, delta: bytes, now: float) -> None:
        """A delta made here: it waits for the boundary (beyond max_queue_bytes, all is dropped
        and anti-entropy does)."""
        if self.own_bytes + len(delta) > self._ctx.config.max_queue_bytes:
            self.drop_own()
        else:
            self.own.setdefault(shard, []).append(delta)
            self.own_bytes += len(delta)
            self._mine.add(id(delta))
            self._ctx.schedule_flush(now)

    def _merged_own(self) -> dict[str, list[bytes]]:
        """:attr:`own`, each shard's writes made here merged into one update in the place of
        the first (as a full mesh's window is: coalesce.py) if it fits a frame. Only those
        (:meth:`local`; their ids in :attr:`_mine`): under loss :attr:`own` holds others'
        updates too (repeats, _relay_loss.py), which keep their writer (``Push.authors``,
        :attr:`writers`), and a batch pushed again is left as it is. Batches are confirmed by
        state vectors."""
        own, mine, chunk = self.own, self._mine, self._ctx.chunk
        self._mine = set()  # what stays ours if own is held for our broadcast (dispatch_own)
        for shard, deltas in own.items():
            ours = [d for d in deltas if id(d) in mine]
            one = self._pushes.merged(shard, ours) if len(ours) > 1 else ours
            if len(one) == 1 and len(ours) > 1 and len(one[0]) <= chunk:
                at = next(i for i, d in enumerate(deltas) if id(d) in mine)
                rest = [d for d in deltas if id(d) not in mine]
                own[shard] = [*rest[:at], one[0], *rest[at:]]
                ours = one
            self._mine.update(id(d) for d in ours)
            self.note(ours, (self._ctx.name,) * len(ours))
        return own

    def deadline(self) -> float | None:
        """When :meth:`retry_unconfirmed` or :meth:`watch` has work."""
        times = []
        if self.unconfirmed:
            times.append(min(u.at for u in self.unconfirmed) + self._ctx.config.relay_retry)
        if self.heard:
            times.append(min(self.heard.values()) + self._silence())
        if self.lacking:
            times.append(min(at for at, _, _ in self.lacking.values()) + self._patience())
        return min(times) if times else None

    def on_hint(self, conn: Link, shard: str, hint: bytes, now: float) -> None:
        """A relay broadcast said what its sender holds of ``shard`` (see Push.hint)."""
        self._ae.hint_at = now
        if not self._ctx.lossy(now):
            self.adopt_loss(conn, now)
        if self._ctx.lossy(now):
            self.heard[shard] = now
            self.silent_asks.pop(shard, None)
            self._time_broadcast(conn, now)
        elif self._ctx.config.hub_term > 1:
            self._time_broadcast(conn, now)  # the link's delay only, for the hub term
        # Our own batches this broadcast shows the relays have had: confirmed. One pushed to
        # this very relay that its broadcast does not cover was lost on the way (the relay
        # broadcasts at the end of the window our push went in, after it arrived): a NACK,
        # pushed again at the next boundary instead of after relay_retry.
        if self.unconfirmed:
            keep: list[Sent] = []
            for u in self.unconfirmed:
                if u.shard != shard:
                    keep.append(u)
                elif sv_covers(hint, u.state_vector):
                    if u.relay == conn.name and u.attempts == 0 and self.hub(now):
                        self.hub_confirmed(u.at, now)
                    continue
                elif u.due is not None and now < u.due - 0.5 * self._ctx.window(now):
                    keep.append(u)  # an earlier broadcast of the hub: it left before ours came
                elif u.due is None and self.hub(now) and self.one_way(conn) is None:
                    # Hub term, no link timed yet: an earlier broadcast of the hub cannot be
                    # told from a NACK (the window may be shorter than the hop). It waits for
                    # a confirmation (which times the round trip) or relay_retry.
                    keep.append(u)
                elif u.relay == conn.name or self._lacks_own(u, hint, now):
                    self._ctx.loss_seen_at = now
                    self._push_again(u, now)
                else:
                    keep.append(u)
            self.unconfirmed = keep
        mine = self._ctx.state_vector(shard)
        if sv_covers(mine, hint):
            # Nothing lacking that this relay has; a lack an earlier hint showed stays until
            # ours covers that hint (this relay may have lost it too: the timer asks for it).
            lack = self.lacking.get(shard)
            if lack is not None and sv_covers(mine, lack[1]):
                del self.lacking[shard]
        elif shard not in conn.repair.repairs:
            # It had something we lack after applying its batch: we missed an earlier batch
            # (Yjs keeps later structs of a client pending without it). It holds what we lack.
            if HINT_PATIENCE and self._ctx.lossy(now) and self._ctx.mode() == RELAY:
                # Under loss the next relays repeat what we missed, a window apart, sooner
                # than a request and its reply (two hops): ask only for what a broadcast
                # HINT_PATIENCE windows later still shows we lack.
                lack = self.lacking.get(shard)
                if lack is not None and sv_covers(mine, lack[1]):
                    lack = None
                if lack is None:
                    self.lacking[shard] = (now, hint, conn.name)
                    return
                if now - lack[0] < self.patience_windows(now) * self._ctx.window(now) * 0.9:
                    return
                del self.lacking[shard]
                hint = lack[1]
            self._ask(conn, shard, now, hint)

    def dispatch_own(self, now: float, mode: str, broadcast: bool, aim: int | None = None) -> None:
        """Send our own deltas of the window that just ended (rotating relay, see _flush).

        Against loss (while the network loses frames), the batch pushed to a window's relay
        is pushed again, once, to the next window's relay (``echo``) when it can ride with our
        next batch (never as a message of its own): a batch lost on the way to one relay then
        arrives one window later without a repair round trip. Otherwise the relay's broadcast
        hint shows it unconfirmed, and it is pushed again after ``relay_retry``.
        """
        own, self.own, self.own_bytes = self._merged_own(), {}, 0
        mine, self._mine = self._mine, set()  # (our merged updates: kept only below)
        attempts, self.own_attempts = self.own_attempts, {}
        echo, self.echo = self.echo, {}
        echo_due, self.echo_due = self.echo_due, False
        if mode == RELAY and not broadcast:
            k = self._ctx.window_index(now)
            aimed = self.aimed(now, aim)
            target = self.target(now, aim)
            if self.later:
                for t in [t for t in self.later if t <= k]:
                    repeat = self.later.pop(t)
                    if t == k and target == self._ctx.name:  # our turn: repeated in it
                        for shard, deltas in repeat.items():
                            own.setdefault(shard, []).extend(deltas)
            if target == self._ctx.name:
                # We relay the coming window: our batch leaves with our broadcast at its end
                # (and the echo with it, to everyone: not now, a push now would carry a
                # hint of what we hold back).
                for shard, deltas in echo.items():
                    own.setdefault(shard, [])[:0] = deltas
                self.own, self.own_attempts = own, attempts
                self.own_bytes = sum(len(d) for ds in own.values() for d in ds)
                self._mine = mine
                return
            relay = self._ctx.links.get(target) if target is not None else None
            if relay is not None:
                for shard, deltas in own.items():
                    for d in deltas:
                        self._pushes.enqueue(relay, shard, d, self.writers.get(d))
                    relay.push.relay_shards.add(shard)
                    self._remember(now, shard, deltas, attempts.get(shard, 0), relay.name, aimed)
                for shard, deltas in echo.items() if own or echo_due else ():
                    for d in deltas:
                        self._pushes.enqueue(relay, shard, d, self.writers.get(d))
                    relay.push.relay_shards.add(shard)
                if own and self._ctx.lossy(now):
                    self.echo = own
                    # A batch pushed again (lost once already) is echoed even with no next
                    # batch to ride with: a message of its own, for these batches only.
                    lost = 1 + (HUB_ECHO_AFTER if self.hub(now) else 0)
                    if any(attempts.get(s, 0) >= lost for s in own):
                        self.echo_due = True
                        self._ctx.schedule_flush(now)
                return
        # We relayed the window that ended (or the overlay is no longer a rotating relay):
        # straight to everyone.
        for shard, deltas in echo.items():
            own.setdefault(shard, [])[:0] = deltas
        self._to_everyone(own)

    def _to_everyone(self, own: dict[str, list[bytes]]) -> None:
        for conn in self._ctx.links.values():
            if conn.closing:
                continue
            for shard, deltas in own.items():
                if self._ctx.policy.sends_to(conn.name, shard):
                    for d in deltas:
                        self._pushes.enqueue(conn, shard, d, self.writers.get(d))

    def _remember(
        self,
        now: float,
        shard: str,
        deltas: list[bytes],
        attempts: int,
        relay: str,
        aim: int | None = None,
    ) -> None:
        """Keep a batch pushed to a relay until a relay broadcast shows the relay had it."""
        sv = self._ctx.replicas.state_vector(shard)
        own = None
        due = None
        if aim is not None:
            lead = self.lead(now)
            due = aim * self._ctx.window(now) + (lead if lead is not None else 0.0)
        if (self._ctx.lossy(now) or self._ctx.config.hub_term > 1) and deltas:
            client = _first_client(deltas[0])
            if client is not None:
                clock = _yjs.decode_state_vector(sv).get(client)
                own = (client, clock) if clock else None
        self.unconfirmed.append(Sent(now, shard, sv, list(deltas), attempts, relay, own, due))
        total = sum(len(d) for u in self.unconfirmed for d in u.deltas)
        while total > self._ctx.config.max_queue_bytes and len(self.unconfirmed) > 1:
            total -= sum(len(d) for d in self.unconfirmed.pop(0).deltas)  # anti-entropy will do

    def retry_unconfirmed(self, now: float) -> None:
        """Push again, to the current relay, batches no relay broadcast has confirmed in time.

        The relay's broadcast shows what it held (Push.hint); a batch it does not cover was
        lost on the way to the relay, or the relay missed something else we have: pushing
        again costs bytes, rarely a message (it rides with our next batch).
        """
        due = [u for u in self.unconfirmed if now >= u.at + self._ctx.config.relay_retry]
        if not due:
            return
        self._ctx.loss_seen_at = now
        self.unconfirmed = [
            u for u in self.unconfirmed if now < u.at + self._ctx.config.relay_retry
        ]
        if self._ctx.mode() != RELAY:
            return  # the tree and the full mesh repair through sequence gaps and anti-entropy
        for u in due:
            self._push_again(u, now)

    def _push_again(self, u: Sent, now: float) -> None:
        """Queue an unconfirmed batch for the next boundary (to that window's relay)."""
        if u.attempts + 1 >= RELAY_ATTEMPTS:
            return  # anti-entropy will do
        self.own.setdefault(u.shard, []).extend(u.deltas)
        self.own_bytes += sum(len(d) for d in u.deltas)
        self.own_attempts[u.shard] = max(self.own_attempts.get(u.shard, 0), u.attempts + 1)
        self._ctx.schedule_flush(now)

    def drop_own(self) -> None:
        """Own deltas beyond max_queue_bytes (no relay reachable for long): anti-entropy."""
        self.own.clear()
        self._mine.clear()
        self.own_attempts.clear()
        self.own_bytes = 0
        for conn in self._ctx.links.values():
            conn.push.resync = True
        self._ctx.schedule_flush(self._ctx.now)

    def hint(self, shard: str) -> bytes | None:
        if not self._ctx.holds(shard):
            return None
        sv = self._ctx.replicas.state_vector(shard)
        return sv if len(sv) <= self._ctx.config.hint_max else None
