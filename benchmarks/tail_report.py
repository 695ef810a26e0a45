"""What the slow updates of a fanout phase went through (investigations, not part of ``bench``).

    CRDTSYNC_BENCH_EVLOG=DIR python benchmarks/fanout.py --quick --scale '' --systems crdtsync
    python benchmarks/tail_report.py DIR [--prefix q] [--top 0.01] [--show 12]

Reads the event logs of one run of one system (``evlog.py``: one file per process; the
writer is the one that made the sets; a hub's Node process has none) and, for every
(update, receiver) pair of the phase whose keys start with ``prefix`` (``p``: paced
1000/s, ``q``: paced 200/s), splits the latency into

* ``W``: the writer's set -> its first frame sent after the set (the last of that write's
  sends is reported as ``Wlast``),
* ``T``: that first send -> the receiver's socket read (``d0``) that carried it (the last
  read begun before the arrival),
* ``R``: that read -> the observer (``arr``).

For the slowest ``top`` share of pairs it then says what each process was doing meanwhile:
time the receiver spent idle in ``select`` after the send (it was not woken), busy in its
own garbage collection, group commits (loop side and the worker's LMDB commit), timer ticks,
other frames' handling; and the same for the writer between the set and its last send. The
median pair is shown for contrast. Prints a text report.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

Ev = tuple[int, str, Any, Any]


def load(directory: Path) -> dict[str, list[Ev]]:
    """Each process's events, by agent name (``a0``...), time-sorted."""
    out: dict[str, list[Ev]] = {}
    for f in sorted(directory.glob("ev-*.json")):
        name = f.name.split("-")[1]
        if not name.startswith("a"):  # a hub client (no --name): its pid
            name = "c" + f.stem.split("-")[-1]
        evs = [tuple(e) for e in json.loads(f.read_text())]
        evs.sort(key=lambda e: e[0])
        out[name] = evs  # type: ignore[assignment]
    return out


def spans(evs: list[Ev], begin: str, end: str) -> list[tuple[int, int]]:
    """(start, stop) of every ``begin``...``end`` pair, in order (not nested)."""
    got, start = [], None
    for t, k, _a, _b in evs:
        if k == begin:
            start = t
        elif k == end and start is not None:
            got.append((start, t))
            start = None
    return got


def overlap(sp: list[tuple[int, int]], lo: int, hi: int) -> int:
    """ns of the spans within [lo, hi]."""
    total = 0
    for a, b in sp:
        if b <= lo:
            continue
        if a >= hi:
            break
        total += min(b, hi) - max(a, lo)
    return total


KINDS = (
    ("idle", "sel0", "sel1"),
    ("gc", "gc0", "gc1"),
    ("commit(loop)", "c0", "c1"),
    ("lmdb(worker)", "w0", "w1"),
    ("tick", "tk0", "tk1"),
    ("read", "d0", "d1"),
)


def report(directory: Path, prefix: str, top: float, show: int) -> str:
    procs = load(directory)
    # the writer: the process that made the sets (a0 for crdtsync)
    wname = next(n for n, evs in procs.items() if any(e[1] == "set" for e in evs))
    writer = procs.pop(wname)
    sets = {e[2]: e[0] for e in writer if e[1] == "set" and str(e[2]).startswith(prefix)}
    sends = [e[0] for e in writer if e[1] == "s" and e[2] == "Push"]
    wspans = {k: spans(writer, b, e) for k, b, e in KINDS}
    import bisect

    set_times = sorted(sets.values())
    rows = []
    for name, evs in procs.items():
        reads = [e[0] for e in evs if e[1] == "d0"]
        rspans = {k: spans(evs, b, e) for k, b, e in KINDS}
        for t, k, key, _b in evs:
            if k != "arr" or key not in sets:
                continue
            t_set = sets[key]
            i = bisect.bisect_left(sends, t_set)
            t_send = sends[i] if i < len(sends) else t_set
            # the last Push of this write: sends before the next set
            k2 = bisect.bisect_right(set_times, t_set)
            nxt = set_times[k2] if k2 < len(set_times) else t
            j = bisect.bisect_left(sends, nxt)
            t_last = sends[j - 1] if j > i else t_send
            r = bisect.bisect_right(reads, t) - 1
            t_read = reads[r] if r >= 0 else t
            row = {
                "key": key,
                "rx": name,
                "lat": (t - t_set) / 1e6,
                "W": (t_send - t_set) / 1e6,
                "Wlast": (t_last - t_set) / 1e6,
                "T": (t_read - t_send) / 1e6,
                "R": (t - t_read) / 1e6,
            }
            for kind, sp in rspans.items():
                row["rx_" + kind] = overlap(sp, t_send, t_read) / 1e6
            row["rx_gc_any"] = overlap(rspans["gc"], t_set, t) / 1e6
            row["rx_commit_any"] = overlap(rspans["commit(loop)"], t_set, t) / 1e6
            for kind, sp in wspans.items():
                row["w_" + kind] = overlap(sp, t_set, t_last) / 1e6
            rows.append(row)
    rows.sort(key=lambda r: r["lat"])
    n = len(rows)
    if not n:
        return "no pairs"
    lines = [f"{directory} prefix {prefix!r}: {n} pairs, {len(sets)} writes"]
    lat = [r["lat"] for r in rows]
    lines.append(
        f"latency ms p50 {lat[n // 2]:.2f} p90 {lat[int(n * 0.9)]:.2f} "
        f"p99 {lat[min(n - 1, int(n * 0.99))]:.2f} max {lat[-1]:.2f}"
    )
    slow = rows[int(n * (1 - top)) :]
    med = rows[n // 2 - len(slow) // 2 : n // 2 + len(slow) // 2 + 1]
    cols = ["lat", "W", "Wlast", "T", "R"] + [c for c in rows[0] if c.startswith(("rx_", "w_"))]
    lines.append("mean over the pairs (ms): " + " ".join(f"{c:>12}" for c in cols))
    for label, group in ((f"slowest {len(slow)}", slow), (f"median {len(med)}", med)):
        lines.append(
            f"{label:>24}: "
            + " ".join(f"{statistics.fmean(r[c] for r in group):12.2f}" for c in cols)
        )
    lines.append(f"the {show} slowest pairs:")
    lines.append("key rx " + " ".join(cols))
    for r in slow[-show:]:
        lines.append(f"{r['key']} {r['rx']} " + " ".join(f"{r[c]:.2f}" for c in cols))
    # how many distinct writes make the slow pairs, and how many receivers each
    by_key: dict[str, int] = {}
    for r in slow:
        by_key[r["key"]] = by_key.get(r["key"], 0) + 1
    lines.append(
        f"slow pairs come from {len(by_key)} writes; receivers per write: "
        + str(sorted(by_key.values(), reverse=True)[:20])
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--prefix", default="q")
    p.add_argument("--top", type=float, default=0.01)
    p.add_argument("--show", type=int, default=12)
    args = p.parse_args()
    print(report(Path(args.dir), args.prefix, args.top, args.show))


if __name__ == "__main__":
    main()
