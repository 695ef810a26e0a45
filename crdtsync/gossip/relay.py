"""The rotating relay (overlay mode RELAY): one agent per batching window relays for all.

Everyone connects to everyone, and the agents take turns, in rank order, as the *relay* of one
batching window each. At a window boundary a writer sends its batch of the window that ended
to the coming window's relay only (``Push.relay``); the relay passes on, at the end of its
window, everything it got to every other agent, with its own writes and its state vector as
``Push.hint``. A writer pushes a batch again (up to :data:`RELAY_ATTEMPTS` times) when no
broadcast covering it came back within ``relay_retry``. While we are not connected to
everyone, relays flood instead (``Push.forward``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..messages import Push
from . import _yjs
from .overlay import RELAY, relay_of
from .repair import sv_covers

if TYPE_CHECKING:
    from ._context import Context
    from .antientropy import AntiEntropy
    from .links import Link
    from .push import Pushes
    from .repair import Repairs

__all__ = ["RELAY_ATTEMPTS", "REPEATS", "SECOND_COPY", "SILENT_WINDOWS", "Relay", "Sent"]

#: A batch is pushed to a relay at most this many times; then anti-entropy.
RELAY_ATTEMPTS = 6

#: Under loss, a shard whose relay broadcasts stopped reaching us for this many windows (a
#: run of lost frames, or the end of a burst) is asked of the last window's relay at once
#: (Relay.watch): a per-link timeout, not a wait for the next broadcast's hint. 3.5, not 2.5:
#: two broadcasts lost in a row (4 % of agent-windows at 20 % loss) are repeated in the third
#: (REPEATS), which comes before a reply would; asked after two, the repairs cost 0.25
#: messages per write and shortened nothing (benchmarks/README.md, "third pass").
SILENT_WINDOWS = 3.5

#: Under loss, this many relays after a broadcast's own repeat what it brought them (see
#: Relay.on_broadcast): copies a window apart, free in messages. 4 since the lossy windows:
#: an agent that missed all four copies (0.2^4, ~75 agent-writes a run at N = 25) waited for
#: a repair; the fifth copy made the p99 latency lower on seeds 1-5 (1,030-1,195 ms, from
#: 1,100-1,320; benchmarks/README.md, "third pass").
REPEATS = 4

#: Under loss, our relay broadcast goes twice to this many next relays (see second_copy).
SECOND_COPY = 1

#: Under loss, a repair is asked of two relays at once (see Relay._ask). Off since the lossy
#: windows (Context.window): with copies 105 ms apart a second answer rarely came first, and it
#: doubled the requests (0.2 messages per write; benchmarks/README.md, "third pass").
SECOND_ASK = 0

#: Under loss, a hint showing we lack something asks for a repair only if, this many windows
#: later, a broadcast shows we still lack it (see Relay.on_hint). 0: at once.
HINT_PATIENCE = 1.0


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


def _first_client(update: bytes) -> int | None:
    """The client id of the first struct group of a Yjs v1 update (a local delta holds only
    our own structs); None if it has none (deletes only) or cannot be read."""
    values: list[int] = []
    value = shift = 0
    for byte in update[:30]:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        values.append(value)
        value = shift = 0
        if len(values) == 3:  # groups, structs in the first group, its client
            return values[2] if values[0] else None
    return None


class Relay:
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
        # With credentials: whether an agent may be the relay, per agent, for the shard set
        # it was computed for (a permission check per shard is too dear for every window).
        self._eligible: dict[str, tuple[int, object, bool]] = {}
        # Own deltas wait here for the boundary, where the window's relay is known; retry
        # counts of re-queued ones; batches awaiting a broadcast that confirms them.
        self.own: dict[str, list[bytes]] = {}
        self.own_bytes = 0
        self.own_attempts: dict[str, int] = {}
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
        #: shard -> (when, hint, its relay): a broadcast's hint showed we lack something; the
        #: next relays repeat it (under loss only; see on_hint and watch)
        self.lacking: dict[str, tuple[float, bytes, str]] = {}

    def local(self, shard: str, delta: bytes, now: float) -> None:
        """A delta made here: it waits for the boundary (beyond max_queue_bytes, all is dropped
        and anti-entropy does)."""
        if self.own_bytes + len(delta) > self._ctx.config.max_queue_bytes:
            self.drop_own()
        else:
            self.own.setdefault(shard, []).append(delta)
            self.own_bytes += len(delta)
            self._ctx.schedule_flush(now)

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

    def _patience(self) -> float:
        """How long a lack a hint showed may wait for the next relays' repeats (see on_hint):
        HINT_PATIENCE windows, and half a window for the broadcast that may show it covered."""
        return (HINT_PATIENCE + 0.5) * self._ctx.window(self._ctx.now)

    def _silence(self) -> float:
        return SILENT_WINDOWS * self._ctx.window(self._ctx.now)

    def watch(self, now: float) -> None:
        """A per-link timeout on the relay broadcasts, under loss (see :data:`SILENT_WINDOWS`).

        While writes flow, every window's relay broadcasts to us; a shard whose broadcasts
        stopped for ``SILENT_WINDOWS`` windows (not our own turn) lost them, or the burst
        ended: ask the last window's relay for what we lack at once (one SyncRequest per
        silence: the next broadcast re-arms it), instead of waiting for a later broadcast's
        hint to show the loss. A run of lost broadcasts to one agent is common at 20 % loss
        (0.2^5 happens about once per 3,000 agent-windows), and each of them held every
        later write of the writers it cut off (Yjs keeps them pending).
        """
        if self.lacking:
            self._ask_lacking(now)
        silence = self._silence()
        due = [s for s, at in self.heard.items() if now >= at + silence]
        if not due:
            return
        for shard in due:
            del self.heard[shard]
        if self._ctx.mode() != RELAY or not self._ctx.lossy(now):
            return
        k = self._ctx.window_index(now)
        me = self._ctx.name
        if me in (self.relay_of(k - 1), self.relay_of(k - 2)):
            # Our own turn: no broadcast of ours comes back to us. Not counted as silence:
            # looked at again a window later (dropped, a cut-off agent would never ask).
            for shard in due:
                self.heard[shard] = now - silence + self._ctx.window(now)
            return
        target = self.relay_of(k - 1)
        conn = self._ctx.links.get(target) if target is not None else None
        if conn is None or conn.closing:
            return
        for shard in due:
            if not self._repairs.asking(shard):
                self._ask(conn, shard, now, None)

    def on_hint(self, conn: Link, shard: str, hint: bytes, now: float) -> None:
        """A relay broadcast said what its sender holds of ``shard`` (see Push.hint)."""
        self._ae.hint_at = now
        if self._ctx.lossy(now):
            self.heard[shard] = now
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
                    continue
                elif u.relay == conn.name or self._lacks_own(u, hint, now):
                    self._ctx.loss_seen_at = now
                    self._push_again(u, now)
                else:
                    keep.append(u)
            self.unconfirmed = keep
        mine = self._ctx.state_vector(shard)
        if sv_covers(mine, hint):
            self.lacking.pop(shard, None)
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
                if now - lack[0] < HINT_PATIENCE * self._ctx.window(now) * 0.9:
                    return
                del self.lacking[shard]
                hint = lack[1]
            self._ask(conn, shard, now, hint)

    def _ask_lacking(self, now: float) -> None:
        """Ask for the lacks no later broadcast showed covered in time (see on_hint): no
        broadcast came (lost, or the writes ended), so none asked for them."""
        patience = self._patience()
        for shard, (at, hint, name) in list(self.lacking.items()):
            if now < at + patience:
                continue
            del self.lacking[shard]
            conn = self._ctx.links.get(name)
            if conn is None or conn.closing or self._repairs.asking(shard):
                continue
            if not sv_covers(self._ctx.state_vector(shard), hint):
                self._ask(conn, shard, now, hint)

    def _lacks_own(self, u: Sent, hint: bytes, now: float) -> bool:
        """Under loss: whether a later relay's hint shows that relay lacks the batch itself.

        The relay we pushed ``u`` to confirms it with its broadcast's hint; when that hint is
        lost (one in five at 20 %), ``u`` waited ``relay_retry``. A relay of a later window
        (its broadcast at least two windows after our push) holds the batch once the first
        relay broadcast it (or sent it the second copy): one whose hint is below our own
        clock after the batch shows the batch lost on the way to the first relay (or, rarely,
        both copies to the next one). Only our own clock is compared: a relay lacking another
        writer's delta is no sign of our loss (comparing whole state vectors made re-pushes
        feed on themselves, benchmarks/README.md "Second pass").
        """
        if u.own is None or now < u.at + 1.5 * self._ctx.window(now):
            return False
        if not self._ctx.lossy(now) or self._ctx.mode() != RELAY:
            return False
        client, clock = u.own
        return _yjs.decode_state_vector(hint).get(client, 0) < clock

    def _ask(self, conn: Link, shard: str, now: float, target: bytes | None) -> None:
        """Ask ``conn`` for what we lack of ``shard``, and under loss a second holder too.

        A repair is a request and a reply, each lost with p at p loss: at 20 % one in three
        fails and is asked again only after ``repair_timeout``. Under loss (rotating relay),
        the relay of the window before ``conn``'s broadcast (or the one before it) is asked as
        well: it broadcast what ``conn`` relayed on, so it holds what we lack too, and both
        answers must be lost for the repair to wait (0.13 instead of 0.36 at 20 %).
        """
        known_lossy = self._ctx.lossy(now)  # before this ask: a first loss asks once
        self._repairs.ask(conn, shard, now, target)
        if not SECOND_ASK or not known_lossy or self._ctx.mode() != RELAY:
            return
        k = self._ctx.window_index(now)
        for j in (2, 3):
            name = self.relay_of(k - j)
            if name is None or name in (conn.name, self._ctx.name):
                continue
            other = self._ctx.links.get(name)
            if other is not None and not other.closing and shard not in other.repair.repairs:
                self._repairs.ask(other, shard, now, target)
            return

    def on_broadcast(self, conn: Link, shard: str, updates: tuple[bytes, ...], now: float) -> None:
        """A relay broadcast came: repeat it in ours if we relay one of the next windows.

        Redundancy against loss, on only while the network loses frames (``Context.lossy``):
        each relay broadcast is repeated by the next :data:`REPEATS` relays (in their own
        broadcasts: no extra message, only bytes), so an agent that lost one has it one, two
        or three windows later without a repair round trip. Each agent receives one broadcast
        per window, so copies can only come a window apart; at 20 % loss each copy reaches an
        agent with p = 0.8 only if its relay had the delta (0.8 too), and a delta that no copy
        brought waits for a repair (a hint, then a request and its reply, either lost with
        0.2): a third repeating relay makes that rarer (0.2 * 0.36 * 0.23 = 1.7 % per agent
        and write with two, about 0.4 % with three).
        """
        if not self._ctx.lossy(now) or self._ctx.mode() != RELAY:
            return
        k = self._ctx.window_index(now)
        me = self._ctx.name
        if self.relay_of(k) == me:
            # Ours ends this window: queued for everyone now, it leaves with our broadcast.
            for other in self._ctx.links.values():
                if other is not conn and not other.closing:
                    for u in updates:
                        self._pushes.enqueue(other, shard, u)
        elif self.relay_of(k + 1) == me:
            # Ours is the next window: held with our own batch, which waits for it too.
            held = self.own.setdefault(shard, [])
            held.extend(updates)
            self.own_bytes += sum(len(u) for u in updates)
            self._ctx.schedule_flush(now)
        else:
            for j in range(2, REPEATS):
                if self.relay_of(k + j) == me:
                    # A later turn: kept aside (our own batches go to other relays meanwhile).
                    self.later.setdefault(k + j, {}).setdefault(shard, []).extend(updates)
                    break

    def dispatch_own(self, now: float, mode: str, broadcast: bool) -> None:
        """Send our own deltas of the window that just ended (rotating relay, see _flush).

        Against loss (while the network loses frames), the batch pushed to a window's relay
        is pushed again, once, to the next window's relay (``echo``) when it can ride with our
        next batch (never as a message of its own): a batch lost on the way to one relay then
        arrives one window later without a repair round trip. Otherwise the relay's broadcast
        hint shows it unconfirmed, and it is pushed again after ``relay_retry``.
        """
        own, self.own, self.own_bytes = self.own, {}, 0
        attempts, self.own_attempts = self.own_attempts, {}
        echo, self.echo = self.echo, {}
        echo_due, self.echo_due = self.echo_due, False
        if mode == RELAY and not broadcast:
            k = self._ctx.window_index(now)
            target = self.relay_of(k)
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
                return
            relay = self._ctx.links.get(target) if target is not None else None
            if relay is not None:
                for shard, deltas in own.items():
                    for d in deltas:
                        self._pushes.enqueue(relay, shard, d, self._ctx.name)
                    relay.push.relay_shards.add(shard)
                    self._remember(now, shard, deltas, attempts.get(shard, 0), relay.name)
                for shard, deltas in echo.items() if own or echo_due else ():
                    for d in deltas:
                        self._pushes.enqueue(relay, shard, d)
                    relay.push.relay_shards.add(shard)
                if own and self._ctx.lossy(now):
                    self.echo = own
                    # A batch pushed again (lost once already) is echoed even with no next
                    # batch to ride with: a message of its own, for these batches only.
                    if any(attempts.get(s, 0) >= 1 for s in own):
                        self.echo_due = True
                        self._ctx.schedule_flush(now)
                return
        # We relayed the window that ended (or the overlay is no longer a rotating relay):
        # straight to everyone.
        for shard, deltas in echo.items():
            own.setdefault(shard, [])[:0] = deltas
        self._to_everyone(own)

    def second_copy(self, sent_from: int, now: float) -> None:
        """Our broadcast (the outbox from ``sent_from`` on) goes twice to the next relays.

        Under loss only. The next :data:`SECOND_COPY` relays' broadcasts are every other
        agent's second (and third) copy of what ours brings (on_broadcast repeats it): a
        broadcast lost on the way to one of them costs a copy to all 24 agents, not one. A
        second frame to each costs one message per window each (not per agent), and makes
        that leg lose with 0.04 instead of 0.2 at 20 % loss.
        """
        if not self._ctx.lossy(now):
            return
        k = self._ctx.window_index(now)
        nexts = {self.relay_of(k + j) for j in range(SECOND_COPY)} - {None, self._ctx.name}
        if not nexts:
            return
        out = self._ctx.outbox
        for peer, msg in out[sent_from:]:
            if peer in nexts and isinstance(msg, Push):
                out.append((peer, msg))

    def _to_everyone(self, own: dict[str, list[bytes]]) -> None:
        for conn in self._ctx.links.values():
            if conn.closing:
                continue
            for shard, deltas in own.items():
                if self._ctx.policy.sends_to(conn.name, shard):
                    for d in deltas:
                        self._pushes.enqueue(conn, shard, d, self._ctx.name)

    def _remember(
        self, now: float, shard: str, deltas: list[bytes], attempts: int, relay: str
    ) -> None:
        """Keep a batch pushed to a relay until a relay broadcast shows the relay had it."""
        sv = self._ctx.replicas.state_vector(shard)
        own = None
        if self._ctx.lossy(now) and deltas:
            client = _first_client(deltas[0])
            if client is not None:
                clock = _yjs.decode_state_vector(sv).get(client)
                own = (client, clock) if clock else None
        self.unconfirmed.append(Sent(now, shard, sv, list(deltas), attempts, relay, own))
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

    def relay_of(self, k: int) -> str | None:
        conns = self._ctx.links
        gate = self._ctx.gate
        if gate is None:
            return relay_of(
                self._order(),
                k,
                self._ctx.name,
                lambda n: n in conns and not conns[n].closing,
            )
        # With credentials, an agent that may not write every shard held here cannot be the
        # relay: its broadcasts of others' deltas would be refused by the receivers. Every
        # agent skips it alike (its identity is known: the relay needs direct links), itself
        # included, so the next one in rank order stands in.
        shards = self._ctx.shard_names()
        key = hash(tuple(shards))
        cache = self._eligible

        def eligible(n: str) -> bool:
            c = conns.get(n)
            if n != self._ctx.name and (c is None or c.closing):
                return False
            mine = n == self._ctx.name
            identity = None if mine else c.identity  # type: ignore[union-attr]
            hit = cache.get(n)
            if hit is not None and hit[0] == key and hit[1] is identity:
                return hit[2]
            if mine:
                ok = all(gate.may_write(s) for s in shards)
            else:
                ok = identity is not None and gate.may_relay(identity, shards)
            cache[n] = (key, identity, ok)
            return ok

        return relay_of(self._order(), k, "", eligible)

    def fully_connected(self) -> bool:
        """Whether we are connected to every live agent of our view (rotating relay)."""
        conns = self._ctx.links
        return all(
            n == self._ctx.name or (n in conns and not conns[n].closing) for n in self._order()
        )
