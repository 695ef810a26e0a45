"""Operational figures of one agent, as a dict (``agent.metrics()``) and for Prometheus.

Two kinds of figures, both read through the agent's public API:

* **Event-fed**: :class:`MetricsSink` is the agent's :class:`~crdtsync.observer.Observer`
  (given to it by the composition root), so the group committer and the transport report to
  it as things happen: commit latency (LMDB write transaction plus fsync) and group-commit
  size, updates and bytes committed per shard, compaction runs, close codes of peer
  connections. Plus the HTTP API's writes.
* **Sampled** when asked: per shard sizes, updates ever and holders
  (:meth:`~crdtsync.agent.Agent.shard_stats`), per peer state and queued bytes
  (``agent.peers``), replication lag per peer and shard in updates and seconds
  (:meth:`~crdtsync.agent.Agent.replication_lag`, timed at each durable commit), anti-entropy
  repairs (:attr:`~crdtsync.agent.Agent.repairs`, counters the sans-I/O core keeps), open
  connections and store size (:meth:`~crdtsync.agent.Agent.store_size`).

Prometheus exposition uses ``prometheus-client`` with one registry per agent, so several
agents in one process never mix their figures. :func:`sample` and the exposition compute each
figure once, the same way: ``crdtsync inspect --peer http://...`` and the dashboard show what
``/metrics`` shows.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .errors import CloseCode, CrdtSyncError

if TYPE_CHECKING:
    from .agent import Agent

__all__ = [
    "RATE_WINDOW",
    "MetricsSink",
    "close_reason",
    "metrics_for",
    "render_prometheus",
    "sample",
]

#: Seconds over which ``agent.metrics()`` reports writes per second.
RATE_WINDOW = 10.0
_RATE_BUCKETS = int(RATE_WINDOW) + 2  # whole seconds kept per shard

_SINKS: weakref.WeakKeyDictionary[Any, MetricsSink] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def close_reason(code: int) -> str:
    """The name of a close code: a :class:`CloseCode` in lower case, ``abnormal`` for 1006
    (no close frame), ``no_status`` for 1005, else ``other``."""
    try:
        return CloseCode(code).name.lower()
    except ValueError:
        return {1005: "no_status", 1006: "abnormal"}.get(code, "other")


class MetricsSink:
    """The event-fed figures of one agent: an :class:`~crdtsync.observer.Observer`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commit_seconds = Histogram(
            "crdtsync_commit_seconds",
            "Group commit latency: the LMDB write transaction and its fsync (seconds)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.commit_shards = Histogram(
            "crdtsync_group_commit_shards",
            "Shards per group commit",
            buckets=(1, 2, 4, 8, 16, 64, 256, 1024),
            registry=r,
        )
        self.commit_updates = Histogram(
            "crdtsync_group_commit_updates",
            "Updates per group commit",
            buckets=(1, 2, 4, 8, 16, 64, 256, 1024, 4096),
            registry=r,
        )
        self.commit_bytes = Histogram(
            "crdtsync_group_commit_bytes",
            "Update bytes per group commit",
            buckets=(256, 4096, 65536, 1 << 20, 16 << 20),
            registry=r,
        )
        # Per shard, plain dicts (exported at scrape time): a labelled prometheus Counter costs
        # ~10 us per inc(), and a commit may touch thousands of shards.
        self.writes: dict[str, int] = {}  # updates committed to the shard's log
        self.written_bytes: dict[str, int] = {}  # their bytes
        self._per_second: dict[str, dict[int, int]] = {}  # shard -> {whole second: updates}
        self.compactions: dict[str, int] = {}
        self.compaction_seconds = Histogram(
            "crdtsync_compaction_seconds",
            "Compaction duration (seconds)",
            buckets=(0.001, 0.01, 0.1, 1.0, 10.0),
            registry=r,
        )
        self.closes = Counter(
            "crdtsync_connection_closes",
            "Peer connections closed, by close code and who closed them",
            ["code", "reason", "by"],
            registry=r,
        )
        self.http_writes = Counter(
            "crdtsync_http_writes", "Writes made through the HTTP API", ["shard"], registry=r
        )

    # -- Observer -----------------------------------------------------------------------------

    def committed(self, seconds: float, writes: Mapping[str, tuple[int, int]]) -> None:
        """One group commit finished (its fsync included)."""
        self.commit_seconds.observe(seconds)
        self.commit_shards.observe(len(writes))
        total_n = total_b = 0
        second = int(time.monotonic())
        count, size, per_second = self.writes, self.written_bytes, self._per_second
        for shard, (n, nbytes) in writes.items():
            if n:
                total_n += n
                total_b += nbytes
                count[shard] = count.get(shard, 0) + n
                size[shard] = size.get(shard, 0) + nbytes
                buckets = per_second.get(shard)
                if buckets is None:
                    buckets = per_second[shard] = {}
                buckets[second] = buckets.get(second, 0) + n
                if len(buckets) > _RATE_BUCKETS:
                    for old in [t for t in buckets if t <= second - _RATE_BUCKETS]:
                        del buckets[old]
        self.commit_updates.observe(total_n)
        self.commit_bytes.observe(total_b)

    def compacted(self, shard: str, seconds: float, bytes_before: int, bytes_after: int) -> None:
        """A compaction of ``shard`` ran."""
        self.compactions[shard] = self.compactions.get(shard, 0) + 1
        self.compaction_seconds.observe(seconds)

    def closed(self, code: int, by: str) -> None:
        """A peer connection closed with ``code``; ``by``: ``us``, ``peer`` or ``none``."""
        self.closes.labels(str(code), close_reason(code), by).inc()

    # -- other events ---------------------------------------------------------------------------

    def http_write(self, shard: str, writes: int) -> None:
        """The HTTP API wrote to ``shard``."""
        self.http_writes.labels(shard).inc(writes)

    def writes_per_second(self, shard: str, now: float) -> float:
        """Updates committed to ``shard`` per second over the :data:`RATE_WINDOW` whole
        seconds (of ``time.monotonic()``) before the one holding ``now``."""
        buckets = self._per_second.get(shard)
        if not buckets:
            return 0.0
        end = int(now)
        window = int(RATE_WINDOW)
        return sum(n for t, n in buckets.items() if end - window <= t < end) / RATE_WINDOW


