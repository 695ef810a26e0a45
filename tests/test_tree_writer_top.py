"""A writer also pushes its own writes to the tree's top (issue 18, branch h-root):
``GossipConfig.tree_writer_top`` (0, off, by default; opt-in).

In the heap-layout tree a writer is wherever its rank puts it, usually a leaf, so its writes
climb to the root and come down again: up to twice the tree's depth in hops. With
``tree_writer_top=k`` every agent also links to the first k agents in rank order (the tree's
top), a writer sends its own writes there directly as well as along the tree, and relays pass
news on along the tree only (never onto those shortcut links). Seeded simulator runs: 40
agents in a tree of fanout 3 (``full_mesh_max=8``: depth 3 below the root), the deepest leaf
writing at 200 updates/s, every key's arrival at every agent in virtual time.
"""

from __future__ import annotations

from collections import deque

import pycrdt
import pytest
from crdtsync.transports.memory import Network
from starsim import in_order_latencies, star

from crdtsync.errors import UsageError
from crdtsync.gossip import TREE, GossipConfig
from crdtsync.gossip.overlay import Ranks, compute_view

N = 40
UPDATES = 60
HOP = 0.004  # a link's latency, no jitter: each hop adds 4 ms


def _config(k: int) -> GossipConfig:
    return GossipConfig.lan(full_mesh_max=8, fanout=3, tree_writer_top=k)


def _deepest(net: Network, names: list[str]) -> str:
    """The agent farthest below the tree's root (rank order), the last name on a tie."""
    views = {n: net.nodes[n].core._views() for n in names}
    root = views[names[0]].order[0]
    depth = {root: 0}
    todo = deque([root])
    while todo:
        x = todo.popleft()
        for y in views[x].tree:
            if y not in depth:
                depth[y] = depth[x] + 1
                todo.append(y)
    return max(names, key=lambda n: (depth.get(n, -1), n))


def _run(k: int, loss: float = 0.0, tail: float = 1.0) -> tuple[Network, str, list[float], float]:
    """The deepest leaf writes UPDATES keys at 200/s once the overlay settled; returns the
    network, the writer, every (agent, key) delivery latency and the Pushes per update."""
    net = Network(3, config=_config(k), latency=HOP, jitter=0.0)
    names = star(net, N, settle=15)
    writer = _deepest(net, names)
    written, lat = in_order_latencies(net, writer)
    if loss:
        net.default_link = type(net.default_link)(HOP, 0.0, loss, 0.0, 0.0)
    net.reset_stats()
    start = net.now
    for i in range(UPDATES):

        def write(i: int = i) -> None:
            written[i] = net.now
            net.write(writer, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i))

        net.at(start + i / 200, write)
    net.run_until(start + UPDATES / 200)
    net.run_for(tail)
    return net, writer, lat, net.by_type["Push"] / UPDATES


def test_fewer_hops_from_a_leaf_writer_for_few_more_pushes() -> None:
    net0, w0, lat0, pushes0 = _run(0)
    net1, w1, lat1, pushes1 = _run(1)
    assert w0 == w1  # the same tree, the same writer
    for net in (net0, net1):
        assert {x.core.mode() for x in net.nodes.values() if x.core} == {TREE}
    assert len(lat0) == len(lat1) == (N - 1) * UPDATES  # every agent got every key
    # A leaf at depth 3 reached agents 6 hops away; through the root, 4 at most: the
    # slowest key arrives at least one 4 ms hop sooner (the window's 10 ms is the same).
    assert max(lat1) <= max(lat0) - HOP
    # The writer's extra Push and a few duplicates where its path up meets the root's news.
    assert pushes0 < pushes1 <= 1.15 * pushes0
    # Only the writer uses its shortcut: nothing is relayed onto the root's extra links.
    root = net1.nodes[w1].core._views().order[0]
    view = net1.nodes[root].core._views()
    extra = set(net1.nodes[root].core.connected()) - view.tree
    assert len(extra) >= N - 1 - 4  # every agent links to the top (the root here)
    for name in extra - {w1}:
        sent = net1.links.get((root, name))
        got = net1.links.get((name, root))
        assert sent is None or sent.messages < UPDATES / 4, name  # no news relayed to it
        assert got is None or got.messages < UPDATES / 4, name


def test_a_writer_with_a_top_of_six_converges_under_loss() -> None:
    net, writer, lat, _ = _run(6, loss=0.1, tail=30.0)
    m = {n: net.nodes[n].replicas.docs["s"].get("m", type=pycrdt.Map) for n in net.nodes}
    for name, doc in m.items():
        assert all(f"k{i}" in doc for i in range(UPDATES)), name


def test_the_view_of_a_top_agent_and_of_another() -> None:
    cfg = _config(1)
    rank = Ranks("default")
    names = [f"a{i:02d}" for i in range(N)]
    order = sorted(names, key=rank)
    root, other = order[0], order[-1]
    live_of = lambda me: [n for n in names if n != me]  # noqa: E731
    v = compute_view(
        (0, 0), other, live_of(other), live_of(other), set(), frozenset(), cfg, False, rank
    )
    assert v.mode == TREE and root not in v.tree
    assert root in v.desired and v.no_relay == frozenset({root}) and not v.no_write
    r = compute_view(
        (0, 0), root, live_of(root), live_of(root), set(), frozenset(), cfg, False, rank
    )
    assert r.desired == frozenset(live_of(root))  # both ends want every shortcut
    assert r.no_relay == frozenset(live_of(root)) - r.tree
    assert r.no_write == r.no_relay  # a top of one: the root's own writes go along the tree
    off = compute_view(
        (0, 0), other, live_of(other), live_of(other), set(), frozenset(), _config(0), False, rank
    )
    assert off.desired == off.tree and not off.no_relay and not off.no_write


def test_off_by_default_and_checked() -> None:
    assert GossipConfig().tree_writer_top == 0
    assert GossipConfig.lan().tree_writer_top == 0
    with pytest.raises(UsageError):
        GossipConfig(tree_writer_top=-1)


def test_an_ask_for_acks_is_passed_on_along_the_tree_only() -> None:
    # The writer asks every link (its shortcut to the root too) for acks; the root passes the
    # ask on along the tree, as news, not to every agent over its shortcut links.
    from crdtsync.gossip.acks import WANT_ACK
    from crdtsync.messages import Push

    net = Network(3, config=_config(1), latency=HOP, jitter=0.0)
    names = star(net, N, settle=15)
    writer = _deepest(net, names)
    root = net.nodes[writer].core._views().order[0]
    asks: list[tuple[str, str]] = []
    orig = net._transmit

    def tx(conn, src, msg):  # type: ignore[no-untyped-def]
        if isinstance(msg, Push) and msg.updates == (WANT_ACK,):
            asks.append((src, conn.acceptor if conn.dialer == src else conn.dialer))
        orig(conn, src, msg)

    net._transmit = tx  # type: ignore[method-assign]
    net.call(writer, lambda core: core.want_acks("s", net.now))
    net.run_for(2.0)
    assert (writer, root) in asks  # the shortcut carries the writer's own ask
    shortcuts = net.nodes[root].core._views().no_relay
    assert len(shortcuts) > N // 2
    assert not [dst for src, dst in asks if src == root and dst in shortcuts]
    assert {dst for src, dst in asks if src == root}  # and the root passed it on
