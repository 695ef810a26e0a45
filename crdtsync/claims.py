"""Claiming work among agents: a quorum-confirmed claim, and a job queue built on it.

A CRDT never refuses a write, so "whoever sets ``owner`` last wins" settles only after both
writers worked. :class:`Claims` adds the missing step, outside the gossip core, with plain
shard writes plus the two quorum tools crdtsync has (:meth:`Shard.replicated
<crdtsync.shard.Shard.replicated>` and :meth:`Agent.read <crdtsync.Agent.read>`):

1. **write** ``claims[job|me]`` (each claimant its own key: claims never overwrite each other);
2. **confirm**: wait until ``W = members // 2 + 1`` agents (this one included) hold it on disk;
3. **look**: read the shard from ``W`` agents (this one included), merged by CRDT join;
4. **decide**: the claim is *won* if the job is not done and no other claimant of it is seen
   (other than agents this one has declared dead, see *leases*); otherwise it is *lost*:
   the claim is withdrawn and :meth:`Claims.claim` says why.

Why no job is taken twice: take two claimants A and B of one job, each confirmed on W of the
``members`` agents and each looking at W of them; ``W + W > members``, so some agent r is
both among those A looked at and among those that confirmed B. If A's look missed B's claim,
r answered A before B's claim reached r; B's confirmation (and B's look after it) therefore
came after A's look, hence after A's claim was on disk on all of A's W confirmers. B's look
meets one of them, so B sees A. At least one of any two concurrent claimants sees the other,
and one that sees another loses: **at most one claimant wins**. Two that see each other both
lose (the job stays free, and is taken on a later try). The winner is deterministic only in
this sense: it is the one that was alone in its look. This holds when ``members`` is the
number of agents that hold the claims shard; an extra holder outside the count voids it.

**Leases.** A claim of an agent this agent's membership protocol has declared *dead* (see
:attr:`Agent.peers <crdtsync.Agent.peers>`, state ``"dead"``) is ignored, so its jobs are
taken again: a job whose holder died is re-run (at least once, not exactly once, for that
job). An agent restarted under its name finds its claims again (:meth:`Claims.mine`) and
re-confirms them with :meth:`Claims.claim`, losing any that another agent took meanwhile.
A partitioned-but-alive holder declared dead elsewhere is not fenced: keep jobs idempotent,
or write their result with :meth:`Claims.done`, which records who finished first.

**Queue recipe.** :class:`JobQueue`: ``put`` jobs, ``take`` one (claim confirmed), do it,
``complete`` it (result and done marker in one transaction, confirmed on W agents).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ReplicationTimeout, ShardNotFound, UsageError

if TYPE_CHECKING:
    from .agent import Agent
    from .shard import Shard

__all__ = ["ClaimResult", "Claims", "JobQueue"]

_SEP = "|"  # not in the agent-name alphabet: "job|agent" splits unambiguously at the last "|"


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The outcome of :meth:`Claims.claim`.

    Attributes:
        job: the job claimed.
        won: whether this agent holds the job now (confirmed on a quorum, nobody else seen).
        reason: why not, when lost: ``"done"``, ``"taken by <agents>"``, ``"contended with
            <agents>"`` or ``"no quorum: ..."``.
    """

    job: str
    won: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.won


