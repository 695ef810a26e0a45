"""Doors an agent can open that live in layers above it (the HTTP API, metrics).

The agent is a driver of the core (layer 5); the HTTP server and the metrics registry are
built *on* an agent (layer 6), so the agent must not import them. As with the transport
(:mod:`crdtsync.transport`), the composition root (:mod:`crdtsync._compose`) registers them
here and the agent calls what was registered. Without a registration (a trimmed-down embedding
that never imported the ``crdtsync`` package ``__init__``), asking for one is a clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import UsageError
from .observer import NULL_OBSERVER, Observer

__all__ = [
    "http_server",
    "observer_for",
    "sample_metrics",
    "set_http_server",
    "set_metrics_sampler",
    "set_observer_factory",
]

_http_factory: Callable[[Any, Any], Any] | None = None
_metrics_sampler: Callable[[Any], dict[str, Any]] | None = None
_observer_factory: Callable[[Any], Observer] | None = None


def set_http_server(factory: Callable[[Any, Any], Any] | None) -> None:
    """Register what builds an agent's HTTP server: ``factory(agent, options)``."""
    global _http_factory
    _http_factory = factory


def set_metrics_sampler(sampler: Callable[[Any], dict[str, Any]] | None) -> None:
    """Register what reads an agent's metrics: ``sampler(agent) -> dict``."""
    global _metrics_sampler
    _metrics_sampler = sampler


def set_observer_factory(factory: Callable[[Any], Observer] | None) -> None:
    """Register what gives an agent the :class:`~crdtsync.observer.Observer` its committer
    and transport report to: ``factory(agent)`` (the composition root gives its metrics)."""
    global _observer_factory
    _observer_factory = factory


def observer_for(agent: Any) -> Observer:
    """The observer of ``agent``'s durability and transport events; without a registration,
    one that ignores them (the figures then stay at zero, nothing fails)."""
    return NULL_OBSERVER if _observer_factory is None else _observer_factory(agent)


def http_server(agent: Any, options: Any) -> Any:
    """An HTTP server for ``agent`` (not started); UsageError if none is registered."""
    if _http_factory is None:
        raise UsageError("no HTTP server is wired in (import crdtsync to install the default)")
    return _http_factory(agent, options)


def sample_metrics(agent: Any) -> dict[str, Any]:
    """``agent``'s metrics now; UsageError if no sampler is registered."""
    if _metrics_sampler is None:
        raise UsageError("no metrics are wired in (import crdtsync to install the default)")
    return _metrics_sampler(agent)
