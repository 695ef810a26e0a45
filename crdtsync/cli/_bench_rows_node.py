"""The summary rows of the single-node and door scenarios of ``crdtsync bench``: local writes,
idle, restart, stream, the Yjs door, hostile peers, HTTP.

Each builder takes ``row`` and ``vs`` (the closures of
:func:`crdtsync.cli.bench_summary.summary_rows` that add a row and read a ``vs_strongest``
entry), the scenario's name and its results, and adds that scenario's rows; ``summary_rows``
calls the one for each scenario in the results (``ROW_BUILDERS``). Split from
:mod:`crdtsync.cli.bench_summary` so each scenario's figures read in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._bench_common import _g, _le, _r

__all__: list[str] = []


def _local_rows(row: Callable[..., None], vs: Callable[..., Any], name: str, res: Any) -> None:
    """The local rows: durable map sets/s with group commit (against bare pycrdt in memory), and
    acknowledged writes/s with a flush each (against one fsync per op)."""
    v = res.get("group_commit_durable_ops_per_s")
    row(
        name,
        "durable map sets/s (group commit)",
        v,
        res.get("floor_in_memory_ops_per_s"),
        "bare pycrdt in memory",
        target=">= 100k/s and >= 0.3x floor",
        met=bool(v and v >= 100_000 and (res.get("ratio_group_commit_to_floor") or 0) >= 0.3),
    )
    row(
        name,
        "acknowledged writes/s (flush each)",
        res.get("acknowledged_ops_per_s"),
        res.get("per_op_commit_ops_per_s"),
        "one fsync per op",
    )


def _idle_rows(row: Callable[..., None], vs: Callable[..., Any], name: str, res: Any) -> None:
    """The idle rows: messages and wire bytes per anti-entropy round at each shard count, and
    their growth (target O(1) per round)."""
    pts = res.get("by_shard_count", [])
    for p in pts:
        row(
            name,
            f"{p['shards']} shards: msgs / wire bytes per round",
            f"{p['msgs_per_round']} / {p['wire_bytes_per_round']}",
            "1 / -",
            "one Summary per round",
            ratio=p["msgs_per_round"],
        )
    if pts:
        g = res.get("growth", {})
        row(
            name,
            f"growth {pts[0]['shards']} -> {pts[-1]['shards']} shards (msgs, bytes per round)",
            f"{g.get('msgs_per_round_ratio')}x, {g.get('wire_bytes_per_round_ratio')}x",
            "1x",
            "O(1)",
            target="O(1) per round",
            met=_g(res, "target_o1_per_round", "met"),
            ratio=g.get("msgs_per_round_ratio"),
        )


def _restart_rows(row: Callable[..., None], vs: Callable[..., Any], name: str, res: Any) -> None:
    """The restart rows: reopen, compaction and reopen after it (against pycrdt replaying the
    log or applying the state), and the bytes live and allocated against the encoded state."""
    replay, state = res.get("floor_replay_s"), res.get("state_bytes")
    reopen_log = _g(res, "reopen_log", "reopen_s")
    compact = _g(res, "compact", "compact_s")
    reopen_comp = _g(res, "reopen_compacted", "reopen_s")
    allocated = _g(res, "disk", "after", "allocated_bytes")
    row(
        name,
        f"reopen with {res['updates']:,} logged updates, s",
        reopen_log,
        replay,
        "pycrdt replay of the log",
        target="<= 1.5x",
        met=_le(_r(reopen_log, replay), 1.5),
    )
    row(
        name,
        "compaction, s",
        compact,
        replay,
        "pycrdt replay of the log",
        target="<= 2x",
        met=_le(_r(compact, replay), 2.0),
    )
    row(
        name,
        "reopen after compaction, s",
        reopen_comp,
        res.get("floor_reopen_s"),
        "pycrdt apply of the state (warm, best of 3)",
    )
    if res.get("floor_reopen_fresh_s") is not None:
        row(
            name,
            "reopen after compaction vs a fresh process's apply, s",
            reopen_comp,
            res["floor_reopen_fresh_s"],
            "pycrdt apply of the state, fresh process",
            target="<= 1.3x",
            met=_le(_r(reopen_comp, res["floor_reopen_fresh_s"]), 1.3),
        )
    row(
        name,
        "live bytes before compaction",
        _g(res, "disk", "before", "live_bytes"),
        state,
        "encoded state",
    )
    row(
        name,
        "live bytes after compaction",
        _g(res, "disk", "after", "live_bytes"),
        state,
        "encoded state",
    )
    row(
        name,
        "data dir allocated after compaction",
        allocated,
        state,
        "encoded state",
        target="<= 2x",
        met=_le(_r(allocated, state), 2.0),
    )


def _stream_rows(row: Callable[..., None], vs: Callable[..., Any], name: str, res: Any) -> None:
    """The stream rows: one block per system, against the writer's local durable replay (a peer
    that failed is one row)."""
    fl = res.get("floor", {})
    for sysname, st in res.get("systems", {}).items():
        if "error" in st:  # a peer that failed (stream.py reports it, the rest stand)
            row(name, f"{sysname}: failed", str(st["error"])[:80], "", "")
            continue
        b, pc = st["burst"], st["paced"]
        ours = sysname == "crdtsync"
        row(
            name,
            f"{sysname}: {res['edits']:,} edits live, s until all 4 hold endContent",
            b["all_done_s"],
            fl.get("durable_s"),
            "writer's local durable replay",
            target="<= 1.5x floor" if ours else "",
            met=_g(res, "targets", "all_done_within_1_5x_floor", "met") if ours else None,
        )
        row(
            name,
            f"{sysname}: burst p50 / p99 ms per edit at a follower",
            f"{b['latency_ms'].get('p50')} / {b['latency_ms'].get('p99')}",
            "",
            "",
        )
        row(
            name,
            f"{sysname}: paced {res.get('paced_rate'):g}/s, worst follower p99 ms",
            pc["worst_follower_p99_ms"],
            20.0,
            "target",
            target="<= 20 ms" if ours else "",
            met=_g(res, "targets", "paced_p99_le_20ms", "met") if ours else None,
        )
        row(
            name,
            f"{sysname}: burst msgs / wire bytes per edit",
            f"{b['msgs_per_edit']} / {b['wire_bytes_per_edit']}",
            "",
            "",
        )


def _yjs_rows(row: Callable[..., None], vs: Callable[..., Any], name: str, res: Any) -> None:
    """The Yjs door rows: 8 clients' updates/s and p99, and an initial sync, against the hub and
    the strongest peer."""
    ours, hub = res.get("crdtsync", {}), res.get("hub", {})
    fo, fh = ours.get("fanout", {}), hub.get("fanout", {})
    strong = res.get("vs_strongest", {})
    for figure, mine, ref, key in (
        (
            "8 clients: updates/s",
            fo.get("updates_per_s"),
            fh.get("updates_per_s"),
            "updates_per_s",
        ),
        ("8 clients: p99 ms", fo.get("p99_ms"), fh.get("p99_ms"), "p99_ms"),
        (
            f"initial sync of {res.get('map_entries')} entries (s)",
            ours.get("sync", {}).get("seconds"),
            hub.get("sync", {}).get("seconds"),
            "sync_seconds",
        ),
    ):
        best, r, met = vs(strong.get(key))
        t = _g(strong, key, "target") or ""
        row(
            name,
            figure,
            mine,
            ref,
            "pycrdt-websocket hub",
            target=f"{t}x strongest" if t else "",
            met=met,
            strongest=best,
            strongest_ratio=r,
        )


def _hostile_rows(row: Callable[..., None], vs: Callable[..., Any], name: str, res: Any) -> None:
    """The hostile row: an honest peer's write->replicated p99 during an attack, against before it."""
    lat = res.get("honest_round_trip_ms", {})
    during, before = lat.get("during", {}).get("p99"), lat.get("before", {}).get("p99")
    row(
        name,
        "honest write->replicated p99 ms, during / before the attack",
        during,
        before,
        "same peer, no attack",
        target="<= 3x",
        met=bool(during and before and during <= 3 * before),
    )


def _http_rows(row: Callable[..., None], vs: Callable[..., Any], name: str, res: Any) -> None:
    """The HTTP rows: PATCH requests/s (against in-process writes) and the SSE delivery p99
    (against in-process ``shard.changes()``)."""
    row(
        name,
        f"PATCH requests/s ({res.get('concurrency')} clients)",
        _g(res, "http", "patch_requests_per_s"),
        _g(res, "in_process", "writes_per_s"),
        "in-process shard writes, no HTTP",
    )
    row(
        name,
        "SSE delivery latency p99 ms",
        _g(res, "http", "sse_latency_ms", "p99"),
        _g(res, "in_process", "feed_latency_ms", "p99"),
        "in-process shard.changes()",
    )
