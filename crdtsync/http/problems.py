"""RFC 9457 problem details: every error the HTTP API answers is ``application/problem+json``.

Handlers raise :class:`Problem` (or let a crdtsync exception escape); :func:`problem_response`
renders it. crdtsync's exceptions map to statuses in one table, :func:`from_exception`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from ..errors import (
    ClosedError,
    CrdtSyncError,
    InvalidShardName,
    ReplicationTimeout,
    ShardNotFound,
    StoreFull,
    UnsupportedValue,
    UsageError,
)
from ..jsonform import JsonFormError

__all__ = ["PROBLEM_JSON", "Problem", "from_exception", "problem_response"]

PROBLEM_JSON = "application/problem+json"
_TYPE = "urn:crdtsync:problem:"


class Problem(Exception):
    """An HTTP error with an RFC 9457 body.

    Args:
        status: the HTTP status.
        slug: short name of the problem type; the ``type`` member is ``urn:crdtsync:problem:<slug>``.
        title: a short, fixed summary of the problem type.
        detail: what exactly went wrong with this request.
        headers: extra response headers (``Allow``, ``WWW-Authenticate``).
        extra: extension members (``pointer``, ``lagging``, ...).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def from_exception(exc: CrdtSyncError) -> Problem:
    """The problem a crdtsync exception raised while serving a request stands for."""
    if isinstance(exc, JsonFormError):
        return Problem(
            422,
            "unsupported-value",
            "Not a valid JSON form of a shard value",
            str(exc),
            pointer=exc.pointer,
        )
    if isinstance(exc, InvalidShardName):
        return Problem(400, "invalid-shard-name", "Invalid shard name", str(exc))
    if isinstance(exc, UnsupportedValue):
        return Problem(422, "unsupported-value", "Unsupported value", str(exc))
    if isinstance(exc, ShardNotFound):
        return Problem(404, "shard-not-found", "Shard not found", str(exc))
    if isinstance(exc, ReplicationTimeout):
        return Problem(
            504,
            "replication-timeout",
            "Not enough peers in time",
            str(exc),
            lagging=list(exc.lagging),
        )
    if isinstance(exc, ClosedError):
        return Problem(503, "closed", "Agent is closing", str(exc))
    if isinstance(exc, StoreFull):
        return Problem(507, "store-full", "Store is full", str(exc))
    if isinstance(exc, UsageError):
        return Problem(409, "conflict", "Request conflicts with this agent's state", str(exc))
    return Problem(500, "internal", "Internal error", f"{type(exc).__name__}: {exc}")


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    """Render ``problem`` as an ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": _TYPE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(problem.extra)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from the request: escape it (\ud800)
            text = json.dumps(body, separators=(",", ":"))
    return Response(
        text,
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_JSON,
    )
