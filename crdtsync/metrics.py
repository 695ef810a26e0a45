"""Operational figures of one agent, as a dict (``agent.metrics()``) and for Prometheus.

Two kinds of figures:

* **Sampled** when asked, from the agent's stable surface (``agent.peers``, the store's
  per-shard stats, the data directory): updates and bytes per shard, holders, per-peer state
  and queued bytes, replication lag per peer and shard (missing updates, and seconds since the
  peer was first seen behind: sampled, so only as fine as the scrape interval), open
  connections, store size, last compaction.
* **Event-fed** through :class:`MetricsSink`, whose methods the store, the group committer and
  the gossip core call as things happen: commit (fsync) latency, group-commit size, bytes
  written per shard, anti-entropy repairs, close codes by reason, compaction runs. Until those
  call sites are wired they stay at zero (``agent.metrics()["wired"]`` says which are).

Prometheus exposition uses ``prometheus-client`` with one registry per agent, so several
agents in one process never mix their figures.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .errors import CloseCode, CrdtSyncError

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["MetricsSink", "metrics_for", "render_prometheus", "sample"]

_SINKS: weakref.WeakKeyDictionary[Any, MetricsSink] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class MetricsSink:
    """The event-fed figures of one agent, and the hooks that feed them.

    Call sites (to be wired where the events happen; each call is a few dict/float updates):
    ``commit(seconds, shards, nbytes)`` after every group commit's fsync,
    ``written(shard, nbytes)`` per update appended to the store,
    ``repair(peer, shard)`` when anti-entropy asks a peer for a repair,
    ``closed(code)`` when a peer connection closes, ``compacted(shard, seconds)`` per compaction.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commit_seconds = Histogram(
            "crdtsync_commit_seconds",
            "Group commit latency, write+fsync (seconds)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.commit_shards = Histogram(
            "crdtsync_group_commit_shards",
            "Shards per group commit",
            buckets=(1, 2, 4, 8, 16, 64, 256, 1024),
            registry=self.registry,
        )
        self.commit_bytes = Histogram(
            "crdtsync_group_commit_bytes",
            "Bytes per group commit",
            buckets=(256, 4096, 65536, 1 << 20, 16 << 20),
            registry=self.registry,
        )
        self.bytes_written = Counter(
            "crdtsync_shard_written_bytes",
            "Update bytes appended to the store",
            ["shard"],
            registry=self.registry,
        )
        self.repairs = Counter(
            "crdtsync_anti_entropy_repairs",
            "Anti-entropy repairs asked",
            ["peer", "shard"],
            registry=self.registry,
        )
        self.closes = Counter(
            "crdtsync_connection_closes",
            "Peer connections closed, by close code",
            ["code", "reason"],
            registry=self.registry,
        )
        self.compactions = Counter(
            "crdtsync_compactions", "Compaction runs", ["shard"], registry=self.registry
        )
        self.http_writes = Counter(
            "crdtsync_http_writes",
            "Writes made through the HTTP API",
            ["shard"],
            registry=self.registry,
        )
        self.wired: set[str] = set()
        self._behind_since: dict[tuple[str, str], float] = {}

    # -- hooks ---------------------------------------------------------------------------------

    def commit(self, seconds: float, shards: int, nbytes: int) -> None:
        """One group commit finished (its fsync included)."""
        self.wired.add("commit")
        self.commit_seconds.observe(seconds)
        self.commit_shards.observe(shards)
        self.commit_bytes.observe(nbytes)

    def written(self, shard: str, nbytes: int) -> None:
        """One update of ``nbytes`` was appended to ``shard``'s log."""
        self.wired.add("written")
        self.bytes_written.labels(shard).inc(nbytes)

    def repair(self, peer: str, shard: str) -> None:
        """Anti-entropy found ``shard`` differing with ``peer`` and asked for a repair."""
        self.wired.add("repair")
        self.repairs.labels(peer, shard).inc()

    def closed(self, code: int) -> None:
        """A peer connection closed with ``code`` (a websocket or :class:`CloseCode` code)."""
        self.wired.add("closed")
        try:
            reason = CloseCode(code).name.lower()
        except ValueError:
            reason = "other"
        self.closes.labels(str(code), reason).inc()

    def compacted(self, shard: str, seconds: float) -> None:
        """A compaction of ``shard`` ran."""
        self.wired.add("compacted")
        self.compactions.labels(shard).inc()

    def http_write(self, shard: str, writes: int) -> None:
        """The HTTP API wrote to ``shard``."""
        self.http_writes.labels(shard).inc(writes)

    def lag_seconds(self, peer: str, shard: str, behind: bool, now: float) -> float:
        """Seconds since ``peer`` was first seen behind on ``shard`` (0 when caught up)."""
        key = (peer, shard)
        if not behind:
            self._behind_since.pop(key, None)
            return 0.0
        return now - self._behind_since.setdefault(key, now)


