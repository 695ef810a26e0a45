"""A full mesh forms with paced dials (issue 18): at most ``max_dialing`` under way per agent.

64 agents on one 2-core host dialling everyone at once (2,016 websocket handshakes) starved
each other past the Hello timeout, and the redials kept it so: the mesh never formed. Seeded
simulator runs: every agent seeded with one, the whole view learnt at once, then a full mesh.
"""

from __future__ import annotations

from typing import Any

from crdtsync.transports.memory import Network

from crdtsync.gossip import FULL, GossipConfig

N = 20


class DialLog(Network):
    """A :class:`Network` that records each agent's most dials under way and every dial."""

    def __init__(self, seed: int, **kw: Any) -> None:
        super().__init__(seed, **kw)
        self.peak: dict[str, int] = {}
        self.dials = 0

    def _dial(self, node: Any, address: str) -> None:
        self.dials += 1
        super()._dial(node, address)

    def _after(self, node: Any) -> None:
        super()._after(node)
        if node.core is not None:
            under_way = len(node.core._p.dialer.dialing)
            self.peak[node.name] = max(self.peak.get(node.name, 0), under_way)


def mesh(config: GossipConfig, seed: int = 3) -> DialLog:
    net = DialLog(seed, config=config, latency=0.05)
    names = [f"a{i:02d}" for i in range(N)]
    net.add_node(names[0])
    for name in names[1:]:
        net.add_node(name, seeds=[net.address(names[0])])
    net.run_for(20)
    return net


def test_paced_dials_form_the_full_mesh() -> None:
    net = mesh(GossipConfig.lan(max_dialing=2))
    assert {x.core.mode() for x in net.nodes.values() if x.core} == {FULL}
    assert all(len(x.conns) == N - 1 for x in net.nodes.values())
    assert max(net.peak.values()) <= 2
    # a01 dials the 18 agents after it (all linked to the seed already): unpaced, at once
    unpaced = mesh(GossipConfig.lan(max_dialing=0))
    assert unpaced.peak["a01"] > 2


def test_larger_name_waits_for_the_smaller_ones_queue() -> None:
    """Each pair is dialled from one end: the larger name's grace covers the smaller name's
    queue of dials (names between the two, ``max_dialing`` at a time)."""
    net = mesh(GossipConfig.lan(max_dialing=2))
    pairs = N * (N - 1) // 2
    # 19 seed dials and one per pair, and a few repeated (a duplicate refused, a Close raced)
    assert net.dials <= (N - 1) + pairs * 1.1, net.dials
