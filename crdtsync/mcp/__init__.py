"""crdtsync over the Model Context Protocol: ``crdtsync mcp`` (needs ``pip install -e '.[mcp]'``).

:class:`CrdtMcp` builds the MCP server for a started :class:`~crdtsync.Agent`; :func:`serve`
runs an agent and serves it over stdio or streamable HTTP (loopback only). See the README
section "LLM agents: MCP server" for the tools and resources. The names below load the ``mcp``
SDK on first use, so ``crdtsync`` (and its CLI) import without it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LOOPBACK_HOSTS", "SHARD_URI", "CrdtMcp", "ShardTools", "parse_pointer", "serve"]

_WHERE = {
    "CrdtMcp": "server",
    "serve": "server",
    "LOOPBACK_HOSTS": "server",
    "ShardTools": "tools",
    "SHARD_URI": "tools",
    "parse_pointer": "tools",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
