"""Which agents hold which shards, and how a shard moves between them. Pure: no I/O, no clock.

Placement
---------
With a replication factor R, shard ``s`` is held by the R live agents (those that listen:
an agent that only dials out is a client) with the highest rendezvous weight
``blake2b(mesh, s, agent)`` (highest-random-weight hashing). Every agent computes the same
holders from the same membership view, without coordination, and when one agent joins or
leaves only the shards it gains or loses move: about R/N of them, never a
reshuffle. :func:`holders` is that function.

Besides its placement, an agent holds the shards its user opened (a *subscription*); those
are extra copies that placement never takes away.

Hand-off
--------
:class:`PlacementState` is the per-agent state machine that moves shards when the view
changes. Each shard this agent has a replica of is in one of three roles (:func:`role`):

* ``HOLDER``: a placement holder. It offers the shard to every other placement holder that
  does not announce it (an :class:`~crdtsync.messages.Offer`, rate-limited per peer), which is
  how a new holder learns that a shard exists. That is re-replication after a failure too:
  the survivors offer the shard to the agent that now ranks R-th.
* ``SUBSCRIBER``: opened by the user here, not placed here. It keeps the shard.
* ``LEAVING``: neither. It offers the shard to the placement holders like a holder does, and
  drops its replica only once *every* placement holder's durable ack covers what this agent
  holds (the core's ``replicated()``). Until then it keeps serving and gossiping the shard,
  and keeps offering it to the holders whose ack is missing: an offer of a shard the receiver
  already has is answered with its ack (acks otherwise follow commits, and a holder that had
  everything before we asked would never send one).

An agent offered a shard adopts it (``ADOPTING`` until the first data arrives) when its own
view agrees that it is a placement holder, or when it subscribed to it; otherwise it ignores
the offer (views differ while membership news spreads; the offerer retries). An adoption that
gets no data within ``adopt_timeout`` is forgotten.

Why this never loses a shard: a replica is dropped only when R other agents have it on disk
(their acks cover our state), so the copies of a shard only go below R through failures,
never through a move; and after a failure the survivors offer the shard to the new R-th agent
at once, so it is back to R copies once that hand-off (one sync and one commit) completes.
Views that disagree can only delay drops (a drop needs acks from every holder in the
dropper's view), never cause one early.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .errors import UsageError

__all__ = [
    "weight",
    "holders",
    "majority",
    "HOLDER",
    "SUBSCRIBER",
    "LEAVING",
    "Plan",
    "PlacementState",
]

HOLDER = "holder"
SUBSCRIBER = "subscriber"
LEAVING = "leaving"


def weight(shard: str, agent: str, mesh: str = "default") -> bytes:
    """The rendezvous weight of ``agent`` for ``shard``: 8 bytes, compared as big-endian."""
    data = mesh.encode() + b"\0" + shard.encode() + b"\0" + agent.encode()
    return hashlib.blake2b(data, digest_size=8, person=b"crdtsync.hrw1").digest()


def holders(
    shard: str, members: Iterable[str], replication_factor: int, *, mesh: str = "default"
) -> tuple[str, ...]:
    """The ``replication_factor`` agents of ``members`` that hold ``shard``, best first.

    Fewer when there are fewer members (then every member holds it).

    Raises:
        UsageError: ``replication_factor`` < 1.
    """
    if replication_factor < 1:
        raise UsageError(f"replication_factor must be >= 1, not {replication_factor}")
    # The name breaks ties between equal weights (2**-64 odds), so the order is total.
    ranked = sorted(set(members), key=lambda a: (weight(shard, a, mesh), a), reverse=True)
    return tuple(ranked[:replication_factor])


def majority(n: int) -> int:
    """floor(n/2) + 1: the smallest number of answers that any two quorums share one of."""
    return n // 2 + 1


@dataclass(frozen=True, slots=True)
class Plan:
    """What :meth:`PlacementState.plan` asks the agent to do now.

    Attributes:
        offers: peer -> shards to offer it (sorted), due now.
        drops: shards whose replica may be dropped now (every placement holder acked them).
        wanted: peers this agent should stay connected to: the other placement holders of
            the shards it has or adopts, and the peers subscribed to shards it holds.
    """

    offers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    drops: tuple[str, ...] = ()
    wanted: frozenset[str] = frozenset()


class PlacementState:
    """One agent's side of placement and hand-off (see the module docstring).

    Args:
        name: this agent.
        replication_factor: R, the number of placement holders per shard.
        mesh: part of the rendezvous hash, so that meshes place independently.
        offer_interval: an offer of one shard to one peer is repeated at most this often.
        adopt_timeout: an adoption that got no data for this long is forgotten.
    """

    def __init__(
        self,
        name: str,
        replication_factor: int,
        *,
        mesh: str = "default",
        offer_interval: float = 1.0,
        adopt_timeout: float = 30.0,
    ) -> None:
        if replication_factor < 1:
            raise UsageError(f"replication_factor must be >= 1, not {replication_factor}")
        self.name = name
        self.replication_factor = replication_factor
        self.mesh = mesh
        self.offer_interval = offer_interval
        self.adopt_timeout = adopt_timeout
        self.members: tuple[str, ...] = (name,)
        self.subscribed: set[str] = set()
        self.adopting: dict[str, float] = {}  # shard -> when the adoption started
        self._offered: dict[tuple[str, str], float] = {}  # (peer, shard) -> when last offered
        self._holders: dict[str, tuple[str, ...]] = {}  # cache, valid for self.members

    # -- the view --------------------------------------------------------------------------

    def set_members(self, members: Iterable[str], *, include_self: bool = True) -> bool:
        """Set the live agents that hold placed shards; return whether that changed.

        ``include_self``: whether this agent is one of them (an agent that does not listen
        is not: nobody could hand it a shard or read one from it while it is away).
        """
        view = tuple(sorted({*members, self.name} if include_self else set(members) - {self.name}))
        if view == self.members:
            return False
        self.members = view
        self._holders.clear()
        return True

    def holders(self, shard: str) -> tuple[str, ...]:
        """The placement holders of ``shard`` in the current view, best first."""
        h = self._holders.get(shard)
        if h is None:
            if len(self._holders) > 65536:  # bound the cache; it is only a cache
                self._holders.clear()
            h = self._holders[shard] = holders(
                shard, self.members, self.replication_factor, mesh=self.mesh
            )
        return h

    def is_holder(self, shard: str, agent: str | None = None) -> bool:
        """Whether ``agent`` (default: this one) is a placement holder of ``shard``."""
        return (self.name if agent is None else agent) in self.holders(shard)

    def role(self, shard: str) -> str:
        """HOLDER, SUBSCRIBER or LEAVING: what this agent is for a shard it has."""
        if self.is_holder(shard):
            return HOLDER
        if shard in self.subscribed:
            return SUBSCRIBER
        return LEAVING

    # -- offers and adoption ---------------------------------------------------------------

    def accept_offer(self, shard: str, have: bool, now: float) -> bool:
        """A peer offered ``shard``. Return True if we should fetch it now (adopt it).

        We adopt when our view places the shard here or our user subscribed to it, and we do
        not have it already (then anti-entropy with the offerer does the rest).
        """
        if have or shard in self.adopting:
            return False
        if not (self.is_holder(shard) or shard in self.subscribed):
            return False
        self.adopting[shard] = now
        return True

    def adopted(self, shard: str) -> None:
        """Data of an adopted shard arrived: it is an ordinary replica now."""
        self.adopting.pop(shard, None)

    # -- the plan --------------------------------------------------------------------------

    def plan(
        self,
        have: Iterable[str],
        peer_holds: Mapping[str, frozenset[str]],
        connected: Iterable[str],
        covered: Callable[[str], Iterable[str]],
        now: float,
    ) -> Plan:
        """Decide offers, drops and wanted connections.

        Args:
            have: shards this agent has a replica of.
            peer_holds: what each connected peer announced it holds.
            connected: connected peers.
            covered: ``covered(shard)`` -> peers whose durable ack covers this agent's whole
                state of the shard (an empty iterable while local changes are not yet on
                disk); asked only for LEAVING shards.
            now: the time, for offer rate limiting and adoption expiry.
        """
        conn = set(connected)
        have_set = set(have)
        for shard, since in list(self.adopting.items()):
            if shard in have_set:
                del self.adopting[shard]
            elif now - since >= self.adopt_timeout or not (
                self.is_holder(shard) or shard in self.subscribed
            ):
                del self.adopting[shard]
        offers: dict[str, list[str]] = {}
        drops: list[str] = []
        wanted: set[str] = set()
        for shard in sorted(have_set):
            placed = self.holders(shard)
            others = [p for p in placed if p != self.name]
            wanted.update(others)
            role = self.role(shard)
            for p in others:
                if p in conn and shard not in peer_holds.get(p, frozenset()):
                    last = self._offered.get((p, shard))
                    if last is None or now - last >= self.offer_interval:
                        self._offered[(p, shard)] = now
                        offers.setdefault(p, []).append(shard)
            if role == HOLDER:
                # keep the connections of peers subscribed to a shard we hold
                wanted.update(p for p in conn if shard in peer_holds.get(p, frozenset()))
            elif role == LEAVING and others:
                acked = set(covered(shard))
                if all(p in acked and shard in peer_holds.get(p, frozenset()) for p in others):
                    drops.append(shard)
                else:
                    # A holder that had the shard before we took interest owes us no ack (acks
                    # follow commits): offering it the shard again asks for one.
                    for p in others:
                        if p in conn and p not in acked and shard in peer_holds.get(p, frozenset()):
                            last = self._offered.get((p, shard))
                            if last is None or now - last >= self.offer_interval:
                                self._offered[(p, shard)] = now
                                offers.setdefault(p, []).append(shard)
        for shard in self.adopting:
            wanted.update(p for p in self.holders(shard) if p != self.name)
        for shard in self.subscribed - have_set:
            wanted.update(p for p in self.holders(shard) if p != self.name)
        # forget offer times of pairs that are settled, so the table stays small
        for key in [k for k in self._offered if k[1] not in have_set or k[0] not in conn]:
            del self._offered[key]
        return Plan(
            offers={p: tuple(s) for p, s in sorted(offers.items())},
            drops=tuple(drops),
            wanted=frozenset(wanted - {self.name}),
        )

    def dropped(self, shard: str) -> None:
        """The replica of ``shard`` was dropped."""
        for key in [k for k in self._offered if k[1] == shard]:
            del self._offered[key]
