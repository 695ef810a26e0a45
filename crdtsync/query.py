"""Scatter/gather reads of shards held by other agents, as a pure state machine. No I/O.

A read of a shard this agent does not hold asks the shard's holders (*scatter*) with a
:class:`~crdtsync.messages.ReadRequest` carrying, per shard, the state vector of the copy the
asker already has cached (the empty state vector if none), and collects their
:class:`~crdtsync.messages.ReadReply` answers (*gather*): ``diff(state vector)``, i.e. only
what the asker lacks, or None from an agent that does not hold the shard. The caller merges
the answers by CRDT join (:class:`crdtsync.readcache.ReadCache`): every answer is applied to
one document, so the result holds everything any answering holder had, whatever order they
answered in. Never "the newest answer wins".

One read (:meth:`QueryTable.read`)
    needs ``quorum`` answers with data. It first asks only that many targets (connected ones
    first, so no dial is waited for if avoidable); every "not held" answer or lost connection
    asks one more, and after ``hedge_delay`` every target not asked yet is asked too, which
    bounds the tail latency a slow holder causes. Outcomes: ``OK`` with the answers, once
    ``quorum`` data answers are in; ``NOT_FOUND`` once every target answered "not held";
    ``TIMEOUT`` at the deadline, naming the targets that did not answer with data.

A scan (:meth:`QueryTable.scan`)
    asks every target for every shard whose name starts with a prefix and completes once each
    of them sent its last reply (or times out naming those that did not).

A request goes out once the driver reports the target connected (:meth:`QueryTable.sends`);
targets that are not connected are what the agent should dial (:meth:`QueryTable.targets_waiting`).
Replies to finished or unknown requests are ignored: late answers are normal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import UsageError
from .messages import ReadReply, ReadRequest

__all__ = ["OK", "NOT_FOUND", "TIMEOUT", "Outcome", "QueryTable"]

OK = "ok"
NOT_FOUND = "not_found"
TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a read or scan ended.

    Attributes:
        id: the query id.
        status: :data:`OK`, :data:`NOT_FOUND` or :data:`TIMEOUT`.
        answers: shard -> ((peer, update), ...) in arrival order: every data answer.
        answered: targets that answered (with or without data), sorted.
        missing: targets whose (data) answer did not come, sorted; what a timeout names.
        at: when it ended.
    """

    id: int
    status: str
    answers: dict[str, tuple[tuple[str, bytes], ...]]
    answered: tuple[str, ...]
    missing: tuple[str, ...]
    at: float


@dataclass(slots=True)
class _Query:
    id: int
    shards: dict[str, bytes]  # exact shards asked for -> state vector of our cached copy
    prefix: str | None
    quorum: int  # data answers needed per exact shard (reads); unused by scans
    targets: list[str]  # in order of preference
    deadline: float
    hedge_at: float
    asked: list[str] = field(default_factory=list)
    to_send: list[str] = field(default_factory=list)  # asked but not sent yet (not connected)
    complete: set[str] = field(default_factory=set)  # targets whose last reply came
    data: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    not_held: set[str] = field(default_factory=set)  # targets that answered "not held"

    @property
    def scan(self) -> bool:
        return self.prefix is not None


