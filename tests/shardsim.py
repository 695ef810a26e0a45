"""Helpers for partial-replication tests over the simulated network (not a test module).

A :class:`ShardNet` is a :class:`~crdtsync.transports.memory.Network` whose cores place shards
with a replication factor, plus what the tests of placement and reads need: writes to a
shard's root map, reads driven to completion and joined like the agent does, the placement
expected from the running set, durable copy counts, and a meter of the shard data each agent
receives.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pycrdt
from crdtsync.transports.memory import Network, _Conn

from crdtsync import updates, wire
from crdtsync.errors import ReplicationTimeout, ShardNotFound
from crdtsync.gossip import GossipConfig
from crdtsync.messages import Diff, Message, Push, ReadReply
from crdtsync.placement import holders
from crdtsync.query import NOT_FOUND, OK
from crdtsync.readcache import ReadCache, snapshot_of
from crdtsync.sharding import ShardingConfig
from crdtsync.testing import fast_config

ROOT = "root"


def config() -> GossipConfig:
    return fast_config()


@dataclass
class Meter:
    """Bytes of shard data (Push, Diff and their like) sent to each agent, split by whether
    the receiver held the shard at that moment; ReadReply bytes counted apart."""

    held: Counter[str] = field(default_factory=Counter)
    foreign: Counter[tuple[str, str]] = field(default_factory=Counter)  # (receiver, shard)
    reads: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)


class ShardNet(Network):
    """A simulated mesh whose agents place shards with replication factor ``r``."""

    def __init__(
        self, seed: int = 0, *, r: int | None = 3, sharding: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        super().__init__(
            seed,
            config=kw.pop("config", None) or config(),
            sharding=ShardingConfig(replication_factor=r, **(sharding or {})),
            **kw,
        )
        self.r = r
        self.meter = Meter()
        self.caches: dict[str, ReadCache] = {}

    # -- metering -----------------------------------------------------------------------------

    def _transmit(self, conn: _Conn, src: str, msg: Message) -> None:
        if conn.open_for.get(src):
            dst = conn.other(src)
            shard = getattr(msg, "shard", None)
            if isinstance(msg, ReadReply):
                self.meter.reads[dst] += len(wire.encode(msg))
            elif (
                shard is not None
                and isinstance(msg, (Push, Diff))
                or type(msg).__name__ == "DiffChunk"
            ):
                size = len(wire.encode(msg))
                self.meter.by_type[type(msg).__name__] += size
                node = self.nodes[dst]
                if node.core is not None and shard in node.core.sharding.holdings():
                    self.meter.held[dst] += size
                else:
                    self.meter.foreign[(dst, shard)] += size
        super()._transmit(conn, src, msg)

    # -- topology -----------------------------------------------------------------------------

    def grow(self, names: list[str], rng: random.Random | None = None) -> None:
        """Add agents ``names``, each seeded with one already present (or none for the first)."""
        rng = rng or random.Random(self.seed)
        for name in names:
            present = [n for n in self.nodes if self.nodes[n].core is not None]
            self.add_node(name, seeds=[self.address(rng.choice(present))] if present else [])

    def running(self) -> list[str]:
        return sorted(n for n, node in self.nodes.items() if node.core is not None)

    def expected(self, shard: str) -> set[str]:
        """The placement holders of ``shard`` among the running agents."""
        assert self.r is not None
        return set(holders(shard, self.running(), self.r, mesh=self.mesh))

    def holding(self, shard: str) -> set[str]:
        """Running agents that have a replica of ``shard``."""
        return {n for n in self.running() if shard in self.nodes[n].replicas.docs}

    def durable_copies(self, shard: str, *, running_only: bool = True) -> set[str]:
        """Agents whose disk has ``shard`` (the simulated store: what survives a crash)."""
        names = self.running() if running_only else sorted(self.nodes)
        return {
            n for n in names if self.nodes[n].replicas.durable_state(shard) != (b"\x00", b"\x00")
        }

    # -- data ---------------------------------------------------------------------------------

    def put(self, node: str, shard: str, key: str, value: Any) -> None:
        self.write(node, shard, lambda d: d.get(ROOT, type=pycrdt.Map).__setitem__(key, value))

    def delete(self, node: str, shard: str, key: str) -> None:
        self.write(node, shard, lambda d: d.get(ROOT, type=pycrdt.Map).pop(key, None))

    def value(self, node: str, shard: str) -> dict[str, Any]:
        return snapshot_of(self.nodes[node].replicas.docs[shard])

    def join_of(self, names: list[str], shard: str) -> dict[str, Any]:
        """The CRDT join of these agents' replicas of ``shard`` (what a read must return)."""
        doc = pycrdt.Doc()
        for n in names:
            updates.apply_update(doc, self.nodes[n].replicas.docs[shard].get_update())
        return snapshot_of(doc)

    def replicated(self, node: str, shard: str) -> tuple[str, ...]:
        """Peers whose durable ack covers ``node``'s current state of ``shard``."""
        core = self.nodes[node].core
        assert core is not None
        doc = self.nodes[node].replicas.docs[shard]
        return core.replicated(shard, updates.state_vector(doc), updates.delete_set(doc))

    # -- reads --------------------------------------------------------------------------------

    def start_read(self, node: str, shard: str, *, quorum: Any = None, timeout: float = 5.0) -> int:
        cache = self.caches.setdefault(node, ReadCache())

        def go(core: Any) -> int:
            q = core.sharding.quorum_size(shard, quorum)
            return core.sharding.read(
                shard,
                quorum=q,
                state_vector=cache.state_vector(shard),
                now=self.now,
                timeout=timeout,
            )

        return self.call(node, go)  # type: ignore[no-any-return]

    def finish_read(
        self, node: str, shard: str, qid: int, *, limit: float = 30.0, quorum: Any = None
    ) -> dict[str, Any]:
        """Run until read ``qid`` ends; join its answers like the agent does, or raise."""
        core = self.nodes[node].core
        assert core is not None
        end = self.now + limit
        while True:
            out = core.sharding.result(qid)
            if out is not None:
                break
            if self.now >= end:
                raise AssertionError(f"read {qid} did not end (seed {self.seed})")
            self.run_for(0.01)
        if out.status == OK:
            cache = self.caches.setdefault(node, ReadCache())
            joined = cache.join(
                shard,
                [u for _, u in out.answers.get(shard, ())],
                now=self.now,
                quorum=len(out.answered),
            )
            return snapshot_of(joined)
        if out.status == NOT_FOUND:
            raise ShardNotFound(shard)
        raise ReplicationTimeout(f"no answer from {', '.join(out.missing)}", out.missing)

    def read(
        self, node: str, shard: str, *, quorum: Any = None, timeout: float = 5.0
    ) -> tuple[dict[str, Any], float]:
        """Read ``shard`` from ``node`` (which must not hold it): (value, virtual seconds)."""
        start = self.now
        qid = self.start_read(node, shard, quorum=quorum, timeout=timeout)
        value = self.finish_read(node, shard, qid)
        return value, self.now - start
