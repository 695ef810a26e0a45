"""Joining a mesh with many shards: how long a new agent takes to hold all of them (issue 16).

Agent ``a`` (websockets on 127.0.0.1) holds S small shards (one key each, already on disk).
Agent ``b`` starts empty with ``a`` as its seed; the clock runs from ``b``'s start until
``b`` holds all S shards with ``a``'s content (digests equal). Reported per S: seconds,
shards per second, and the time per shard. Target: proportional to the bytes to move (a few
hundred bytes per shard here), not to a round trip per shard; a user measured 8 s for 1,000
and 49 s for 5,000 shards before this benchmark existed. Prints one JSON object.

    python benchmarks/join.py [--tiny|--quick] [--shards 1000,5000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import common_args, finish, machine, size_of

SHARDS = {"full": [1000, 5000], "quick": [300, 1000], "tiny": [50]}


async def build(path: Path, shards: int) -> None:
    from crdtsync import Agent

    async with Agent("a", data_dir=path) as agent:
        for i in range(shards):
            (await agent.shard(f"s{i:05d}"))["k"] = i
        await (await agent.shard("s00000")).flush()


async def join(tmp: Path, shards: int, timeout: float) -> dict[str, Any]:
    from crdtsync import Agent

    await build(tmp / "a", shards)
    async with Agent("a", data_dir=tmp / "a", listen="ws://127.0.0.1:0") as a:
        names = a.shard_names()
        t0 = time.perf_counter()
        async with Agent("b", data_dir=tmp / "b", peers=[a.address or ""]) as b:
            while True:
                held = set(b.shard_names())
                if len(held) >= shards and all(
                    b.registry.open(n).digest() == a.registry.open(n).digest() for n in names
                ):
                    break
                if time.perf_counter() - t0 > timeout:
                    return {"shards": shards, "timeout": timeout, "held": len(held)}
                await asyncio.sleep(0.02)
            seconds = time.perf_counter() - t0
    return {
        "shards": shards,
        "seconds": round(seconds, 3),
        "shards_per_second": round(shards / seconds, 1),
        "ms_per_shard": round(1000 * seconds / shards, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    common_args(parser)
    parser.add_argument("--shards", default=None, help="comma-separated shard counts")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    size = size_of(args)
    counts = [int(x) for x in args.shards.split(",")] if args.shards else SHARDS[size]
    runs = []
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="crdtsync-join-") as tmp:
            runs.append(asyncio.run(join(Path(tmp), n, args.timeout)))
    finish({"scenario": "join", "size": size, "machine": machine(), "runs": runs}, args.out)


if __name__ == "__main__":
    main()
