"""The agent's wiring: starting its gossip core and transport, and the hooks between its parts.

A mixin of :class:`~crdtsync.agent.Agent` (:class:`_AgentWiring`: building the core and the
transport from its factory, undoing a failed start, and the hooks that the shards and the group
committer call: local deltas to the core, captured states to durable acks), and the
:class:`~crdtsync.shard.ShardHost` the agent gives its shards (:class:`_AgentShardHost`). Split
from :mod:`crdtsync.agent`; like it, this module imports no transport.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import updates
from ._activity import Activity
from ._agent_figures import DurableHistory
from ._registry import ShardRegistry
from .durability import GroupCommitter
from .errors import ClosedError, ReplicationTimeout, UsageError
from .gossip import GossipConfig, GossipCore, QuotaSet
from .shard import Shard
from .sharding import Sharding, ShardingConfig
from .store import ShardStats, Store
from .transport import Transport, TransportFactory

if TYPE_CHECKING:
    from .security.credentials import Credentials

__all__: list[str] = []

#: The agent's logger: log lines keep the name of the module users configure.
_log = logging.getLogger("crdtsync.agent")

#: Loop turns given to early dials once the store is open (see _early_dials_progress).
_EARLY_TURNS = 6
#: Loop turns at most that the end of start() gives adopted early dials to send our Hello
#: (see _hellos_progress).
_HELLO_TURNS = 8

#: Seconds between two asks for acks while replicated() waits (GossipCore.want_acks).
_WANT_ACKS_EVERY = 1.0


class _AgentWiring:
    """Mixin of :class:`~crdtsync.agent.Agent`: start gossip, undo a failed start, and hooks.

    The attributes and methods declared below belong to the agent (set in its ``__init__``).
    """

    name: str
    _credentials: Credentials | None
    _listen: str | None
    _seeds: tuple[str, ...]
    _mesh: str
    _gossip_config: GossipConfig
    _sharding_config: ShardingConfig
    _quotas: QuotaSet | None
    _rng: random.Random
    _store: Store | None
    _committer: GroupCommitter | None
    _registry: ShardRegistry | None
    _core: GossipCore | None
    _transport: Transport | None
    _early_dials: Any
    _early_adopted: bool = False  # the transport took the early dials (see _hellos_progress)
    _activity: Activity
    _history: DurableHistory
    _outgoing: list[tuple[str, bytes]]
    _closed: bool
    _closing: bool

    if TYPE_CHECKING:

        async def shard(self, name: str) -> Shard: ...

    async def _dial_seeds_early(self, factory: TransportFactory) -> None:
        """Start the seeds' connects now, before the store is opened, if the factory can
        (an optional ``dial_early``; not with credentials: TLS and authentication need the
        transport). The transport built in :meth:`_start_gossip` adopts them; nothing is read
        or sent on them before the core exists (``transports/_ws_early.py``)."""
        dial_early = getattr(factory, "dial_early", None)
        seeds = tuple(s for s in self._seeds if s != self._listen)
        if not seeds or self._credentials is not None or not callable(dial_early):
            return
        self._early_dials = dial_early(seeds, max_frame=self._gossip_config.max_frame)
        await asyncio.sleep(0)  # each connect() goes out (one loop turn) before we go on
        await self._closed_while_starting()

    async def _early_dials_progress(self) -> None:
        """With early dials under way, give the loop a few turns (the store is open now):
        a connect that completed meanwhile sends its websocket upgrade request, which the peer
        answers while the registry, core and transport are built. (A completed connect wakes
        its dial one turn after the selector reports it, and the starting task runs first in
        each turn: three turns. Not a wait: with nothing ready each turn costs a poll.)"""
        if self._early_dials is not None:
            for _ in range(_EARLY_TURNS):
                await asyncio.sleep(0)
            await self._closed_while_starting()

    async def _hellos_progress(self) -> None:
        """At the end of ``start()``, when the transport adopted early dials: give the loop
        turns until our Hello went out on each link we dialled, at most :data:`_HELLO_TURNS`
        (with the upgrade not answered yet each turn costs one poll). The seed's upgrade answer
        has usually come while the registry, core and transport were built; without these
        turns our Hello waited for the caller's next await (in the catch-up bench, its
        ``agent.shard()`` and the rest of its set-up: 0.5-1 ms), and so did the seed's whole
        answer (issue 17, h-paper3). Nothing can arrive before our Hello: the acceptor speaks
        only after it (gossip/handshake.py), and the turns stop once it is written. A
        ``close()`` meanwhile closes a started agent; ``start()`` then returns."""
        if not self._early_adopted:
            return
        self._early_adopted = False
        pending = getattr(self._transport, "hellos_pending", None)
        if not callable(pending):
            return
        for _ in range(_HELLO_TURNS):
            if self._closing or self._closed or not pending():
                return
            await asyncio.sleep(0)

    async def _closed_while_starting(self) -> None:
        """``close()`` ran while ``start()`` yielded to its early dials: undo the start."""
        if self._closing or self._closed:
            await self._abort_start()
            raise ClosedError("agent was closed while it started")

    async def _abort_start(self) -> None:
        early, self._early_dials = self._early_dials, None
        if early is not None:
            await early.close()
        transport, committer, store, registry = (
            self._transport,
            self._committer,
            self._store,
            self._registry,
        )
        self._transport = self._core = self._committer = self._registry = self._store = None
        for step in (
            (lambda: transport.close()) if transport is not None else None,
            (lambda: committer.close()) if committer is not None else None,
        ):
            if step is not None:
                try:
                    await step()
                except Exception:  # noqa: BLE001 (the start already failed: report that error)
                    _log.debug("cleanup after a failed start failed", exc_info=True)
        if registry is not None:
            registry.close()
        if store is not None:
            store.close()

    async def _start_gossip(self, replicas: ShardRegistry, factory: TransportFactory) -> None:
        self._core = GossipCore(
            self.name,
            replicas,
            rng=self._rng,
            config=self._gossip_config,
            mesh=self._mesh,
            address=self._listen,
            seeds=self._seeds,
            policy=Sharding(self._sharding_config),
            quotas=self._quotas,
            on_ack_wanted=self._on_ack_wanted,
        )
        # Credentials go only to a factory that is given some: one that cannot authenticate
        # (a test double, a one-process hub) then fails loudly instead of ignoring them.
        extra: dict[str, Any] = (
            {} if self._credentials is None else {"credentials": self._credentials}
        )
        self._transport = factory(
            self._core,
            listen=self._listen,
            max_frame=self._gossip_config.max_frame,
            on_activity=self._activity.set,
            **extra,
        )
        self._activity.bind(self._transport.kick)
        set_observer = getattr(self._transport, "set_observer", None)
        if callable(set_observer):
            set_observer(self._history)  # close codes, for the metrics
        serve_yjs = getattr(self._transport, "serve_yjs", None)
        if self._listen is not None and callable(serve_yjs):
            serve_yjs(self.shard)  # y-websocket clients at /yjs/<shard> (transports/yjsdoor.py)
        early, self._early_dials = self._early_dials, None
        if early is not None:
            adopt = getattr(self._transport, "adopt_early_dials", None)
            if not callable(adopt):
                await early.close()
            else:
                # (closes them itself if its client options differ)
                self._early_adopted = adopt(early) is not False
        watch = getattr(self._transport, "watch_seeds", None)
        if watch is not None:
            watch(self._seeds)
        await self._transport.start()

    # -- hooks from shards and the committer ------------------------------------------------

    def _on_delta(self, shard: Shard, delta: bytes, origin: str | None) -> None:
        """A shard changed (already applied and appended to the store): gossip it, unless
        the core itself applied it (then the core already forwards it)."""
        if origin is None and self._committer is not None:
            # A local write keeps the committer's own bound; the registry announced every
            # append as a peer's (notify_remote), which may be committed later.
            self._committer.notify()
        core = self._core
        if core is None or (self._registry is not None and self._registry.applying):
            return
        if not self._outgoing and core.hold_local(shard.name, delta, time.monotonic()):
            # a stream of writes: held in the core's open coalescing window, no more (its
            # end, or the writer's pause, is the core's deadline: the transport's timer)
            return
        # We are inside the Doc's transaction observer: hand the delta to the core once the
        # transaction is over (the core may read the Doc), with every delta of this turn. The
        # core merges them, and coalesces a stream of writes over its push window
        # (gossip/coalesce.py).
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send_outgoing)
        self._outgoing.append((shard.name, delta))

    def _on_ack_wanted(self, shard: str) -> None:
        """A peer waits in ``replicated()`` for our ack of ``shard`` (the core saw its
        WANT_ACK, whichever driver carried it): commit what we received now, not at the
        group commit's (possibly stretched) bound, since an ack covers only what is on disk."""
        if self._committer is not None and not self._closed:
            # ...and what is still on its way here while it waits (it asks again each second)
            self._committer.hurry(linger=_WANT_ACKS_EVERY)

    def _kick_transport(self) -> None:
        """Execute the core's effects after a call made outside the transport."""
        if self._transport is not None:
            self._transport.kick()

    def _send_outgoing(self, *, closing: bool = False) -> None:
        """Hand this turn's local deltas to the core, per shard (``closing``: and let the ones
        it holds in its coalescing window go now)."""
        outgoing, self._outgoing = self._outgoing, []
        core = self._core
        if core is None or (self._closed and not closing):
            return
        now = time.monotonic()
        by_shard: dict[str, list[bytes]] = {}
        for name, delta in outgoing:
            by_shard.setdefault(name, []).append(delta)
        for name, deltas in by_shard.items():
            core.local_updates(name, deltas, now)
        if closing:
            core.flush_local(now)
        if self._transport is not None:
            self._transport.kick()

    def _before_commit(self) -> Any:
        """Record, per changed shard, the state the coming commit makes durable."""
        registry = self._registry
        if registry is None:
            return None
        captured = {
            name: state
            for name, shard in registry.items()
            if (state := shard.capture()) is not None
        }

        history = self._history

        def done(ok: bool) -> None:
            now = time.monotonic()
            for name, state in captured.items():
                shard = registry.get(name)
                if shard is None:  # dropped meanwhile (handed off to its placement holders)
                    continue
                if ok:
                    shard.mark_durable(state)
                    history.durable(name, state[0], now)  # for the replication lag in seconds
                else:
                    shard.mark_dirty()

        return done if captured else None

    def _on_durable(self, shards: set[str]) -> None:
        """A group commit finished: these shards' captured states are on disk; ack them."""
        if self._core is None or self._closed:  # (closing: the store is going, acks are moot)
            return
        # (not those dropped since: asking the core about them would recreate them empty)
        registry = self._registry
        held = {s for s in shards if registry is not None and s in registry}
        self._core.durable(held, time.monotonic())
        if self._transport is not None:
            self._transport.kick()


