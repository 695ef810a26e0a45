"""One process of the claim fault test (tests/faults/test_claim_faults.py).

    python claim_worker.py ROLE NAME DATA_DIR PORT JOBS MEMBERS LOG PEER_PORT...

ROLE ``monitor`` follows the shard with a subscription (``sub.get(timeout=...)``, which keeps
working across timeouts) and appends ``monitor <changes seen> <timeouts>`` once it sees every
job done. ROLE ``planner`` puts JOBS jobs into the ``work`` shard's queue and then serves; ROLE
``worker`` takes jobs until none is pending. For every job it takes it appends
``claimed <job> <name>`` to LOG (fsynced) *after* the claim is confirmed and *before* doing
the job, then ``done <job> <name>`` once the job's result is confirmed on a quorum; the planner
appends ``alldone - planner`` once it sees every job done. Stops
cleanly (flush, close) on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import sys

from crdtsync import Agent, GossipConfig, JobQueue, stop_event


def note(log: str, line: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def main(
    role: str,
    name: str,
    data_dir: str,
    port: int,
    jobs: int,
    members: int,
    log: str,
    peers: list[int],
) -> None:
    cfg = GossipConfig.lan(anti_entropy_interval=0.5, backoff_max=0.5)
    async with Agent(
        name,
        data_dir,
        listen=f"ws://127.0.0.1:{port}",
        gossip=cfg,
        peers=[f"ws://127.0.0.1:{p}" for p in peers],
    ) as agent:
        stop = stop_event()
        # Tell the test we handle SIGTERM now: a worker it restarts just before the end
        # would otherwise die of a SIGTERM that came before the handler (exit -15).
        open(f"{data_dir}.ready", "w").close()
        shard = await agent.shard("work")
        queue = JobQueue(agent, shard, members=members, timeout=3.0)
        if role == "monitor":
            seen = timeouts = 0
            with shard.subscribe() as sub:
                while not stop.is_set():
                    change = await sub.get(timeout=0.2)
                    if change is None:
                        timeouts += 1
                    else:
                        seen += 1
                    if len(shard.map("done")) >= jobs:
                        # The subscription also outlives a quiet spell: once every job is
                        # done, read on until a read times out (bounded), whatever the
                        # speed of the run (a fast run may leave no 0.2 s gap before).
                        for _ in range(25):
                            change = await sub.get(timeout=0.2)
                            if change is None:
                                timeouts += 1
                                break
                            seen += 1
                        note(log, f"monitor {seen} {timeouts}")
                        break
            await stop.wait()
            return
        if role == "planner":
            if len(shard.map("jobs")) < jobs:
                for i in range(jobs):
                    queue.put(f"job{i:03d}", {"n": i})
            await shard.flush()
            while not stop.is_set():  # report once every job is done (as seen here)
                if len(shard.map("done")) >= jobs:
                    note(log, "alldone - planner")
                    break
                await asyncio.sleep(0.1)
            await stop.wait()
            return
        while not stop.is_set():
            if len(shard.map("jobs")) < jobs or len(agent.peers) < members - 1:
                await asyncio.sleep(0.05)  # not synced / not meshed yet
                continue
            if not queue.pending():
                await asyncio.sleep(0.1)
                continue
            try:
                got = await queue.take(wait=0.3)
            except Exception as exc:  # noqa: BLE001 (ClosedError on shutdown, etc.)
                print(f"{name}: take failed: {exc!r}", file=sys.stderr)
                await asyncio.sleep(0.1)
                continue
            if got is None:
                continue
            job, payload = got
            note(log, f"claimed {job} {name}")
            await asyncio.sleep(0.1)  # the work
            try:
                await queue.complete(job, {"by": name, "n2": payload["n"] * 2})
            except Exception as exc:  # noqa: BLE001 (a quorum timeout: the job stays ours, resumed later)
                print(f"{name}: complete {job} failed: {exc!r}", file=sys.stderr)
                continue
            note(log, f"done {job} {name}")


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(
        main(a[0], a[1], a[2], int(a[3]), int(a[4]), int(a[5]), a[6], [int(p) for p in a[7:]])
    )
