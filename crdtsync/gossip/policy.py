"""How the layer above plugs into the gossip core without the core importing it.

The core owns these interfaces (hashicorp/memberlist's ``Delegate``, automerge-repo's
``sharePolicy``); plug-ins implement them and see the core only through :class:`CoreView`:

* :class:`Service`: handles some message types (the core's dispatch table routes them to it)
  and hears of connections and timers.
* :class:`ReplicationPolicy`: a service that also decides who holds which shard. Every push,
  forward, ack and anti-entropy round of the core asks it. :class:`FullReplication` (every
  agent holds every shard it learns of) is the default; :class:`crdtsync.sharding.Sharding`
  places shards on R agents.

The driver (the agent, the simulator) constructs the plug-ins and hands them to
:class:`~crdtsync.gossip.GossipCore`, which calls ``bind`` once with its view.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ..messages import Hello, Message

if TYPE_CHECKING:
    from ..replica import ReplicaSet
    from .config import GossipConfig

__all__ = ["CoreView", "FullReplication", "ReplicationPolicy", "Service"]


class CoreView(Protocol):
    """What a plug-in may see of, and do through, the core."""

    @property
    def name(self) -> str:
        """This agent's name."""
        ...

    @property
    def mesh(self) -> str:
        """The mesh this agent belongs to."""
        ...

    @property
    def replicas(self) -> ReplicaSet:
        """The shards this agent holds."""
        ...

    @property
    def config(self) -> GossipConfig:
        """The core's knobs (e.g. ``max_batch_bytes`` for the size of replies)."""
        ...

    @property
    def address(self) -> str | None:
        """Where this agent accepts connections, or None."""
        ...

    def connected(self) -> tuple[str, ...]:
        """Names of the peers connected now, sorted."""
        ...

    def members(self, *, listening: bool = False) -> tuple[str, ...]:
        """Other agents not declared dead, sorted (``listening``: with an address only)."""
        ...

    def replicated(self, shard: str, state_vector: bytes, delete_set: bytes) -> tuple[str, ...]:
        """Peers whose durable ack of ``shard`` covers the given state."""
        ...

    def send(self, peer: str, msg: Message) -> None:
        """Queue ``msg`` to connected ``peer`` (in order with the core's own messages)."""
        ...

    def reply_room(self, peer: str) -> bool:
        """Whether a reply (e.g. a read answer) may be built for ``peer`` now: it is
        connected and writable, and the replies to all peers together are within their budget
        (:mod:`crdtsync.gossip.guard`); else the reply waits (back-pressure)."""
        ...

    def replied(self, peer: str, size: int) -> None:
        """``size`` bytes of replies went to ``peer`` (charged to the reply budget)."""
        ...

    def overlay_changed(self) -> None:
        """The plug-in's extra neighbours changed: the overlay must be recomputed."""
        ...


class Service(Protocol):
    """A plug-in of the core that owns some message types (see the module docstring)."""

    #: The message types the core's dispatch table routes to :meth:`receive`.
    messages: tuple[type[Message], ...]

    def bind(self, core: CoreView) -> None:
        """Called once by the core's constructor, before any other call."""
        ...

    def connection_made(self, peer: str, hello: Hello, now: float) -> None:
        """``peer`` connected (after the core's own handshake work)."""
        ...

    def connection_lost(self, peer: str, now: float) -> None:
        """A connection ``connection_made`` reported is gone."""
        ...

    def receive(self, peer: str, msg: Message, now: float) -> None:
        """One of :attr:`messages` came from ``peer``.

        Raises:
            ProtocolError: the peer misbehaved (the driver closes the connection).
        """
        ...

    def tick(self, now: float) -> None:
        """Run the timers that are due."""
        ...

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (None: nothing timed)."""
        ...


class ReplicationPolicy(Service, Protocol):
    """Which agents hold which shards: every decision of the core that depends on it."""

    @property
    def partial(self) -> bool:
        """Whether agents hold only some shards (else every agent holds every shard)."""
        ...

    def holdings(self) -> frozenset[str]:
        """Shards this agent holds (announced in its Hello)."""
        ...

    def sends_to(self, peer: str, shard: str) -> bool:
        """Whether deltas of ``shard`` go to ``peer``."""
        ...

    def accepts(self, shard: str) -> bool:
        """Whether a peer's delta of ``shard`` is applied here."""
        ...

    def shares(self, peer: str) -> bool:
        """Whether an anti-entropy round with ``peer`` can find anything."""
        ...

    def sync_shards(self, peer: str, shards: list[str]) -> list[str]:
        """Of our ``shards`` (sorted), those an anti-entropy round with ``peer`` covers."""
        ...

    def forward_to(self, source: str, shard: str) -> list[str] | None:
        """Peers a delta of ``shard`` from ``source`` is forwarded to (None: the overlay's
        own rule)."""
        ...

    def extra_neighbours(self) -> frozenset[str]:
        """Agents to stay connected to besides the overlay."""
        ...

    def urgent(self, peer: str) -> bool:
        """Whether ``peer`` should be dialled at once, without the dial grace."""
        ...

    def local_update(self, shard: str) -> None:
        """This agent made a delta of ``shard``."""
        ...


class FullReplication:
    """The default policy: every agent holds every shard it learns of, and owns no messages."""

    messages: tuple[type[Message], ...] = ()
    partial = False

    def __init__(self) -> None:
        self._core: CoreView | None = None

    def bind(self, core: CoreView) -> None:
        self._core = core

    def holdings(self) -> frozenset[str]:
        assert self._core is not None, "bind() first"
        shards: Iterable[str] = self._core.replicas.shard_names()
        return frozenset(shards)

    def sends_to(self, peer: str, shard: str) -> bool:
        return True

    def accepts(self, shard: str) -> bool:
        return True

    def shares(self, peer: str) -> bool:
        return True

    def sync_shards(self, peer: str, shards: list[str]) -> list[str]:
        return shards

    def forward_to(self, source: str, shard: str) -> list[str] | None:
        return None

    def extra_neighbours(self) -> frozenset[str]:
        return frozenset()

    def urgent(self, peer: str) -> bool:
        return False

    def local_update(self, shard: str) -> None:
        pass

    def connection_made(self, peer: str, hello: Hello, now: float) -> None:
        pass

    def connection_lost(self, peer: str, now: float) -> None:
        pass

    def receive(self, peer: str, msg: Message, now: float) -> None:
        raise AssertionError(f"FullReplication owns no messages, got {type(msg).__name__}")

    def tick(self, now: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None
