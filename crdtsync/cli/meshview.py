"""``crdtsync inspect --peer URL``: who holds which shard in a running mesh, and how big it is.

A short-lived observer agent (a temporary store, no listen address, so placement never gives
it a shard) dials one member, waits until its membership view stops changing, then asks every
listening agent for all its shards (a scan, :mod:`crdtsync.query`) and tabulates the answers:
per shard its holders and the size of each holder's copy (the bytes of its full update), per
agent the shards it holds. With a replication factor, the expected placement holders are
shown too, so misplaced or under-replicated shards stand out.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass, field

from ..agent import Agent
from ..errors import ReplicationTimeout, UsageError
from ..placement import holders as placement_holders

__all__ = ["MeshView", "inspect_mesh"]


@dataclass
class MeshView:
    """What :func:`inspect_mesh` saw.

    Attributes:
        members: agent name -> (address, state) as the observer knows it.
        shards: shard -> {holder: bytes of its copy}.
        expected: shard -> placement holders for the given replication factor (if any).
        missing: agents that did not answer the scan in time.
    """

    members: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    shards: dict[str, dict[str, int]] = field(default_factory=dict)
    expected: dict[str, tuple[str, ...]] = field(default_factory=dict)
    missing: tuple[str, ...] = ()

    def agents(self) -> dict[str, tuple[int, int]]:
        """agent -> (shards held, bytes held)."""
        out = {name: (0, 0) for name in self.members}
        for copies in self.shards.values():
            for agent, size in copies.items():
                n, b = out.get(agent, (0, 0))
                out[agent] = (n + 1, b + size)
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, object]:
        return {
            "members": {
                n: {"address": a, "state": s} for n, (a, s) in sorted(self.members.items())
            },
            "shards": {
                s: {
                    "holders": dict(sorted(c.items())),
                    **({"expected": list(self.expected[s])} if s in self.expected else {}),
                }
                for s, c in sorted(self.shards.items())
            },
            "agents": {n: {"shards": k, "bytes": b} for n, (k, b) in self.agents().items()},
            "missing": list(self.missing),
        }


async def inspect_mesh(
    peer: str,
    *,
    mesh: str = "default",
    prefix: str = "",
    replication_factor: int | None = None,
    settle: float = 1.0,
    timeout: float = 10.0,
) -> MeshView:
    """Join the mesh through ``peer`` as an observer and report holders and sizes.

    Raises:
        UsageError: bad arguments.
        ReplicationTimeout: no agent of the mesh was met through ``peer`` within ``timeout``
            (unreachable, or another mesh: empty tables would look like an empty mesh).
            Agents met that do not answer the scan are listed in ``missing`` instead.
    """
    if timeout <= 0 or settle < 0:
        raise UsageError("need timeout > 0 and settle >= 0")
    with tempfile.TemporaryDirectory(prefix="crdtsync-inspect-") as tmp:
        # (Any replication factor: it only makes the scan ask every listening member.)
        async with Agent(
            f"inspect-{os.getpid()}", tmp, peers=[peer], mesh=mesh, replication_factor=1
        ) as agent:
            core = agent.core
            assert core is not None
            end = time.monotonic() + timeout
            last, since = None, time.monotonic()
            while time.monotonic() < end:
                view = core.members(listening=True)
                if view != last:
                    last, since = view, time.monotonic()
                elif view and time.monotonic() - since >= settle:
                    break
                await asyncio.sleep(0.05)
            if not last:
                seed = agent.seeds.get(peer, "not dialled")
                raise ReplicationTimeout(
                    f"no agent of mesh {mesh!r} answered through {peer} within {timeout:g} s "
                    f"(the seed: {seed}); is an agent listening there, and is --mesh its mesh?"
                )
            out = await agent.reader.scan(prefix, timeout=max(0.1, end - time.monotonic()))
            result = MeshView(missing=out.missing if out.status != "ok" else ())
            for p in agent.peers:
                if p.state != "dead":
                    result.members[p.name] = (p.address, p.state)
            listening = [n for n, (a, _) in result.members.items() if a is not None]
            for shard, answers in out.answers.items():
                result.shards[shard] = {a: len(u) for a, u in answers}
                if replication_factor is not None:
                    result.expected[shard] = placement_holders(
                        shard, listening, replication_factor, mesh=mesh
                    )
            return result