class QueryTable:
    """Every read and scan this agent has in flight (see the module docstring).

    Args:
        hedge_delay: after this long, a read also asks every target it has not asked yet.
    """

    def __init__(self, *, hedge_delay: float = 0.25) -> None:
        self.hedge_delay = hedge_delay
        self._next_id = 1
        self._queries: dict[int, _Query] = {}
        self._done: dict[int, Outcome] = {}

    # -- starting --------------------------------------------------------------------------

    def read(
        self,
        shard: str,
        targets: Iterable[str],
        *,
        quorum: int,
        state_vector: bytes,
        now: float,
        timeout: float,
        connected: Iterable[str] = (),
    ) -> int:
        """Start a read of ``shard`` from ``targets`` needing ``quorum`` data answers.

        With no targets the read ends at once: NOT_FOUND, or TIMEOUT if ``quorum`` > 0
        answers were required from holders we know but cannot ask.

        Raises:
            UsageError: quorum < 1 or timeout <= 0.
        """
        if quorum < 1 or timeout <= 0:
            raise UsageError("need quorum >= 1 and timeout > 0")
        conn = set(connected)
        order = list(dict.fromkeys(targets))
        order.sort(key=lambda p: p not in conn)  # stable: connected first, else given order
        q = self._new(dict([(shard, state_vector)]), None, quorum, order, now, timeout)
        self._ask(q, quorum)
        self._settle(q, now)
        return q.id

    def scan(
        self,
        prefix: str,
        targets: Iterable[str],
        *,
        state_vectors: dict[str, bytes],
        now: float,
        timeout: float,
    ) -> int:
        """Start a scan: every target is asked for its shards named ``prefix...``.

        ``state_vectors`` are those of cached copies of shards known to match (only diffs of
        them come back). With no targets the scan ends at once with no answers (OK).
        """
        if timeout <= 0:
            raise UsageError("need timeout > 0")
        q = self._new(
            dict(sorted(state_vectors.items())),
            prefix,
            1,
            list(dict.fromkeys(targets)),
            now,
            timeout,
        )
        self._ask(q, len(q.targets))
        self._settle(q, now)
        return q.id

    def _new(
        self,
        shards: dict[str, bytes],
        prefix: str | None,
        quorum: int,
        targets: list[str],
        now: float,
        timeout: float,
    ) -> _Query:
        qid = self._next_id
        self._next_id += 1
        q = _Query(qid, shards, prefix, quorum, targets, now + timeout, now + self.hedge_delay)
        self._queries[qid] = q
        return q

    def _ask(self, q: _Query, n: int) -> None:
        for p in q.targets:
            if n <= 0:
                break
            if p not in q.asked:
                q.asked.append(p)
                q.to_send.append(p)
                n -= 1

    # -- driving ---------------------------------------------------------------------------

    def sends(self, connected: Iterable[str]) -> list[tuple[str, ReadRequest]]:
        """Requests to send now to peers in ``connected`` (each handed out once)."""
        conn = set(connected)
        out = []
        for q in self._queries.values():
            keep = []
            for p in q.to_send:
                if p in conn:
                    out.append((p, ReadRequest(q.id, tuple(q.shards.items()), q.prefix)))
                else:
                    keep.append(p)
            q.to_send = keep
        return out

    def targets_waiting(self) -> frozenset[str]:
        """Targets asked but not yet connected: the driver should connect to them."""
        return frozenset(p for q in self._queries.values() for p in q.to_send)

    def receive(self, peer: str, reply: ReadReply, now: float) -> bool:
        """Take one reply; return False if it belongs to no live query (ignored)."""
        q = self._queries.get(reply.id)
        if q is None or peer not in q.asked or peer in q.complete:
            return False
        for shard, update in reply.shards:
            if not q.scan and shard not in q.shards:
                continue  # not what we asked: ignore it
            if q.scan and shard not in q.shards and not shard.startswith(q.prefix or ""):
                continue
            if update is None:
                continue
            answers = q.data.setdefault(shard, [])
            if any(p == peer for p, _ in answers):
                # One agent, one answer: a peer repeating itself (in several frames of one
                # reply) must not count twice towards the quorum. Peers are the names the
                # driver authenticated (with credentials), so one liar is one answer.
                continue
            answers.append((peer, update))
        if reply.last:
            q.complete.add(peer)
            if not q.scan and all(p != peer for p, _ in q.data.get(next(iter(q.shards)), ())):
                q.not_held.add(peer)
                self._ask(q, 1)  # one more target in its place
        self._settle(q, now)
        return True

    def connection_lost(self, peer: str) -> None:
        """``peer`` went away: a read asks another target in its place (if any)."""
        for q in list(self._queries.values()):
            if peer in q.asked and peer not in q.complete:
                if peer not in q.to_send:
                    q.to_send.append(peer)  # ask again if it comes back
                if not q.scan:
                    self._ask(q, 1)

    def tick(self, now: float) -> None:
        """Hedge slow reads and time out expired queries."""
        for q in list(self._queries.values()):
            if now >= q.deadline:
                self._finish(q, TIMEOUT, now)
            elif now >= q.hedge_at:
                q.hedge_at = math.inf  # once; a scan asks everyone already: nothing to hedge
                if not q.scan:
                    self._ask(q, len(q.targets))

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (None: no query in flight)."""
        if not self._queries:
            return None
        times = [min(q.deadline, q.hedge_at) for q in self._queries.values()]
        return min(times) if times else None

    def cancel(self, qid: int) -> None:
        """Forget a query (its caller gave up)."""
        self._queries.pop(qid, None)
        self._done.pop(qid, None)

    def result(self, qid: int) -> Outcome | None:
        """The outcome of query ``qid`` once it ended (taken: asked once), else None."""
        return self._done.pop(qid, None)

    def active(self) -> int:
        """Queries in flight."""
        return len(self._queries)

    # -- ending ----------------------------------------------------------------------------

    def _settle(self, q: _Query, now: float) -> None:
        if q.scan:
            if all(p in q.complete for p in q.targets):
                self._finish(q, OK, now)
            return
        have = len(q.data.get(next(iter(q.shards)), ()))
        if have >= q.quorum:
            self._finish(q, OK, now)
        elif all(p in q.complete for p in q.targets):
            # Everyone answered and the quorum cannot be reached any more: nobody has the
            # shard (NOT_FOUND), or too few do (TIMEOUT, naming those without it).
            self._finish(q, TIMEOUT if have else NOT_FOUND, now)

    def _finish(self, q: _Query, status: str, now: float) -> None:
        self._queries.pop(q.id, None)
        answers = {s: tuple(v) for s, v in sorted(q.data.items())}
        answered = tuple(sorted(q.complete | {p for v in q.data.values() for p, _ in v}))
        if q.scan:
            missing = tuple(sorted(p for p in q.targets if p not in q.complete))
        else:
            with_data = {p for p, _ in q.data.get(next(iter(q.shards)), ())}
            missing = tuple(sorted(p for p in q.targets if p not in with_data))
        self._done[q.id] = Outcome(q.id, status, answers, answered, missing, now)
