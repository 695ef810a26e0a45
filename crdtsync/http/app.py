"""The Starlette application of one agent's HTTP port.

:func:`create_app` wires the routes (:mod:`.routes`), the dashboard, ``/metrics`` and
``/openapi.json``, renders every error as RFC 9457 problem JSON (:mod:`.problems`), and asks the
one authorisation hook (:mod:`.access`) what each request may do.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import CrdtSyncError
from . import routes
from .access import FULL, Access, Authorizer, bearer_token
from .events import EventHub
from .openapi import openapi_schema
from .problems import Problem, from_exception, problem_response

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["DEFAULT_MAX_BODY", "HttpContext", "create_app"]

DEFAULT_MAX_BODY = 1 << 20  # bytes


@dataclass
class HttpContext:
    """What the handlers of one agent's HTTP app share."""

    agent: Agent
    authorize: Authorizer | None = None
    max_body: int = DEFAULT_MAX_BODY
    hub: EventHub = field(default_factory=EventHub)
    started: float = field(default_factory=time.monotonic)
    closing: bool = False

    async def access(self, request: Request) -> Access:
        """What this request may do, per the authorizer (FULL without one: loopback only)."""
        cached = request.scope.get("crdtsync.access")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        if self.authorize is None:
            access: Access | None = FULL
        else:
            token = bearer_token(request.headers.get("authorization"))
            if token is None and request.method == "GET":
                token = request.query_params.get("access_token")  # RFC 6750 2.3: EventSource
            try:
                result = self.authorize(token)
                access = await result if inspect.isawaitable(result) else result
            except CrdtSyncError as exc:
                raise Problem(
                    401,
                    "unauthorized",
                    "Unauthorized",
                    f"token refused: {exc}",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                ) from None
            if access is None:
                raise Problem(
                    401,
                    "unauthorized",
                    "Unauthorized",
                    "a valid bearer token is needed (Authorization: Bearer <token>)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        assert access is not None
        request.scope["crdtsync.access"] = access
        return access

    def ready(self) -> bool:
        """Whether the agent serves requests (started, not closing)."""
        try:
            self.agent.shard_names()
        except CrdtSyncError:
            return False
        return not self.closing

    def count_write(self, shard: str, writes: int) -> None:
        from ..metrics import metrics_for

        metrics_for(self.agent).http_write(shard, writes)


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc, request.url.path)


async def _on_crdtsync(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CrdtSyncError)
    return problem_response(from_exception(exc), request.url.path)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
    detail = f"no resource {request.url.path!r}" if exc.status_code == 404 else str(exc.detail)
    return problem_response(
        Problem(exc.status_code, slug, title, detail, headers=dict(exc.headers or {})),
        request.url.path,
    )


async def _on_error(request: Request, exc: Exception) -> Response:
    return problem_response(
        Problem(500, "internal", "Internal error", f"{type(exc).__name__}: {exc}"), request.url.path
    )


async def _dashboard(request: Request) -> Response:
    html = resources.files("crdtsync.http").joinpath("dashboard.html").read_text("utf-8")
    return Response(
        html,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; img-src 'self' data:"
        },
    )


async def _openapi(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    return JSONResponse(openapi_schema(bearer=ctx.authorize is not None))


async def _metrics(request: Request) -> Response:
    from ..metrics import render_prometheus

    ctx: HttpContext = request.app.state.ctx
    await routes.check_access(request, None)
    form = request.query_params.get("format", "prometheus")
    if form == "json":  # the same figures as agent.metrics() (crdtsync inspect --peer reads it)
        return JSONResponse(ctx.agent.metrics())
    if form != "prometheus":
        raise Problem(
            400,
            "invalid-parameter",
            "Invalid query parameter",
            f"format must be 'prometheus' or 'json', not {form!r}",
        )
    body, content_type = render_prometheus(ctx.agent)
    return Response(body, media_type=content_type)


def create_app(ctx: HttpContext) -> Starlette:
    """The ASGI app serving ``ctx.agent``."""
    methods = ["GET", "HEAD", "PATCH", "DELETE", "POST", "PUT", "OPTIONS", "TRACE"]
    app = Starlette(
        routes=[
            Route("/", _dashboard, methods=["GET"]),
            Route("/health", routes.health, methods=["GET"]),
            Route("/openapi.json", _openapi, methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
            Route("/peers", routes.peers, methods=["GET"]),
            Route("/shards", routes.shards_index, methods=["GET"]),
            Route("/shards/{rest:path}", routes.shard_dispatch, methods=methods),
        ],
        exception_handlers={
            Problem: _on_problem,
            CrdtSyncError: _on_crdtsync,
            HTTPException: _on_http,
            Exception: _on_error,
        },
    )
    app.state.ctx = ctx
    return app
