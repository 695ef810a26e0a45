"""Tools to test code built on crdtsync without sockets, disks or wall-clock time.

* :class:`Network` (with :class:`LinkConfig`, :class:`LinkStats`, :class:`Node`): the
  deterministic simulator, any number of real gossip cores on a virtual clock with
  configurable latency, loss, duplication, reordering, partitions, crashes and restarts. The
  same seed replays the same message trace.
* :class:`MemoryReplicas`: an in-memory :class:`~crdtsync.replica.ReplicaSet` of pycrdt
  documents with simulated durability, what each simulated agent holds.
* :func:`mesh`: a :class:`Network` of ``n`` agents that find each other through the first.
* :func:`core_pair` / :class:`CorePair`: two cores joined by one perfect link that you pump by
  hand, in the style of h11's ``ConnectionPair``: the smallest setup in which to watch the
  protocol's messages one by one.
* :func:`put`, :func:`delete`, :func:`value`: read and write a simulated agent's shard the way
  :class:`crdtsync.Shard` does (its root map).
* :func:`fast_config`: a :class:`~crdtsync.GossipConfig` with short failure-detection timers,
  so simulated runs settle in a few virtual seconds.
* :class:`LocalHub`: whole :class:`crdtsync.Agent` objects (real LMDB stores, the asyncio
  API) meshed in one process without sockets, on the real clock:
  ``Agent("a", dir, listen="hub://a", transport=hub.transport)``.

Example::

    from crdtsync.testing import mesh, put, value

    net = mesh(3, seed=7, loss=0.05)
    put(net, "n0", "board", "task", "write docs")
    net.run_until_converged(timeout=30)
    assert value(net, "n2", "board") == {"task": "write docs"}
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from . import wire
from ._hub import HubTransport, LocalHub
from .gossip import GossipConfig, GossipCore, Handshake
from .messages import Close, Message
from .readcache import snapshot_of
from .shard import ROOT
from .transports.memory import LinkConfig, LinkStats, MemoryReplicas, Network, Node

__all__ = [
    "CorePair",
    "HubTransport",
    "LinkConfig",
    "LinkStats",
    "LocalHub",
    "MemoryReplicas",
    "Network",
    "Node",
    "core_pair",
    "delete",
    "fast_config",
    "mesh",
    "put",
    "value",
]


def fast_config(**overrides: Any) -> GossipConfig:
    """A GossipConfig for simulations: anti-entropy every 2 s, suspicion after 3 s, short
    backoff; ``overrides`` are further GossipConfig fields. Partial replication is not part of
    it: pass ``sharding=ShardingConfig(replication_factor=...)`` to :class:`Network` (or
    :func:`mesh`)."""
    base: dict[str, Any] = {
        "anti_entropy_interval": 2.0,
        "suspect_timeout": 3.0,
        "backoff_max": 4.0,
        "prune_grace": 3.0,
    }
    base.update(overrides)
    return GossipConfig(**base)


def mesh(n: int, *, seed: int = 0, prefix: str = "n", **network: Any) -> Network:
    """A :class:`Network` of ``n`` listening agents ``n0 .. n{n-1}``, each seeded with the
    first (they learn the others from it). ``network`` goes to :class:`Network` (latency,
    loss, config, ...). Nothing has run yet: call ``run_for`` or ``run_until_converged``."""
    net = Network(seed, **network)
    first = f"{prefix}0"
    net.add_node(first)
    for i in range(1, n):
        net.add_node(f"{prefix}{i}", seeds=[net.address(first)])
    return net


def put(net: Network, node: str, shard: str, key: str, val: Any) -> bytes | None:
    """Set ``key`` in the root map of ``node``'s shard, as ``shard[key] = val`` would; the
    delta (None if nothing changed). ``val`` must be a pycrdt-storable value."""
    return net.write(node, shard, lambda d: d.get(ROOT, type=pycrdt.Map).__setitem__(key, val))


def delete(net: Network, node: str, shard: str, key: str) -> bytes | None:
    """Remove ``key`` from the root map of ``node``'s shard; the delta (or None)."""
    return net.write(node, shard, lambda d: d.get(ROOT, type=pycrdt.Map).pop(key, None))


def value(net: Network, node: str, shard: str) -> dict[str, Any]:
    """``node``'s replica of ``shard`` as a plain dict (what ``Shard.snapshot()`` returns)."""
    return snapshot_of(net.nodes[node].replicas.doc(shard))


