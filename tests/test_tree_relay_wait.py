"""A tree's relay passes news on without a window of its own (issue 18, branch h-n64b):
``GossipConfig.tree_relay_wait`` (0 in ``GossipConfig.lan()`` since h-n64c; -1, a window at
every hop, is the class default for the WAN settings' aligned windows).

The writer's first hop batches with the tree's window (``tree_push_interval``); a relay that
then waited for a window again added up to one window per hop (4-6 hops from a leaf writer at
64 agents). With ``tree_relay_wait=0`` the window is paid once. Seeded simulator runs: 16
agents (a tree with ``full_mesh_max=8``), one writer at 200 updates/s, every key's arrival at
every agent in virtual time.
"""

from __future__ import annotations

import pycrdt
import pytest
from crdtsync.transports.memory import Network
from starsim import in_order_latencies, star

from crdtsync.errors import UsageError
from crdtsync.gossip import TREE, GossipConfig

N = 16
UPDATES = 100


def _run(config: GossipConfig) -> tuple[Network, list[float], float]:
    """``a00`` writes UPDATES keys at 200/s once the overlay settled; returns the network,
    every (agent, key) delivery latency in seconds and the Pushes sent per update."""
    net = Network(7, config=config, latency=0.0005, jitter=0.0002)
    names = star(net, N, settle=12)
    written, lat = in_order_latencies(net, names[0])
    net.reset_stats()
    start = net.now
    for i in range(UPDATES):

        def write(i: int = i) -> None:
            written[i] = net.now
            net.write(names[0], "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i))

        net.at(start + i / 200, write)
    net.run_until(start + UPDATES / 200)
    net.run_for(1.0)
    return net, lat, net.by_type["Push"] / UPDATES


def test_relays_do_not_wait_a_window_per_hop() -> None:
    cfg = GossipConfig.lan(full_mesh_max=8, tree_relay_wait=0.0)
    net, lat, pushes = _run(cfg)
    assert {x.core.mode() for x in net.nodes.values() if x.core} == {TREE}
    assert len(lat) == (N - 1) * UPDATES  # every agent got every key
    # One window (10 ms, at the writer's first hop) plus sub-millisecond hops.
    assert max(lat) < 1.5 * cfg.tree_push_interval
    # Relays waiting for the window as the writer does: a window more at most hops.
    _, old_lat, old_pushes = _run(GossipConfig.lan(full_mesh_max=8, tree_relay_wait=-1.0))
    assert len(old_lat) == (N - 1) * UPDATES
    assert max(old_lat) > 2 * cfg.tree_push_interval
    # Not more Pushes: a relay sends at most one per link for each one it received.
    assert pushes <= 1.05 * old_pushes


def test_the_lan_default_passes_news_on_and_the_class_default_waits() -> None:
    # lan(): relays without a window (benchmarks/history/fanout-32-64.md, h-n64c); the WAN class default
    # keeps the window at every hop (its windows are aligned, h-n64b measured only the LAN).
    assert GossipConfig.lan().tree_relay_wait == 0.0
    assert GossipConfig().tree_relay_wait == -1.0
    # and lan()'s default is what the first test measures
    _, lat, _ = _run(GossipConfig.lan(full_mesh_max=8))
    assert len(lat) == (N - 1) * UPDATES
    assert max(lat) < 1.5 * GossipConfig.lan().tree_push_interval


@pytest.mark.parametrize("wait", [-0.5, -2.0])
def test_a_negative_relay_wait_other_than_minus_one_is_refused(wait: float) -> None:
    with pytest.raises(UsageError):
        GossipConfig(tree_relay_wait=wait)
