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

import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import _extensions
from .observer import NULL_OBSERVER, Observer
from .transport import (
    Transport,
    TransportFactory,
    default_factory,
    set_broker_builder,
    set_default_factory,
)

if TYPE_CHECKING:
    from .gossip import GossipCore
    from .security.credentials import Credentials

__all__ = [
    "http_server",
    "install_defaults",
    "metrics_observer",
    "mqtt_transport",
    "sample_metrics",
    "websocket_transport",
]


class _WebsocketFactory:
    """The default :class:`~crdtsync.transport.TransportFactory`: real websockets (imported
    when an agent first starts gossip), with the optional ``dial_early`` capability."""

    def __call__(
        self,
        core: GossipCore,
        *,
        listen: str | None,
        max_frame: int,
        on_activity: Callable[[], None],
        credentials: Credentials | None = None,
    ) -> Transport:
        from .transports.websocket import WebsocketTransport

        return WebsocketTransport(
            core,
            listen=listen,
            max_frame=max_frame,
            on_activity=on_activity,
            credentials=credentials,
        )

    def dial_early(self, addresses: tuple[str, ...], *, max_frame: int) -> Any:
        """Start the seeds' connects before the agent opens its store
        (:mod:`crdtsync.transports._ws_early`); the transport built later adopts them."""
        from .transports._ws_early import dial_early

        return dial_early(addresses, max_frame=max_frame)


#: The default transport factory (an instance: called like the function it replaced).
websocket_transport = _WebsocketFactory()


def mqtt_transport(url: str, *, insecure: bool = False) -> TransportFactory:
    """``Agent(broker=url)``: the MQTT driver (imports aiomqtt only when an agent uses it)."""
    try:
        from .transports.mqtt import mqtt_factory
    except ImportError as exc:  # aiomqtt is an optional dependency
        from .errors import UsageError

        raise UsageError(
            "Agent(broker=...) needs aiomqtt: pip install -e '.[mqtt]' in a checkout"
        ) from exc
    return mqtt_factory(url, insecure=insecure)


def http_server(agent: Any, options: Any) -> Any:
    """The default HTTP door: :class:`crdtsync.http.HttpServer` (Starlette, imported on use)."""
    from .http import HttpServer

    return HttpServer(agent, options)


def sample_metrics(agent: Any) -> dict[str, Any]:
    """The default metrics reader: :func:`crdtsync.metrics.sample`."""
    from .metrics import sample

    return sample(agent)


def metrics_observer(agent: Any) -> Observer:
    """The default observer of an agent's events: its :class:`crdtsync.metrics.MetricsSink`
    (prometheus-client is imported when the first agent starts; the sink is made at the
    agent's first event, or when its metrics are first read)."""
    from .metrics import metrics_for

    return _SinkOnFirstEvent(agent, metrics_for)


class _SinkOnFirstEvent:
    """An :class:`~crdtsync.observer.Observer` that makes the agent's metrics sink at its
    first event. Building the sink's prometheus families (a dozen metrics, histogram bucket
    labels) cost ~0.3 ms of CPU inside ``Agent.start()``, on a joining agent's critical path
    (issue 17, h-paper2); every event comes later (a commit, a compaction, a closed
    connection). A sink made later starts from the same zeros, and reading the metrics makes
    it too (:func:`crdtsync.metrics.metrics_for`), so what is reported is unchanged."""

    __slots__ = ("_agent", "_make", "_sink")

    def __init__(self, agent: Any, make: Callable[[Any], Observer]) -> None:
        self._agent = weakref.ref(agent)  # (the agent holds this observer: no cycle)
        self._make = make
        self._sink: Observer | None = None

    def _get(self) -> Observer:
        sink = self._sink
        if sink is None:
            agent = self._agent()
            if agent is None:  # (an event after the agent is gone: nobody can read it)
                return NULL_OBSERVER
            sink = self._sink = self._make(agent)
        return sink

    def committed(self, seconds: float, writes: Mapping[str, tuple[int, int]]) -> None:
        self._get().committed(seconds, writes)

    def compacted(self, shard: str, seconds: float, bytes_before: int, bytes_after: int) -> None:
        self._get().compacted(shard, seconds, bytes_before, bytes_after)

    def closed(self, code: int, by: str) -> None:
        self._get().closed(code, by)


def install_defaults() -> None:
    """Make websockets the agents' default transport (unless one was set already), MQTT what
    ``Agent(broker=...)`` uses, and wire the HTTP door and metrics (each imported only when an
    agent uses it)."""
    if default_factory() is None:
        set_default_factory(websocket_transport)
    set_broker_builder(mqtt_transport)
    _extensions.set_http_server(http_server)
    _extensions.set_metrics_sampler(sample_metrics)
    _extensions.set_observer_factory(metrics_observer)
