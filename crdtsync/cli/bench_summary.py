"""The summary table of ``crdtsync bench``: one row per headline figure, each next to its
reference (floor or peer) measured in the same run, as a rich table and as Markdown.

The rows of each scenario are built in :mod:`crdtsync.cli._bench_rows_node` (local writes,
idle, restart, stream, the Yjs door, hostile, HTTP) and :mod:`crdtsync.cli._bench_rows_mesh`
(broker, fanout, catch-up, join, trace, Glomers), from the helpers in
:mod:`crdtsync.cli._bench_common`; this module adds the failed rows, dispatches
(:data:`ROW_BUILDERS`) and renders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._bench_common import _r
from ._bench_rows_mesh import (
    _broker_rows,
    _catchup_rows,
    _fanout_rows,
    _glomers_rows,
    _join_rows,
    _trace_rows,
)
from ._bench_rows_node import (
    _hostile_rows,
    _http_rows,
    _idle_rows,
    _local_rows,
    _restart_rows,
    _stream_rows,
    _yjs_rows,
)

__all__ = ["summary_markdown", "summary_rows", "summary_table"]

#: The rows of each scenario (one builder per scenario, in the order of ``crdtsync bench
#: all``; a scenario not listed has no rows): :mod:`crdtsync.cli._bench_rows_node` and
#: :mod:`crdtsync.cli._bench_rows_mesh`.
ROW_BUILDERS: dict[str, Callable[[Callable[..., None], Callable[..., Any], str, Any], None]] = {
    "local": _local_rows,
    "broker": _broker_rows,
    "fanout": _fanout_rows,
    "catchup": _catchup_rows,
    "join": _join_rows,
    "idle": _idle_rows,
    "restart": _restart_rows,
    "stream": _stream_rows,
    "trace": _trace_rows,
    "yjs": _yjs_rows,
    "hostile": _hostile_rows,
    "glomers": _glomers_rows,
    "http": _http_rows,
}


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per headline figure: scenario, figure, crdtsync, reference, ratio, the strongest
    peer of the run with its figure and crdtsync's ratio to it, target, met. Where a row has
    a strongest peer, its target and ``met`` are stated against that peer."""
    rows: list[dict[str, Any]] = []

    def row(
        sc: str,
        figure: str,
        mine: Any,
        ref: Any,
        ref_name: str,
        *,
        target: str = "",
        met: bool | None = None,
        ratio: float | None | Callable[[], float | None] = None,
        strongest: tuple[str, float] | None = None,
        strongest_ratio: float | None = None,
    ) -> None:
        r = ratio() if callable(ratio) else (ratio if ratio is not None else _r(mine, ref))
        rows.append(
            {
                "scenario": sc,
                "figure": figure,
                "crdtsync": mine,
                "reference": ref,
                "reference_is": ref_name,
                "ratio": r,
                "strongest_peer": strongest[0] if strongest else None,
                "strongest": strongest[1] if strongest else None,
                "strongest_ratio": (
                    strongest_ratio
                    if strongest_ratio is not None
                    else (_r(mine, strongest[1]) if strongest else None)
                ),
                "target": target,
                "met": met,
            }
        )

    def vs(v: Any) -> tuple[tuple[str, float] | None, float | None, bool | None]:
        """A ``vs_strongest`` entry as (peer and figure, ratio, met)."""
        if not isinstance(v, dict) or v.get("peer") is None:
            return None, None, None
        return (v["peer"], v["peer_value"]), v.get("value"), v.get("met")

    for name, res in results.items():
        if "error" in res:
            rows.append(
                {
                    "scenario": name,
                    "figure": "FAILED",
                    "crdtsync": None,
                    "reference": None,
                    "reference_is": "",
                    "ratio": None,
                    "strongest_peer": None,
                    "strongest": None,
                    "strongest_ratio": None,
                    "target": res["error"],
                    "met": False,
                }
            )
            continue
        builder = ROW_BUILDERS.get(name)
        if builder is not None:
            builder(row, vs, name, res)
    return rows


def _strong_cell(r: dict[str, Any]) -> str:
    if not r.get("strongest_peer"):
        return "-"
    return f"{_cell(r['strongest'])} ({r['strongest_peer']}) = {_cell(r['strongest_ratio'])}x"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def summary_table(rows: list[dict[str, Any]], size: str) -> Any:
    from rich.table import Table

    table = Table(title=f"crdtsync bench summary ({size})", show_lines=False)
    for col in (
        "scenario",
        "figure",
        "crdtsync",
        "reference",
        "ratio",
        "strongest peer (ratio)",
        "target",
        "met",
    ):
        table.add_column(col, overflow="fold")
    for r in rows:
        met = "" if r["met"] is None else ("[green]yes" if r["met"] else "[red]no")
        table.add_row(
            r["scenario"],
            r["figure"],
            _cell(r["crdtsync"]),
            f"{_cell(r['reference'])} ({r['reference_is']})"
            if r["reference_is"]
            else _cell(r["reference"]),
            _cell(r["ratio"]),
            _strong_cell(r),
            r["target"],
            met,
        )
    return table


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | figure | crdtsync | reference | ratio | strongest peer (ratio) | target "
        "| met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = (
            f"{_cell(r['reference'])} ({r['reference_is']})"
            if r["reference_is"]
            else _cell(r["reference"])
        )
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(
            f"| {r['scenario']} | {r['figure']} | {_cell(r['crdtsync'])} | {ref} "
            f"| {_cell(r['ratio'])} | {_strong_cell(r)} | {r['target']} | {met} |"
        )
    return "\n".join(lines) + "\n"
