"""A simulated mesh formed around one seed, shared by the overlay tests that run the
deterministic simulator (:class:`~crdtsync.transports.memory.Network`): the tree's window, a
tree's relays, the grid.
"""

from __future__ import annotations

from collections.abc import Callable

import pycrdt
from crdtsync.transports.memory import Network

__all__ = ["in_order_latencies", "star", "stream_until_held"]


def star(net: Network, n: int, settle: float = 15.0) -> list[str]:
    """Add ``n`` agents ``a00``.. seeded by the first, let the overlay form around a first
    write to shard ``s`` (``settle`` seconds of virtual time), and return their names."""
    names = [f"a{i:02d}" for i in range(n)]
    net.add_node(names[0])
    for name in names[1:]:
        net.add_node(name, seeds=[net.address(names[0])])
    net.write(names[0], "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__("warm", 0))
    net.run_for(settle)
    return names


def in_order_latencies(net: Network, writer: str) -> tuple[dict[int, float], list[float]]:
    """Watch every agent but ``writer`` receive keys ``k0``, ``k1``.. of map ``m``.

    Returns ``(written, lat)``: the caller records in ``written[i]`` when key ``ki`` was
    written; ``lat`` gets, per agent and key, the virtual time from that write until the agent
    holds that key and every earlier one (a key that arrives before an earlier one counts
    when the gap is filled)."""
    written: dict[int, float] = {}
    upto: dict[str, int] = {}
    lat: list[float] = []

    def seen(node: str, shard: str, now: float) -> None:
        if node == writer:
            return
        m = net.nodes[node].replicas.docs[shard].get("m", type=pycrdt.Map)
        j = upto.get(node, 0)
        while j in written and f"k{j}" in m:
            lat.append(now - written[j])
            j += 1
        upto[node] = j

    net.observers.append(seen)
    return written, lat


def stream_until_held(
    net: Network,
    names: list[str],
    updates: int,
    rate: float,
    writer_of: Callable[[int], str],
    step: float,
    tail: float = 30.0,
) -> float:
    """Write keys ``k0``.. ``k{updates-1}`` of map ``m`` in shard ``s`` at ``rate`` per second
    (key ``i`` by ``writer_of(i)``), then run until every agent of ``names`` holds them all
    (checked every ``step`` seconds). Returns the virtual time from the last write until then,
    or ``inf`` if that takes more than ``tail`` seconds. Expects :func:`star`'s ``warm`` key.
    """
    start = net.now
    for i in range(updates):
        writer = writer_of(i)
        net.at(
            start + i / rate,
            lambda i=i, w=writer: net.write(
                w, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i)
            ),
        )
    last = start + (updates - 1) / rate
    net.run_until(last)
    while net.now < last + tail:
        net.run_for(step)
        if all(
            len(net.nodes[n].replicas.docs["s"].get("m", type=pycrdt.Map)) == updates + 1
            for n in names
        ):
            return net.now - last
    return float("inf")
