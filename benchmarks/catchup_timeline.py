"""One crdtsync catch-up pair of ``catchup.py`` as a timeline, for investigations.

Builds the holder's store (a map shard of ``--entries`` keys, or the automerge-paper state with
``--paper``), runs the holder and joiner children exactly as ``catchup.py`` does, and prints
the result, then every frame (``CRDTSYNC_BENCH_FRAMELOG``) and every garbage collection of
1 ms or more (``CRDTSYNC_BENCH_GCLOG``) of both processes, in ms from the joiner's first
Hello::

    python benchmarks/catchup_timeline.py --entries 200000
    python benchmarks/catchup_timeline.py --paper

Lines the children write to stderr that start with ``TL <time.time()>`` (temporary
instrumentation added while profiling) are merged into the timeline too. No timing is
asserted; one run is one sample, so read it next to the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
import catchup
from benchlib import traces_dir

_CHILDREN: list[benchlib.Child] = []


class _KeptChild(benchlib.Child):
    """A Child whose log stays readable after the run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _CHILDREN.append(self)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=50_000, help="map entries [50000]")
    p.add_argument("--paper", action="store_true", help="the automerge-paper state instead")
    args = p.parse_args()
    os.environ.setdefault("CRDTSYNC_BENCH_FRAMELOG", "1")
    os.environ.setdefault("CRDTSYNC_BENCH_GCLOG", "1")
    os.environ.setdefault("CRDTSYNC_BENCH_STEPLOG", "1")
    catchup.Child = _KeptChild  # type: ignore[misc]
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-timeline-"))
    if args.paper:
        state, text, _ = catchup.replay_sequential(traces_dir() / "automerge-paper.json.gz", None)
        catchup.build_state_store(tmp / "holder", "paper", state)
        shard, until = "paper", ["--until-text-len", str(len(text))]
    else:
        catchup.build_map_store(tmp / "holder", args.entries)
        shard, until = "map", ["--until-len", str(args.entries)]
    result = catchup.run_crdtsync(tmp / "holder", shard, until, tmp / "joiner")
    print(json.dumps(result))
    events: list[tuple[float, str, str]] = []
    for child in _CHILDREN:
        for line in child.log:
            parts = line.split(maxsplit=2)
            if len(parts) == 3 and parts[0] in ("FRAME", "GC", "TL"):
                events.append((float(parts[1]), child.name, f"{parts[0]} {parts[2]}"))
    events.sort()
    hello = next((t for t, who, what in events if who == "joiner" and "send Hello" in what), 0.0)
    for t, who, what in events:
        if t < hello - 0.1:
            continue  # start-up, before the joiner's t0
        if what.startswith("GC ") and float(what.split()[2]) < 1.0:
            continue  # the many sub-millisecond young collections
        print(f"{(t - hello) * 1e3:9.1f} ms  {who:7} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