def metrics_for(agent: Agent) -> MetricsSink:
    """The (one) sink of ``agent``, created on first use."""
    with _LOCK:
        sink = _SINKS.get(agent)
        if sink is None:
            sink = _SINKS[agent] = MetricsSink()
            sink.registry.register(_Sampled(agent))
        return sink


def _labelled(counter: Counter | Histogram) -> dict[tuple[str, ...], float]:
    out = {}
    for family in counter.collect():
        for s in family.samples:
            if s.name.endswith(("_total", "_count")):
                out[tuple(s.labels.values())] = s.value
    return out


def _hist(h: Histogram) -> dict[str, float]:
    samples = next(iter(h.collect())).samples
    out: dict[str, float] = {"count": 0, "sum": 0.0}
    for s in samples:
        if s.name.endswith("_count"):
            out["count"] = int(s.value)
        elif s.name.endswith("_sum"):
            out["sum"] = s.value
    return out


def sample(agent: Agent) -> dict[str, Any]:
    """Every figure of ``agent`` now, as plain data (what ``agent.metrics()`` returns).

    Keys: ``agent``; ``shards`` (per shard: ``updates`` ever, ``bytes`` stored, ``keys``,
    ``log_updates``, ``last_compaction``, ``holders``, ``writes`` and ``written_bytes`` committed
    since start, ``writes_per_second``, ``compactions``); ``peers`` (per peer: ``state``,
    ``queued_bytes`` (pushes the core holds for it), ``send_buffer_bytes`` (frames the transport
    has not written to its socket yet), ``dropped``, ``lag`` {shard: {``updates``, ``seconds``}}, ``repairs``
    {shard: n}); ``connections``; ``store`` (``file_bytes``, ``map_bytes``); ``commits``
    (``count``, ``seconds_sum``, ``updates_sum``, ``bytes_sum``, ``shards_sum``); ``closes``
    {"code reason by": n}; ``http_writes`` {shard: n}.
    """
    sink = metrics_for(agent)
    now = time.monotonic()
    held = agent.shard_names()
    acked: dict[str, list[str]] = {}
    for p in agent.peers:
        for state in p.acked:
            acked.setdefault(state.shard, []).append(p.name)
    shards: dict[str, Any] = {}
    for name in held:
        stats = agent.shard_stats(name)
        shard = agent.local_shard(name)
        shards[name] = {
            "updates": stats.total_updates if stats else 0,
            "bytes": (stats.log_bytes + stats.snapshot_bytes) if stats else 0,
            "keys": len(shard) if shard is not None else 0,
            "log_updates": stats.log_count if stats else 0,
            "last_compaction": stats.last_compaction if stats else None,
            "holders": [agent.name, *sorted(acked.get(name, []))],
            "writes": sink.writes.get(name, 0),
            "written_bytes": sink.written_bytes.get(name, 0),
            "writes_per_second": round(sink.writes_per_second(name, now), 3),
            "compactions": sink.compactions.get(name, 0),
        }
    buffers = agent.send_buffers()
    peers: dict[str, Any] = {
        p.name: {
            "state": p.state,
            "queued_bytes": p.queued_bytes,
            "send_buffer_bytes": buffers.get(p.name, 0),
            "dropped": p.dropped,
            "lag": {},
            "repairs": {},
        }
        for p in agent.peers
    }
    for lag in agent.replication_lag(now):
        peers[lag.peer]["lag"][lag.shard] = {"updates": lag.updates, "seconds": lag.seconds}
    for (peer, name), n in sorted(agent.repairs.items()):
        peers.setdefault(
            peer,
            {"state": "dead", "queued_bytes": 0, "send_buffer_bytes": 0, "dropped": 0, "lag": {}},
        )
        peers[peer].setdefault("repairs", {})[name] = n
    size = agent.store_size()
    commits = _hist(sink.commit_seconds)
    return {
        "agent": agent.name,
        "shards": shards,
        "peers": peers,
        "connections": sum(1 for p in agent.peers if p.state == "connected"),
        "store": {"file_bytes": size.file_bytes, "map_bytes": size.map_bytes},
        "commits": {
            "count": int(commits["count"]),
            "seconds_sum": commits["sum"],
            "updates_sum": int(_hist(sink.commit_updates)["sum"]),
            "bytes_sum": int(_hist(sink.commit_bytes)["sum"]),
            "shards_sum": int(_hist(sink.commit_shards)["sum"]),
        },
        "closes": {" ".join(k): int(v) for k, v in sorted(_labelled(sink.closes).items())},
        "http_writes": {k[0]: int(v) for k, v in _labelled(sink.http_writes).items()},
        # Issue #11: shards whose stored updates exceed the work limits (not served), and
        # the refusals of the quotas that hold across connections.
        "shards_quarantined": agent.quarantined,
        "quota_refusals": {
            k.removeprefix("quota."): v for k, v in agent.counters.items() if k.startswith("quota.")
        },
        # Every other count of agent.counters: authentication, refusals at the gossip door,
        # revocations, tokens' ends, the members and acks bounded, a broker's traffic.
        "events": {k: v for k, v in sorted(agent.counters.items()) if not k.startswith("quota.")},
    }


