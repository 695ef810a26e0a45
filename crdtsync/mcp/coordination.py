"""The coordination tools of the MCP server: a counter that converges to the sum, and claims.

``increment_counter`` adds to :meth:`Shard.counter <crdtsync.shard.Shard.counter>` (per-agent
slots, so increments through different agents all count); ``claim_task`` runs
:meth:`Claims.claim <crdtsync.Claims.claim>` (write, confirm on a quorum, look at a quorum,
decide); ``complete_task`` (:meth:`Claims.done <crdtsync.Claims.done>`) and ``release_task``
(:meth:`Claims.release <crdtsync.Claims.release>`) end a claim this agent holds. Like the
other tools, each validates its whole input before it writes and refuses with a
:class:`~mcp.server.mcpserver.exceptions.ToolError` that says what to do instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from .. import Claims, Counter, CrdtSyncError, ReplicationTimeout, UnsupportedValue
from ..values import INT_MAX, INT_MIN, check_text
from .tools import ShardTools, _kind

__all__ = ["CoordinationTools"]

_WON = (
    "this agent holds the task: its claim is on disk on {quorum} of {members} agents and "
    "no other live claimant was seen, so no other agent's claim_task on it wins unless the "
    "mesh declares this agent dead (then the task may be re-run elsewhere). Do the task. "
    "(Every client of this MCP server acts as this one agent.)"
)
_LOST = (
    "do not do this task: {reason}. Your claim was withdrawn; pick another task, or, if the "
    "reason is contention or no quorum, retry after a random pause of a fraction of a second."
)


def _check_name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ToolError(f"{what} must be a non-empty string, e.g. 'done' or 'task-17'")
    try:  # it becomes a key: a lone surrogate would fail inside the write
        check_text(value, what)
    except UnsupportedValue as exc:
        raise ToolError(f"{exc} (half of a UTF-16 pair); nothing was written") from None
    return value


class CoordinationTools:
    """``increment_counter`` and ``claim_task`` over the same agent as a :class:`ShardTools`."""

    def __init__(self, tools: ShardTools) -> None:
        self.tools = tools
        self._claiming: dict[tuple[str, str], asyncio.Lock] = {}

    async def increment_counter(self, shard: str, key: str, by: Any = 1) -> dict[str, Any]:
        """Add ``by`` to the counter ``key`` of ``shard`` (created with the shard if needed)."""
        _check_name("key", key)
        if key.startswith("/"):
            raise ToolError(
                f"key {key!r} is a counter name, not a JSON Pointer: use "
                f"{key.lstrip('/')!r} (counters live at the top level of a shard)"
            )
        if not isinstance(by, int) or isinstance(by, bool):
            raise ToolError(f"by must be an integer (negative to decrement), not {by!r}")
        if not INT_MIN <= by <= INT_MAX:
            raise ToolError(f"by={by} is outside the 64-bit range {INT_MIN}..{INT_MAX}")
        exists = shard in self.tools.agent.shard_names()
        target = await self.tools._open(shard, create=True)
        counter = self._counter(target, key) if exists else target.counter(key)
        try:
            with target.transaction():
                value = counter.increment(by)
        except CrdtSyncError as exc:  # e.g. this agent's slot would leave the 64-bit range
            raise ToolError(f"increment refused, nothing written: {exc}") from None
        await target.flush()
        return {
            "shard": shard,
            "key": key,
            "value": value,
            "added": by,
            "note": "value is the sum of the increments this agent has seen so far; it "
            "converges to the sum of every agent's increments",
        }

    @staticmethod
    def _counter(target: Any, key: str) -> Counter:
        """The counter ``key``, refusing a key that already holds something else."""
        if key in target.crdt:  # a plain key of the shard's map
            held = target[key]
            if isinstance(held, int) and not isinstance(held, bool):
                raise ToolError(
                    f"key {key!r} holds the plain number {held}, not a counter: concurrent "
                    "increments of a plain number lose updates, so it cannot be incremented. "
                    f"Either use another key for the counter, or convert it: write "
                    f'{{"{key}": null}} to delete the number, then increment_counter by={held} '
                    "to start the counter at its value"
                )
            raise ToolError(
                f"key {key!r} holds {_kind(held)}, not a counter: use another key for the counter"
            )
        try:
            held = target[key]
        except KeyError:
            return target.counter(key)  # type: ignore[no-any-return]
        if isinstance(held, Counter):
            return held
        raise ToolError(
            f"key {key!r} is already {_kind(held)} (a named container), not a "
            "counter: use another key for the counter"
        )

    def _check_quorum(self, members: Any, timeout: Any) -> None:
        if not isinstance(members, int) or isinstance(members, bool) or members < 1:
            raise ToolError(
                "members must be an integer >= 1: the number of agents that hold "
                "the shard, this one included"
            )
        limit = self.tools.max_timeout
        if not 0 < timeout <= limit:
            raise ToolError(f"timeout must be in (0, {limit}] seconds")
        if members > 1 and self.tools.agent.core is None:
            raise ToolError(
                f"members={members}, but this agent has no peers (it was started "
                "without listen, peers or broker): use members=1, or start it in a "
                "mesh"
            )

    async def _check_board(self, shard: str) -> None:
        """Refuse a shard whose 'claims' or 'done' key holds something else than a map."""
        if shard in self.tools.agent.shard_names():
            state = (await self.tools._open(shard, create=False)).snapshot()
            for used in ("claims", "done"):
                if used in state and not isinstance(state[used], dict):
                    raise ToolError(
                        f"shard {shard!r} uses the key {used!r} for {_kind(state[used])}, but "
                        "claim_task keeps its claims in the maps 'claims' and 'done' of the "
                        "shard: claim tasks in a separate shard (e.g. 'tasks')"
                    )

    async def claim_task(
        self, shard: str, task: str, members: int, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Claim ``task`` in ``shard`` with :class:`~crdtsync.Claims` (see the module)."""
        _check_name("task", task)
        self._check_quorum(members, timeout)
        await self._check_board(shard)
        target = await self.tools._open(shard, create=True)
        claims = Claims(self.tools.agent, target, members=members, timeout=timeout)
        lock = self._claiming.setdefault((shard, task), asyncio.Lock())
        async with lock:  # two clients of this server are one agent: one claim at a time
            already = task in claims.mine()
            try:
                result = await claims.claim(task)
            except CrdtSyncError as exc:
                if not already:
                    await claims.release(task)  # leave nothing of a failed claim behind
                raise ToolError(f"claim failed, nothing kept: {exc}") from None
        out: dict[str, Any] = {
            "shard": shard,
            "task": task,
            "agent": self.tools.agent.name,
            "won": result.won,
            "quorum": claims.quorum,
            "members": members,
        }
        if result.won:
            out["already_held"] = already
            out["meaning"] = _WON.format(quorum=claims.quorum, members=members)
        else:
            out["reason"] = result.reason
            out["meaning"] = _LOST.format(reason=result.reason)
        return out

    async def _held(self, shard: str, task: str, members: int, timeout: float) -> Claims:
        """The claims of ``shard``, once sure this agent holds an open claim of ``task``."""
        _check_name("task", task)
        self._check_quorum(members, timeout)
        await self._check_board(shard)
        target = await self.tools._open(shard, create=False)
        claims = Claims(self.tools.agent, target, members=members, timeout=timeout)
        if claims.is_done(task):
            by = target.snapshot().get("done", {}).get(task)
            who = by.get("by") if isinstance(by, dict) else None
            raise ToolError(
                f"task {task!r} is already done (by {who!r}): nothing written. "
                + (
                    "This agent's claim of it is still recorded: release_task drops it."
                    if self.tools.agent.name in claims.holder(task)
                    else "Pick another task."
                )
            )
        if task not in claims.mine():
            others = sorted(claims.holder(task))
            held = f"it is claimed by {', '.join(others)}" if others else "nobody claims it"
            raise ToolError(
                f"this agent does not hold task {task!r} ({held}), so it cannot complete or "
                "release it: nothing written. Claim it with claim_task first, and work on it "
                'only if "won" is true'
            )
        return claims

    async def complete_task(
        self,
        shard: str,
        task: str,
        result: Any = None,
        members: int = 1,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Record ``task`` done (with ``result``) and drop this agent's claim, in one write."""
        value = None if result is None else self.tools._value(result)  # refused: nothing written
        claims = await self._held(shard, task, members, timeout)
        lock = self._claiming.setdefault((shard, task), asyncio.Lock())
        replicated = True
        async with lock:
            try:
                await claims.done(task, value)
            except ReplicationTimeout:
                replicated = False
        out: dict[str, Any] = {
            "shard": shard,
            "task": task,
            "agent": self.tools.agent.name,
            "done": True,
            "replicated": replicated,
            "quorum": claims.quorum,
        }
        out["meaning"] = (
            f"the task is marked done and the claim dropped; {claims.quorum} of {members} "
            "agents hold that on disk, so no agent will claim it again"
            if replicated
            else f"the task is marked done here, but fewer than {claims.quorum} agents confirmed "
            "it within the timeout; it spreads when they are reachable "
            "(wait_until_replicated confirms)"
        )
        return out

    async def release_task(self, shard: str, task: str) -> dict[str, Any]:
        """Give a task this agent claimed back without doing it: others may claim it."""
        claims = await self._held(shard, task, 1, self.tools.max_timeout)
        lock = self._claiming.setdefault((shard, task), asyncio.Lock())
        async with lock:
            await claims.release(task)
        return {
            "shard": shard,
            "task": task,
            "agent": self.tools.agent.name,
            "released": True,
            "meaning": "this agent no longer claims the task; any agent may claim_task it now",
        }