def metrics_for(agent: Agent) -> MetricsSink:
    """The (one) sink of ``agent``, created on first use."""
    with _LOCK:
        sink = _SINKS.get(agent)
        if sink is None:
            sink = _SINKS[agent] = MetricsSink()
            sink.registry.register(_Sampled(agent, sink))
        return sink


def _dir_bytes(path: os.PathLike[str] | str) -> int:
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    except OSError:
        return 0
    return total


def _counter_values(counter: Counter) -> dict[tuple[str, ...], float]:
    out = {}
    for family in counter.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                out[tuple(s.labels.values())] = s.value
    return out


def sample(agent: Agent) -> dict[str, Any]:
    """Every figure of ``agent`` now, as plain data (what ``agent.metrics()`` returns)."""
    from .http import bridge

    sink = metrics_for(agent)
    now = time.monotonic()
    infos = {i.name: i for i in bridge.shard_infos(agent)}
    shards: dict[str, Any] = {}
    for name, info in infos.items():
        stats = bridge.shard_stats(agent, name)
        shards[name] = {
            "updates": info.updates,
            "bytes": info.bytes,
            "keys": info.keys,
            "log_updates": stats.log_count if stats else 0,
            "last_compaction": stats.last_compaction if stats else None,
            "holders": list(info.holders),
        }
    peers: dict[str, Any] = {}
    for p in agent.peers:
        lag = {}
        for name, info in infos.items():
            if p.name in info.lag:
                missing = info.lag[p.name]
                lag[name] = {
                    "updates": missing,
                    "seconds": round(sink.lag_seconds(p.name, name, missing > 0, now), 3),
                }
        peers[p.name] = {
            "state": p.state,
            "queued_bytes": p.queued_bytes,
            "dropped": p.dropped,
            "lag": lag,
        }
    hist = next(iter(sink.commit_seconds.collect())).samples
    commits = {
        s.name.rsplit("_", 1)[-1]: s.value for s in hist if s.name.endswith(("_count", "_sum"))
    }
    return {
        "agent": agent.name,
        "shards": shards,
        "peers": peers,
        "connections": sum(1 for p in agent.peers if p.state == "connected"),
        "store": {
            "file_bytes": _dir_bytes(agent.data_dir),
            "map_bytes": bridge.store_map_size(agent),
        },
        "commits": {"count": int(commits.get("count", 0)), "seconds_sum": commits.get("sum", 0.0)},
        "written_bytes": {k[0]: v for k, v in _counter_values(sink.bytes_written).items()},
        "http_writes": {k[0]: v for k, v in _counter_values(sink.http_writes).items()},
        "anti_entropy_repairs": {
            f"{k[0]}/{k[1]}": v for k, v in _counter_values(sink.repairs).items()
        },
        "closes": {f"{k[0]} {k[1]}": v for k, v in _counter_values(sink.closes).items()},
        "compactions": {k[0]: v for k, v in _counter_values(sink.compactions).items()},
        "wired": sorted(sink.wired),
        # Issue #11: shards whose stored updates exceed the work limits (not served), and
        # the refusals of the quotas that hold across connections.
        "shards_quarantined": agent.quarantined,
        "quota_refusals": {
            k.removeprefix("quota."): v for k, v in agent.counters.items() if k.startswith("quota.")
        },
    }


