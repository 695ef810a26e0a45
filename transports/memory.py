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
from dataclasses import dataclass, field, replace
from typing import Any

import pycrdt

from crdtsync import updates, wire
from crdtsync.errors import CloseCode, ProtocolError
from crdtsync.gossip import GossipConfig, GossipCore
from crdtsync.messages import Close, Hello, Message
from crdtsync.names import validate_shard_name
from crdtsync.sharding import Sharding, ShardingConfig

__all__ = ["MemoryReplicas", "Network", "LinkConfig", "LinkStats", "Node"]


# ------------------------------------------------------------------------------------------------
# in-memory replicas


class MemoryReplicas:
    """An in-memory :class:`~crdtsync.replica.ReplicaSet`: one pycrdt Doc per shard.

    Every shard an update arrives for is created (full replication). "Durable" state is what
    the last :meth:`commit` snapshotted; :meth:`recover` rebuilds a replica set from it, as an
    agent restarting from its store would.

    Args:
        rng: source of pycrdt client ids (determinism); a fresh id per Doc.
        shards: shards to create empty.
    """

    def __init__(self, rng: random.Random | None = None, shards: Iterable[str] = ()) -> None:
        self._rng = rng if rng is not None else random.Random(0)
        self.docs: dict[str, pycrdt.Doc[Any]] = {}
        self._subs: dict[str, Any] = {}
        self._captured: list[bytes] = []
        self._digests: dict[str, bytes] = {}  # cache, dropped by the observer on any change
        self._dirty: dict[str, None] = {}
        #: Shards changed since the driver last cleared this (the simulator does).
        self.changed: dict[str, None] = {}
        self._uncommitted: dict[str, list[bytes]] = {}
        self._log: dict[str, list[bytes]] = {}  # committed deltas per shard: the "disk"
        self._durable_state: dict[str, tuple[bytes, bytes]] = {}
        for shard in shards:
            self.doc(shard)

    def doc(self, shard: str) -> pycrdt.Doc[Any]:
        """The Doc of ``shard``, created empty if needed."""
        d = self.docs.get(shard)
        if d is None:
            d = self.docs[shard] = self._new_doc(shard)
        return d

    def _new_doc(self, shard: str) -> pycrdt.Doc[Any]:
        validate_shard_name(shard)
        d: pycrdt.Doc[Any] = pycrdt.Doc(client_id=self._rng.randrange(1, 2**32))
        self._subs[shard] = d.observe(lambda e, s=shard: self._on_txn(s, e))
        return d

    def _on_txn(self, shard: str, event: Any) -> None:
        update = event.update
        if updates.is_noop(update):
            return
        self._captured.append(update)
        self._digests.pop(shard, None)
        self._uncommitted.setdefault(shard, []).append(update)
        self._dirty[shard] = None
        self.changed[shard] = None

    def change(self, shard: str, fn: Callable[[pycrdt.Doc[Any]], None]) -> bytes | None:
        """Make a local change with ``fn(doc)`` in one transaction; return its delta (or None)."""
        d = self.doc(shard)
        self._captured.clear()
        with d.transaction():
            fn(d)
        return _join(self._captured)

    # -- ReplicaSet -------------------------------------------------------------------------------

    def shard_names(self) -> Iterable[str]:
        return list(self.docs)

    def state_vector(self, shard: str) -> bytes:
        return updates.state_vector(self.docs[shard])

    def digest(self, shard: str) -> bytes:
        d = self._digests.get(shard)
        if d is None:
            d = self._digests[shard] = updates.digest(self.docs[shard])
        return d

    def diff(self, shard: str, state_vector: bytes) -> bytes:
        return self.docs[shard].get_update(state_vector)

    def apply(
        self, shard: str, update: bytes, origin: str, info: updates.UpdateInfo | None = None
    ) -> bytes | None:
        self._captured.clear()
        d = self.docs.get(shard)
        if d is None:  # a new shard exists only once an update for it applied cleanly
            d = self._new_doc(shard)
            updates.apply_update(d, update, info)
            self.docs[shard] = d
        else:
            updates.apply_update(d, update, info)
        return _join(self._captured)

    def durable_state(self, shard: str) -> tuple[bytes, bytes]:
        # Nothing committed yet: the empty state vector and the empty delete set.
        return self._durable_state.get(shard, (b"\x00", b"\x00"))

    def drop(self, shard: str) -> None:
        d = self.docs.pop(shard, None)
        sub = self._subs.pop(shard, None)
        if d is not None and sub is not None:
            d.unobserve(sub)
        for table in (
            self._digests,
            self._dirty,
            self.changed,
            self._uncommitted,
            self._log,
            self._durable_state,
        ):
            table.pop(shard, None)  # type: ignore[attr-defined]

    # -- simulated disk ---------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether some change is not yet "on disk"."""
        return bool(self._dirty)

    def commit(self) -> list[str]:
        """Make every change so far durable; return the shards that changed (sorted)."""
        out = sorted(self._dirty)
        for shard in out:
            d = self.docs[shard]
            log = self._log.setdefault(shard, [])
            log.extend(self._uncommitted.pop(shard, ()))
            if len(log) > 512:  # compact, as the real store does
                log[:] = [pycrdt.merge_updates(*log)]
            self._durable_state[shard] = (updates.state_vector(d), updates.delete_set(d))
        self._dirty.clear()
        return out

    def recover(
        self, *, lose_unflushed: bool = True, rng: random.Random | None = None
    ) -> MemoryReplicas:
        """A new replica set as an agent restarting from its store would have it.

        Docs get fresh client ids: a restarted agent must never reuse clocks it may have
        handed out before the crash.
        """
        fresh = MemoryReplicas(rng if rng is not None else self._rng)
        for shard in self.docs:
            if lose_unflushed:
                if not self._log.get(shard):
                    continue
                snap = pycrdt.merge_updates(*self._log[shard])
            else:
                snap = self.docs[shard].get_update()
            d = fresh.doc(shard)
            updates.apply_update(d, snap)
        fresh._captured.clear()
        fresh.changed.clear()
        fresh.commit()  # what was just loaded is on disk
        return fresh