@dataclass
class CorePair:
    """Two gossip cores, ``a`` and ``b``, on one loss-free link you drive by hand.

    Nothing happens on its own: :meth:`connect` exchanges the Hellos, :meth:`write` makes a
    change on one side, :meth:`pump` delivers every frame both cores want to send (through
    :func:`crdtsync.wire.encode`/``decode``, so the codec runs) until neither has more, and
    :meth:`advance` moves the virtual clock, firing the cores' timers. :attr:`log` keeps every
    delivered message as (sender, receiver, message).
    """

    a: GossipCore
    b: GossipCore
    replicas: dict[str, MemoryReplicas]
    now: float = 0.0
    log: list[tuple[str, str, Message]] = field(default_factory=list)

    def core(self, name: str) -> GossipCore:
        """The core named ``name`` ("a" or "b")."""
        return {self.a.name: self.a, self.b.name: self.b}[name]

    def other(self, name: str) -> GossipCore:
        return self.b if name == self.a.name else self.a

    def connect(self) -> None:
        """Open the link (``a`` dialled ``b``), each side's Hello when its core's
        :class:`~crdtsync.gossip.Handshake` says: ``a``'s first, ``b``'s once ``b`` accepted it."""
        dialer = Handshake(self.a, outbound=True)
        acceptor = Handshake(self.b, outbound=False)
        for hello in dialer.data_to_send():
            acceptor.receive(wire.decode(wire.encode(hello)), self.now)
        for hello in acceptor.data_to_send():
            dialer.receive(wire.decode(wire.encode(hello)), self.now)
        self.pump()

    def write(self, name: str, shard: str, fn: Callable[[pycrdt.Doc[Any]], None]) -> bytes | None:
        """Change ``shard`` on side ``name`` with ``fn(doc)`` and tell its core; the delta."""
        delta = self.replicas[name].change(shard, fn)
        if delta is not None:
            self.core(name).local_update(shard, delta, self.now)
        return delta

    def commit(self) -> None:
        """Make both sides' changes "durable" and tell their cores (acks follow)."""
        for name, replicas in self.replicas.items():
            shards = replicas.commit()
            if shards:
                self.core(name).durable(shards, self.now)

    def pump(self, *, limit: int = 10_000) -> list[tuple[str, str, Message]]:
        """Deliver frames both ways, committing after each round, until both cores are quiet;
        the messages delivered. Raises RuntimeError after ``limit`` messages (a loop)."""
        delivered: list[tuple[str, str, Message]] = []
        while True:
            self.commit()
            batch = [(c, peer, msg) for c in (self.a, self.b) for peer, msg in c.data_to_send()]
            if not batch:
                return delivered
            for src, peer, msg in batch:
                dst = self.other(src.name)
                if peer != dst.name:
                    continue
                delivered.append((src.name, dst.name, msg))
                self.log.append((src.name, dst.name, msg))
                if isinstance(msg, Close):
                    dst.connection_lost(src.name, self.now)
                    src.connection_lost(dst.name, self.now)
                    continue
                dst.receive(src.name, wire.decode(wire.encode(msg)), self.now)
            if len(delivered) > limit:
                raise RuntimeError(f"more than {limit} messages without the pair going quiet")

    def advance(self, dt: float) -> None:
        """Move the clock ``dt`` seconds, ticking each core at its deadlines and pumping."""
        end = self.now + dt
        while True:
            deadlines = [d for c in (self.a, self.b) if (d := c.next_deadline()) is not None]
            step = min(deadlines, default=end)
            if step > end:
                break
            self.now = max(self.now, step)
            for c in (self.a, self.b):
                d = c.next_deadline()
                if d is not None and d <= self.now:
                    c.tick(self.now)
            self.pump()
            if step >= end:
                break
        self.now = end

    def converged(self) -> bool:
        """Whether both sides have the same shards with equal digests."""
        ra, rb = self.replicas[self.a.name], self.replicas[self.b.name]
        names = sorted(set(ra.shard_names()))
        return names == sorted(set(rb.shard_names())) and all(
            ra.digest(s) == rb.digest(s) for s in names
        )


def core_pair(
    *, seed: int = 0, config: GossipConfig | None = None, mesh: str = "default"
) -> CorePair:
    """Two connected cores named "a" and "b" over :class:`MemoryReplicas` (see
    :class:`CorePair`); the Hellos and whatever follows them are already delivered."""
    replicas = {n: MemoryReplicas(random.Random(f"{seed}/{n}/replicas")) for n in ("a", "b")}
    cores = [
        GossipCore(
            n,
            replicas[n],
            rng=random.Random(f"{seed}/{n}"),
            config=config or GossipConfig(),
            mesh=mesh,
            address=f"mem://{n}",
        )
        for n in ("a", "b")
    ]
    pair = CorePair(cores[0], cores[1], replicas)
    pair.connect()
    return pair
