"""Which agents talk to which: the three overlays, as pure functions of a membership view.

Every agent computes the same overlay from the same view (views differ only briefly, while
membership news spreads, and any edge one side wants is kept by both):

* :data:`Mode.FULL` (N <= ``full_mesh_max``): everyone connects to everyone.
* :data:`Mode.RELAY` (N <= ``relay_max``): everyone connects to everyone; the agents take
  turns, in rank order, as the relay of one batching window each.
* :data:`Mode.TREE`: one spanning tree in heap layout over the agents ordered by rank (a hash
  of mesh and name), the first ``tree_core`` forming a clique at the top; or, with
  ``overlay_shape="ring"``, a ring over the same order; or, with ``overlay_shape="grid"``,
  a grid over the same order where each agent links to its row and its column and passes a
  writer's updates on along that writer's own tree, two hops deep
  (:mod:`~crdtsync.gossip._source_tree`; see :class:`GossipConfig`).

:class:`OverlayView` is the result for one view, cached by the core until the membership
version (or the policy's extra neighbours) changes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ._source_tree import GridTrees, grid_indices, grid_width
from .membership import DEAD

if TYPE_CHECKING:
    from .config import GossipConfig
    from .membership import Membership
    from .policy import ReplicationPolicy

__all__ = [
    "FULL",
    "RELAY",
    "TREE",
    "Mode",
    "OverlayCache",
    "OverlayView",
    "Ranks",
    "compute_view",
    "mode_for",
    "neighbours",
    "relay_of",
    "tree_neighbours",
    "window_index",
]


class Mode(StrEnum):
    """Overlay modes reported by :meth:`GossipCore.mode` (values are the wire-free names)."""

    FULL = "full"  # everyone connected to everyone, each agent pushes its own deltas to all
    RELAY = "relay"  # everyone connected to everyone, one relay per batching window, in turns
    TREE = "tree"  # one spanning tree, every agent forwards


FULL = Mode.FULL
RELAY = Mode.RELAY
TREE = Mode.TREE

# Window indices are computed from float times: a boundary computed as (k+1)*w must give
# index k+1 when it comes back as `now`, whatever the rounding.
_EPS = 1e-9


class Ranks:
    """Rank of each agent in a mesh: hash first (spreads tree positions), the name after it
    (breaks any tie). Cached: it is asked for every agent at every view change."""

    def __init__(self, mesh: str) -> None:
        self._mesh = mesh.encode()
        self._ranks: dict[str, bytes] = {}

    def __call__(self, name: str) -> bytes:
        r = self._ranks.get(name)
        if r is None:
            digest = hashlib.blake2b(self._mesh + b"\0" + name.encode(), digest_size=8).digest()
            r = self._ranks[name] = digest + name.encode()
        return r


def mode_for(n: int, config: GossipConfig, partial: bool) -> Mode:
    """The overlay mode of a mesh of ``n`` live agents (us included)."""
    if n <= config.full_mesh_max:
        return FULL
    if n <= config.relay_max and config.push_interval > 0 and config.align_windows and not partial:
        return RELAY
    return TREE


def tree_neighbours(
    me: str, members: Iterable[str], config: GossipConfig, rank: Callable[[str], bytes]
) -> frozenset[str]:
    """Our neighbours in the spanning tree over ``members`` (plus us), or in the ring
    (``config.overlay_shape``: the agents before and after us in rank order), or in the grid
    (our row and column, :mod:`~crdtsync.gossip._source_tree`)."""
    order = sorted([*members, me], key=rank)
    n, c, b = len(order), min(config.tree_core, len(order)), config.fanout
    i = order.index(me)
    if config.overlay_shape == "ring":
        return frozenset(order[j % n] for j in (i - 1, i + 1) if j % n != i)
    if config.overlay_shape == "grid":
        return frozenset(order[j] for j in grid_indices(i, n, grid_width(n)))
    want: set[int] = set()
    if i < c:
        want.update(j for j in range(c) if j != i)
    else:
        want.add((i - c) // b)
    want.update(range(c + i * b, min(n, c + (i + 1) * b)))
    return frozenset(order[j] for j in want)


def neighbours(
    me: str,
    members: list[str],
    config: GossipConfig,
    partial: bool,
    rank: Callable[[str], bytes],
) -> frozenset[str]:
    """Our neighbours in the overlay over ``members`` (plus us)."""
    if mode_for(len(members) + 1, config, partial) != TREE:
        return frozenset(members)
    return tree_neighbours(me, members, config, rank)


def window_index(now: float, push_interval: float) -> int:
    """Index k of the aligned batching window [k*w, (k+1)*w) holding ``now``."""
    w = push_interval
    return math.floor(now / w + _EPS) if w > 0 else 0


def relay_of(
    order: tuple[str, ...], k: int, me: str, reachable: Callable[[str], bool]
) -> str | None:
    """The relay of batching window ``k``: live agents take turns in rank order, skipping
    those we cannot reach (no open connection: the next one stands in)."""
    n = len(order)
    for i in range(n):
        name = order[(k + i) % n]
        if name == me or reachable(name):
            return name
    return None


@dataclass(frozen=True, slots=True)
class OverlayView:
    """The overlay for one membership view (see the module docstring).

    Attributes:
        key: (membership version, extra-neighbours version) it was computed for.
        desired: agents we want connections to (overlay neighbours plus the policy's extras).
        mode: the overlay mode.
        retry: dead agents that would be our neighbours if alive: redialled, with backoff.
        order: live agents and us in rank order (the rotating relay's turns).
        tree: our neighbours in the tree over the live view.
        dial_order: ``desired | retry`` sorted by name (the dialer walks it after every
            event: sorted once per view, not per call).
        grid: in a grid-shaped tree, our children in each writer's tree
            (:class:`~crdtsync.gossip._source_tree.GridTrees`); None for every other shape,
            where a tree passes everything on to every link but the one it came on.
        no_relay: the tree's shortcut links (``GossipConfig.tree_writer_top``): agents we
            pass no news on to (a top agent: every agent not a tree neighbour; any other
            agent: the top agents not its tree neighbours). Empty when off.
        no_write: the agents of ``no_relay`` our own writes do not go to either (a top
            agent's shortcuts to agents outside the top); they go to the tree and the top.
    """

    key: tuple[int, int]
    desired: frozenset[str]
    mode: Mode
    retry: frozenset[str]
    order: tuple[str, ...]
    tree: frozenset[str]
    dial_order: tuple[str, ...] = ()
    grid: GridTrees | None = None
    no_relay: frozenset[str] = frozenset()
    no_write: frozenset[str] = frozenset()


def compute_view(
    key: tuple[int, int],
    me: str,
    live: list[str],
    known: list[str],
    dead: set[str],
    extra: frozenset[str],
    config: GossipConfig,
    partial: bool,
    rank: Callable[[str], bytes],
) -> OverlayView:
    """The :class:`OverlayView` of a membership view.

    Args:
        live: agents not declared dead. known: those plus the dead ones with an address.
        dead: agents declared dead. extra: the policy's extra neighbours.
    """
    # Dead agents we keep redialling (with backoff): those that would be our neighbours if
    # they were alive. Each dead agent is so retried by a few agents, not by all, and a healed
    # partition is bridged as soon as one retry gets through.
    retry = frozenset(n for n in neighbours(me, known, config, partial, rank) if n in dead)
    # plus the co-holders of our shards and the holders a read waits for (partial
    # replication), which must be connected directly: holders do not relay
    extra = extra.intersection(live)
    order = tuple(sorted([*live, me], key=rank))
    mode = mode_for(len(live) + 1, config, partial)
    tree = tree_neighbours(me, live, config, rank)
    desired = neighbours(me, live, config, partial, rank) | extra
    grid = GridTrees(me, order) if mode == TREE and config.overlay_shape == "grid" else None
    no_relay: frozenset[str] = frozenset()
    no_write: frozenset[str] = frozenset()
    k = config.tree_writer_top
    if k > 0 and mode == TREE and config.overlay_shape == "tree" and not partial:
        # The tree's top (GossipConfig.tree_writer_top): every agent links to it, and a top
        # agent to every agent, so that both ends want each shortcut (none is pruned).
        top = frozenset(order[:k])
        if me in top:
            desired = desired | frozenset(live)
            no_relay = frozenset(live) - tree
            no_write = no_relay - top
        else:
            desired = desired | (top - {me})
            no_relay = top - tree
    return OverlayView(
        key,
        desired,
        mode,
        retry,
        order,
        tree,
        tuple(sorted(desired | retry)),
        grid,
        no_relay,
        no_write,
    )


class OverlayCache:
    """The :class:`OverlayView` of the current membership view, recomputed only when the
    membership version (or the policy's extra neighbours) changed, not on every event."""

    def __init__(
        self,
        me: str,
        mesh: str,
        config: GossipConfig,
        members: Membership,
        policy: ReplicationPolicy,
    ) -> None:
        self._me = me
        self._config = config
        self._members = members
        self._policy = policy
        self._rank = Ranks(mesh)
        self._extra_version = 0
        self._view: OverlayView | None = None

    def extra_changed(self) -> None:
        """The policy's extra neighbours changed."""
        self._extra_version += 1

    def view(self) -> OverlayView:
        key = (self._members.version, self._extra_version)
        if self._view is None or self._view.key != key:
            members = list(self._members)
            live = [m.name for m in members if m.status != DEAD]
            known = [m.name for m in members if m.status != DEAD or m.address is not None]
            dead = {m.name for m in members if m.status == DEAD}
            extra = self._policy.extra_neighbours()
            self._view = compute_view(
                key,
                self._me,
                live,
                known,
                dead,
                extra,
                self._config,
                self._policy.partial,
                self._rank,
            )
        return self._view
