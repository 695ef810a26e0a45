"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

Written by hand next to the routes it describes, and checked against the live server by
``tests/test_http_schema.py`` (schemathesis: every operation, valid and invalid inputs).
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..names import MAX_SHARD_NAME

__all__ = ["openapi_schema"]


def _ref(schema: str) -> dict[str, Any]:
    """A reference to one of the document's component schemas."""
    return {"$ref": f"#/components/schemas/{schema}"}


_PROBLEM = _ref("Problem")


def _version() -> str:
    """The installed distribution's version (the package root is above this layer)."""
    try:
        return version("crdtsync")
    except PackageNotFoundError:  # pragma: no cover (running from an uninstalled tree)
        return "0"


def _content(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {media: {"schema": schema}}


def _response(
    description: str, schema: dict[str, Any], media: str = "application/json"
) -> dict[str, Any]:
    """One response: its description and the schema of its body as ``media``."""
    return {"description": description, "content": _content(schema, media)}


def _problems(*statuses: int) -> dict[str, Any]:
    """The error responses of an operation, each an RFC 9457 problem+json body."""
    text = {
        400: "Invalid request (bad parameter, JSON or shard name)",
        401: "Missing or invalid token",
        403: "The token does not allow this",
        404: "No such shard, path or resource",
        405: "Method not allowed",
        409: "Conflicts with the value there",
        413: "Body too large",
        415: "Body is not JSON",
        422: "JSON that is not a valid shard value or body",
        503: "Agent closing or not ready",
        504: "Not enough peers answered in time",
    }
    return {str(s): _response(text[s], _PROBLEM, "application/problem+json") for s in statuses}


def _param(
    name: str,
    description: str,
    schema: dict[str, Any],
    *,
    at: str = "query",
    required: bool = False,
) -> dict[str, Any]:
    """One operation parameter (a query parameter unless ``at`` says otherwise)."""
    return {
        "name": name,
        "in": at,
        "required": required,
        "description": description,
        "schema": schema,
    }


def _object(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A JSON object schema with these ``required`` keys and ``properties``."""
    return {"type": "object", "required": required, **extra, "properties": properties}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_POINTER = {"type": "string", "pattern": "^/"}
_NAME = _param(
    "name",
    "Shard name; '/' inside it is written %2F.",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_SHARD_NAME,
        "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:\-]*(/[A-Za-z0-9._:\-]+)*$",
    },
    at="path",
    required=True,
)
_TIMEOUT = _param(
    "timeout",
    "Seconds to wait for peers (default 5).",
    {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
)
_REPLICATED = _param(
    "replicated",
    "Answer once this many other agents hold the change durably (504 naming the laggards "
    "otherwise).",
    {"type": "integer", "minimum": 0, "maximum": 1000},
)
_WRITE_PARAMS = [_NAME, _REPLICATED, _TIMEOUT]
_WRITE_OK = {"200": _response("Written", _ref("WriteResult"))}
_JSON_VALUE: dict[str, Any] = {
    "description": "A shard value in its JSON form (see README: ints, $float, "
    "$bytes, $text, $int tags)."
}


def _get(
    operation_id: str, summary: str, responses: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """A GET operation (``extra``: its parameters)."""
    return {
        "get": {"operationId": operation_id, "summary": summary, **extra, "responses": responses}
    }


def _write(
    operation_id: str,
    summary: str,
    body: dict[str, Any],
    *problems: int,
    parameters: list[dict[str, Any]] = _WRITE_PARAMS,
) -> dict[str, Any]:
    """A write operation: the write parameters, a required body (media type -> schema),
    ``WriteResult`` on success and the ``problems`` responses otherwise."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": parameters,
        "requestBody": {"required": True, "content": body},
        "responses": {**_WRITE_OK, **_problems(*problems)},
    }


#: What a write with a JSON body can fail with.
_BODY_PROBLEMS = (400, 401, 403, 404, 409, 413, 415, 422, 503, 504)


def openapi_schema(*, bearer: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict each call).

    With ``bearer`` (the server has an authorizer) every operation but ``/health`` declares
    HTTP bearer authentication.
    """
    doc = copy.deepcopy(_document())  # its parts are shared module constants
    if bearer:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
        doc["security"] = [{"bearer": []}]
        doc["paths"]["/health"]["get"]["security"] = []
    return doc


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crdtsync agent",
            "version": _version(),
            "description": "Read, change and watch the CRDT shards of one crdtsync agent.",
        },
        "paths": {
            "/health": _get(
                "health",
                "Liveness and readiness",
                {
                    "200": _response("Ready", _ref("Health")),
                    "503": _response("Not ready", _ref("Health")),
                },
            ),
            "/peers": _get(
                "peers",
                "Every agent known here",
                {
                    "200": _response(
                        "Peers",
                        _object(
                            ["agent", "peers"],
                            {
                                "agent": _STRING,
                                "address": {"type": ["string", "null"]},
                                "peers": _array(_ref("Peer")),
                            },
                        ),
                    ),
                    **_problems(401, 403),
                },
            ),
            "/metrics": _get(
                "metrics",
                "Prometheus metrics (text exposition format), or as JSON",
                {
                    "200": {
                        "description": "Metrics",
                        "content": {
                            **_content(_STRING, "text/plain"),
                            **_content({"type": "object"}),
                        },
                    },
                    **_problems(400, 401, 403),
                },
                parameters=[
                    _param(
                        "format",
                        "prometheus (default) or json: the dict agent.metrics() returns",
                        {"type": "string", "enum": ["prometheus", "json"]},
                    )
                ],
            ),
            "/shards": _get(
                "listShards",
                "Shards held here",
                {
                    "200": _response(
                        "Shards", _object(["shards"], {"shards": _array(_ref("ShardInfo"))})
                    ),
                    **_problems(401, 403),
                },
            ),
            "/shards/{name}": {
                **_get(
                    "getShard",
                    "The shard's converged state (JSON form)",
                    {
                        "200": _response("The value", _JSON_VALUE),
                        **_problems(400, 401, 403, 404, 409, 503, 504),  # 409: quorum, no peers
                    },
                    parameters=[
                        _NAME,
                        _param(
                            "quorum",
                            "Holders whose state the answer includes: 1-1000, majority or all.",
                            {
                                "oneOf": [
                                    {"type": "integer", "minimum": 1, "maximum": 1000},
                                    {"type": "string", "enum": ["majority", "all"]},
                                ]
                            },
                        ),
                        _TIMEOUT,
                        _param("path", "JSON Pointer of a value inside the shard.", _POINTER),
                    ],
                ),
                "patch": _write(
                    "patchShard",
                    "Apply an RFC 7386 JSON merge patch in one transaction",
                    {
                        **_content({"type": "object"}, "application/merge-patch+json"),
                        **_content({"type": "object"}),
                    },
                    400,
                    401,
                    403,
                    409,
                    413,
                    415,
                    422,
                    503,
                    504,
                ),
                "delete": {
                    "operationId": "deleteKey",
                    "summary": "Delete the value at a JSON Pointer",
                    "parameters": [
                        *_WRITE_PARAMS,
                        _param(
                            "path",
                            "JSON Pointer of the map key or list element.",
                            _POINTER,
                            required=True,
                        ),
                    ],
                    "responses": {**_WRITE_OK, **_problems(400, 401, 403, 404, 409, 503, 504)},
                },
            },
            "/shards/{name}/append": {
                "post": _write(
                    "appendToList",
                    "Append values to a list (created if absent)",
                    _content(
                        _object(["path", "values"], {"path": _POINTER, "values": {"type": "array"}})
                    ),
                    *_BODY_PROBLEMS,
                )
            },
            "/shards/{name}/text": {
                "post": _write(
                    "editText",
                    "Insert into and/or delete from a collaborative Text",
                    _content(
                        _object(
                            ["path", "index"],
                            {
                                "path": _POINTER,
                                "index": {"type": "integer", "minimum": 0},
                                "insert": _STRING,
                                "delete": {"type": "integer", "minimum": 0},
                            },
                            anyOf=[{"required": ["insert"]}, {"required": ["delete"]}],
                        )
                    ),
                    *_BODY_PROBLEMS,
                )
            },
            "/shards/{name}/events": _get(
                "shardEvents",
                "Server-sent events: a snapshot, then every change with origin, author and paths",
                {
                    "200": _response("An event stream", _ref("Event"), "text/event-stream"),
                    **_problems(400, 401, 403, 503),
                },
                parameters=[
                    _NAME,
                    _param(
                        "snapshot",
                        "Also send the shard's JSON form with every change.",
                        {"type": "boolean"},
                    ),
                    _param(
                        "wait",
                        "End the stream after this many seconds (default: never).",
                        {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
                    ),
                    _param("Last-Event-ID", "Resume after this event id.", _STRING, at="header"),
                ],
            ),
        },
        "components": {"schemas": _SCHEMAS},
    }


_SCHEMAS: dict[str, Any] = {
    "Problem": _object(
        ["type", "title", "status", "detail"],
        {
            "type": _STRING,
            "title": _STRING,
            "status": _INTEGER,
            "detail": _STRING,
            "instance": _STRING,
            "pointer": _STRING,
            "lagging": _array(_STRING),
        },
    ),
    "Health": _object(
        ["agent", "live", "ready"],
        {
            "agent": _STRING,
            "live": {"type": "boolean"},
            "ready": {"type": "boolean"},
            "connected": _INTEGER,
            "known": _INTEGER,
            "uptime": {"type": "number"},
        },
    ),
    "Peer": _object(
        ["name", "state"],
        {
            "name": _STRING,
            "address": {"type": ["string", "null"]},
            "state": {"type": "string", "enum": ["connected", "alive", "suspect", "dead"]},
            "neighbour": {"type": "boolean"},
            "queued_bytes": _INTEGER,
            "dropped": _INTEGER,
            "shards": _array(_STRING),
        },
    ),
    "ShardInfo": _object(
        ["name", "keys", "bytes", "holders"],
        {
            "name": _STRING,
            "keys": _INTEGER,
            "bytes": _INTEGER,
            "updates": _INTEGER,
            "holders": _array(_STRING),
            "lag": {"type": "object", "additionalProperties": _INTEGER},
            "lag_seconds": {"type": "object", "additionalProperties": {"type": "number"}},
        },
    ),
    "Event": _object(
        ["event", "data"],
        {
            "event": {"type": "string", "enum": ["snapshot", "change", "reset", "error"]},
            "id": _STRING,
            "data": {"type": ["string", "object"]},
        },
        description="One server-sent event; its data is one line of JSON. The last event of "
        "a stream whose bearer token expired or was revoked is an 'error' whose data is a "
        "problem (token-expired, token-revoked), and the stream ends.",
    ),
    "WriteResult": _object(
        ["shard", "writes"], {"shard": _STRING, "writes": _INTEGER, "replicated": _INTEGER}
    ),
}
