"""A tree batches with its own, longer window (issue 18): ``GossipConfig.tree_push_interval``.

At 64 agents the LAN overlay is a tree, and every hop of a write is an apply, a commit and a
forward; 2 ms windows sent nearly one Push per update and link at 200 updates/s. The LAN
config's tree uses 10 ms windows; its full mesh (up to 32 agents) keeps 2 ms. Seeded
simulator runs: 16 agents (a tree with ``full_mesh_max=8``), one writer at 200 updates/s.
"""

from __future__ import annotations

import pycrdt
import pytest
from crdtsync.transports.memory import Network
from starsim import star

from crdtsync.errors import UsageError
from crdtsync.gossip import FULL, TREE, GossipConfig

N = 16
UPDATES = 100


def _run(config: GossipConfig) -> tuple[Network, float]:
    """The writer ``a00`` writes UPDATES keys at 200/s once the overlay settled; returns
    the network and the Pushes sent per update."""
    net = Network(7, config=config, latency=0.0005, jitter=0.0002)
    names = star(net, N, settle=12)
    net.reset_stats()
    start = net.now
    for i in range(UPDATES):

        def write(i: int = i) -> None:
            net.write(names[0], "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i))

        net.at(start + i / 200, write)
    net.run_until(start + UPDATES / 200)
    net.run_for(1.0)
    return net, net.by_type["Push"] / UPDATES


def test_the_tree_batches_with_its_window_and_everyone_converges() -> None:
    cfg = GossipConfig.lan(full_mesh_max=8)
    assert cfg.tree_push_interval == 0.01
    net, pushes = _run(cfg)
    cores = [x.core for x in net.nodes.values() if x.core]
    assert {c.mode() for c in cores} == {TREE}
    for node in net.nodes.values():
        m = node.replicas.docs["s"].get("m", type=pycrdt.Map)
        assert all(f"k{i}" in m for i in range(UPDATES)), node.name
    # With the mesh's 2 ms window each update travels alone over each of the 15 tree links.
    _, alone = _run(GossipConfig.lan(full_mesh_max=8, tree_push_interval=0))
    assert alone >= N - 1
    assert pushes < 0.6 * alone


def test_the_full_mesh_keeps_push_interval() -> None:
    net = Network(7, config=GossipConfig.lan(), latency=0.0005)
    net.add_node("a")
    net.add_node("b", seeds=[net.address("a")])
    net.run_for(2)
    core = net.nodes["a"].core
    assert core is not None and core.mode() == FULL
    assert core._ctx.window(net.now) == core.config.push_interval


def test_a_negative_tree_window_is_refused() -> None:
    with pytest.raises(UsageError):
        GossipConfig(tree_push_interval=-1)
