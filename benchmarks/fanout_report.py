"""Fanout's figures against the strongest peer, and the plot of its 32/64-replica runs.

Pure functions of fanout.py's results (benchmarks/fanout.py imports them): ``verdict_strongest``
judges each target against the peer with the best value of that figure in the same run
(benchmarks/peers.py ``strongest``), ``plot_scale`` draws ``fanout_scale.png``.
"""

from __future__ import annotations

from typing import Any

from benchlib import pyplot, ratio
from peers import strongest

__all__ = ["plot_scale", "verdict_strongest"]


def verdict_strongest(results: dict[str, Any], label: str = "crdtsync") -> dict[str, Any]:
    """Each target against the peer with the best figure of this run (benchmarks/peers.py)."""
    me = results.get(label)
    if not me:
        return {}
    out: dict[str, Any] = {}
    checks = (
        ("burst_updates_per_s_ratio", "burst", "updates_per_s", True, ">= 5", lambda v: v >= 5),
        ("burst_p99_ratio", "burst", "p99", False, "< 1", lambda v: v < 1),
        ("paced_p99_ratio", "paced", "p99", False, "<= 1", lambda v: v <= 1),
        ("paced_low_p99_ratio", "paced_low", "p99", False, "<= 1", lambda v: v <= 1),
    )
    for name, phase, key, higher, target, ok in checks:
        if phase not in me:
            continue

        def get(r: dict[str, Any], phase: str = phase, key: str = key) -> float | None:
            f = r[phase]
            return f["updates_per_s"] if key == "updates_per_s" else f["latency_ms"][key]

        peer, value = strongest(results, get, higher)
        mine = get(me)
        r = ratio(mine, value)
        if peer is None or r is None:
            continue
        out[name] = {
            "value": r,
            "peer": peer,
            "peer_value": value,
            "crdtsync": mine,
            "target": target,
            "met": bool(ok(mine / value)),
        }
    return out


def plot_scale(scale: dict[str, Any]) -> Any:
    """fanout_scale.png: burst updates/s, burst p99 and CPU per update of every system at
    each replica count of the scale runs (log scales: the systems differ by orders)."""
    plt = pyplot()
    counts = list(scale)
    systems = list(dict.fromkeys(k for c in counts for k in scale[c]["systems"]))
    colors = {
        "crdtsync": "tab:blue",
        "pycrdt-websocket-noecho": "tab:red",
        "y-websocket-server": "tab:green",
        "hocuspocus": "tab:purple",
    }
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / max(1, len(systems))
    for a, title, get in (
        (ax[0], "burst updates/s (higher is better)", lambda f: f["burst"]["updates_per_s"]),
        (
            ax[1],
            "burst latency p99 ms (lower is better)",
            lambda f: f["burst"]["latency_ms"]["p99"],
        ),
        (
            ax[2],
            "burst CPU ms per update, all processes",
            lambda f: f["burst"]["cpu_ms_per_update"],
        ),
    ):
        for j, name in enumerate(systems):
            vals = []
            for c in counts:
                fig_ = scale[c]["systems"].get(name, {})
                vals.append(get(fig_) if "burst" in fig_ else 0)
            bars = a.bar(
                [i + (j - (len(systems) - 1) / 2) * width for i in range(len(counts))],
                vals,
                width,
                label=name,
                color=colors.get(name, "gray"),
            )
            a.bar_label(bars, fmt="%.3g", fontsize=7)
        a.set_yscale("log")
        a.set_xticks(range(len(counts)), [f"{c} replicas" for c in counts])
        a.set_title(title)
    ax[0].legend(fontsize=8)
    fig.suptitle(
        "fan-out at scale: 1 writer, the other replicas as asyncio tasks in a few processes"
    )
    return fig
