"""Repair of lost pushes: sequence gaps, relay hints, and acks we do not cover.

Pushes carry a sequence number per link and shard; a gap means one was lost, and Yjs cannot
integrate a client's later structs without it. The receiver asks the sender for a repair at
once (``SyncRequest``), and again every ``repair_timeout`` until the ``Diff`` comes. Relay
broadcasts carry the relay's state vector (``Push.hint``), and every agent learns the others'
durable states (acks): one that holds what we lack, still after ``repair_timeout``, shows a loss
even once the mesh is quiet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..messages import ShardState, SyncRequest
from . import _yjs
from .overlay import RELAY

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link

__all__ = ["LinkRepair", "Repairs", "sv_covers"]


@dataclass(slots=True)
class LinkRepair:
    """Sequence numbers received from one peer and the repairs asked of it."""

    seq_in: dict[str, int] = field(default_factory=dict)  # last Push seq received, per shard
    repairs: dict[str, float] = field(default_factory=dict)  # shard -> when repair was asked
    #: shard -> the state vector that showed what we lack (a hint or an ack), if known: once
    #: ours covers it (another path brought it), the repair is not asked again
    targets: dict[str, bytes] = field(default_factory=dict)
    #: shard -> how many times the repair under way was asked (a reply times only a first ask)
    tries: dict[str, int] = field(default_factory=dict)
    #: smoothed round trip of this link, and its mean deviation (s), from the repairs this
    #: peer answered and, under loss, its relay broadcasts (see sample and Repairs.timeout);
    #: None until one was timed
    srtt: float | None = None
    rttvar: float = 0.0
    #: one-way delay of this link's relay broadcasts (s), smoothed; None until one was timed
    #: (the hub term's writers aim their batches with it, _relay_hub.py)
    one_way: float | None = None
    #: relay broadcasts in a row whose travel time disagreed with the delay known so far, and
    #: the last one's (s): with the hub term, not sent at a boundary of our windows, kept out
    #: of the samples (_RelayHub.on_grid)
    off_grid: int = 0
    off_grid_travel: float = 0.0

    def answered(self, shard: str, now: float) -> None:
        """The repair of ``shard`` is over (its Diff came): time it if it was asked once.

        A reply to a request asked again may answer the first ask: not a round-trip sample.
        """
        asked = self.repairs.pop(shard, None)
        self.targets.pop(shard, None)
        if asked is not None and self.tries.pop(shard, 0) == 1:
            self.sample(now - asked)
        self.tries.pop(shard, None)

    def sample(self, rtt: float) -> None:
        """One round-trip sample of this link (a repair answered, or a relay broadcast's
        travel time doubled: see Relay.on_hint), smoothed as TCP does (RFC 6298; the
        deviation starts at 0: it grows with jitter)."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, 0.0
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt


def sv_covers(a: bytes, b: bytes) -> bool:
    """Whether state vector ``a`` has every clock of ``b`` (both already validated)."""
    if a == b:
        return True
    have = _yjs.decode_state_vector(a)
    return all(
        have.get(client, 0) >= clock for client, clock in _yjs.decode_state_vector(b).items()
    )


#: Repairs under way (lags and asked of the link that told us) beyond which an ack of a shard
#: not held here asks none (see Repairs.check_ack).
MAX_UNHELD_REPAIRS = 64


