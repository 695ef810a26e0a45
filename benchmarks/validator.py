"""The strict Yjs validator alone, on both of its builds, next to pycrdt's apply of the same bytes.

    python benchmarks/validator.py [--entries 200000]

Validates the encoded state of a map shard (``k<i> = "v<i>"``) and of the automerge-paper
trace with ``crdtsync.yjs.parse.validate_update``, once on the mypyc-compiled build of
``crdtsync/yjs/_scan.py`` and once on the pure-Python one (alternating, in one process, best
of 3), and times ``pycrdt.Doc().apply_update`` of the same bytes. Prints one JSON object. The
compiled build exists only where ``pip install -e .`` could compile it (see
``crdtsync/yjs/_native.py``); without it only the pure figures are given.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pycrdt
from benchlib import machine, traces_dir
from catchup import replay_sequential

from crdtsync.yjs import _native, parse, state


def map_state(entries: int) -> bytes:
    doc = pycrdt.Doc()
    root = doc.get("map", type=pycrdt.Map)
    for start in range(0, entries, 1000):
        with doc.transaction():
            for i in range(start, min(entries, start + 1000)):
                root[f"k{i}"] = f"v{i}"
    return doc.get_update()


def measure(data: bytes, repeat: int = 3) -> dict[str, Any]:
    builds = {"pure": _native.load_pure()}
    compiled = _native.compiled_module()
    if compiled is not None:
        builds["compiled"] = compiled
    best: dict[str, float] = {}
    try:
        for _ in range(repeat):
            for name, module in builds.items():
                parse.scan = state.scan = module  # type: ignore[attr-defined]
                t0 = time.perf_counter()
                parse.validate_update(data)
                best[name] = min(best.get(name, 1e9), time.perf_counter() - t0)
            t0 = time.perf_counter()
            pycrdt.Doc().apply_update(data)
            best["pycrdt_apply"] = min(best.get("pycrdt_apply", 1e9), time.perf_counter() - t0)
    finally:
        parse.scan = state.scan = _native.scan  # type: ignore[attr-defined]
    out: dict[str, Any] = {
        "bytes": len(data),
        **{f"{k}_ms": round(v * 1e3, 2) for k, v in best.items()},
    }
    if "compiled" in best:
        out["ratios"] = {
            "pure_vs_compiled": round(best["pure"] / best["compiled"], 1),
            "compiled_vs_pycrdt_apply": round(best["compiled"] / best["pycrdt_apply"], 2),
            "pure_vs_pycrdt_apply": round(best["pure"] / best["pycrdt_apply"], 2),
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=200_000, help="map entries [200000]")
    args = p.parse_args()
    paper, _text, _ok = replay_sequential(traces_dir() / "automerge-paper.json.gz", None)
    report = {
        "benchmark": "validator",
        "machine": machine(),
        "compiled_available": _native.compiled_module() is not None,
        "states": {
            f"map {args.entries:,} entries": measure(map_state(args.entries)),
            "automerge-paper": measure(paper),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
