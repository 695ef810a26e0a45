"""Parsing and checking what a request brings: query parameters, JSON bodies, JSON Pointers.

Each helper raises :class:`~crdtsync.http.problems.Problem` (a 4xx) on bad input, before any
handler writes anything.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request

from ..jsonform import JsonFormError, loads
from .problems import Problem

__all__ = [
    "JSON_TYPES",
    "MAX_TIMEOUT",
    "body_field",
    "flag_param",
    "json_body",
    "pointer_keys",
    "quorum_param",
    "replicated_param",
    "timeout_param",
]

JSON_TYPES = ("application/json", "application/merge-patch+json")
MAX_TIMEOUT = 60.0


def timeout_param(
    request: Request, default: float = 5.0, *, name: str = "timeout", limit: float = MAX_TIMEOUT
) -> float:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= limit):
        raise Problem(
            400,
            "invalid-parameter",
            "Invalid query parameter",
            f"{name} must be a number of seconds in (0, {limit:g}], not {text!r}",
        )
    return value


def _decimal(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``"\u00b2"``, on which ``int()`` raises;
    and at most 18 of them, so the int is cheap and every caller's bound check refuses it."""
    return len(text) <= 18 and text.isascii() and text.isdigit()  # int() fails past 4300


def quorum_param(request: Request) -> int | str | None:
    text = request.query_params.get("quorum")
    if text is None:
        return None
    if text in ("majority", "all"):
        return text
    if _decimal(text) and 1 <= int(text) <= 1000:
        return int(text)
    raise Problem(
        400,
        "invalid-parameter",
        "Invalid query parameter",
        f"quorum must be an integer 1-1000, 'majority' or 'all', not {text!r}",
    )


def replicated_param(request: Request) -> int:
    text = request.query_params.get("replicated")
    if text is None:
        return 0
    if _decimal(text) and int(text) <= 1000:
        return int(text)
    raise Problem(
        400,
        "invalid-parameter",
        "Invalid query parameter",
        f"replicated must be an integer 0-1000 (peers that must hold the change), not {text!r}",
    )


def flag_param(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "false").lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise Problem(
        400, "invalid-parameter", "Invalid query parameter", f"{name} must be true or false"
    )


async def json_body(request: Request, limit: int) -> Any:
    """The request's JSON body, parsed strictly, at most ``limit`` bytes."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send JSON (Content-Type: {' or '.join(JSON_TYPES)}), not {ctype or 'nothing'!r}",
        )
    declared = request.headers.get("content-length")
    if declared is not None and _decimal(declared) and int(declared) > limit:
        raise Problem(
            413, "body-too-large", "Body too large", f"the body may be at most {limit} bytes"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(
                413, "body-too-large", "Body too large", f"the body may be at most {limit} bytes"
            )
        chunks.append(chunk)
    try:
        return loads(b"".join(chunks))
    except JsonFormError as exc:
        raise Problem(400, "invalid-json", "Invalid JSON", str(exc)) from None


def pointer_keys(pointer: str) -> list[str]:
    if not pointer.startswith("/") or not _utf8(pointer):
        raise Problem(
            400,
            "invalid-parameter",
            "Invalid query parameter",
            f"path must be a JSON Pointer starting with '/', in valid Unicode (no lone "
            f"surrogate), not {pointer!r}",
        )
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _utf8(text: str) -> bool:
    """Whether ``text`` has a UTF-8 form (a body's ``"\\ud800"`` escape gives one that has not,
    and no key can hold it: pycrdt fails on the lookup)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def body_field(body: Any, field: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    if not isinstance(body, dict):
        raise Problem(422, "invalid-body", "Invalid body", "the body must be a JSON object")
    if field not in body:
        if required:
            raise Problem(422, "invalid-body", "Invalid body", f"the body needs {field!r}")
        return None
    value = body[field]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's "integer" includes 2.0
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise Problem(422, "invalid-body", "Invalid body", f"{field!r} has the wrong type")
    return value
