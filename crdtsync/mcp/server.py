"""``crdtsync mcp``: an agent node that serves the Model Context Protocol.

The server is built on the official ``mcp`` SDK (``MCPServer``, formerly FastMCP). Tools are in
:mod:`crdtsync.mcp.tools` and :mod:`crdtsync.mcp.coordination` (counter, claims); this module
registers them with JSON schemas, exposes every shard as the resource
``crdtsync://shard/{name}``, and turns each change to a shard (local or from a peer) into a
resource-updated notification:

- at protocol 2026-07-28, on ``subscriptions/listen`` streams that asked for the shard's URI
  (the SDK's subscription bus);
- at earlier protocol versions (most desktop clients today), to every session that sent
  ``resources/subscribe`` for the URI.

It serves stdio (for desktop/IDE clients) or streamable HTTP bound to loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.mcpserver.resources import FunctionResource
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ResourcesListChanged,
    ResourceUpdated,
)
from pydantic import Field

from .. import Agent, jsonform
from .coordination import CoordinationTools
from .tools import SHARD_URI, ShardTools

logger = logging.getLogger(__name__)

__all__ = ["LOOPBACK_HOSTS", "CrdtMcp", "serve"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# Tool argument types (module level: the SDK resolves the annotations by name).
ShardArg = Annotated[str, Field(description="Shard name: 1-128 chars of A-Z a-z 0-9 . _ - : /")]
PathArg = Annotated[str, Field(description='JSON Pointer inside the shard: "" or "/key/sub/0"')]

_INSTRUCTIONS = """\
Shared, replicated memory (crdtsync). Data lives in named shards (JSON-like maps) that every
agent of the mesh replicates; concurrent writes merge without conflicts. Paths are JSON
Pointers ("" = the whole shard, "/tasks/t1/done"). Values use a JSON form where ints and
floats differ (3 vs 3.0), {"$bytes": base64}, {"$text": "..."} is a collaborative Text, and a
key starting with "$" is written "$$key". Use read before write; write takes a merge patch
(null deletes a key); append adds to a list; insert_text edits a Text; wait_until_replicated
confirms other agents hold your change. increment_counter counts from many agents without
losing updates (never read-add-write a number); claim_task makes sure only one agent works on a
task (do it only if "won" is true); complete_task records it done, release_task gives it
back. Create a shared list, map or Text once (one agent), then let everyone edit inside it:
two agents creating the same missing container at the same moment each make their own, and
only one survives."""


class CrdtMcp:
    """An ``MCPServer`` over one started :class:`~crdtsync.Agent`, plus its change watcher.

    Use :meth:`watching` around serving, so changes turn into notifications.
    """

    def __init__(self, agent: Agent, *, name: str | None = None) -> None:
        self.agent = agent
        self.tools = ShardTools(agent)
        self.coordination = CoordinationTools(self.tools)
        self.bus = InMemorySubscriptionBus()
        self.server = MCPServer(
            name or f"crdtsync-{agent.name}",
            instructions=_INSTRUCTIONS,
            subscriptions=self.bus,
            log_level="WARNING",
        )
        self._legacy: dict[str, set[Any]] = {}  # uri -> sessions that sent resources/subscribe
        self._watched: dict[str, asyncio.Task[None]] = {}
        self._register_tools()
        self._refuse_unknown_arguments()
        self._register_resources()

    # -- tools -----------------------------------------------------------------------------------

    def _register_tools(self) -> None:
        t = self.tools
        readonly = types.ToolAnnotations(read_only_hint=True)

        @self.server.tool(annotations=readonly)
        async def list_shards() -> dict[str, Any]:
            """List the shards this agent holds (name and resource URI)."""
            await self.watch_new_shards()
            return t.list_shards()

        @self.server.tool(annotations=readonly)
        async def read(shard: ShardArg, path: PathArg = "") -> dict[str, Any]:
            """Read a whole shard or the value at a path in it, in crdtsync's JSON form."""
            await self.watch_new_shards()
            return await t.read(shard, path)

        @self.server.tool()
        async def write(
            shard: ShardArg,
            patch: Annotated[
                dict[str, Any],
                Field(
                    description=(
                        'RFC 7386 merge patch: {"k": v} sets k, {"k": null} deletes k, nested objects '
                        "merge key by key; arrays and scalars replace"
                    )
                ),
            ],
            path: Annotated[
                str,
                Field(
                    description="JSON Pointer of the map to patch "
                    '("" = the shard; missing maps are created)'
                ),
            ] = "",
        ) -> dict[str, Any]:
            """Merge-patch a shard (or a map inside it) in one transaction; creates the shard
            if needed. Returns the changed paths once the write is on disk."""
            try:
                return await t.write(shard, patch, path)
            finally:
                await self.watch_new_shards()

        @self.server.tool()
        async def append(
            shard: ShardArg,
            path: Annotated[str, Field(description='JSON Pointer of the list, e.g. "/log"')],
            value: Annotated[Any, Field(description="The item, in the JSON form")],
        ) -> dict[str, Any]:
            """Append one item to a list (concurrent appends all survive); a missing key
            becomes a new list (create shared lists once, before several agents append)."""
            return await t.append(shard, path, value)

        @self.server.tool()
        async def insert_text(
            shard: ShardArg,
            path: Annotated[str, Field(description='JSON Pointer of the Text, e.g. "/notes"')],
            text: Annotated[str, Field(description="Text to insert")],
            index: Annotated[
                int | None, Field(description="Character offset; omit to append")
            ] = None,
        ) -> dict[str, Any]:
            """Insert into a collaborative Text (concurrent edits merge character by
            character); a missing key becomes a new Text."""
            return await t.insert_text(shard, path, text, index)

        @self.server.tool(annotations=readonly)
        async def wait_until_replicated(
            shard: ShardArg,
            peers: Annotated[int, Field(description="How many other agents must hold it")] = 1,
            timeout: Annotated[float, Field(description="Seconds to wait (max 60)")] = 5.0,
        ) -> dict[str, Any]:
            """Wait until other agents hold every change made to the shard so far, on disk."""
            return await t.wait_until_replicated(shard, peers, timeout)

        @self.server.tool()
        async def increment_counter(
            shard: ShardArg,
            key: Annotated[
                str,
                Field(
                    description=(
                        'Counter name at the top level of the shard, e.g. "done" (not a path)'
                    )
                ),
            ],
            by: Annotated[
                int,
                Field(strict=True, description=("Integer to add; negative decrements (default 1)")),
            ] = 1,
        ) -> dict[str, Any]:
            """Add to a counter that converges to the sum of every agent's increments (each
            agent adds to its own slot; a plain number key is refused). Creates the counter
            and the shard if needed. Returns the new value as seen by this agent."""
            try:
                return await self.coordination.increment_counter(shard, key, by)
            finally:
                await self.watch_new_shards()

        @self.server.tool()
        async def claim_task(
            shard: ShardArg,
            task: Annotated[str, Field(description='Task id, e.g. "t17"')],
            members: Annotated[
                int,
                Field(
                    strict=True,
                    ge=1,
                    description=(
                        "How many agents hold this shard, this one included (the claim is confirmed "
                        "on a majority of them; a wrong number voids the guarantee)"
                    ),
                ),
            ],
            timeout: Annotated[
                float, Field(description=("Seconds each of the two quorum steps may take (max 60)"))
            ] = 10.0,
        ) -> dict[str, Any]:
            """Claim a task so that at most one agent works on it: write the claim, wait until
            a majority of agents hold it, read a majority; won only if no other live claimant
            is seen and the task is not done. Two concurrent claimants may both lose (retry
            later); a lost claim is withdrawn. A claim of an agent declared dead is ignored,
            so its task can be re-run. Do the task only if "won" is true."""
            try:
                return await self.coordination.claim_task(shard, task, members, timeout)
            finally:
                await self.watch_new_shards()

        @self.server.tool()
        async def complete_task(
            shard: ShardArg,
            task: Annotated[str, Field(description='Task id this agent claimed, e.g. "t17"')],
            result: Annotated[
                Any, Field(description="Optional result, in the JSON form (as write takes)")
            ] = None,
            members: Annotated[
                int,
                Field(
                    strict=True,
                    ge=1,
                    description=(
                        "How many agents hold this shard, this one included: returns once a "
                        "majority holds the completion (1: once it is on disk here)"
                    ),
                ),
            ] = 1,
            timeout: Annotated[
                float, Field(description="Seconds to wait for that majority (max 60)")
            ] = 10.0,
        ) -> dict[str, Any]:
            """Mark a task this agent won with claim_task as done (with an optional result)
            and drop the claim, in one write; the first completion of a task is kept. Refused,
            writing nothing, if this agent does not hold the task or it is already done."""
            return await self.coordination.complete_task(shard, task, result, members, timeout)

        @self.server.tool()
        async def release_task(
            shard: ShardArg,
            task: Annotated[str, Field(description='Task id this agent claimed, e.g. "t17"')],
        ) -> dict[str, Any]:
            """Give back a task this agent claimed, without doing it: any agent may then claim
            it. Refused, writing nothing, if this agent does not hold the task."""
            return await self.coordination.release_task(shard, task)

    def _refuse_unknown_arguments(self) -> None:
        """Make an argument no tool takes (a misspelt ``"pth"``) a tool error naming it: the
        SDK drops it by default, and a ``write`` meant for ``/tasks`` then patches the shard's
        top level."""
        try:  # the SDK's private tool table (mcp 2.x): no public hook for it either
            tools = self.server._tool_manager.list_tools()
            for tool in tools:
                loose = tool.fn_metadata.arg_model
                config = {**loose.model_config, "extra": "forbid"}
                strict = type(loose.__name__, (loose,), {"model_config": config})
                tool.fn_metadata.arg_model = strict
        except AttributeError:  # another SDK: serve as it does, and say so once
            logger.warning(
                "this MCP SDK's tool table is not the one crdtsync knows: arguments no tool "
                "takes are ignored (not refused) by this server"
            )

    # -- resources -------------------------------------------------------------------------------

    def _register_resources(self) -> None:
        @self.server.resource(
            "crdtsync://shard/{+name}",
            name="shard",
            mime_type="application/json",
            description="A shard's whole state in crdtsync's JSON form",
        )
        async def shard_resource(name: str) -> str:
            return await self._shard_text(name)

        lowlevel = self.server._lowlevel_server  # the SDK has no public hook for 2025-era subscribe
        lowlevel.add_request_handler(
            "resources/subscribe", types.SubscribeRequestParams, self._on_subscribe
        )
        lowlevel.add_request_handler(
            "resources/unsubscribe", types.UnsubscribeRequestParams, self._on_unsubscribe
        )

    async def _shard_text(self, name: str) -> str:
        try:
            result = await self.tools.read(name, "")
        except ToolError as exc:
            raise ResourceNotFoundError(str(exc)) from None
        return jsonform.dumps(result["value"])

    def _add_shard_resource(self, name: str) -> None:
        async def read() -> str:
            return await self._shard_text(name)

        self.server.add_resource(
            FunctionResource(
                uri=SHARD_URI.format(name=name),
                name=name,
                mime_type="application/json",
                description=f"shard {name!r}",
                fn=read,
            )
        )

    async def _on_subscribe(
        self, ctx: Any, params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        self._legacy.setdefault(str(params.uri), set()).add(ctx.session)
        return types.EmptyResult()

    async def _on_unsubscribe(
        self, ctx: Any, params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self._legacy.get(str(params.uri), set()).discard(ctx.session)
        return types.EmptyResult()

    # -- changes -> notifications ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watching(self, poll: float = 0.1) -> Any:
        """Watch every shard (and shards that appear later) while the block runs."""
        supervisor = asyncio.create_task(self._supervise(poll))
        try:
            yield self
        finally:
            supervisor.cancel()
            for task in self._watched.values():
                task.cancel()
            await asyncio.gather(supervisor, *self._watched.values(), return_exceptions=True)

    async def _supervise(self, poll: float) -> None:
        first = True
        while True:
            fresh = await self.watch_new_shards()
            if fresh and not first:
                await self.bus.publish(ResourcesListChanged())
            first = False
            await asyncio.sleep(poll)

    async def watch_new_shards(self) -> list[str]:
        """Start watching shards that appeared since the last call (a peer's new shard shows
        up in the store); the tools call this too, so a shard a client has seen is watched."""
        fresh = [n for n in self.agent.shard_names() if n not in self._watched]
        for name in fresh:
            self._add_shard_resource(name)
            shard = await self.agent.shard(name)
            self._watched[name] = asyncio.create_task(self._watch(shard))
        if fresh:
            await asyncio.sleep(0)  # let the new watchers subscribe before we return
        return fresh

    async def _watch(self, shard: Any) -> None:
        uri = SHARD_URI.format(name=shard.name)
        async for _change in shard.changes():
            await self.bus.publish(ResourceUpdated(uri=uri))
            for session in list(self._legacy.get(uri, ())):
                try:
                    await session.send_resource_updated(uri)
                except Exception:  # the session is gone: forget it  # noqa: BLE001
                    self._legacy[uri].discard(session)


async def serve(
    agent_options: dict[str, Any],
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 0,
    shards: Sequence[str] = (),
) -> None:
    """Run an agent and serve MCP on ``transport`` (``"stdio"`` or ``"http"``) until stopped.

    A JSON ``ready`` line (agent address, MCP URL) goes to stderr: stdout is the stdio channel.
    """
    if transport == "http" and host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"--host {host!r}: the MCP HTTP server has no authentication and binds "
            f"to loopback only ({', '.join(LOOPBACK_HOSTS)})"
        )
    async with Agent(**agent_options) as agent:
        for name in shards:
            await agent.shard(name)
        mcp = CrdtMcp(agent)
        async with mcp.watching():
            if transport == "stdio":
                _ready(agent, "stdio")
                await mcp.server.run_stdio_async()
            elif transport == "http":
                await _serve_http(mcp, agent, host, port)
            else:
                raise ValueError(f"unknown transport {transport!r}: use stdio or http")


async def _serve_http(mcp: CrdtMcp, agent: Agent, host: str, port: int) -> None:
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    app = mcp.server.streamable_http_app(host=host)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    url_host = f"[{host}]" if ":" in host else host
    _ready(agent, f"http://{url_host}:{bound}/mcp")
    await server.serve(sockets=[sock])


def _ready(agent: Agent, mcp_url: str) -> None:
    sys.stderr.write(
        json.dumps(
            {"event": "ready", "agent": agent.name, "address": agent.address, "mcp": mcp_url}
        )
        + "\n"
    )
    sys.stderr.flush()
