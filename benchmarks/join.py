"""Joining a mesh with many shards: how long a new agent takes to hold all of them (issue 16).

Agent ``a`` (websockets on 127.0.0.1) holds S small shards (one key each, already on disk).
Agent ``b`` starts empty with ``a`` as its seed; the clock runs from ``b``'s start until
``b`` holds all S shards with ``a``'s content (digests equal on both sides; ``b`` writes
nothing of its own to a shard it receives: ``a``'s update carries the value-format marker
already). Reported per S:
seconds, shards per second, the time per shard, and the frames ``b`` received.
``--joiner-first`` swaps the names (the joiner is ``a``, its seed ``b``): the joiner then
continues the cut rounds itself, asking for the shards it lacks.

The floor, measured in the same run: a third agent with no network applies the very same S
updates (``a``'s full state of each shard) through the same path (``ReplicaSet.apply``, the
store, a flush). Joining cannot be cheaper; ``ratio_to_floor`` = join seconds / floor seconds.
Target: proportional to the bytes to move, not to a round trip per shard (a user measured 8 s
for 1,000 and 49 s for 5,000 shards before the catch-up was batched), i.e. a ratio that does
not grow with S. Prints one JSON object.

    python benchmarks/join.py [--tiny|--quick] [--shards 1000,5000] [--out FILE] [--plot-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import common_args, finish, machine, pyplot, size_of

SHARDS = {"full": [1000, 5000], "quick": [300, 1000], "tiny": [30, 120]}


async def build(path: Path, shards: int, name: str = "a") -> None:
    from crdtsync import Agent

    async with Agent(name, data_dir=path) as agent:
        for i in range(shards):
            (await agent.shard(f"s{i:05d}"))["k"] = i
        await (await agent.shard("s00000")).flush()


async def floor(tmp: Path, updates: dict[str, bytes]) -> float:
    """Seconds for an agent with no network to apply and store ``updates`` (one per shard)."""
    from crdtsync import Agent

    async with Agent("floor", data_dir=tmp / "floor") as agent:
        t0 = time.perf_counter()
        for name, update in updates.items():
            agent.registry.apply(name, update, "a")
        await (await agent.shard(next(iter(updates)))).flush()
        return time.perf_counter() - t0


async def join(
    tmp: Path, shards: int, timeout: float, joiner_first: bool = False
) -> dict[str, Any]:
    from crdtsync import Agent
    from crdtsync.gossip.core import GossipCore

    # The joiner's name sorts after its seed's by default (the seed continues the cut rounds,
    # sending); with joiner_first before it (the joiner continues them, asking).
    seed, joiner = ("b", "a") if joiner_first else ("a", "b")
    await build(tmp / "a", shards, seed)
    frames: dict[str, int] = {}
    receive = GossipCore.receive

    def counting(self: GossipCore, peer: str, msg: Any, now: float) -> Any:
        if self.name == joiner:
            frames[type(msg).__name__] = frames.get(type(msg).__name__, 0) + 1
        return receive(self, peer, msg, now)

    async with Agent(seed, data_dir=tmp / "a", listen="ws://127.0.0.1:0") as a:
        names = a.shard_names()
        updates = {n: a.registry.open(n).doc.get_update() for n in names}
        floor_s = await floor(tmp, updates)
        GossipCore.receive = counting  # type: ignore[method-assign]
        t0 = time.perf_counter()
        async with Agent(joiner, data_dir=tmp / "b", peers=[a.address or ""]) as b:
            while True:
                held = set(b.shard_names())
                if len(held) >= shards and all(
                    b.registry.open(n).digest() == a.registry.open(n).digest() for n in names
                ):
                    break
                if time.perf_counter() - t0 > timeout:
                    GossipCore.receive = receive  # type: ignore[method-assign]
                    return {"shards": shards, "timeout": timeout, "held": len(held)}
                await asyncio.sleep(0.02)
            seconds = time.perf_counter() - t0
        GossipCore.receive = receive  # type: ignore[method-assign]
    return {
        "shards": shards,
        "seconds": round(seconds, 3),
        "shards_per_second": round(shards / seconds, 1),
        "ms_per_shard": round(1000 * seconds / shards, 3),
        "floor_seconds": round(floor_s, 3),
        "ratio_to_floor": round(seconds / floor_s, 2),
        "frames_received_by_b": dict(sorted(frames.items())),
    }


def plot(runs: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    ok = [r for r in runs if "seconds" in r]
    s = [r["shards"] for r in ok]
    ax[0].plot(s, [r["ms_per_shard"] for r in ok], "o-", label="join (websockets)")
    ax[0].plot(s, [1000 * r["floor_seconds"] / r["shards"] for r in ok], "s--", label="floor")
    ax[0].set_xlabel("shards")
    ax[0].set_ylabel("ms per shard")
    ax[0].set_title("time per shard to join")
    ax[0].legend()
    ax[1].plot(s, [r["ratio_to_floor"] for r in ok], "o-")
    ax[1].set_xlabel("shards")
    ax[1].set_title("join / floor (flat: proportional to the data)")
    ax[1].set_ylim(bottom=0)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    common_args(parser)
    parser.add_argument("--shards", default=None, help="comma-separated shard counts")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--joiner-first",
        action="store_true",
        help="name the joiner so that it sorts before its seed (it continues the cut rounds)",
    )
    args = parser.parse_args()
    size = size_of(args)
    counts = [int(x) for x in args.shards.split(",")] if args.shards else SHARDS[size]
    runs = []
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="crdtsync-join-") as tmp:
            runs.append(asyncio.run(join(Path(tmp), n, args.timeout, args.joiner_first)))
    ok = [r for r in runs if "ratio_to_floor" in r]
    report: dict[str, Any] = {
        "scenario": "join",
        "size": size,
        "joiner_sorts_first": args.joiner_first,
        "machine": machine(),
        "runs": runs,
        # The headline: join / floor at the most shards, and how it grows from the fewest.
        "ratio_to_floor": ok[-1]["ratio_to_floor"] if ok else None,
        "ratio_growth": round(ok[-1]["ratio_to_floor"] / ok[0]["ratio_to_floor"], 2)
        if len(ok) > 1
        else None,
    }
    finish(report, args.out, plot_dir=args.plot_dir, plots={"join.png": lambda: plot(runs)})


if __name__ == "__main__":
    main()
