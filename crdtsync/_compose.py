"""The composition root: the one place that wires the default transport into the agent.

Why here and not in :mod:`crdtsync.agent`: the agent is a driver of the sans-I/O core that
takes any :class:`~crdtsync.transport.TransportFactory`; if it imported the websocket driver,
every layer check would see the agent depend on a concrete transport (it did, lazily, in
``_start_gossip``), and a second transport (the simulator, MQTT) would sit below it instead of
beside it. Instead ``crdtsync/__init__.py`` runs :func:`install_defaults` once. A package's
``__init__`` always runs before any of its submodules is imported, so ``from crdtsync import
Agent`` and ``from crdtsync.agent import Agent`` both see the default; nothing else has to
remember to call it. The factory imports websockets only when an agent actually starts gossip,
as before, so ``import crdtsync`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _extensions
from .transport import Transport, default_factory, set_default_factory

if TYPE_CHECKING:
    from .gossip import GossipCore
    from .security.credentials import Credentials

__all__ = ["http_server", "install_defaults", "sample_metrics", "websocket_transport"]


def websocket_transport(
    core: GossipCore,
    *,
    listen: str | None,
    max_frame: int,
    on_activity: Callable[[], None],
    credentials: Credentials | None = None,
) -> Transport:
    """The default :class:`~crdtsync.transport.TransportFactory`: real websockets."""
    from .transports.websocket import WebsocketTransport

    return WebsocketTransport(
        core,
        listen=listen,
        max_frame=max_frame,
        on_activity=on_activity,
        credentials=credentials,
    )


def http_server(agent: Any, options: Any) -> Any:
    """The default HTTP door: :class:`crdtsync.http.HttpServer` (Starlette, imported on use)."""
    from .http import HttpServer

    return HttpServer(agent, options)


def sample_metrics(agent: Any) -> dict[str, Any]:
    """The default metrics reader: :func:`crdtsync.metrics.sample`."""
    from .metrics import sample

    return sample(agent)


def install_defaults() -> None:
    """Make websockets the agents' default transport, unless one was set already, and wire
    the HTTP door and metrics (imported only when an agent uses them)."""
    if default_factory() is None:
        set_default_factory(websocket_transport)
    _extensions.set_http_server(http_server)
    _extensions.set_metrics_sampler(sample_metrics)
