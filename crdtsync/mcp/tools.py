"""What the MCP tools do, over the public :class:`~crdtsync.Agent` API and nothing else.

Every tool validates its whole input against the current state before it writes, then writes
in one shard transaction (one delta, replicated as one), then flushes, so a tool that returns
is durable on this agent's disk. Every refusal is a :class:`~mcp.server.mcpserver.exceptions.
ToolError` whose message says what was wrong and what is allowed, for the model to read and
correct its call; nothing of a refused call is written. Values travel in crdtsync's JSON form
(:mod:`crdtsync.jsonform`): ints and floats kept apart, ``{"$bytes": ...}``, ``{"$text": ...}``.
"""

from __future__ import annotations

from typing import Any

import pycrdt
from mcp.server.mcpserver.exceptions import ToolError

from .. import (
    Agent,
    Counter,
    CrdtSyncError,
    InvalidShardName,
    ListView,
    MapView,
    ReplicationTimeout,
    Shard,
    ShardNotFound,
    UnsupportedValue,
    jsonform,
)
from ..values import check_text

__all__ = ["SHARD_URI", "ShardTools", "parse_pointer"]

#: URI of a shard as an MCP resource.
SHARD_URI = "crdtsync://shard/{name}"
_MAX_LISTED = 20


def parse_pointer(path: str) -> list[str]:
    """RFC 6901 JSON Pointer -> tokens (``""`` is the whole shard, ``"/tasks/t1"`` a key)."""
    if path == "":
        return []
    if not path.startswith("/"):
        raise ToolError(
            f'path {path!r} is not a JSON Pointer: use "" for the whole shard or '
            f"'/key/subkey/0' (a '/' before every key), e.g. {'/' + path!r}"
        )
    try:
        check_text(path, "path")
    except UnsupportedValue:  # no key can hold it: say so, not a crash on lookup
        raise ToolError(
            f"path {path!r} holds a lone surrogate (half of a UTF-16 pair), which no key "
            "can hold: send the path as valid Unicode; nothing was written"
        ) from None
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _empty_map() -> MapView:
    """A detached empty map: what a new shard looks like, to validate a patch against."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    return MapView(doc.get("root", type=pycrdt.Map))


def _kind(value: Any) -> str:
    """What ``value`` is, in the words of the JSON form (for error messages)."""
    if isinstance(value, MapView):
        return "a map"
    if isinstance(value, ListView):
        return "a list"
    if isinstance(value, pycrdt.Text):
        return "a Text"
    if isinstance(value, Counter):
        return "a counter"
    if isinstance(value, bool) or value is None:
        return f"the leaf value {jsonform.dumps(value)}"
    if isinstance(value, (int, float)):  # ints come back as a subclass (_DerivedInt)
        return f"the number {jsonform.dumps(jsonform.to_json(value))}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray)):
        return "a $bytes value"
    return f"a {type(value).__name__} value"


def _keys_hint(view: MapView) -> str:
    keys = list(view)
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"keys there: [{shown}{more}]" if keys else "the map there is empty"


class ShardTools:
    """The operations behind the MCP tools, on one started agent."""

    def __init__(self, agent: Agent, *, max_timeout: float = 60.0) -> None:
        self.agent = agent
        self.max_timeout = max_timeout

    # -- shards and paths ----------------------------------------------------------------------

    async def _open(self, name: str, *, create: bool) -> Shard:
        if not create and name not in self.agent.shard_names():
            raise ToolError(
                f"no shard named {name!r} here; {self._shards_hint()} "
                "(write to a new name to create a shard)"
            )
        try:
            return await self.agent.shard(name)
        except InvalidShardName as exc:
            raise ToolError(str(exc)) from None

    def _shards_hint(self) -> str:
        names = self.agent.shard_names()
        shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
        return f"existing shards: [{shown}{' ...' if len(names) > _MAX_LISTED else ''}]"

    def _walk(self, shard: Shard, tokens: list[str], *, upto: int | None = None) -> Any:
        """The live value at ``tokens[:upto]``; a ToolError names the first step that fails."""
        node: Any = shard
        here = ""
        for token in tokens[:upto]:
            step = jsonform.pointer(here, token)
            if isinstance(node, MapView):
                if token not in node:
                    raise ToolError(
                        f"path {step}: no key {token!r} in the map at "
                        f"{here or '(the shard)'}; {_keys_hint(node)}"
                    )
                node = node[token]
            elif isinstance(node, ListView):
                index = jsonform.list_index(token)
                if index is None or index >= len(node):
                    raise ToolError(
                        f"path {step}: the list at {here} has {len(node)} items; "
                        f"use an index 0..{len(node) - 1}"
                    )
                node = node[index]
            else:
                raise ToolError(f"path {step}: {here} is {_kind(node)}, which has no children")
            here = step
        return node

    # -- tools ---------------------------------------------------------------------------------

    def list_shards(self) -> dict[str, Any]:
        """Every shard in this agent's store (or open), with its resource URI."""
        shards = []
        for name in self.agent.shard_names():
            shards.append({"name": name, "uri": SHARD_URI.format(name=name)})
        return {"agent": self.agent.name, "shards": shards}

    async def read(self, shard: str, path: str = "") -> dict[str, Any]:
        """The JSON form of the shard, or of the value at ``path`` in it."""
        tokens = parse_pointer(path)
        if shard in self.agent.shard_names():
            value = self._walk(await self._open(shard, create=False), tokens)
            return {"shard": shard, "path": path, "value": jsonform.to_json(value)}
        try:  # not held here: ask its holders (partial replication), in the JSON form
            state: Any = await self.agent.read_json(shard)
        except InvalidShardName as exc:
            raise ToolError(str(exc)) from None
        except (ShardNotFound, ReplicationTimeout):
            raise ToolError(
                f"no shard named {shard!r} here or on any peer; {self._shards_hint()}"
            ) from None
        for n, token in enumerate(tokens):
            key = "$" + token if token.startswith("$") else token  # the form's escaped keys
            if isinstance(state, dict) and key in state:
                state = state[key]
            elif (
                isinstance(state, list)
                and (index := jsonform.list_index(token)) is not None
                and index < len(state)
            ):
                state = state[index]
            else:
                at = "".join(jsonform.pointer("", t) for t in tokens[: n + 1])
                raise ToolError(f"path {at}: nothing there in shard {shard!r}")
        return {"shard": shard, "path": path, "value": state}

    async def write(self, shard: str, patch: Any, path: str = "") -> dict[str, Any]:
        """Apply an RFC 7386 merge patch to the map at ``path`` (created if absent)."""
        tokens = parse_pointer(path)
        if not isinstance(patch, dict):
            raise ToolError(
                'patch must be a JSON object: {"key": value} sets a key, '
                '{"key": null} deletes it, nested objects merge key by key'
            )
        root_patch: Any = patch
        for token in reversed(tokens):
            root_patch = {("$" + token if token.startswith("$") else token): root_patch}
        if shard not in self.agent.shard_names():  # a new shard: validate before creating it
            try:
                jsonform.plan_merge_patch(_empty_map(), root_patch)
            except jsonform.JsonFormError as exc:
                raise ToolError(f"patch refused, nothing written: {exc}") from None
        target = await self._open(shard, create=True)
        node: Any = target
        for n, token in enumerate(tokens):  # every existing step on the way must be a map
            if not isinstance(node, MapView):
                at = "".join(jsonform.pointer("", t) for t in tokens[:n])
                raise ToolError(
                    f"path {path}: {at} is {_kind(node)}; a merge patch applies "
                    "to maps only (use append for lists, insert_text for Text)"
                )
            if token not in node:
                break
            node = node[token]
        else:
            if not isinstance(node, MapView):
                raise ToolError(
                    f"path {path}: the value there is {_kind(node)}; a merge patch "
                    "applies to maps only (patch its parent to replace it)"
                )
        try:
            ops = jsonform.merge_patch(target, root_patch)
        except jsonform.JsonFormError as exc:
            raise ToolError(f"patch refused, nothing written: {exc}") from None
        await target.flush()
        return {"shard": shard, "changed": ["/".join(("",) + op.path) for op in ops]}

    async def append(self, shard: str, path: str, value: Any) -> dict[str, Any]:
        """Append ``value`` to the list at ``path`` (a new one-item list if absent)."""
        tokens = parse_pointer(path)
        if not tokens:
            raise ToolError(
                "path must name a list inside the shard, e.g. '/log'; the shard itself is a map"
            )
        item = self._value(value)
        self._check_new(shard, tokens)
        target = await self._open(shard, create=True)
        parent = self._walk(target, tokens, upto=-1)
        key = tokens[-1]
        if not isinstance(parent, MapView):
            raise ToolError(f"path {path}: its parent is {_kind(parent)}, not a map")
        with target.transaction():
            if key not in parent:
                parent[key] = [item]
            elif isinstance(parent[key], ListView):
                parent[key].append(item)
            else:
                raise ToolError(
                    f"path {path} is {_kind(parent[key])}; append needs a list "
                    "(or a missing key, which becomes a new list)"
                )
            length = len(parent[key])
        await target.flush()
        return {"shard": shard, "path": path, "length": length}

    async def insert_text(
        self, shard: str, path: str, text: str, index: int | None = None
    ) -> dict[str, Any]:
        """Insert ``text`` into the collaborative Text at ``path`` (at ``index``, default end)."""
        tokens = parse_pointer(path)
        if not tokens:
            raise ToolError("path must name a Text inside the shard, e.g. '/notes'")
        try:  # before anything is created: pycrdt would refuse it after making the Text
            check_text(text, "text")
        except UnsupportedValue as exc:
            raise ToolError(f"{exc} (half of a UTF-16 pair); nothing was written") from None
        if shard not in self.agent.shard_names() and index not in (None, 0):
            raise ToolError(
                f"shard {shard!r} is new, so {path} has no Text yet: only index 0 "
                "(or none) can create it"
            )
        self._check_new(shard, tokens)
        target = await self._open(shard, create=True)
        parent = self._walk(target, tokens, upto=-1)
        key = tokens[-1]
        if not isinstance(parent, MapView):
            raise ToolError(f"path {path}: its parent is {_kind(parent)}, not a map")
        current = parent.get(key)
        if current is None:
            if index not in (None, 0):
                raise ToolError(
                    f"path {path} has no Text yet: only index 0 (or none) can create it"
                )
            with target.transaction():
                parent[key] = pycrdt.Text(text)
            length = len(text)
        elif isinstance(current, pycrdt.Text):
            size = len(current)
            at = size if index is None else index
            if not 0 <= at <= size:
                raise ToolError(
                    f"index {index} is outside the Text at {path}: use 0..{size} "
                    "(or omit it to append)"
                )
            with target.transaction():
                current.insert(at, text)
            length = len(current)
        else:
            raise ToolError(
                f"path {path} is {_kind(current)}, not a Text; create a Text by "
                'inserting at a missing key, or write {"$text": "..."} with write'
            )
        await target.flush()
        return {"shard": shard, "path": path, "length": length}

    async def wait_until_replicated(
        self, shard: str, peers: int = 1, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Return once ``peers`` other agents hold every change to ``shard`` made so far."""
        if peers < 1:
            raise ToolError("peers must be at least 1")
        if not 0 < timeout <= self.max_timeout:
            raise ToolError(f"timeout must be in (0, {self.max_timeout}] seconds")
        target = await self._open(shard, create=False)
        try:
            await target.replicated(peers=peers, timeout=timeout)
        except ReplicationTimeout as exc:
            raise ToolError(f"not replicated within {timeout} s: {exc}") from None
        except CrdtSyncError as exc:  # e.g. no peers at all: say why, not a bare error
            raise ToolError(f"cannot wait for {peers} peer(s) of this agent: {exc}") from None
        return {"shard": shard, "replicated_on_at_least": peers}

    def _check_new(self, shard: str, tokens: list[str]) -> None:
        """Refuse, before creating it, a path a new (empty) shard cannot have a parent for."""
        if len(tokens) > 1 and shard not in self.agent.shard_names():
            raise ToolError(
                f"shard {shard!r} does not exist yet, so {jsonform.pointer('', tokens[0])} "
                "has nothing in it: create the parent first with write, or use a "
                "top-level path like '/log'"
            )

    @staticmethod
    def _value(value: Any) -> Any:
        try:
            return jsonform.from_json(value, drop_nulls=False)
        except jsonform.JsonFormError as exc:
            raise ToolError(f"value refused, nothing written: {exc}") from None
