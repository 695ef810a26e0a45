"""The grid overlay and its per-writer dissemination trees (``overlay_shape="grid"``).

Why (issue 18, 64 agents): in the heap-layout spanning tree a writer is wherever its rank
puts it, usually a leaf, so its writes crossed 4-6 agents in turn, each an apply, a commit, a
forward and up to one batching window; a hub reaches each client in one hop. The grid keeps a
tree's cost (every update crosses N - 1 links, each agent applies it once) and brings every
agent within two hops of every writer:

* **Links.** The agents in rank order fill a grid of ``w = ceil(sqrt(N))`` columns, row by
  row (the last row may be short). Each agent links to its row and its column: at most
  ``2 (w - 1)`` links (14 at N = 64, where the tree has up to 6 and a full mesh 63).
* **One tree per writer.** What a writer wrote leaves on all its links (its row and column,
  one hop). Every other agent passes an update on only to its children in the writer's
  tree: the breadth-first tree of the grid from the writer, each agent's parent being its
  first neighbour (in rank order) one hop closer to the writer. Every agent is at most two
  hops from any writer (through the writer's row, or through its column when the writer's
  row is the short one), and each update reaches each agent once when nothing is lost.
* **Unknown or mixed writers.** A delta whose writer is not in our view is flooded, as the
  tree floods: to every link but the one it came on (a copy that changes nothing is not
  passed on, so a flood ends). News of no known writer (a Diff we asked for) goes one hop,
  to every link, and a Push of no known writer is not passed on: flooded, one repair cost
  ~900 Pushes at N = 64 in the simulator (each agent got a copy on each of its 14 links,
  and the Acks followed every one back). A received batch of several writers'
  updates, applied as one transaction, is passed on as its updates, each to its writer's
  children (their one combined delta could name no single writer).
* **Repair.** Unchanged: a view that differs between two agents (membership news still
  spreading) can leave an agent out of a tree for a while; sequence gaps, acks and
  anti-entropy bring it what it misses, as in the tree.

Everything here is a pure function of the rank order of one membership view; the core
computes it once per view and caches each writer's children on the view (see
:class:`~crdtsync.gossip.overlay.OverlayView`).
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["GridTrees", "grid_indices", "grid_width"]


def grid_width(n: int) -> int:
    """Columns of the grid over ``n`` agents: ceil(sqrt(n)), at least 1."""
    return max(1, math.isqrt(n - 1) + 1) if n > 1 else 1


def grid_indices(i: int, n: int, w: int) -> list[int]:
    """Indices (in rank order) of the neighbours of agent ``i`` of ``n`` in a grid of ``w``
    columns: its row, then its column, in index order."""
    if not 0 <= i < n:
        raise ValueError(f"index {i} out of range for {n} agents")
    row, col = divmod(i, w)
    out = [j for j in range(row * w, min(n, (row + 1) * w)) if j != i]
    out += [j for j in range(col, n, w) if j != i]
    return sorted(out)


class GridTrees:
    """Our children in each writer's dissemination tree over one view (module docstring),
    computed on first use per writer and kept for the view's lifetime."""

    __slots__ = ("_children", "_index", "_me", "_n", "_order", "_w")

    def __init__(self, me: str, order: tuple[str, ...]) -> None:
        self._me = me
        self._order = order
        self._n = len(order)
        self._w = grid_width(self._n)
        self._index = {name: i for i, name in enumerate(order)}
        self._children: dict[str, frozenset[str] | None] = {}

    def neighbours(self, name: str) -> frozenset[str]:
        """``name``'s links in the grid (empty if it is not in the view)."""
        i = self._index.get(name)
        if i is None:
            return frozenset()
        return frozenset(self._order[j] for j in grid_indices(i, self._n, self._w))

    def children(self, writer: str) -> frozenset[str] | None:
        """The agents we pass ``writer``'s updates on to, or None when ``writer`` (or we)
        is not in this view: flood."""
        got = self._children.get(writer, False)
        if got is not False:
            return got  # type: ignore[return-value]
        src, me = self._index.get(writer), self._index.get(self._me)
        result: frozenset[str] | None = None
        if src is not None and me is not None:
            result = self._bfs_children(src, me)
        self._children[writer] = result
        return result

    def _bfs_children(self, src: int, me: int) -> frozenset[str]:
        n, w = self._n, self._w
        depth = [-1] * n
        parent = [-1] * n
        depth[src] = 0
        todo = deque([src])
        while todo:
            x = todo.popleft()
            for y in grid_indices(x, n, w):  # in index (= rank) order: the first one wins
                if depth[y] < 0:
                    depth[y] = depth[x] + 1
                    parent[y] = x
                    todo.append(y)
        return frozenset(self._order[y] for y in range(n) if parent[y] == me)
