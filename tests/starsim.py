"""A simulated mesh formed around one seed, shared by the overlay tests that run the
deterministic simulator (:class:`~crdtsync.transports.memory.Network`): the tree's window, a
tree's relays, the grid.
"""

from __future__ import annotations

import pycrdt
from crdtsync.transports.memory import Network

__all__ = ["star"]


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
