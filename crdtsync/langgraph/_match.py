"""Search semantics shared by :class:`~crdtsync.langgraph.CrdtStore`: LangGraph's filter
operators, namespace match conditions with ``*`` wildcards, cosine scoring of stored vectors."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from langgraph.store.base import MatchCondition

__all__ = ["best_score", "matches", "ns_matches", "until_wildcard"]


def best_score(query: list[float], vectors: dict[str, bytes]) -> float:
    best = -math.inf
    qn = math.sqrt(sum(x * x for x in query))
    for blob in vectors.values():
        vec = struct.unpack(f"<{len(blob) // 8}d", blob)
        vn = math.sqrt(sum(x * x for x in vec))
        sim = sum(a * b for a, b in zip(query, vec, strict=False)) / (qn * vn) if qn and vn else 0.0
        best = max(best, sim)
    return best


def matches(value: Any, filt: dict[str, Any] | None) -> bool:
    """LangGraph's filter semantics: equality per key (a dotted key reaches into nested
    dicts), nested dicts, lists compared element-wise, ``$eq $ne $gt $gte $lt $lte``."""
    return not filt or all(_compare(_lookup(value, k), f) for k, f in filt.items())


def _lookup(value: dict[str, Any], key: str) -> Any:
    """``value[key]``, or for a dotted key absent as such, the nested field (``"user.level"``)."""
    if key in value or "." not in key:
        return value.get(key)
    node: Any = value
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _compare(value: Any, filt: Any) -> bool:
    if isinstance(filt, dict):
        if any(k.startswith("$") for k in filt):
            return all(_operator(value, op, arg) for op, arg in filt.items())
        return isinstance(value, dict) and all(_compare(value.get(k), f) for k, f in filt.items())
    if isinstance(filt, (list, tuple)):
        return (
            isinstance(value, list)
            and len(value) == len(filt)
            and all(_compare(v, f) for v, f in zip(value, filt, strict=True))
        )
    return bool(value == filt)


_ORDER: dict[str, Callable[[float, float], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    if op in _ORDER:
        try:
            return _ORDER[op](float(value), float(arg))
        except (TypeError, ValueError):
            return False
    raise ValueError(f"unsupported filter operator {op!r}; use $eq $ne $gt $gte $lt $lte")


def until_wildcard(path: Iterable[str]) -> Iterator[str]:
    for label in path:
        if label == "*":
            return
        yield label


def ns_matches(cond: MatchCondition, ns: tuple[str, ...]) -> bool:
    path = tuple(cond.path)
    if len(ns) < len(path):
        return False
    if cond.match_type == "prefix":
        pairs = zip(ns, path, strict=False)
    else:
        pairs = zip(reversed(ns), reversed(path), strict=False)
    return all(p == "*" or a == p for a, p in pairs)
