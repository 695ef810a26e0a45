"""The HTTP API's endpoints (see :mod:`crdtsync.http.openapi` for the contract).

Shard names may contain ``/``; in a URL it is written ``%2F`` (``/shards/sensors%2Fkitchen``),
so ``/shards/{name}/events`` is never ambiguous. Routing of ``/shards/...`` therefore reads the
raw (still percent-encoded) path and decodes each segment on its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pycrdt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import CrdtSyncError
from ..jsonform import from_json, list_index, merge_patch, plan_merge_patch, shard_json
from ..names import validate_shard_name
from ..values import check_text
from ..views import ListView, MapView
from . import bridge
from .params import (
    body_field,
    flag_param,
    json_body,
    pointer_keys,
    quorum_param,
    replicated_param,
    timeout_param,
)
from .problems import Problem

if TYPE_CHECKING:
    from .app import HttpContext

__all__ = ["SUB_RESOURCES", "check_access", "health", "peers", "shard_dispatch", "shards_index"]

SUB_RESOURCES = ("events", "append", "text")


def _ctx(request: Request) -> HttpContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


# -- access ------------------------------------------------------------------------------------


async def check_access(request: Request, shard: str | None, write: bool = False) -> None:
    access = await _ctx(request).access(request)
    if shard is None:
        ok = access.can_observe
    else:
        ok = access.can_write(shard) if write else access.can_read(shard)
    if not ok:
        what = (
            "observe this agent"
            if shard is None
            else f"{'write' if write else 'read'} shard {shard!r}"
        )
        raise Problem(403, "forbidden", "Forbidden", f"the token does not allow you to {what}")


# -- endpoints ---------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    """``GET /health``: liveness and readiness (200 when ready, 503 when not)."""
    ctx = _ctx(request)
    agent = ctx.agent
    ready = ctx.ready()
    body = {
        "agent": agent.name,
        "live": True,
        "ready": ready,
        "connected": sum(1 for p in agent.peers if p.state == "connected"),
        "known": len(agent.peers),
        "uptime": round(time.monotonic() - ctx.started, 3),
    }
    return _json(body, 200 if ready else 503)


async def peers(request: Request) -> Response:
    """``GET /peers``: every agent known here, with connection state and queues."""
    await check_access(request, None)
    agent = _ctx(request).agent
    return _json({"agent": agent.name, "address": agent.address, "peers": bridge.peer_rows(agent)})


async def shards_index(request: Request) -> Response:
    """``GET /shards``: the shards held here with keys, bytes, holders and per-peer lag."""
    await check_access(request, None)
    access = await _ctx(request).access(request)
    infos = bridge.shard_infos(_ctx(request).agent)
    return _json({"shards": [i.to_json() for i in infos if access.can_read(i.name)]})


async def shard_dispatch(request: Request) -> Response:
    """Everything under ``/shards/{name}``: decode the name, pick the sub-resource."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    parts = path.split("/")[2:]  # "", "shards", name, [sub]
    if not parts or not parts[0]:
        raise Problem(404, "not-found", "Not found", "no shard name in the path")
    try:
        name = unquote(parts[0], errors="strict")
    except UnicodeDecodeError:
        raise Problem(
            400, "invalid-shard-name", "Invalid shard name", "the shard name is not UTF-8"
        ) from None
    sub = parts[1] if len(parts) > 1 else None
    if len(parts) > 2 or (sub is not None and sub not in SUB_RESOURCES):
        raise Problem(
            404,
            "not-found",
            "Not found",
            f"no resource {path!r}; a shard name containing '/' is written %2F in URLs "
            f"(/shards/a%2Fb), and a shard's sub-resources are {', '.join(SUB_RESOURCES)}",
        )
    try:
        validate_shard_name(name)
    except CrdtSyncError as exc:
        raise Problem(400, "invalid-shard-name", "Invalid shard name", str(exc)) from None
    method = request.method
    allowed = {
        None: ("GET", "PATCH", "DELETE"),
        "events": ("GET",),
        "append": ("POST",),
        "text": ("POST",),
    }[sub]
    if method == "HEAD" and "GET" in allowed:
        method = "GET"
    if method not in allowed:
        raise Problem(
            405,
            "method-not-allowed",
            "Method not allowed",
            f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )
    handler = {
        (None, "GET"): _get,
        (None, "PATCH"): _patch,
        (None, "DELETE"): _delete,
        ("events", "GET"): _events,
        ("append", "POST"): _append,
        ("text", "POST"): _text,
    }[(sub, method)]
    return await handler(request, name)


