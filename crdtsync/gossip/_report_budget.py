"""A budget per reporter: how many reports of death one peer may make us act on.

:class:`ReportBudget` is a token bucket per reporter name, on the core's clock (pure: the
time comes in as ``now``). Membership spends one for every report of death that would make its
subject refute or raise the incarnation known of it (:mod:`crdtsync.gossip.membership`), so
one member cannot make another refute, and flood the mesh with refutations, as often as it
sends a PeerList.
"""

from __future__ import annotations

import logging

__all__ = ["HearsayCap", "ReportBudget"]

logger = logging.getLogger("crdtsync.gossip.membership")

#: Reporters remembered before those whose bucket is full again are dropped.
_REMEMBERED = 256


class ReportBudget:
    """``burst`` reports at once per reporter, then ``rate`` a second.

    Memory: one entry per reporter seen lately; reporters are the peers that sent us a
    PeerList, connected (authenticated, with credentials) peers only.
    """

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        # reporter -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def spend(self, reporter: str, now: float) -> bool:
        """Take one report from ``reporter``'s budget; False (nothing taken) if it is spent."""
        tokens, at = self._buckets.get(reporter, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[reporter] = (tokens, now)
            return False
        if reporter not in self._buckets and len(self._buckets) >= _REMEMBERED:
            refilled = now - self.burst / self.rate  # counted before that: full again
            self._buckets = {r: b for r, b in self._buckets.items() if b[1] > refilled}
        self._buckets[reporter] = (tokens - 1.0, now)
        return True


class HearsayCap:
    """How many members this agent keeps on the word of others alone: at most ``per_reporter``
    taken from one reporter, ``total`` in all (see :data:`crdtsync.gossip.membership.HEARSAY_CAP`).

    A member is *hearsay* from when an "alive" entry that could not be verified (no credentials,
    or a key not known here yet) adds it, until it connects to us (:meth:`vouch`) or is
    forgotten (:meth:`drop`): then its place is free again. Memory: two dicts of at most
    ``total`` entries.
    """

    def __init__(self, agent: str, per_reporter: int, total: int) -> None:
        self.agent = agent  # (named in the log line)
        self.per_reporter = per_reporter
        self.total = total
        #: Members refused over a cap (logged at the first).
        self.refused = 0
        self._by: dict[str, str] = {}  # member -> the reporter it was taken from
        self._count: dict[str, int] = {}  # reporter -> its members in _by

    def take(self, member: str, reporter: str) -> bool:
        """Count ``member`` as taken from ``reporter``; False (refused, counted) over a cap."""
        n = self._count.get(reporter, 0)
        if n >= self.per_reporter or len(self._by) >= self.total:
            if not self.refused:
                logger.warning(
                    "%s: members reported by %s and not verifiable reached the cap (%d per "
                    "reporter, %d in all); those beyond are ignored (counted, logged once)",
                    self.agent,
                    reporter,
                    self.per_reporter,
                    self.total,
                )
            self.refused += 1
            return False
        self._by[member] = reporter
        self._count[reporter] = n + 1
        return True

    def drop(self, member: str) -> None:
        """``member`` connected to us, or was forgotten: it no longer holds a place."""
        reporter = self._by.pop(member, None)
        if reporter is not None:
            n = self._count[reporter] - 1
            if n:
                self._count[reporter] = n
            else:
                del self._count[reporter]

    def __len__(self) -> int:
        return len(self._by)