class _Sampled(Collector):
    """The sampled figures as Prometheus metric families, read at scrape time."""

    def __init__(self, agent: Agent) -> None:
        self._agent = weakref.ref(agent)

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
        yield from _families(figures)


def _families(figures: dict[str, Any]) -> Iterator[Any]:
    """The Prometheus families of the sampled part of :func:`sample`'s figures."""
    per_shard = [
        ("crdtsync_shard_updates", "Updates committed to the shard (ever)", "updates", True),
        ("crdtsync_shard_bytes", "Bytes of the shard in the store (log+snapshot)", "bytes", False),
        (
            "crdtsync_shard_log_updates",
            "Updates in the shard's log since compaction",
            "log_updates",
            False,
        ),
        ("crdtsync_shard_keys", "Top-level keys of the shard", "keys", False),
    ]
    for metric, help_text, key, counter in per_shard:
        family: Any = (CounterMetricFamily if counter else GaugeMetricFamily)(
            metric, help_text, labels=["shard"]
        )
        for name, s in figures["shards"].items():
            family.add_metric([name], s[key])
        yield family
    for metric, help_text, key in (
        ("crdtsync_shard_writes", "Updates committed to the shard's log (since start)", "writes"),
        (
            "crdtsync_shard_written_bytes",
            "Update bytes committed to the shard's log",
            "written_bytes",
        ),
        ("crdtsync_compactions", "Compaction runs", "compactions"),
    ):
        fed = CounterMetricFamily(metric, help_text, labels=["shard"])
        for name, s in figures["shards"].items():
            if s[key]:
                fed.add_metric([name], s[key])
        yield fed
    holders = GaugeMetricFamily(
        "crdtsync_shard_holders", "Agents known to hold the shard", labels=["shard"]
    )
    compacted = GaugeMetricFamily(
        "crdtsync_shard_last_compaction_timestamp_seconds",
        "Wall-clock time of the shard's last compaction",
        labels=["shard"],
    )
    for name, s in figures["shards"].items():
        holders.add_metric([name], len(s["holders"]))
        if s["last_compaction"]:
            compacted.add_metric([name], s["last_compaction"])
    yield from (holders, compacted)
    queued = GaugeMetricFamily(
        "crdtsync_peer_queued_bytes",
        "Bytes of pushes the gossip core holds for the peer (flush window, paused link)",
        labels=["peer"],
    )
    buffered = GaugeMetricFamily(
        "crdtsync_peer_send_buffer_bytes",
        "Bytes the transport holds for the peer, not yet written to its socket",
        labels=["peer"],
    )
    dropped = GaugeMetricFamily(
        "crdtsync_peer_dropped", "Pushes dropped for the peer (queue full)", labels=["peer"]
    )
    state = GaugeMetricFamily(
        "crdtsync_peer_state", "1 for the peer's current state", labels=["peer", "state"]
    )
    lag_u = GaugeMetricFamily(
        "crdtsync_replication_lag_updates",
        "Updates committed here since the newest state the peer acknowledged durable",
        labels=["peer", "shard"],
    )
    lag_s = GaugeMetricFamily(
        "crdtsync_replication_lag_seconds",
        "Age of the oldest state durable here that the peer has not acknowledged",
        labels=["peer", "shard"],
    )
    repairs = CounterMetricFamily(
        "crdtsync_anti_entropy_repairs",
        "Repairs asked of the peer: the shard differed in anti-entropy, or a push was lost",
        labels=["peer", "shard"],
    )
    for peer, p in figures["peers"].items():
        queued.add_metric([peer], p["queued_bytes"])
        buffered.add_metric([peer], p["send_buffer_bytes"])
        dropped.add_metric([peer], p["dropped"])
        state.add_metric([peer, p["state"]], 1)
        for shard, lag in p["lag"].items():
            lag_u.add_metric([peer, shard], lag["updates"])
            lag_s.add_metric([peer, shard], lag["seconds"])
        for shard, n in p.get("repairs", {}).items():
            repairs.add_metric([peer, shard], n)
    yield from (queued, buffered, dropped, state, lag_u, lag_s, repairs)
    conns = GaugeMetricFamily("crdtsync_open_connections", "Peer connections open now")
    conns.add_metric([], figures["connections"])
    files = GaugeMetricFamily("crdtsync_store_file_bytes", "Bytes the store's files occupy")
    files.add_metric([], figures["store"]["file_bytes"])
    mapped = GaugeMetricFamily("crdtsync_store_map_bytes", "LMDB map size")
    mapped.add_metric([], figures["store"]["map_bytes"])
    yield from (conns, files, mapped)
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
    events = CounterMetricFamily(
        "crdtsync_events",
        "Counts of agent.counters other than the quotas' (authentication, refusals, revocations)",
        labels=["event"],
    )
    for event, n in figures["events"].items():
        events.add_metric([event], n)
    yield from (quarantined, refusals, events)


def render_prometheus(agent: Agent) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``agent``'s figures, and its content type."""
    return generate_latest(metrics_for(agent).registry), CONTENT_TYPE_LATEST
