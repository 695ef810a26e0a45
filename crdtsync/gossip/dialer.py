"""Dialling: which addresses to open connections to, and when (seeds, backoff, grace).

* Seeds are dialled while we have no connection, and later any seed at an address of no agent
  we know alive (agents that met only each other would otherwise never find the rest).
* Overlay neighbours we lack a connection to are dialled; of two agents that both want an edge
  the smaller name dials, the other after ``dial_grace``. Dead agents that would be our
  neighbours if alive keep being redialled, so a healed partition is bridged by a few agents.
* Every address backs off exponentially with jitter after a failure (:class:`Backoff`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .membership import DEAD, Membership
from .overlay import FULL, RELAY, OverlayView

if TYPE_CHECKING:
    import random

    from .config import GossipConfig

__all__ = ["Backoff", "Dialer"]


class Backoff:
    """Exponential reconnect delays per address: ``base * 2**(failures-1)`` up to ``max``,
    each jittered down to half (agents that lost the same peer do not redial in lockstep).

    Args:
        base: first delay. cap: longest delay.
        rng: the core's generator; every jittered delay draws from it once.
    """

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self._entries: dict[str, tuple[int, float]] = {}  # address -> (failures, retry at)

    def jitter(self, delay: float) -> float:
        """``delay`` scaled by a uniform factor in [0.5, 1)."""
        return delay * (0.5 + 0.5 * self._rng.random())

    def failed(self, address: str, now: float) -> None:
        """One more failure at ``address``: the next try waits twice as long (up to cap)."""
        failures = self._entries.get(address, (0, 0.0))[0] + 1
        delay = min(self.cap, self.base * 2 ** (failures - 1))
        self._entries[address] = (failures, now + self.jitter(delay))

    def lost(self, address: str, now: float) -> None:
        """A connection to ``address`` broke: wait a jittered ``base`` unless already backing
        off (the jitter is drawn either way, as the core always did)."""
        self._entries.setdefault(address, (0, now + self.jitter(self.base)))

    def start(self, address: str, now: float) -> None:
        """First retry of an address that just failed (an agent declared dead): not at once."""
        if address not in self._entries:
            self._entries[address] = (1, now + self.jitter(self.base))

    def clear(self, address: str) -> None:
        """A connection to ``address`` succeeded."""
        self._entries.pop(address, None)

    def ready_at(self, address: str) -> float | None:
        """When ``address`` may be tried again (None: no backoff)."""
        entry = self._entries.get(address)
        return None if entry is None else entry[1]

    def failures(self, address: str) -> int:
        return self._entries.get(address, (0, 0.0))[0]


class Dialer:
    """Seeds, dials under way, backoff and dial candidates of one agent.

    Args:
        name: this agent's name. address: its listen address (never dialled).
        seeds: addresses to dial while we have no connection.
    """

    def __init__(
        self,
        name: str,
        address: str | None,
        seeds: Iterable[str],
        config: GossipConfig,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.config = config
        self.seeds = [s for s in dict.fromkeys(seeds) if s != address]
        self.backoff = Backoff(config.backoff_base, config.backoff_max, rng)
        self.dialing: dict[str, float] = {}  # address -> when the dial was handed out
        self.self_addresses: set[str] = set() if address is None else {address}
        self._want_since: dict[str, float] = {}
        #: (membership version, addresses of the members not dead) for the seeds' test:
        #: candidates() is asked after every event, the set changes with the view only.
        self._known: tuple[int, frozenset[str]] = (-1, frozenset())
        #: The state under which candidates() last found nothing to dial (see there).
        self._none_at: tuple[object, ...] | None = None

    def own_address(self, address: str) -> None:
        """``address`` is ours (set by the driver, or a peer reported it): never dial it."""
        self.self_addresses.add(address)
        self.seeds = [s for s in self.seeds if s != address]

    def connected(self, peer: str, address: str | None) -> None:
        """A connection to ``peer`` (listening at ``address``) was accepted."""
        if address is not None:
            self.dialing.pop(address, None)
            self.backoff.clear(address)
        self._want_since.pop(peer, None)

    def refused(self, address: str | None) -> None:
        """A duplicate connection from the agent at ``address`` was refused."""
        if address is not None:
            self.dialing.pop(address, None)

    def lost(self, peer: str) -> None:
        self._want_since.pop(peer, None)

    def failed(self, address: str, now: float) -> None:
        """A dial to ``address`` failed (or timed out)."""
        self.dialing.pop(address, None)
        self.backoff.failed(address, now)

    def timed_out(self, now: float) -> list[str]:
        """Dials handed out ``connect_timeout`` ago with no answer.

        A dial handed out before the core knew the time (the driver's first ``dials()``,
        before any call that carries ``now``: an agent dialling its seeds at start) has no
        start time; its timeout starts now. Counted from -inf it had timed out at the first
        tick: the seed was declared unreachable and dialled a second time while the first
        connection was being accepted (issue #16: a joiner dialled its seed twice).
        """
        timeout = self.config.connect_timeout
        for a, started in self.dialing.items():
            if started == -math.inf:
                self.dialing[a] = now
        return [a for a, started in self.dialing.items() if now >= started + timeout]

    def candidates(
        self,
        now: float,
        view: OverlayView,
        members: Membership,
        links: Callable[[str], bool],
        has_links: bool,
        urgent: Callable[[str], bool],
        linked: frozenset[str] | None = None,
    ) -> list[tuple[str, float]]:
        """(address, time it may be dialled) for every connection we want and lack.

        Args:
            links: whether we have a connection to an agent. has_links: any connection.
            urgent: whether a peer must be dialled at once (a read waits for it).
            linked: the names we have connections to (the same as ``links``), if the caller
                has them: an empty answer is then kept until the view, the links or our
                addresses change (it is asked after every event; in a full mesh of 64 the
                walk over every wanted name was most of an idle agent's work). Backoff,
                grace and urgency only delay candidates, so they cannot make one appear;
                while a dial is under way nothing is kept (its failure makes one).
        """
        key: tuple[object, ...] | None = None
        if linked is not None and not self.dialing:
            key = (view.key, members.version, linked, has_links, len(self.seeds))
            key += (len(self.self_addresses),)
            if key == self._none_at:
                return []
        out = self._candidates(now, view, members, links, has_links, urgent)
        self._none_at = key if not out else None
        return out

    def _candidates(
        self,
        now: float,
        view: OverlayView,
        members: Membership,
        links: Callable[[str], bool],
        has_links: bool,
        urgent: Callable[[str], bool],
    ) -> list[tuple[str, float]]:
        cfg = self.config
        settled = members.view_at + cfg.relay_settle
        addresses: dict[str, float] = {}
        order = view.dial_order or tuple(sorted(view.desired | view.retry))
        # With paced dials in a full mesh, a smaller name reaches us only after the dials it
        # makes before ours (names between it and us, max_dialing at a time): our grace grows
        # with that queue, or every pair would be dialled from both ends while it waits.
        queue = cfg.max_dialing if view.mode == FULL else 0
        me_at = bisect.bisect_left(order, self.name) if queue else 0
        for i, name in enumerate(order):
            if links(name):
                continue
            m = members[name]
            if m.address is None or m.address in self.self_addresses:
                continue
            since = self._want_since.setdefault(name, now)
            if m.status == DEAD:
                # First retry of an agent declared dead: not at once, it just failed.
                self.backoff.start(m.address, now)
            # Both sides want the edge: the smaller name dials, the other only after a grace.
            # (A read waiting for a holder dials it at once: only we want that edge.)
            wanted = urgent(name)
            ready = now if self.name < name or wanted else since + cfg.dial_grace
            if queue and not wanted and name < self.name:
                ready += cfg.dial_grace * ((me_at - i - 1) // queue)
            if view.mode == RELAY and name not in view.tree and not wanted:
                ready = max(ready, settled)  # beyond the tree: once the view has settled
            addresses[m.address] = ready
        # Seeds: all of them while we are alone; later, any seed at an address of no agent we
        # know alive. Agents that met only each other (joined during a partition, restarted
        # while the rest was down) would otherwise never find the rest of the mesh.
        if self.seeds:  # (the set of every member's address only when there are seeds)
            if self._known[0] != members.version:
                alive = frozenset(m.address for m in members if m.address and m.status != DEAD)
                self._known = (members.version, alive)
            known = self._known[1]
            for a in self.seeds:
                if not has_links or a not in known:
                    addresses.setdefault(a, now)
        out = []
        for a, ready in addresses.items():
            if a in self.dialing or a in self.self_addresses:
                continue
            backoff = self.backoff.ready_at(a)
            out.append((a, ready if backoff is None else max(ready, backoff)))
        return out

    def full(self) -> bool:
        """Whether ``max_dialing`` dials are under way: no more until one ends (an event)."""
        cap = self.config.max_dialing
        return cap > 0 and len(self.dialing) >= cap

    def hand_out(self, now: float, candidates: list[tuple[str, float]]) -> list[str]:
        """The candidates ready at ``now``, marked as being dialled: at most ``max_dialing``
        under way in all, the longest ready first."""
        out = [a for a, ready in candidates if ready <= now]
        cap = self.config.max_dialing
        if cap > 0 and len(out) > cap - len(self.dialing):
            due = dict(candidates)
            out = sorted(out, key=due.__getitem__)[: max(0, cap - len(self.dialing))]
        for a in out:
            self.dialing[a] = now
        return out

    def deadlines(self) -> list[float]:
        """When dials under way time out."""
        timeout = self.config.connect_timeout
        return [started + timeout for started in self.dialing.values()]
