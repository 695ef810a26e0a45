"""Every figure the HTTP layer and the metrics read from an agent, in one place.

Most come from the public API (``agent.shard_names()``, ``agent.peers``, ``shard.stats()``).
The few that have no public accessor yet are read here, and only here, through clearly named
private attributes, each with a fallback, so a restructure of the agent breaks at most this
module (and its tests say so). The lead's wiring list names each of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import updates

if TYPE_CHECKING:
    from ..agent import Agent
    from ..shard import Shard
    from ..store import ShardStats

__all__ = ["ShardInfo", "has_gossip", "local_shard", "missing_updates", "peer_rows", "shard_infos"]


def local_shard(agent: Agent, name: str) -> Shard | None:
    """The shard if this agent holds it, opened without subscribing to it; else None.

    ``agent.shard(name)`` would make this agent a holder under partial replication, which a
    read must not do. PRIVATE HOOK: ``Agent._open_shard`` (what ``agent.read`` itself uses).
    """
    if name not in agent.shard_names():
        return None
    opener = getattr(agent, "_open_shard", None)
    if opener is None:  # pragma: no cover - only if the agent's internals moved
        return None
    return opener(name)  # type: ignore[no-any-return]


def has_gossip(agent: Agent) -> bool:
    """Whether the agent runs the gossip protocol (it was given listen= or peers=).

    PRIVATE HOOK: ``Agent._core`` (what ``Shard.replicated`` needs).
    """
    return getattr(agent, "_core", None) is not None


def shard_stats(agent: Agent, name: str) -> ShardStats | None:
    """Committed store stats of a shard held here. PRIVATE HOOK: ``Agent._store.stats``."""
    store = getattr(agent, "_store", None)
    if store is not None:
        return store.stats(name)  # type: ignore[no-any-return]
    shard = local_shard(agent, name)  # pragma: no cover - fallback
    return shard.stats() if shard is not None else None


def store_map_size(agent: Agent) -> int | None:
    """The LMDB map size in bytes. PRIVATE HOOK: ``Agent._store.map_size()``."""
    store = getattr(agent, "_store", None)
    return store.map_size() if store is not None else None


def missing_updates(ours: bytes, theirs: bytes | None) -> int:
    """How many updates (Yjs clock ticks) of ours the other state vector lacks."""
    mine = updates.decode_state_vector(ours)
    other = updates.decode_state_vector(theirs) if theirs else {}
    return sum(max(0, clock - other.get(client, 0)) for client, clock in mine.items())


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as ``GET /shards`` and the dashboard show it."""

    name: str
    keys: int
    bytes: int
    updates: int
    holders: tuple[str, ...]
    lag: dict[str, int]  # peer -> updates of ours it has not acked durable

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keys": self.keys,
            "bytes": self.bytes,
            "updates": self.updates,
            "holders": list(self.holders),
            "lag": self.lag,
        }


def shard_infos(agent: Agent, names: list[str] | None = None) -> list[ShardInfo]:
    """Sizes, holders and per-peer lag of the shards held here (or of ``names``)."""
    peers = agent.peers
    acked: dict[str, dict[str, bytes]] = {}
    for peer in peers:
        for state in peer.acked:
            acked.setdefault(state.shard, {})[peer.name] = state.state_vector
    out = []
    for name in names if names is not None else agent.shard_names():
        shard = local_shard(agent, name)
        if shard is None:
            continue
        stats = shard_stats(agent, name)
        sv = updates.state_vector(shard.doc)
        holders = (agent.name, *sorted(acked.get(name, {})))
        lag = {
            peer.name: missing_updates(sv, acked.get(name, {}).get(peer.name))
            for peer in peers
            if peer.name in acked.get(name, {})
        }
        out.append(
            ShardInfo(
                name=name,
                keys=len(shard),
                bytes=(stats.log_bytes + stats.snapshot_bytes) if stats else 0,
                updates=stats.total_updates if stats else 0,
                holders=holders,
                lag=lag,
            )
        )
    return out


def peer_rows(agent: Agent) -> list[dict[str, Any]]:
    """``agent.peers`` as JSON rows."""
    return [
        {
            "name": p.name,
            "address": p.address,
            "state": p.state,
            "neighbour": p.neighbour,
            "queued_bytes": p.queued_bytes,
            "dropped": p.dropped,
            "shards": sorted(s.shard for s in p.acked),
        }
        for p in agent.peers
    ]


def uptime(started: float) -> float:
    """Seconds since ``started`` (a ``time.monotonic()``)."""
    return time.monotonic() - started