class _AgentShardHost:
    """What the agent's shards call (:class:`crdtsync.shard.ShardHost`): group commits, and
    waits on the core's acknowledgements."""

    def __init__(self, committer: GroupCommitter, activity: Activity) -> None:
        self._committer = committer
        self._activity = activity
        self.core: GossipCore | None = None  # set once gossip started
        #: Executes the core's effects after a call from outside the transport (set with core).
        self.kick: Callable[[], None] = lambda: None

    async def flush(self) -> None:
        await self._committer.flush()

    async def compact(self, name: str) -> ShardStats:
        return await self._committer.compact(name)

    async def replicated(self, shard: Shard, peers: int, timeout: float) -> None:
        core = self.core
        if core is None:
            raise UsageError(
                "replicated() needs peers: create the Agent with listen=, peers= or broker="
            )
        if peers < 1:
            return
        target = (updates.state_vector(shard.doc), updates.delete_set(shard.doc))
        await shard.flush()
        deadline = time.monotonic() + timeout
        asked = -math.inf
        while True:
            holders = core.replicated(shard.name, *target)
            if len(holders) >= peers:
                return
            now = time.monotonic()
            if now - asked >= _WANT_ACKS_EVERY:
                # Peers ack a shard only to those that sent it to them: ask for the acks
                # covering what others wrote (a no-op for a peer that acked its state already).
                asked = now
                core.want_acks(shard.name, now)
                self.kick()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                lagging = tuple(p.name for p in core.peers() if p.name not in holders)
                raise ReplicationTimeout(
                    f"shard {shard.name!r}: {len(holders)} of {peers} peers acknowledged within "
                    f"{timeout}s (have: {', '.join(holders) or 'none'}; lagging: "
                    f"{', '.join(lagging) or 'no other agent known'})",
                    lagging,
                )
            await self._activity.wait(min(remaining, 0.1))
