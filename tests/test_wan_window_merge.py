"""Aligned (WAN) windows merge a window's own writes in the tree and the rotating relay too
(issue 17, h-fans; the full mesh since h-wanburst: tests/gossip/test_core_aligned.py).

With ``GossipConfig()`` every write waits for the window's boundary. A full mesh then sends
a window's writes of a shard as one merged update; the tree and the rotating relay sent them
one by one inside the window's Push, so the writer's first hop validated and applied a burst
write by write. Now the tree holds them to the flush as the full mesh does (push.py,
``Pushes.local``) and the relay merges its own batch at the boundary (relay.py,
``Relay._merged_own``). Seeded simulator runs, virtual time: nothing here is timed; what is
counted is what the writer puts on the wire, and every agent must end with every key.
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from crdtsync.transports.memory import Network
from crdtsync.transports.memory import _Conn as Conn
from starsim import star

from crdtsync.gossip import RELAY, TREE, GossipConfig
from crdtsync.messages import Message, Push

N = 12
BURST = 40


class Recording(Network):
    """A Network that keeps every Push each agent sends: (sender, receiver, Push)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pushes: list[tuple[str, str, Push]] = []

    def _transmit(self, conn: Conn, src: str, msg: Message) -> None:
        if isinstance(msg, Push) and conn.open_for.get(src):
            self.pushes.append((src, conn.other(src), msg))
        super()._transmit(conn, src, msg)


def _burst(config: GossipConfig, mode: str) -> tuple[Recording, list[str]]:
    """N agents in ``mode``; the writer a05 writes BURST keys within one window."""
    net = Recording(11, config=config, latency=0.05)
    names = star(net, N, settle=15)
    assert {x.core.mode() for x in net.nodes.values() if x.core} == {mode}
    net.run_for(2.0)
    net.pushes.clear()
    writer = names[5]
    start = net.now
    for i in range(BURST):

        def write(i: int = i) -> None:
            net.write(writer, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i))

        net.at(start + 0.001 + i * 0.0005, write)  # 20 ms of writes: one 130 ms window
    net.run_for(6.0)
    for node in net.nodes.values():
        m = node.replicas.docs["s"].get("m", type=pycrdt.Map)
        assert {f"k{i}" for i in range(BURST)} <= set(m.keys()), node.name
    return net, names


@pytest.mark.parametrize(
    ("mode", "config"),
    [
        (TREE, GossipConfig(full_mesh_max=4, relay_max=0)),
        (RELAY, GossipConfig(full_mesh_max=4)),
    ],
)
def test_a_windows_own_writes_leave_the_writer_as_one_update(
    mode: str, config: GossipConfig
) -> None:
    net, names = _burst(config, mode)
    own = [(dst, p) for src, dst, p in net.pushes if src == names[5] and p.updates]
    assert own, "the writer pushed nothing"
    # Before: the burst's writes one by one in the window's Push (40 updates per Push).
    assert max(len(p.updates) for _, p in own) == 1
    assert sum(len(p.updates) for _, p in own) <= 2 * N
