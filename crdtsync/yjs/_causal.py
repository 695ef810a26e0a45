"""Whether Yrs would integrate every struct of an update: the simulation behind readiness.

Used by :meth:`crdtsync.yjs.parse.UpdateInfo.missing` once an update has no gap of its own;
see :mod:`crdtsync.yjs.ready` for the rule. Pure Python, no pycrdt.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

__all__ = ["first_missing"]


def first_missing(
    sv: Mapping[int, int],
    spans: Mapping[int, tuple[int, int, list[int], list[int]]],
    waits: list[tuple[int, int, int, int]],
) -> tuple[int, int] | None:
    """Whether Yrs would integrate every struct of an update, given the references it makes
    that ``sv`` does not cover; None if so, else an ID the doc must hold first.

    Called once the update has no gap of its own (each client's structs start within ``sv``
    and no Skip reaches past it). Yrs then integrates the structs of each client in clock
    order, and a struct whose origin, right origin or parent ID (of another client; here also
    of its own, past itself) is not integrated yet waits for it; if that is in no client's
    remaining structs, or the waits form a cycle, it and every struct it blocks stay *pending*.
    This simulates that: a client advances freely up to its next struct with an unmet
    reference, and waits there (in a heap of the referenced client) until that client has
    passed the referenced clock. Each wait is pushed and popped once: O(n log n) in the
    references.
    """
    by_client: dict[int, list[tuple[int, int, int]]] = {}
    for client, clock, ref_client, ref_clock in waits:
        span = spans.get(ref_client)
        if span is None or ref_clock >= span[1]:
            return ref_client, ref_clock  # in neither the doc nor this update
        by_client.setdefault(client, []).append((clock, ref_client, ref_clock))
    index = dict.fromkeys(by_client, 0)

    def reached(client: int) -> int:
        """The clock up to which ``client``'s structs are integrated (simulated)."""
        known = sv.get(client, 0)
        pending = by_client.get(client)
        if pending is None or index[client] == len(pending):
            return max(known, spans[client][1])
        return max(known, pending[index[client]][0])

    heaps: dict[int, list[tuple[int, int]]] = {}
    work = list(by_client)
    while work:
        client = work.pop()
        pending = by_client[client]
        i = index[client]
        while i < len(pending):
            _, ref_client, ref_clock = pending[i]
            if ref_clock >= reached(ref_client):
                heapq.heappush(heaps.setdefault(ref_client, []), (ref_clock, client))
                break
            i += 1
            index[client] = i
        heap = heaps.get(client)
        if heap:
            now = reached(client)
            while heap and heap[0][0] < now:
                work.append(heapq.heappop(heap)[1])
    for client, pending in by_client.items():
        if index[client] < len(pending):
            _, ref_client, ref_clock = pending[index[client]]
            return ref_client, ref_clock  # a cycle: no order integrates these structs
    return None
