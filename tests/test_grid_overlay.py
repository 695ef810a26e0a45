"""The grid overlay (``overlay_shape="grid"``, issue 18, branch h-tree): row and column links,
and each writer's updates passed on along that writer's own breadth-first tree.

The pure part (:mod:`crdtsync.gossip._source_tree`) is checked for every mesh size up to 81:
each writer's tree spans every agent, once, within two hops. Seeded simulator runs check the
protocol: every agent holds every write, each Push of a write crosses a link of the writer's
tree, and a repair's news is not flooded over the grid.
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from crdtsync.transports.memory import Network
from starsim import star

from crdtsync.errors import UsageError
from crdtsync.gossip import TREE, GossipConfig
from crdtsync.gossip._source_tree import GridTrees, grid_indices, grid_width
from crdtsync.messages import Message, Push


def _deliveries(n: int, writer: int) -> dict[int, int]:
    """Hops of each agent from ``writer`` when every agent passes a write on to its children
    in the writer's tree (computed by each agent from its own GridTrees); fails on a second
    delivery."""
    order = tuple(f"a{i:02d}" for i in range(n))
    trees = {name: GridTrees(name, order) for name in order}
    hops = {writer: 0}
    todo = [writer]
    while todo:
        x = todo.pop()
        children = trees[order[x]].children(order[writer])
        assert children is not None
        for c in children:
            j = order.index(c)
            assert j not in hops, f"n={n}: {c} got the write of {order[writer]} twice"
            hops[j] = hops[x] + 1
            todo.append(j)
    return hops


@pytest.mark.parametrize("n", [*range(2, 20), 24, 31, 32, 33, 48, 63, 64, 65, 80, 81])
def test_each_writer_reaches_every_agent_once_within_two_hops(n: int) -> None:
    for writer in range(n):
        hops = _deliveries(n, writer)
        assert len(hops) == n
        assert max(hops.values()) <= 2


def test_grid_links_are_symmetric_and_few() -> None:
    for n in (5, 17, 64, 100):
        w = grid_width(n)
        assert (w - 1) ** 2 < n <= w * w
        for i in range(n):
            mine = grid_indices(i, n, w)
            assert i not in mine and len(mine) <= 2 * (w - 1)
            assert all(i in grid_indices(j, n, w) for j in mine)
    assert GridTrees("a", ("a", "b")).children("zz") is None  # a writer not in the view
    with pytest.raises(ValueError):
        grid_indices(5, 5, 3)


def test_an_unknown_shape_is_refused() -> None:
    with pytest.raises(UsageError):
        GossipConfig(overlay_shape="star")


N = 25  # a 5 x 5 grid
UPDATES = 60


def _run() -> tuple[Network, list[tuple[float, str, str, str, int]]]:
    """``a00`` writes UPDATES keys at 200/s in a settled grid of N agents (2 ms windows, so
    each write goes alone)."""
    cfg = GossipConfig.lan(full_mesh_max=8, overlay_shape="grid", tree_push_interval=0)
    net = Network(11, config=cfg, latency=0.0005, jitter=0.0002)
    names = star(net, N)
    net.reset_stats()
    net.trace = []
    start = net.now
    for i in range(UPDATES):

        def write(i: int = i) -> None:
            net.write(names[0], "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i))

        net.at(start + i / 200, write)
    net.run_until(start + UPDATES / 200)
    net.run_for(1.0)
    return net, list(net.trace)


def test_a_grid_passes_each_write_along_the_writers_tree() -> None:
    net, trace = _run()
    cores = {name: x.core for name, x in net.nodes.items() if x.core}
    assert {c.mode() for c in cores.values()} == {TREE}
    assert all(len(c.connected()) == 8 for c in cores.values())  # its row and column of 5 x 5
    for node in net.nodes.values():
        m = node.replicas.docs["s"].get("m", type=pycrdt.Map)
        assert all(f"k{i}" in m for i in range(UPDATES)), node.name
    pushes = [(src, dst) for _, src, dst, kind, _ in trace if kind == "Push"]
    off_tree = [
        (s, d) for s, d in pushes if d not in (cores[s]._views().grid.children("a00") or ())
    ]
    # Every Push crossed a link of a00's tree, down (a flood over the grid's 100 links would
    # send each write over each of them, up to twice).
    assert off_tree == []
    assert len(pushes) <= (N - 1) * UPDATES


class _Counting(Network):
    """Counts the Pushes that name no writer (what a repair's news becomes when passed on)."""

    writerless = 0

    def _transmit(self, conn: Any, src: str, msg: Message) -> None:
        if conn.open_for.get(src) and isinstance(msg, Push) and not msg.authors:
            self.writerless += 1
        super()._transmit(conn, src, msg)


def test_repairs_in_a_grid_are_not_flooded() -> None:
    # 64 agents with the LAN window (10 ms), as benchmarks/ack_sim.py runs them: a few acks
    # overtake the data they cover while it waits in a window, and are repaired by a Diff.
    # Relays wait for the window too (tree_relay_wait=-1, named since lan()'s default is 0
    # since h-n64c: with 0 nothing waits past its ack there, and no repair comes).
    cfg = GossipConfig.lan(overlay_shape="grid", tree_relay_wait=-1.0)
    net = _Counting(1, config=cfg, latency=0.0005, jitter=0.0002)
    names = star(net, 64)
    net.reset_stats()
    net.writerless = 0
    start = net.now
    for i in range(400):

        def write(i: int = i) -> None:
            net.write(names[0], "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i))

        net.at(start + i / 200, write)
    net.run_until(start + 2.0)
    net.run_for(0.5)
    assert net.converged()
    diffs = net.by_type["Diff"]
    assert diffs > 0  # there were repairs (5 in this seeded run)
    # A Diff's news goes one hop, to the 14 links of the agent that asked for it, and no
    # further. Flooded on, it crossed the grid's 448 links about twice (2,500 such Pushes).
    assert net.writerless <= 14 * diffs
