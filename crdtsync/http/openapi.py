"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

Written by hand next to the routes it describes, and checked against the live server by
``tests/test_http_schema.py`` (schemathesis: every operation, valid and invalid inputs).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..names import MAX_SHARD_NAME

__all__ = ["openapi_schema"]

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _version() -> str:
    """The installed distribution's version (the package root is above this layer)."""
    try:
        return version("crdtsync")
    except PackageNotFoundError:  # pragma: no cover (running from an uninstalled tree)
        return "0"


def _problems(*statuses: int) -> dict[str, Any]:
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
    return {
        str(s): {
            "description": text[s],
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        }
        for s in statuses
    }


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "Shard name; '/' inside it is written %2F.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_SHARD_NAME,
        "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:\-]*(/[A-Za-z0-9._:\-]+)*$",
    },
}
_TIMEOUT = {
    "name": "timeout",
    "in": "query",
    "required": False,
    "description": "Seconds to wait for peers (default 5).",
    "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
}
_REPLICATED = {
    "name": "replicated",
    "in": "query",
    "required": False,
    "description": "Answer once this many other agents hold the change durably (504 naming the "
    "laggards otherwise).",
    "schema": {"type": "integer", "minimum": 0, "maximum": 1000},
}
_WRITE_PARAMS = [_NAME, _REPLICATED, _TIMEOUT]
_WRITE_OK = {
    "200": {
        "description": "Written",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WriteResult"}}},
    }
}
_JSON_VALUE: dict[str, Any] = {
    "description": "A shard value in its JSON form (see README: ints, $float, "
    "$bytes, $text, $int tags)."
}


