"""A deterministic simulated network with a virtual clock, driving real gossip cores.

:class:`Network` runs any number of :class:`~crdtsync.gossip.GossipCore` instances in one
process. Time is virtual: events (frame arrivals, connection set-up and tear-down, core timers,
simulated disk commits, scheduled callbacks) sit in a heap and the clock jumps from one to the
next, so hundreds of agents run much faster than real time. Every frame goes through
:func:`crdtsync.wire.encode` and :func:`crdtsync.wire.decode`, so the codec is exercised and
byte counts are real.

Connections open as over websockets: the acceptor sends its Hello one latency after the dial,
the dialler its own when that Hello arrives, so each side of two simultaneous dials sees first
the Hello of the connection *it* dialled (the core settles the duplicate).

Faults are configurable per network and per link (one direction): latency and jitter, loss,
duplication and reordering of frames between the handshake and the close (harsher than TCP,
to stress the protocol; a Hello always arrives, first and once, and so does a Close, whose
code a clean websocket close delivers), partitions
(``partition(groups)`` / ``heal()``), crashes and restarts (``crash(name)``, optionally losing
what was not yet "durable", then ``restart(name)``).

Determinism: one ``random.Random(seed)`` for the network, one derived per core, pycrdt client
ids drawn from it, and no iteration over unordered sets. The same seed gives the same
message trace (see :attr:`Network.trace`), so a failing seed replays exactly.

:class:`MemoryReplicas` is an in-memory :class:`~crdtsync.replica.ReplicaSet` over pycrdt
documents with simulated durability (:meth:`MemoryReplicas.commit` snapshots what is "on
disk"); tests and benchmarks use it instead of LMDB.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pycrdt
from crdtsync.transports._sim_links import LinkConfig, LinkStats, Node, _Conn, _Connections
from crdtsync.transports._sim_replicas import MemoryReplicas

from crdtsync.errors import CloseCode
from crdtsync.gossip import GossipConfig, GossipCore
from crdtsync.messages import Close
from crdtsync.sharding import Sharding, ShardingConfig

__all__ = ["MemoryReplicas", "Network", "LinkConfig", "LinkStats", "Node"]


class Network(_Connections):
    """A deterministic simulated network of gossip cores (see the module docstring).

    Args:
        seed: seed of every random choice in the run.
        latency, jitter, loss, duplicate, reorder: defaults of every link (see LinkConfig).
        config: GossipConfig of every core.
        mesh: mesh name of every core.
        commit_delay: simulated group-commit latency: changes become durable (and acked)
            this long after they are made.
        detect_delay: how long a peer takes to notice a connection broken by a crash or a
            partition (TCP keepalive / websocket ping timeout).
        trace: record every frame in :attr:`trace`.
        sharding: placement and remote reads of every core (each gets its own
            :class:`~crdtsync.sharding.Sharding`); the default replicates every shard.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        latency: float = 0.05,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        config: GossipConfig = GossipConfig(),
        mesh: str = "default",
        commit_delay: float = 0.005,
        detect_delay: float = 1.0,
        trace: bool = False,
        sharding: ShardingConfig = ShardingConfig(),
    ) -> None:
        self.seed = seed
        self.sharding = sharding
        self.rng = random.Random(seed)
        self.default_link = LinkConfig(latency, jitter, loss, duplicate, reorder)
        self.config = config
        self.mesh = mesh
        self.commit_delay = commit_delay
        self.detect_delay = detect_delay
        self.now = 0.0
        self.nodes: dict[str, Node] = {}
        self._links: dict[tuple[str, str], LinkConfig] = {}
        self._blocked: dict[str, int] = {}  # name -> partition group (absent: no partition)
        self._by_address: dict[str, str] = {}
        self._conns: dict[int, _Conn] = {}
        self._heap: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = 0
        #: Frames and bytes per (sender, receiver).
        self.links: dict[tuple[str, str], LinkStats] = {}
        #: Frames per message type name.
        self.by_type: Counter[str] = Counter()
        #: (time, sender, receiver, message type, bytes) of every frame sent, if tracing.
        self.trace: list[tuple[float, str, str, str, int]] | None = [] if trace else None
        #: Called as f(node, shard, now) whenever a node's replica of a shard changed.
        self.observers: list[Callable[[str, str, float], None]] = []
        #: Protocol errors that closed connections: (time, node, peer, code).
        self.errors: list[tuple[float, str, str | None, CloseCode]] = []
        #: Second connections between two agents, refused by a core or replacing the first
        #: (concurrent dials, restarts: settled by the core): not protocol errors.
        self.duplicates = 0
        self.last_data_at = 0.0

    # -- topology -----------------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        seeds: Iterable[str] = (),
        replicas: MemoryReplicas | None = None,
        listen: bool = True,
        config: GossipConfig | None = None,
    ) -> Node:
        """Start an agent named ``name`` (address ``mem://name`` if it listens)."""
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists")
        address = f"mem://{name}" if listen else None
        if replicas is None:
            replicas = MemoryReplicas(random.Random(f"{self.seed}/{name}/replicas"))
        node = Node(name, address, tuple(seeds), replicas, None)
        self.nodes[name] = node
        if address is not None:
            self._by_address[address] = name
        self._start(node, config)
        return node

    def address(self, name: str) -> str:
        """The address of node ``name``."""
        a = self.nodes[name].address
        if a is None:
            raise ValueError(f"{name} does not listen")
        return a

    def _start(self, node: Node, config: GossipConfig | None = None) -> None:
        rng = random.Random(f"{self.seed}/{node.name}/{node.generation}")
        node.core = GossipCore(
            node.name,
            node.replicas,
            rng=rng,
            config=config or self.config,
            mesh=self.mesh,
            address=node.address,
            seeds=node.seeds,
            policy=Sharding(self.sharding),
            on_ack_wanted=node.ack_wanted,
        )
        self._pump(node)

    def set_link(self, a: str, b: str, *, both: bool = True, **overrides: Any) -> None:
        """Override link behaviour from ``a`` to ``b`` (and back, with ``both``)."""
        for pair in [(a, b), (b, a)] if both else [(a, b)]:
            self._links[pair] = replace(self._links.get(pair, self.default_link), **overrides)

    def link(self, a: str, b: str) -> LinkConfig:
        return self._links.get((a, b), self.default_link)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut the network into ``groups``; nodes not listed form one more group.

        Frames across groups are lost; connections across groups break after detect_delay.
        """
        self._blocked = {}
        for i, group in enumerate(groups):
            for name in group:
                self._blocked[name] = i
        for conn in list(self._conns.values()):
            if self._cut(conn.dialer, conn.acceptor):
                self._schedule(self.now + self.detect_delay, "cut", (conn.id,))

    def heal(self) -> None:
        """Remove every partition."""
        self._blocked = {}

    def _cut(self, a: str, b: str) -> bool:
        if not self._blocked:
            return False
        return self._blocked.get(a, -1) != self._blocked.get(b, -1)

    # -- crashes --------------------------------------------------------------------------------

    def crash(self, name: str, *, lose_unflushed: bool = True) -> None:
        """Kill node ``name``: its core is gone, its peers notice after detect_delay.

        With ``lose_unflushed`` its replicas keep only what was committed ("durable").
        """
        node = self.nodes[name]
        node.core = None
        node.tick_at = node.tick_token = None
        node.commit_pending = False
        for cid in list(node.conns.values()) + [
            c.id for c in self._conns.values() if name in (c.dialer, c.acceptor)
        ]:
            conn = self._conns.get(cid)
            if conn is None:
                continue
            conn.open_for[name] = False
            self._schedule(self.now + self.detect_delay, "close", (cid, conn.other(name)))
        node.conns.clear()
        node.replicas = node.replicas.recover(
            lose_unflushed=lose_unflushed,
            rng=random.Random(f"{self.seed}/{name}/{node.generation + 1}/ids"),
        )

    def restart(self, name: str) -> None:
        """Start a new core for crashed node ``name`` over its surviving replicas."""
        node = self.nodes[name]
        if node.core is not None:
            raise ValueError(f"{name} is running")
        node.generation += 1
        self._start(node)

    # -- local activity -------------------------------------------------------------------------

    def write(self, name: str, shard: str, fn: Callable[[pycrdt.Doc[Any]], None]) -> bytes | None:
        """Make a local change on node ``name`` now, and hand its delta to the core."""
        node = self.nodes[name]
        if node.core is None:
            raise ValueError(f"{name} is crashed")
        delta = node.replicas.change(shard, fn)
        if delta is not None:
            node.core.local_update(shard, delta, self.now)
        self._after(node)
        return delta

    def call(self, name: str, fn: Callable[[GossipCore], Any]) -> Any:
        """Call ``fn(core)`` of running node ``name`` now and execute the effects; return its
        result (e.g. ``net.call("a", lambda c: c.sharding.read(...))``)."""
        node = self.nodes[name]
        if node.core is None:
            raise ValueError(f"{name} is crashed")
        result = fn(node.core)
        self._after(node)
        return result

    def at(self, t: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at virtual time ``t``."""
        self._schedule(t, "call", (fn,))

    # -- running ----------------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Process every event up to virtual time ``t``; the clock ends at ``t``."""
        while self._heap and self._heap[0][0] <= t:
            when, _, kind, args = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            getattr(self, "_ev_" + kind)(*args)
        self.now = max(self.now, t)

    def run_for(self, dt: float) -> None:
        """Run for ``dt`` seconds of virtual time."""
        self.run_until(self.now + dt)

    def run_until_converged(self, timeout: float, *, step: float = 0.1) -> float:
        """Run until every running node holds the same shards with equal digests.

        Returns the virtual time it took. Raises TimeoutError after ``timeout`` seconds.
        """
        start = self.now
        while not self.converged():
            if self.now - start >= timeout:
                raise TimeoutError(f"not converged after {timeout} s (seed {self.seed})")
            self.run_for(step)
        return self.now - start

    def run_until_quiet(self, timeout: float, *, idle: float = 1.0) -> float:
        """Run until no data (Push/Diff/SyncRequest/Digests/Ack) was sent for ``idle`` seconds."""
        start = self.now
        while self.now - self.last_data_at < idle or self.now - start < idle:
            if self.now - start >= timeout:
                raise TimeoutError(f"not quiet after {timeout} s (seed {self.seed})")
            self.run_for(min(idle / 4, 0.25))
        return self.now - start

    def converged(self, names: Iterable[str] | None = None) -> bool:
        """Whether the given (default: all running) nodes hold equal shards and digests."""
        nodes = (
            [self.nodes[n] for n in names]
            if names is not None
            else [n for n in self.nodes.values() if n.core is not None]
        )
        fingerprints = {
            tuple((s, n.replicas.digest(s)) for s in sorted(n.replicas.docs)) for n in nodes
        }
        return len(fingerprints) <= 1

    # -- statistics ---------------------------------------------------------------------------

    def total_messages(self) -> int:
        return sum(s.messages for s in self.links.values())

    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.links.values())

    def reset_stats(self) -> None:
        self.links.clear()
        self.by_type.clear()

    # -- the driver: effects of a core ------------------------------------------------------------

    def _schedule(self, t: float, kind: str, args: tuple[Any, ...]) -> int:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, args))
        return self._seq

    def _after(self, node: Node) -> None:
        """After any call into node's core: execute effects, schedule commit and timer."""
        self._pump(node)
        if node.replicas.changed:
            changed = list(node.replicas.changed)
            node.replicas.changed.clear()
            for obs in self.observers:
                for shard in changed:
                    obs(node.name, shard, self.now)
        if node.replicas.dirty and not node.commit_pending and node.core is not None:
            node.commit_pending = True
            self._schedule(self.now + self.commit_delay, "commit", (node.name, node.generation))

    def _pump(self, node: Node) -> None:
        core = node.core
        if core is None:
            return
        for peer, msg in core.data_to_send():
            cid = node.conns.get(peer)
            if cid is None:
                continue
            conn = self._conns[cid]
            self._transmit(conn, node.name, msg)
            if isinstance(msg, Close):
                self._close(conn, node.name, notify_self=True)
        for address in core.dials():
            self._dial(node, address)
        d = core.next_deadline()
        if d is not None and d != node.tick_at:
            # One live timer event per node: an older one is recognised by its token and
            # ignored when it fires.
            node.tick_at = max(d, self.now)
            node.tick_token = token = self._seq + 1
            self._schedule(node.tick_at, "tick", (node.name, token))

    # -- event handlers -----------------------------------------------------------------------

    def _ev_call(self, fn: Callable[[], None]) -> None:
        fn()

    def _ev_tick(self, name: str, token: int) -> None:
        node = self.nodes[name]
        if node.core is None or node.tick_token != token:
            return
        node.tick_at = node.tick_token = None
        node.core.tick(self.now)
        self._after(node)

    def _ev_commit(self, name: str, generation: int) -> None:
        node = self.nodes[name]
        node.commit_pending = False
        if node.core is None or node.generation != generation:
            return
        shards = node.replicas.commit()
        if shards:
            node.core.durable(shards, self.now)
        self._after(node)