class Repairs:
    """Asks peers for what we lost (see the module docstring) and retries until it comes."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        # shard -> (check at, agent, who told us, its state vector): an ack we did not cover
        self.lags: dict[str, tuple[float, str, str, bytes]] = {}
        #: (sender, shard) -> the last broadcast Push seq received (fanout links)
        self.broadcast_seq: dict[tuple[str, str], int] = {}
        #: Names of the links a repair was asked of (a superset: answered ones are pruned by
        #: :meth:`_pending`). The core asks for our timers after every received Push, and a
        #: full mesh of 32 has 31 links, nearly always without a repair (issue 18); empty
        #: with :attr:`lags`, :meth:`deadlines` has nothing (the core reads both, h-recv4).
        self.asked: set[str] = set()

    def _pending(self) -> list[Link]:
        """The links with a repair under way, in link order (as a walk of every link would
        meet them): none at once while no repair was asked since the last call."""
        if not self.asked:
            return []
        pending = [c for c in self._ctx.links.values() if c.repair.repairs]
        self.asked = {c.name for c in pending}
        return pending

    def asking(self, shard: str) -> bool:
        """Whether a repair of ``shard`` is under way with any peer."""
        return any(shard in c.repair.repairs for c in self._pending())

    def sequence(self, conn: Link, shard: str, seq: int, check_gap: bool, now: float) -> None:
        """A Push of ``shard`` numbered ``seq`` (0: unnumbered) came from ``conn``.

        ``check_gap`` False: a gap is not repaired from this link (relay broadcasts, and in
        the rotating relay a writer's batches too: those are confirmed by the broadcast's
        hint and pushed again by the writer, so the gap, seen a relay turn later, is old
        news that a request would only repeat).
        """
        last = conn.repair.seq_in.get(shard, 0)
        if check_gap and seq and seq > last + 1 and shard not in conn.repair.repairs:
            # A Push of this shard was lost on the way: the deltas above may now wait for
            # it (Yjs integrates a client's structs in clock order), and so would every
            # agent behind us. Ask the sender for what we lack right away.
            self.ask(conn, shard, now)
        if seq:
            conn.repair.seq_in[shard] = max(last, seq)

    def broadcast_sequence(
        self, sender: str, conn: Link | None, shard: str, seq: int, now: float
    ) -> None:
        """A broadcast Push of ``shard`` numbered ``seq`` came from ``sender`` (``conn``: our
        link with it, if any). A gap asks the sender for a repair, or, without a link to it,
        any live link holding the shard. The first one seen from a sender sets the baseline (we
        may have joined after its first); a lower number is a restart or a redelivery."""
        key = (sender, shard)
        last = self.broadcast_seq.get(key)
        self.broadcast_seq[key] = seq
        if last is None or not seq or seq <= last + 1:
            return
        target = conn
        if target is None or target.closing:
            policy = self._ctx.policy
            target = next(
                (c for c in self._ctx.live_links() if policy.sends_to(c.name, shard)), None
            )
        if target is not None and shard not in target.repair.repairs:
            self.ask(target, shard, now)

    def forget(self, agent: str) -> None:
        """``agent`` left: its broadcast sequence numbers start again if it comes back."""
        for key in [k for k in self.broadcast_seq if k[0] == agent]:
            del self.broadcast_seq[key]

    def ask(self, conn: Link, shard: str, now: float, target: bytes | None = None) -> None:
        """Ask ``conn`` for what we lack of ``shard`` (``target``: the state vector that
        showed it, if known)."""
        conn.repair.repairs[shard] = now
        self.asked.add(conn.name)
        conn.repair.tries[shard] = conn.repair.tries.get(shard, 0) + 1
        if target is not None:
            conn.repair.targets[shard] = target
        self._ctx.loss_seen_at = now
        self._ctx.count_repair(conn.name, shard)
        sv = self._ctx.state_vector(shard)
        self._ctx.send(conn.name, SyncRequest(((shard, sv),)))

    def check_ack(self, agent: str, state: ShardState, source: Link, now: float) -> None:
        """An agent holds (on disk) something of a shard we hold that we lack: we lost it.

        Acks lag behind the deltas they cover (a commit, then ack_delay), so this is the
        sign of a lost push or broadcast even once the mesh is quiet, when no later push
        shows a sequence gap or a state-vector hint. Ask that agent (or whoever told us).
        """
        shard = state.shard
        if shard in self.lags or not self._ctx.policy.accepts(shard):
            return
        under_way = len(self.lags) + len(source.repair.repairs)
        if under_way >= MAX_UNHELD_REPAIRS and not self._ctx.holds(shard):
            # A shard we lack entirely (its first push lost) is repaired from an ack only
            # while few repairs are under way: a peer may ack any number of names it never
            # sent, and each asked a repair, again every repair timeout while the link
            # lasted (h-wire's scan: 100,000 in one 1.8 MB Ack, 19 MB of SyncRequests in
            # 5 s). The others are the anti-entropy round's (Digests, max_sync_shards).
            return
        mine = self._ctx.state_vector(shard)
        if not sv_covers(mine, state.state_vector):
            # Not at once: what it acked may still be on its way to us (a writer's next
            # batch, with its ack of the previous one, can overtake the broadcast of that
            # one). Checked again after repair_timeout (see _check_lags).
            self.lags[shard] = (
                now + self._ctx.config.repair_timeout,
                agent,
                source.name,
                state.state_vector,
            )

    def check_lags(self, now: float) -> None:
        """Ask for a repair of the shards an ack showed we lag behind, if we still do."""
        for shard, (due, agent, source, sv) in list(self.lags.items()):
            if now < due:
                continue
            del self.lags[shard]
            if self.asking(shard):
                continue
            mine = self._ctx.state_vector(shard)
            if not sv_covers(mine, sv):
                for name in (agent, source):
                    conn = self._ctx.links.get(name)
                    if conn is not None and not conn.closing:
                        self.ask(conn, shard, now, sv)
                        break

    def timeout(self, conn: Link, now: float) -> float:
        """How long a repair asked of ``conn`` may take before it is asked again.

        ``repair_timeout``; while the network loses frames, the round trip measured on this
        link instead when shorter (1.25 x smoothed + 4 x deviation, after TCP's retransmission
        timer, and at least a quarter of ``repair_timeout``): at 20 % loss a third of the
        requests or replies are lost, and each waited 0.35 s for a 0.2 s round trip.
        """
        timeout = self._ctx.config.repair_timeout
        if not self._ctx.lossy(now):
            return timeout
        rtt, var = conn.repair.srtt, conn.repair.rttvar
        if rtt is None:
            # Not measured on this link yet: the other links' round trips, if any.
            timed = [c.repair for c in self._ctx.links.values() if c.repair.srtt is not None]
            if not timed:
                return timeout
            rtt = sum(r.srtt for r in timed) / len(timed)  # type: ignore[misc]
            var = sum(r.rttvar for r in timed) / len(timed)
        return min(timeout, max(timeout / 4, 1.25 * rtt + 4 * var))

    def retry(self, now: float) -> None:
        """Ask again for repairs whose answer did not come within their timeout."""
        for conn in self._pending():
            timeout = self.timeout(conn, now)
            for shard, asked in list(conn.repair.repairs.items()):
                asm = conn.replies.receiving
                if asm is not None and asm.shard == shard and now < asm.last_at + timeout:
                    continue  # its answer is arriving, in pieces
                if now >= asked + timeout:
                    target = conn.repair.targets.get(shard)
                    if target is not None and sv_covers(self._ctx.state_vector(shard), target):
                        self.done(conn, shard)  # it came by another path meanwhile
                        continue
                    self.ask(conn, shard, now)
                    if conn.repair.tries.get(shard) == 2:
                        self._ask_another(conn, shard, now, target)

    def _ask_another(self, conn: Link, shard: str, now: float, target: bytes | None) -> None:
        """Under loss (rotating relay), a repair asked a second time is asked of one more
        peer, chosen at random among those that hold the shard: a request or its reply is
        lost with 0.36 at 20 % loss, and a straggler asking the same peer lost three in a row
        once per run (1.8 s in Glomers seed 4). Asked again, never at first: most first asks
        are answered, and two at once doubled the requests (benchmarks/history/glomers-loss.md, third pass).
        """
        ctx = self._ctx
        if not ctx.lossy(now) or ctx.mode() != RELAY:
            return
        others = [
            c
            for c in ctx.live_links()
            if c is not conn
            and shard not in c.repair.repairs
            and ctx.policy.sends_to(c.name, shard)
        ]
        if others:
            self.ask(others[int(ctx.rng.random() * len(others))], shard, now, target)

    @staticmethod
    def done(conn: Link, shard: str) -> None:
        """The repair of ``shard`` asked of ``conn`` is over (its Diff came)."""
        conn.repair.repairs.pop(shard, None)
        conn.repair.targets.pop(shard, None)
        conn.repair.tries.pop(shard, None)

    def deadlines(self) -> list[float]:
        """When :meth:`check_lags` and :meth:`retry` have work."""
        times = []
        if self.lags:
            times.append(min(due for due, _, _, _ in self.lags.values()))
        for conn in self._pending():
            timeout = self.timeout(conn, self._ctx.now)
            asm = conn.replies.receiving
            for shard, asked in conn.repair.repairs.items():
                arriving = asm.last_at if asm is not None and asm.shard == shard else -math.inf
                times.append(max(asked, arriving) + timeout)
        return times