def _join(captured: list[bytes]) -> bytes | None:
    if not captured:
        return None
    if len(captured) == 1:
        return captured[0]
    return pycrdt.merge_updates(*captured)


# ------------------------------------------------------------------------------------------------
# the network


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Behaviour of one direction of a link.

    Attributes:
        latency: one-way delay of a frame, seconds.
        jitter: extra delay, uniform in [0, jitter]; frames stay in order unless reordered.
        loss: probability that a frame is dropped.
        duplicate: probability that a frame is delivered twice.
        reorder: probability that a frame is delayed by up to 2*latency more, out of order.
    """

    latency: float = 0.05
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0


@dataclass(slots=True)
class LinkStats:
    """Frames and bytes sent over one direction of a link."""

    messages: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Conn:
    id: int
    dialer: str
    acceptor: str
    address: str
    open_for: dict[str, bool] = field(default_factory=dict)
    peer_name: dict[str, str | None] = field(default_factory=dict)  # side -> name its core uses
    last_arrival: dict[str, float] = field(default_factory=dict)
    hello_arrival: dict[str, float] = field(
        default_factory=dict
    )  # side -> when its peer's Hello lands

    def other(self, side: str) -> str:
        return self.acceptor if side == self.dialer else self.dialer


@dataclass(slots=True)
class Node:
    """One simulated agent: its replicas survive crashes, its core does not."""

    name: str
    address: str | None
    seeds: tuple[str, ...]
    replicas: MemoryReplicas
    core: GossipCore | None
    generation: int = 0
    conns: dict[str, int] = field(default_factory=dict)  # peer name -> conn id
    tick_at: float | None = None
    tick_token: int | None = None
    commit_pending: bool = False


class Network:
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

    def _transmit(self, conn: _Conn, src: str, msg: Message) -> None:
        if not conn.open_for.get(src):
            return
        dst = conn.other(src)
        frame = wire.encode(msg)
        kind = type(msg).__name__
        stats = self.links.setdefault((src, dst), LinkStats())
        stats.messages += 1
        stats.bytes += len(frame)
        self.by_type[kind] += 1
        if kind not in ("Summary", "PeerList", "Hello", "Close"):
            self.last_data_at = self.now
        if self.trace is not None:
            self.trace.append((round(self.now, 9), src, dst, kind, len(frame)))
        link = self.link(src, dst)
        if isinstance(msg, (Hello, Close)):
            # Faults beyond TCP are injected between the handshake and the close only: a
            # connection whose Hello is lost would just hang, and a clean close delivers its
            # code (websockets carries it in the close frame too), so losing a Close would
            # only make a pruned peer look crashed, which tests nothing of the protocol.
            link = replace(link, loss=0.0, duplicate=0.0, reorder=0.0)
        if link.loss and self.rng.random() < link.loss:
            return
        copies = 2 if link.duplicate and self.rng.random() < link.duplicate else 1
        for _ in range(copies):
            delay = link.latency + (self.rng.random() * link.jitter if link.jitter else 0.0)
            t = self.now + delay
            if link.reorder and self.rng.random() < link.reorder:
                t += self.rng.random() * 2 * link.latency
            else:  # in order, like one TCP stream
                t = max(t, conn.last_arrival.get(dst, 0.0))
                conn.last_arrival[dst] = t
            if isinstance(msg, Hello):
                conn.hello_arrival[dst] = t
            else:  # never before the Hello, however reordered (same time: queued after it)
                t = max(t, conn.hello_arrival.get(dst, 0.0))
            self._schedule(t, "frame", (conn.id, dst, frame))

    def _dial(self, node: Node, address: str) -> None:
        target = self._by_address.get(address)
        link = self.link(node.name, target) if target else self.default_link
        if target is None or self.nodes[target].core is None or self._cut(node.name, target):
            # refused (nobody there) or silently dropped (partition): fail after a while
            delay = (
                2 * link.latency
                if target is None or self.nodes[target].core is None
                else self.detect_delay
            )
            self._schedule(self.now + delay, "dial_failed", (node.name, node.generation, address))
            return
        self._seq += 1
        conn = _Conn(self._seq, node.name, target, address)
        conn.open_for = {node.name: False, target: False}
        conn.peer_name = {node.name: None, target: None}
        self._conns[conn.id] = conn
        # TCP + websocket handshake, as websockets does it: the acceptor has the connection
        # (and sends its Hello) when the upgrade request arrives, one latency after the dial;
        # the dialler has it (and sends its Hello) when the response arrives, one more later,
        # together with the acceptor's Hello. So each side of two simultaneous dials sees
        # first the Hello of the connection *it* dialled.
        self._schedule(
            self.now + link.latency,
            "accepted",
            (conn.id, node.generation, self.nodes[target].generation),
        )

    def _close(self, conn: _Conn, side: str, *, notify_self: bool) -> None:
        """``side`` closes ``conn``: it stops now; the other side learns after one latency."""
        if conn.open_for.get(side):
            conn.open_for[side] = False
            node = self.nodes[side]
            name = conn.peer_name.get(side)
            if name is not None and node.conns.get(name) == conn.id:
                del node.conns[name]
                if notify_self and node.core is not None:
                    node.core.connection_lost(name, self.now)
        other = conn.other(side)
        t = max(self.now + self.link(side, other).latency, conn.last_arrival.get(other, 0.0))
        self._schedule(t, "close", (conn.id, other))

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

    def _ev_dial_failed(self, name: str, generation: int, address: str) -> None:
        node = self.nodes[name]
        if node.core is None or node.generation != generation:
            return
        node.core.dial_failed(address, self.now)
        self._after(node)

    def _ev_accepted(self, cid: int, gen_dialer: int, gen_acceptor: int) -> None:
        conn = self._conns[cid]
        a, b = self.nodes[conn.dialer], self.nodes[conn.acceptor]
        if a.core is None or a.generation != gen_dialer:
            self._conns.pop(cid, None)
            return
        latency = self.link(b.name, a.name).latency
        if b.core is None or b.generation != gen_acceptor or self._cut(a.name, b.name):
            self._conns.pop(cid, None)
            self._schedule(self.now + latency, "dial_failed", (a.name, gen_dialer, conn.address))
            return
        conn.open_for[b.name] = True
        # before the Hello is sent: the dialler has the connection when that Hello arrives
        self._schedule(self.now + latency, "connected", (cid, gen_dialer))
        self._transmit(conn, b.name, b.core.hello())

    def _ev_connected(self, cid: int, gen_dialer: int) -> None:
        conn = self._conns.get(cid)
        if conn is None:
            return
        a = self.nodes[conn.dialer]
        if a.core is None or a.generation != gen_dialer:  # it died meanwhile: the acceptor learns
            self._schedule(
                self.now + self.link(a.name, conn.acceptor).latency, "close", (cid, conn.acceptor)
            )
            return
        conn.open_for[a.name] = True
        self._transmit(conn, a.name, a.core.hello())

    def _ev_frame(self, cid: int, dst: str, frame: bytes) -> None:
        conn = self._conns.get(cid)
        node = self.nodes[dst]
        if conn is None or not conn.open_for.get(dst) or node.core is None:
            return
        src = conn.other(dst)
        if self._cut(src, dst):
            return
        core = node.core
        msg: Message | None = None
        try:
            msg = wire.decode(frame, max_size=core.config.max_frame)
            name = conn.peer_name.get(dst)
            if name is None:
                name = core.connection_made(msg, self.now, outbound=conn.dialer == dst)
                conn.peer_name[dst] = name
                old = node.conns.get(name)
                node.conns[name] = cid
                if old is not None and old in self._conns:  # replaced: close, not "lost"
                    self.duplicates += 1
                    self._transmit(
                        self._conns[old], dst, Close(CloseCode.DUPLICATE_NAME, "replaced")
                    )
                    self._close(self._conns[old], dst, notify_self=False)
            else:
                core.receive(name, msg, self.now)
        except ProtocolError as exc:
            if (
                exc.code == CloseCode.DUPLICATE_NAME
                and isinstance(msg, Hello)
                and msg.name != dst
                and conn.peer_name.get(dst) is None
            ):
                self.duplicates += 1  # the core keeps its other connection to that agent
            else:
                self.errors.append((self.now, dst, conn.peer_name.get(dst), exc.code))
            self._transmit(conn, dst, Close(exc.code, str(exc)[:100]))
            self._close(conn, dst, notify_self=True)
        self._after(node)

    def _ev_cut(self, cid: int) -> None:
        # keepalive timeout of a connection across a partition (if it was not healed since)
        conn = self._conns.get(cid)
        if conn is not None and self._cut(conn.dialer, conn.acceptor):
            self._ev_close(cid, conn.dialer)
            self._ev_close(cid, conn.acceptor)

    def _ev_close(self, cid: int, side: str) -> None:
        conn = self._conns.get(cid)
        if conn is None:
            return
        node = self.nodes[side]
        was_open = conn.open_for.get(side, False)
        conn.open_for[side] = False
        name = conn.peer_name.get(side)
        if was_open and name is not None and node.conns.get(name) == cid:
            del node.conns[name]
            if node.core is not None:
                node.core.connection_lost(name, self.now)
                self._after(node)
        elif was_open and name is None and conn.dialer == side and node.core is not None:
            # closed before the handshake completed: the dial failed
            node.core.dial_failed(conn.address, self.now)
            self._after(node)
        if not any(conn.open_for.values()):
            self._conns.pop(cid, None)
