"""Schemathesis hooks for tests/test_http_schema.py: every 4xx must be an RFC 9457 problem."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def problem_json_on_4xx(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx answer carries an ``application/problem+json`` body with the RFC 9457 members."""
    if not 400 <= response.status_code < 500:
        return None
    ctype = response.headers.get("content-type", [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if ctype.split(";")[0].strip() != "application/problem+json":
        raise AssertionError(f"{response.status_code} answered with {ctype!r}, not problem+json")
    body = json.loads(response.content)
    missing = {"type", "title", "status", "detail"} - set(body)
    if missing or body["status"] != response.status_code:
        raise AssertionError(
            f"problem body lacks {sorted(missing)} or has the wrong status: {body}"
        )
    return True


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """Bound the event streams: a test request must not stay open until its timeout."""
    operation = getattr(context, "operation", None)
    if operation is None or not operation.path.endswith("/events"):
        return query
    query = dict(query or {})
    try:
        valid = 0 < float(query.get("wait", "x")) <= 0.05
    except (TypeError, ValueError):
        valid = False
    if not valid:
        query["wait"] = 0.05
    return query
