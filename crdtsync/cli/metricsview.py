"""``crdtsync inspect --peer http://HOST:PORT``: a running mesh through its agents' metrics.

Each URL is an agent's HTTP door (``crdtsync agent --http``). Its ``GET /metrics?format=json``
is exactly ``agent.metrics()``, the figures ``GET /metrics`` exports to Prometheus and the
dashboard shows, so this view computes nothing of its own: it only lays the figures of one or
more agents side by side (per agent: connections, store, commits; per shard: where it is stored
and how big, writes/s, which peers lag; per link: state, queue, lag, repairs, close codes).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from ..errors import CrdtSyncError

__all__ = ["MetricsView", "fetch_metrics", "inspect_metrics"]


def fetch_metrics(url: str, *, token: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """``agent.metrics()`` of the agent serving HTTP at ``url`` (``http://host:port``).

    Raises:
        CrdtSyncError: the agent cannot be reached or does not answer with its metrics.
    """
    request = urllib.request.Request(
        url.rstrip("/") + "/metrics?format=json", headers={"Accept": "application/json"}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http only)
            figures = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CrdtSyncError(f"{url}: HTTP {exc.code} asking for /metrics") from exc
    except (OSError, ValueError) as exc:
        raise CrdtSyncError(f"{url}: cannot read its metrics: {exc}") from exc
    if not isinstance(figures, dict) or "agent" not in figures:
        raise CrdtSyncError(f"{url}: /metrics?format=json did not answer an agent's metrics")
    return figures


@dataclass
class MetricsView:
    """The metrics of the agents asked, by agent name (``agent.metrics()`` of each)."""

    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def agent_rows(self) -> list[dict[str, Any]]:
        """Per agent asked: its connections, shards, stored bytes, store size, group commits
        (how many, mean latency with fsync, mean updates per commit), compaction runs and
        peer connections closed (by close reason)."""
        rows = []
        for name, f in sorted(self.figures.items()):
            commits = f["commits"]
            n = commits["count"]
            closes: dict[str, int] = {}
            for key, count in f["closes"].items():  # "code reason by"
                reason = key.split(" ")[1] if " " in key else key
                closes[reason] = closes.get(reason, 0) + count
            rows.append(
                {
                    "agent": name,
                    "url": self.urls.get(name),
                    "connections": f["connections"],
                    "shards": len(f["shards"]),
                    "bytes": sum(s["bytes"] for s in f["shards"].values()),
                    "store_file_bytes": f["store"]["file_bytes"],
                    "commits": commits["count"],
                    "commit_ms_mean": round(1000 * commits["seconds_sum"] / n, 3) if n else None,
                    "updates_per_commit": round(commits["updates_sum"] / n, 2) if n else None,
                    "compactions": sum(s["compactions"] for s in f["shards"].values()),
                    "closes": dict(sorted(closes.items())),
                }
            )
        return rows

    def shard_rows(self, prefix: str = "") -> list[dict[str, Any]]:
        """Per shard named ``prefix...``: bytes stored at each agent asked, holders as each
        knows them, writes/s committed at each, and the peers lagging behind an agent asked."""
        shards: dict[str, dict[str, Any]] = {}
        for name, f in sorted(self.figures.items()):
            for shard, s in f["shards"].items():
                if not shard.startswith(prefix):
                    continue
                row = shards.setdefault(
                    shard, {"shard": shard, "stored": {}, "holders": set(), "writes_per_second": {}}
                )
                row["stored"][name] = s["bytes"]
                row["holders"].update(s["holders"])
                row["writes_per_second"][name] = s["writes_per_second"]
            for peer, p in f["peers"].items():
                for shard, lag in p["lag"].items():
                    if lag["updates"] and shard in shards:
                        shards[shard].setdefault("lagging", []).append(
                            {"behind": name, "peer": peer, **lag}
                        )
        out = []
        for row in shards.values():
            row["holders"] = sorted(row["holders"])
            row.setdefault("lagging", [])
            out.append(row)
        return sorted(out, key=lambda r: r["shard"])

    def link_rows(self) -> list[dict[str, Any]]:
        """Per agent asked and per peer it knows: state, bytes queued (in the core and in the
        transport's send buffer), worst lag, repairs."""
        rows = []
        for name, f in sorted(self.figures.items()):
            for peer, p in sorted(f["peers"].items()):
                lags = list(p["lag"].values())
                rows.append(
                    {
                        "agent": name,
                        "peer": peer,
                        "state": p["state"],
                        "queued_bytes": p["queued_bytes"],
                        "send_buffer_bytes": p.get("send_buffer_bytes", 0),
                        "lag_updates": max((lag["updates"] for lag in lags), default=0),
                        "lag_seconds": max((lag["seconds"] for lag in lags), default=0.0),
                        "repairs": sum(p.get("repairs", {}).values()),
                    }
                )
        return rows

    def to_json(self, prefix: str = "") -> dict[str, Any]:
        """The rows of the three tables, each agent's close codes, and the metrics as read."""
        return {
            "agents": self.agent_rows(),
            "shards": self.shard_rows(prefix),
            "links": self.link_rows(),
            "closes": {n: f["closes"] for n, f in sorted(self.figures.items())},
            "metrics": self.figures,
        }

    def tables(self, prefix: str = "") -> list[Table]:
        """The agents, shards (named ``prefix...``) and links as rich tables."""
        agents = Table(
            "agent",
            "url",
            "connections",
            "shards",
            "bytes",
            "store file bytes",
            "commits",
            "commit ms (mean)",
            "updates/commit",
            "compactions",
            "closes",
            title="agents (their metrics)",
        )
        for a in self.agent_rows():
            mean = a["commit_ms_mean"]
            agents.add_row(
                a["agent"],
                a["url"],
                str(a["connections"]),
                str(a["shards"]),
                str(a["bytes"]),
                str(a["store_file_bytes"]),
                str(a["commits"]),
                "-" if mean is None else f"{mean:.2f}",
                "-" if a["updates_per_commit"] is None else f"{a['updates_per_commit']:.1f}",
                str(a["compactions"]),
                ", ".join(f"{r}: {c}" for r, c in a["closes"].items()) or "-",
            )
        shards = Table(
            "shard", "stored at (bytes)", "holders", "writes/s", "lagging", title="shards"
        )
        shards.columns[0].no_wrap = True
        for row in self.shard_rows(prefix):
            lagging = [
                f"{lag['peer']} behind {lag['behind']}: {lag['updates']} updates, "
                f"{lag['seconds']:.1f} s"
                for lag in row["lagging"]
            ]
            shards.add_row(
                row["shard"],
                ", ".join(f"{a} ({b})" for a, b in sorted(row["stored"].items())),
                ", ".join(row["holders"]),
                ", ".join(f"{a}: {w:.1f}" for a, w in sorted(row["writes_per_second"].items())),
                "[yellow]" + "; ".join(lagging) if lagging else "-",
            )
        links = Table(
            "agent",
            "peer",
            "state",
            "queued bytes",
            "send buffer",
            "lag updates",
            "lag s",
            "repairs",
            title="links (each agent's view of its peers)",
        )
        for link in self.link_rows():
            links.add_row(
                link["agent"],
                link["peer"],
                link["state"],
                str(link["queued_bytes"]),
                str(link["send_buffer_bytes"]),
                str(link["lag_updates"]),
                f"{link['lag_seconds']:.1f}",
                str(link["repairs"]),
            )
        return [agents, shards, links]


def inspect_metrics(urls: list[str], *, token: str | None = None) -> MetricsView:
    """Read the metrics of each agent at ``urls`` (HTTP doors) into one view."""
    view = MetricsView()
    for url in urls:
        figures = fetch_metrics(url, token=token)
        view.figures[figures["agent"]] = figures
        view.urls[figures["agent"]] = url
    return view