def openapi_schema(*, bearer: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict each call).

    With ``bearer`` (the server has an authorizer) every operation but ``/health`` declares
    HTTP bearer authentication.
    """
    doc = _document()
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
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness and readiness",
                    "responses": {
                        "200": {
                            "description": "Ready",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                        "503": {
                            "description": "Not ready",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                    },
                }
            },
            "/peers": {
                "get": {
                    "operationId": "peers",
                    "summary": "Every agent known here",
                    "responses": {
                        "200": {
                            "description": "Peers",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["agent", "peers"],
                                        "properties": {
                                            "agent": {"type": "string"},
                                            "address": {"type": ["string", "null"]},
                                            "peers": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Peer"},
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        **_problems(401, 403),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text exposition format), or as JSON",
                    "parameters": [
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "description": "prometheus (default) or json: the dict "
                            "agent.metrics() returns",
                            "schema": {"type": "string", "enum": ["prometheus", "json"]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Metrics",
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "application/json": {"schema": {"type": "object"}},
                            },
                        },
                        **_problems(400, 401, 403),
                    },
                }
            },
            "/shards": {
                "get": {
                    "operationId": "listShards",
                    "summary": "Shards held here",
                    "responses": {
                        "200": {
                            "description": "Shards",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["shards"],
                                        "properties": {
                                            "shards": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/ShardInfo"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **_problems(401, 403),
                    },
                }
            },
            "/shards/{name}": {
                "get": {
                    "operationId": "getShard",
                    "summary": "The shard's converged state (JSON form)",
                    "parameters": [
                        _NAME,
                        {
                            "name": "quorum",
                            "in": "query",
                            "required": False,
                            "description": "Holders whose state the answer includes: 1-1000, majority or all.",
                            "schema": {
                                "oneOf": [
                                    {"type": "integer", "minimum": 1, "maximum": 1000},
                                    {"type": "string", "enum": ["majority", "all"]},
                                ]
                            },
                        },
                        _TIMEOUT,
                        {
                            "name": "path",
                            "in": "query",
                            "required": False,
                            "description": "JSON Pointer of a value inside the shard.",
                            "schema": {"type": "string", "pattern": "^/"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The value",
                            "content": {"application/json": {"schema": _JSON_VALUE}},
                        },
                        **_problems(400, 401, 403, 404, 503, 504),
                    },
                },
                "patch": {
                    "operationId": "patchShard",
                    "summary": "Apply an RFC 7386 JSON merge patch in one transaction",
                    "parameters": _WRITE_PARAMS,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/merge-patch+json": {"schema": {"type": "object"}},
                            "application/json": {"schema": {"type": "object"}},
                        },
                    },
                    "responses": {
                        **_WRITE_OK,
                        **_problems(400, 401, 403, 409, 413, 415, 422, 503, 504),
                    },
                },
                "delete": {
                    "operationId": "deleteKey",
                    "summary": "Delete the value at a JSON Pointer",
                    "parameters": [
                        *_WRITE_PARAMS,
                        {
                            "name": "path",
                            "in": "query",
                            "required": True,
                            "description": "JSON Pointer of the map key or list element.",
                            "schema": {"type": "string", "pattern": "^/"},
                        },
                    ],
                    "responses": {**_WRITE_OK, **_problems(400, 401, 403, 404, 409, 503, 504)},
                },
            },
            "/shards/{name}/append": {
                "post": {
                    "operationId": "appendToList",
                    "summary": "Append values to a list (created if absent)",
                    "parameters": _WRITE_PARAMS,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["path", "values"],
                                    "properties": {
                                        "path": {"type": "string", "pattern": "^/"},
                                        "values": {"type": "array"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        **_WRITE_OK,
                        **_problems(400, 401, 403, 404, 409, 413, 415, 422, 503, 504),
                    },
                }
            },
            "/shards/{name}/text": {
                "post": {
                    "operationId": "editText",
                    "summary": "Insert into and/or delete from a collaborative Text",
                    "parameters": _WRITE_PARAMS,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["path", "index"],
                                    "anyOf": [{"required": ["insert"]}, {"required": ["delete"]}],
                                    "properties": {
                                        "path": {"type": "string", "pattern": "^/"},
                                        "index": {"type": "integer", "minimum": 0},
                                        "insert": {"type": "string"},
                                        "delete": {"type": "integer", "minimum": 0},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        **_WRITE_OK,
                        **_problems(400, 401, 403, 404, 409, 413, 415, 422, 503, 504),
                    },
                }
            },
            "/shards/{name}/events": {
                "get": {
                    "operationId": "shardEvents",
                    "summary": "Server-sent events: a snapshot, then every change with origin, author and paths",
                    "parameters": [
                        _NAME,
                        {
                            "name": "snapshot",
                            "in": "query",
                            "required": False,
                            "description": "Also send the shard's JSON form with every change.",
                            "schema": {"type": "boolean"},
                        },
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "description": "End the stream after this many seconds (default: never).",
                            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
                        },
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "description": "Resume after this event id.",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {
                                "text/event-stream": {
                                    "schema": {"$ref": "#/components/schemas/Event"}
                                }
                            },
                        },
                        **_problems(400, 401, 403, 503),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "pointer": {"type": "string"},
                        "lagging": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["agent", "live", "ready"],
                    "properties": {
                        "agent": {"type": "string"},
                        "live": {"type": "boolean"},
                        "ready": {"type": "boolean"},
                        "connected": {"type": "integer"},
                        "known": {"type": "integer"},
                        "uptime": {"type": "number"},
                    },
                },
                "Peer": {
                    "type": "object",
                    "required": ["name", "state"],
                    "properties": {
                        "name": {"type": "string"},
                        "address": {"type": ["string", "null"]},
                        "state": {
                            "type": "string",
                            "enum": ["connected", "alive", "suspect", "dead"],
                        },
                        "neighbour": {"type": "boolean"},
                        "queued_bytes": {"type": "integer"},
                        "dropped": {"type": "integer"},
                        "shards": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "ShardInfo": {
                    "type": "object",
                    "required": ["name", "keys", "bytes", "holders"],
                    "properties": {
                        "name": {"type": "string"},
                        "keys": {"type": "integer"},
                        "bytes": {"type": "integer"},
                        "updates": {"type": "integer"},
                        "holders": {"type": "array", "items": {"type": "string"}},
                        "lag": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "lag_seconds": {
                            "type": "object",
                            "additionalProperties": {"type": "number"},
                        },
                    },
                },
                "Event": {
                    "type": "object",
                    "description": "One server-sent event; its data is one line of JSON.",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"type": "string", "enum": ["snapshot", "change", "reset"]},
                        "id": {"type": "string"},
                        "data": {"type": ["string", "object"]},
                    },
                },
                "WriteResult": {
                    "type": "object",
                    "required": ["shard", "writes"],
                    "properties": {
                        "shard": {"type": "string"},
                        "writes": {"type": "integer"},
                        "replicated": {"type": "integer"},
                    },
                },
            }
        },
    }
