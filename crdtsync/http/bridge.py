"""Every figure the HTTP layer reads from an agent, in one place, through its public API.

``agent.local_shard``, ``agent.gossiping``, ``agent.shard_stats``, ``agent.replication_lag``
and ``agent.peers`` (see :mod:`crdtsync._agent_figures`): no private attribute of the agent is
read here, so a restructure of the agent's internals cannot break the HTTP API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..agent import Agent
    from ..shard import Shard

__all__ = ["ShardInfo", "has_gossip", "local_shard", "peer_rows", "shard_infos"]


def local_shard(agent: Agent, name: str) -> Shard | None:
    """The shard if this agent holds it, opened without subscribing to it; else None."""
    return agent.local_shard(name)


def has_gossip(agent: Agent) -> bool:
    """Whether the agent runs the gossip protocol (it was given listen=, peers= or broker=)."""
    return agent.gossiping


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as ``GET /shards`` and the dashboard show it."""

    name: str
    keys: int
    bytes: int
    updates: int
    holders: tuple[str, ...]
    lag: dict[str, int]  # peer -> updates committed here since the state it acked durable
    lag_seconds: dict[str, float]  # peer -> age of the oldest state here it has not acked

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keys": self.keys,
            "bytes": self.bytes,
            "updates": self.updates,
            "holders": list(self.holders),
            "lag": self.lag,
            "lag_seconds": self.lag_seconds,
        }


def shard_infos(agent: Agent, names: list[str] | None = None) -> list[ShardInfo]:
    """Sizes, holders and per-peer lag of the shards held here (or of ``names``): the same
    figures as ``agent.metrics()`` and ``/metrics``."""
    holders: dict[str, list[str]] = {}
    for peer in agent.peers:
        for state in peer.acked:
            holders.setdefault(state.shard, []).append(peer.name)
    lags: dict[str, dict[str, tuple[int, float]]] = {}
    for r in agent.replication_lag():
        lags.setdefault(r.shard, {})[r.peer] = (r.updates, r.seconds)
    out = []
    for name in names if names is not None else agent.shard_names():
        shard = agent.local_shard(name)
        if shard is None:
            continue
        stats = agent.shard_stats(name)
        lag = lags.get(name, {})
        out.append(
            ShardInfo(
                name=name,
                keys=len(shard),
                bytes=(stats.log_bytes + stats.snapshot_bytes) if stats else 0,
                updates=stats.total_updates if stats else 0,
                holders=(agent.name, *sorted(holders.get(name, []))),
                lag={peer: n for peer, (n, _) in sorted(lag.items())},
                lag_seconds={peer: sec for peer, (_, sec) in sorted(lag.items())},
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