class _Sampled(Collector):
    """The sampled figures as Prometheus metric families, read at scrape time."""

    def __init__(self, agent: Agent, sink: MetricsSink) -> None:
        self._agent = weakref.ref(agent)
        self._sink = sink

    def describe(self) -> list[Any]:
        return []  # sampled: families are only known at scrape time

    def collect(self) -> Iterator[Any]:
        agent = self._agent()
        if agent is None:
            return
        try:
            figures = sample(agent)
        except CrdtSyncError:  # a closing agent: export what the sink has
            return
        updates = CounterMetricFamily(
            "crdtsync_shard_updates", "Updates committed to the shard (ever)", labels=["shard"]
        )
        size = GaugeMetricFamily(
            "crdtsync_shard_bytes",
            "Bytes of the shard in the store (log+snapshot)",
            labels=["shard"],
        )
        log = GaugeMetricFamily(
            "crdtsync_shard_log_updates",
            "Updates in the shard's log since compaction",
            labels=["shard"],
        )
        holders = GaugeMetricFamily(
            "crdtsync_shard_holders", "Agents known to hold the shard", labels=["shard"]
        )
        compacted = GaugeMetricFamily(
            "crdtsync_shard_last_compaction_timestamp_seconds",
            "Wall-clock time of the shard's last compaction",
            labels=["shard"],
        )
        for name, s in figures["shards"].items():
            updates.add_metric([name], s["updates"])
            size.add_metric([name], s["bytes"])
            log.add_metric([name], s["log_updates"])
            holders.add_metric([name], len(s["holders"]))
            if s["last_compaction"]:
                compacted.add_metric([name], s["last_compaction"])
        queued = GaugeMetricFamily(
            "crdtsync_peer_queued_bytes", "Bytes queued for the peer", labels=["peer"]
        )
        dropped = GaugeMetricFamily(
            "crdtsync_peer_dropped", "Pushes dropped for the peer (queue full)", labels=["peer"]
        )
        state = GaugeMetricFamily(
            "crdtsync_peer_state", "1 for the peer's current state", labels=["peer", "state"]
        )
        lag_u = GaugeMetricFamily(
            "crdtsync_replication_lag_updates",
            "Updates of ours the peer has not acknowledged durable",
            labels=["peer", "shard"],
        )
        lag_s = GaugeMetricFamily(
            "crdtsync_replication_lag_seconds",
            "Seconds since the peer was first seen behind (sampled)",
            labels=["peer", "shard"],
        )
        for peer, p in figures["peers"].items():
            queued.add_metric([peer], p["queued_bytes"])
            dropped.add_metric([peer], p["dropped"])
            state.add_metric([peer, p["state"]], 1)
            for shard, lag in p["lag"].items():
                lag_u.add_metric([peer, shard], lag["updates"])
                lag_s.add_metric([peer, shard], lag["seconds"])
        conns = GaugeMetricFamily("crdtsync_open_connections", "Peer connections open now")
        conns.add_metric([], figures["connections"])
        store = GaugeMetricFamily(
            "crdtsync_store_file_bytes", "Bytes the store's files occupy on disk"
        )
        store.add_metric([], figures["store"]["file_bytes"])
        yield from (
            updates,
            size,
            log,
            holders,
            compacted,
            queued,
            dropped,
            state,
            lag_u,
            lag_s,
            conns,
            store,
        )
        quarantined = GaugeMetricFamily(
            "crdtsync_shard_quarantined",
            "1 for a shard whose stored updates exceed the work limits (not served)",
            labels=["shard", "reason"],
        )
        for shard, reason in figures["shards_quarantined"].items():
            quarantined.add_metric([shard, reason[:200]], 1)
        refusals = CounterMetricFamily(
            "crdtsync_quota_refusals", "Messages or updates a quota refused", labels=["quota"]
        )
        for quota, n in figures["quota_refusals"].items():
            refusals.add_metric([quota], n)
        yield from (quarantined, refusals)
        if figures["store"]["map_bytes"] is not None:
            m = GaugeMetricFamily("crdtsync_store_map_bytes", "LMDB map size")
            m.add_metric([], figures["store"]["map_bytes"])
            yield m


def render_prometheus(agent: Agent) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``agent``'s figures, and its content type."""
    return generate_latest(metrics_for(agent).registry), CONTENT_TYPE_LATEST