async def _get(request: Request, name: str) -> Response:
    await check_access(request, name)
    agent = _ctx(request).agent
    quorum, timeout = quorum_param(request), timeout_param(request)
    pointer = request.query_params.get("path")
    shard = bridge.local_shard(agent, name)
    if shard is not None and quorum in (None, 1):
        value: Any = shard_json(shard)  # live: Text stays tagged as $text
    else:
        access = await _ctx(request).access(request)  # (cached)
        try:
            value = await agent.read_json(name, quorum=quorum, timeout=timeout)
        finally:  # it waited: its token may have ended meanwhile (then a 401, not the data)
            _ctx(request).hub.ends.refuse_if_ended(access)
    if pointer is not None:
        value = _resolve_json(value, pointer)
    return _json(value)


def _resolve_json(value: Any, pointer: str) -> Any:
    for key in pointer_keys(pointer):
        if isinstance(value, dict) and ("$" + key if key.startswith("$") else key) in value:
            value = value["$" + key if key.startswith("$") else key]
        elif isinstance(value, list) and (i := list_index(key)) is not None and i < len(value):
            value = value[i]
        else:
            raise Problem(
                404, "no-such-path", "No such path", f"nothing at {pointer!r} in the shard"
            )
    return value


def _check_write_params(request: Request) -> None:
    """Refuse bad ``replicated``/``timeout`` before anything is written."""
    k = replicated_param(request)
    timeout_param(request)
    if k and not bridge.has_gossip(_ctx(request).agent):
        raise Problem(
            409,
            "conflict",
            "Request conflicts with this agent's state",
            f"replicated={k} needs peers, and this agent gossips with none "
            "(start it with listen= or peers=); nothing was written",
        )


async def _after_write(request: Request, shard: Any, writes: int) -> Response:
    k, timeout = replicated_param(request), timeout_param(request)
    ctx = _ctx(request)
    ctx.count_write(shard.name, writes)
    if k:
        await shard.replicated(peers=k, timeout=timeout)
    return _json({"shard": shard.name, "writes": writes, "replicated": k})


async def _patch(request: Request, name: str) -> Response:
    await check_access(request, name, write=True)
    patch = await json_body(request, _ctx(request).max_body)
    _check_write_params(request)
    agent = _ctx(request).agent
    if name not in agent.shard_names():
        plan_merge_patch(_empty_map(), patch)  # a refused patch must not create the shard
    shard = await agent.shard(name)
    ops = merge_patch(shard, patch)
    return await _after_write(request, shard, len(ops))


