"""Loss repair in the rotating relay that does not wait for the next broadcast (issue 17).

Under loss an agent that stops receiving relay broadcasts for ``SILENT_WINDOWS`` windows asks
the last window's relay for what it lacks at once (a per-link timeout), instead of waiting
for a later broadcast's hint to show the gap: with every inbound frame lost it has no other
way to know, so before this change it sent no request at all while cut off.
"""

from __future__ import annotations

import random

import pycrdt
from crdtsync.transports.memory import Network

from crdtsync.gossip import RELAY, GossipConfig
from crdtsync.gossip.relay import SILENT_WINDOWS


def _mesh(seed: int) -> tuple[Network, list[str]]:
    net = Network(seed, latency=0.1, config=GossipConfig())  # WAN defaults: 0.13 s windows
    names = [f"n{i:02d}" for i in range(10)]
    rng = random.Random(seed)
    net.add_node(names[0])
    for i, name in enumerate(names[1:], 1):
        net.add_node(name, seeds=[net.address(names[rng.randrange(i)])])
    net.run_until(15.0)
    assert {n.core.mode() for n in net.nodes.values() if n.core} == {RELAY}  # type: ignore[union-attr]
    return net, names


def _writes(net: Network, names: list[str], start: float, seconds: float, skip: str) -> None:
    writers = [n for n in names if n != skip]
    for i in range(int(seconds * 50)):
        name = writers[i % len(writers)]
        net.at(
            start + i * 0.02,
            lambda name=name, i=i: net.write(
                name, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i)
            ),
        )


def test_a_silent_relay_stream_is_asked_for_at_once() -> None:
    net, names = _mesh(3)
    x = names[5]
    w = net.nodes[x].core.config.push_interval  # type: ignore[union-attr]
    _writes(net, names, net.now, 6.0, x)
    # First a real loss that x notices (one window of broadcasts to it lost): from then on the
    # mesh is lossy for x, which turns its loss repair on.
    net.run_for(1.0)
    for a in names:
        if a != x:
            net.set_link(a, x, both=False, loss=1.0)
    net.run_for(w)
    for a in names:
        if a != x:
            net.set_link(a, x, both=False, loss=0.0)
    net.run_for(1.5)  # its repair is over; nothing is outstanding
    assert not any(c.repair.repairs for c in net.nodes[x].core._conns.values())  # type: ignore[union-attr]
    # Now x hears nothing at all (its own frames still go out) for a while, writes going on.
    net.trace = []
    cut_at = net.now
    for a in names:
        if a != x:
            net.set_link(a, x, both=False, loss=1.0)
    net.run_for(1.0)
    asked = [t for t, src, _dst, kind, _n in net.trace if src == x and kind == "SyncRequest"]
    assert asked, "a silent broadcast stream was not asked for"
    assert min(asked) >= cut_at + (SILENT_WINDOWS - 1) * w  # not before the silence was long
    for a in names:
        if a != x:
            net.set_link(a, x, both=False, loss=0.0)
    net.run_until_converged(30)
