"""Helpers of the ``crdtsync bench`` summary rows: reading nested results, ratios, the
strongest peer of a run.

Split from :mod:`crdtsync.cli.bench_summary` with the per-scenario row builders
(:mod:`crdtsync.cli._bench_rows_mesh`, :mod:`crdtsync.cli._bench_rows_node`), which all use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__: list[str] = []


def _g(d: Any, *path: str | int) -> Any:
    for p in path:
        if isinstance(d, dict):
            d = d.get(p)  # type: ignore[call-overload]
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return None
    return d


def _r(a: Any, b: Any) -> float | None:
    try:
        return round(a / b, 2) if a is not None and b else None
    except TypeError:
        return None


#: The hubs the benchmarks run next to crdtsync (benchmarks/peers.py); ``pycrdt-websocket`` is
#: its hub with echoing ``pycrdt.Provider`` clients, the others are the peers at their best.
PEERS = ("pycrdt-websocket", "pycrdt-websocket-noecho", "y-websocket-server", "hocuspocus")


def _best(
    systems: dict[str, Any], get: Callable[[Any], Any], higher: bool
) -> tuple[str, float] | None:
    """The peer in ``systems`` with the best value of ``get`` (None: no peer has one)."""
    best: tuple[str, float] | None = None
    for name in PEERS:
        v = _safe(get, systems.get(name))
        if isinstance(v, (int, float)) and (
            best is None or (v > best[1] if higher else v < best[1])
        ):
            best = (name, float(v))
    return best


def _safe(get: Callable[[Any], Any], d: Any) -> Any:
    if d is None:
        return None
    try:
        return get(d)
    except (KeyError, TypeError, IndexError):
        return None


def _le(ratio: float | None, limit: float) -> bool | None:
    return None if ratio is None else ratio <= limit