def _empty_map() -> MapView:
    """A detached empty map: what a new shard looks like, to validate a patch against."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    return MapView(doc.get("root", type=pycrdt.Map))


def _target(shard: MapView, pointer: str) -> tuple[Any, str]:
    """The container holding the last key of ``pointer``, and that key."""
    keys = pointer_keys(pointer)
    node: Any = shard
    for key in keys[:-1]:
        node = _step(node, key, pointer)
    return node, keys[-1]


def _step(node: Any, key: str, pointer: str) -> Any:
    if isinstance(node, MapView) and key in node:
        return node[key]
    if isinstance(node, ListView) and (i := list_index(key)) is not None and i < len(node):
        return node[i]
    raise Problem(404, "no-such-path", "No such path", f"nothing at {pointer!r} in the shard")


async def _delete(request: Request, name: str) -> Response:
    await check_access(request, name, write=True)
    pointer = request.query_params.get("path")
    if not pointer:
        raise Problem(
            400,
            "invalid-parameter",
            "Invalid query parameter",
            "give the JSON Pointer of the key to delete: ?path=/tasks/t1",
        )
    _check_write_params(request)
    shard = bridge.local_shard(_ctx(request).agent, name)
    if shard is None:
        raise Problem(404, "shard-not-found", "Shard not found", f"shard {name!r} is not held here")
    parent, key = _target(shard, pointer)
    _step(parent, key, pointer)  # 404 when absent
    if isinstance(parent, ListView):
        del parent[int(key)]  # an index: _step checked it
    elif isinstance(parent, MapView) and key not in parent.crdt:  # a named container
        raise Problem(
            409,
            "named-container",
            "A named container cannot be deleted",
            f"{pointer!r} is a named container (shard.counter/map/list/text), which lives "
            "beside the shard's keys and cannot be deleted; nothing was written",
        )
    else:
        del parent[key]
    return await _after_write(request, shard, 1)


async def _append(request: Request, name: str) -> Response:
    """``POST /shards/{name}/append``: ``{"path": "/log", "values": [...]}`` appends in one
    transaction, creating the list if the key is absent."""
    await check_access(request, name, write=True)
    body = await json_body(request, _ctx(request).max_body)
    pointer = body_field(body, "path", str)
    raw_values = body_field(body, "values", list)
    values = [from_json(v, f"/values/{i}") for i, v in enumerate(raw_values)]
    _check_write_params(request)
    shard = await _ctx(request).agent.shard(name)
    parent, key = _target(shard, pointer)
    current = parent.get(key) if isinstance(parent, MapView) else _step(parent, key, pointer)
    if current is None and isinstance(parent, MapView) and key not in parent:
        parent[key] = values
    elif isinstance(current, ListView):
        current.extend(values)
    else:
        raise Problem(409, "not-a-list", "Not a list", f"the value at {pointer!r} is not a list")
    return await _after_write(request, shard, len(values))


async def _text(request: Request, name: str) -> Response:
    """``POST /shards/{name}/text``: ``{"path", "index", "insert": str}`` and/or ``"delete": n``
    edits a collaborative Text in one transaction (creating it if the key is absent)."""
    await check_access(request, name, write=True)
    body = await json_body(request, _ctx(request).max_body)
    pointer = body_field(body, "path", str)
    index = body_field(body, "index", int)
    insert = body_field(body, "insert", str, required=False)
    delete = body_field(body, "delete", int, required=False)
    if insert is None and delete is None:
        raise Problem(
            422,
            "invalid-body",
            "Invalid body",
            "give 'insert' (a string) and/or 'delete' (a count)",
        )
    if index < 0 or (delete is not None and delete < 0):
        raise Problem(422, "invalid-body", "Invalid body", "index and delete must be >= 0")
    if insert is not None:  # before anything is created or deleted (422, nothing written)
        check_text(insert, "'insert'")
    _check_write_params(request)
    shard = await _ctx(request).agent.shard(name)
    parent, key = _target(shard, pointer)
    if isinstance(parent, MapView) and key not in parent:
        if index != 0 or delete:
            raise Problem(
                404, "no-such-path", "No such path", f"no text at {pointer!r} to edit at {index}"
            )
        parent[key] = pycrdt.Text(insert or "")
        return await _after_write(request, shard, 1)
    text = _step(parent, key, pointer)
    if not isinstance(text, pycrdt.Text):
        raise Problem(409, "not-a-text", "Not a text", f"the value at {pointer!r} is not a Text")
    length = len(text)
    if index > length or (delete is not None and index + delete > length):
        raise Problem(
            422,
            "out-of-range",
            "Out of range",
            f"the text is {length} characters long; cannot edit at {index}",
        )
    with shard.transaction():
        if delete:
            del text[index : index + delete]
        if insert:
            text.insert(index, insert)
    return await _after_write(request, shard, 1)


async def _events(request: Request, name: str) -> Response:
    """``GET /shards/{name}/events``: server-sent events of every change (see events.py)."""
    await check_access(request, name)
    snapshot = flag_param(request, "snapshot")
    wait = (
        timeout_param(request, default=0.0, name="wait", limit=86400.0)
        if "wait" in request.query_params
        else None
    )
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    ctx = _ctx(request)
    access = await ctx.access(request)  # (cached): its token's end ends the stream
    shard = await ctx.agent.shard(name)
    return StreamingResponse(
        ctx.hub.stream(shard, last, snapshot=snapshot, wait=wait, access=access),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