class Claims:
    """Claims on named jobs, kept in the named map ``"claims"`` of ``shard`` (see the module).

    Args:
        agent: this agent (for quorum reads and the membership view).
        shard: the shard that holds the claims (every member must hold it).
        members: how many agents hold ``shard``, this one included (fixed membership).
        timeout: seconds each quorum step may take.
    """

    def __init__(self, agent: Agent, shard: Shard, *, members: int, timeout: float = 10.0) -> None:
        if members < 1:
            raise UsageError("members must be >= 1")
        self.agent = agent
        self.shard = shard
        self.members = members
        self.quorum = members // 2 + 1
        self.timeout = timeout

    @property
    def me(self) -> str:
        return self.agent.name

    def _dead(self) -> set[str]:
        return {p.name for p in self.agent.peers if p.state == "dead"}

    @staticmethod
    def _claimants(state: dict[str, Any], job: str) -> set[str]:
        out = set()
        for key in state.get("claims", {}):
            j, _, who = key.rpartition(_SEP)
            if j == job:
                out.add(who)
        return out

    def holder(self, job: str) -> set[str]:
        """Agents that claim ``job`` as seen here now (not a quorum view)."""
        return self._claimants(self.shard.snapshot(), job)

    def is_done(self, job: str) -> bool:
        """Whether ``job`` is marked done here."""
        return job in self.shard.map("done")

    def mine(self) -> list[str]:
        """Jobs this agent claims and has not marked done (to resume after a restart)."""
        done = self.shard.map("done")
        return sorted(j for j in self._claimants_of(self.me) if j not in done)

    def _claimants_of(self, who: str) -> set[str]:
        out = set()
        for key in self.shard.map("claims"):
            j, _, w = key.rpartition(_SEP)
            if w == who:
                out.add(j)
        return out

    async def claim(self, job: str) -> ClaimResult:
        """Claim ``job``: write, confirm on a quorum, look at a quorum, decide (see the module).

        Returns a :class:`ClaimResult`; a lost claim is withdrawn before this returns.
        """
        if not isinstance(job, str) or not job:
            raise UsageError("a job id must be a non-empty str")
        claims = self.shard.map("claims")
        dead = self._dead()
        if self.is_done(job):
            return ClaimResult(job, False, "done")
        others = self._claimants(self.shard.snapshot(), job) - {self.me} - dead
        if others:  # seen here already: do not even write
            return ClaimResult(job, False, f"taken by {', '.join(sorted(others))}")
        key = f"{job}{_SEP}{self.me}"
        claims[key] = {"at": time.time()}
        try:
            if self.quorum > 1:
                await self.shard.replicated(peers=self.quorum - 1, timeout=self.timeout)
                state = await self.agent.read(
                    self.shard.name, quorum=self.quorum, timeout=self.timeout
                )
            else:
                await self.shard.flush()
                state = self.shard.snapshot()
        except (ReplicationTimeout, ShardNotFound) as exc:
            self._withdraw(key)
            return ClaimResult(job, False, f"no quorum: {exc}")
        if job in state.get("done", {}):
            self._withdraw(key)
            return ClaimResult(job, False, "done")
        others = self._claimants(state, job) - {self.me} - self._dead()
        if others:
            self._withdraw(key)
            return ClaimResult(job, False, f"contended with {', '.join(sorted(others))}")
        return ClaimResult(job, True)

    async def done(self, job: str, result: Any = None) -> None:
        """Record ``job`` as done by this agent (with ``result``) and drop the claim, in one
        transaction, then wait until a quorum holds it. The first ``done`` of a job wins;
        a later one (a re-run after a lease expired) does not overwrite it."""
        done = self.shard.map("done")
        with self.shard.transaction():
            if job not in done:
                done[job] = {"by": self.me, "result": result, "at": time.time()}
            self._withdraw(f"{job}{_SEP}{self.me}")
        if self.quorum > 1:
            await self.shard.replicated(peers=self.quorum - 1, timeout=self.timeout)
        else:
            await self.shard.flush()

    async def release(self, job: str) -> None:
        """Give ``job`` back without doing it (others may claim it)."""
        self._withdraw(f"{job}{_SEP}{self.me}")
        await self.shard.flush()

    def _withdraw(self, key: str) -> None:
        claims = self.shard.map("claims")
        if key in claims:
            del claims[key]


class JobQueue:
    """A work queue over one shard: producers :meth:`put`, consumers :meth:`take` and
    :meth:`complete`; a job is handed to one consumer once its claim is confirmed.

    Jobs live in the named map ``"jobs"`` (id -> payload), results in ``"done"``.
    """

    def __init__(self, agent: Agent, shard: Shard, *, members: int, timeout: float = 10.0) -> None:
        self.claims = Claims(agent, shard, members=members, timeout=timeout)
        self.shard = shard
        self._rng = random.Random()

    def put(self, job: str, payload: Any = None) -> None:
        """Add a job (ids are unique: putting an existing id overwrites its payload)."""
        self.shard.map("jobs")[job] = payload

    def pending(self) -> list[str]:
        """Jobs known here that are not done."""
        done = self.shard.map("done")
        return sorted(j for j in self.shard.map("jobs") if j not in done)

    async def take(self, *, wait: float = 0.0) -> tuple[str, Any] | None:
        """Claim one pending job: (id, payload), or None if none could be claimed (within
        ``wait`` seconds of retrying). Jobs this agent already holds (after a restart) come
        first, re-confirmed."""
        deadline = time.monotonic() + wait
        while True:
            for job in self.claims.mine():
                if (await self.claims.claim(job)).won:
                    return job, self.shard.map("jobs").get(job)
            taken = {key.rpartition(_SEP)[0] for key in self.shard.map("claims")}
            free = [j for j in self.pending() if j not in taken]  # (ours were tried above)
            self._rng.shuffle(free)  # consumers start at different jobs: fewer collisions
            for job in free[:4]:
                if (await self.claims.claim(job)).won:
                    return job, self.shard.map("jobs").get(job)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self._rng.uniform(0.02, 0.2))  # back off: contention clears

    async def complete(self, job: str, result: Any = None) -> None:
        """Mark ``job`` done with ``result`` (see :meth:`Claims.done`)."""
        await self.claims.done(job, result)
