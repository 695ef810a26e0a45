"""Summarise a profile of a benchmark child: the functions that take the time.

    python benchmarks/profile_top.py PROFILE [--top 25] [--under FUNCTION]

PROFILE is either ``py-spy record -f raw`` output (``*.txt``, written when a scenario runs with
``CRDTSYNC_BENCH_PYSPY=DIR``; ``CRDTSYNC_BENCH_PYSPY_MATCH=a1`` picks the children whose name
contains ``a1``) or a cProfile dump (``*.prof``, written with ``CRDTSYNC_BENCH_CPROFILE=DIR``).
For py-spy it prints the share of samples per function, self and inclusive, leaving out the
samples where the event loop was waiting in ``select`` (idle); ``--under`` restricts the
inclusive view to the stacks that pass through a function (e.g. ``GossipCore.receive``).
"""

from __future__ import annotations

import argparse
import pstats
from collections import Counter


def pyspy(path: str, top: int, under: str | None) -> None:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = idle = 0
    for line in open(path):
        line = line.rstrip()
        if not line:
            continue
        stack, _, n_text = line.rpartition(" ")
        n = int(n_text)
        frames = stack.split(";")
        if frames and "select (selectors.py" in frames[-1]:
            idle += n
            continue
        if under and not any(under in f for f in frames):
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(
        f"{path}: {total} busy samples{f' under {under}' if under else ''}, {idle} idle (event loop in select)"
    )
    print("--- self")
    for f, n in self_c.most_common(top):
        print(f"{100 * n / max(total, 1):5.1f}%  {f}")
    print("--- inclusive")
    for f, n in incl.most_common(top + 15):
        print(f"{100 * n / max(total, 1):5.1f}%  {f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--under", default=None)
    args = p.parse_args()
    if args.profile.endswith(".prof"):
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    else:
        pyspy(args.profile, args.top, args.under)


if __name__ == "__main__":
    main()
