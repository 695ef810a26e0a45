"""The HTTP door of an agent: a JSON API, server-sent events, Prometheus metrics, a dashboard.

``Agent(..., http="127.0.0.1:8080")`` (or ``crdtsync agent --http 127.0.0.1:8080``) serves:

* ``GET /shards``, ``GET|PATCH|DELETE /shards/{name}``, ``POST /shards/{name}/append``,
  ``POST /shards/{name}/text``, ``GET /shards/{name}/events`` (SSE), ``GET /peers``,
  ``GET /health``, ``GET /metrics``, ``GET /openapi.json`` and the dashboard at ``/``.
* Values in the JSON form of :mod:`crdtsync.jsonform`; every error as RFC 9457 problem JSON.
* Authorisation through one hook (:mod:`crdtsync.http.access`).

Built on Starlette and uvicorn (see README: why).
"""

from __future__ import annotations

from .access import FULL, NONE, Access, Authorizer
from .server import HttpOptions, HttpServer, parse_bind

__all__ = ["FULL", "NONE", "Access", "Authorizer", "HttpOptions", "HttpServer", "parse_bind"]
