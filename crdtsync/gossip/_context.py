"""What every component of one :class:`~crdtsync.gossip.GossipCore` shares.

One :class:`Context` per core: the knobs, the generator, the replicas and the policy, the
driver's clock as last seen, the open links, the outbox, and the batching-window timer that
every component may ask for (it is the one flush at the next window boundary).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..messages import Message
from ._yjs import EMPTY_STATE_VECTOR
from .guard import Guard, QuotaSet
from .overlay import FULL, RELAY, TREE, Mode, window_index
from .transfer import chunk_size

if TYPE_CHECKING:
    import random

    from ..replica import ReplicaSet
    from ._source_tree import GridTrees
    from .config import GossipConfig
    from .gate import Gate
    from .links import Link
    from .policy import ReplicationPolicy

__all__ = ["HUB_WINDOW", "LOSSY_WINDOW", "LOSS_MEMORY", "Context"]

_NONE2: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

#: Seconds a noticed loss keeps the rotating relay's redundancy on (see relay.py).
LOSS_MEMORY = 10.0

#: Under loss, the rotating relay's batching window is this share of ``push_interval``
#: (0.105 s for the WAN default 0.13 s). Every agent receives one relay broadcast per window,
#: so the copies of a write that reach an agent (a broadcast and the next relays' repeats,
#: relay.py) come a window apart, and at 20 % loss most writes need a copy after the first
#: at every one of 24 agents: a shorter window brings the second and third copies sooner
#: (the median Glomers latency at 20 % loss fell from ~545 to ~475 ms) for more broadcasts
#: per second. The window keeps only a few milliseconds of margin above a 100 ms hop (a
#: writer's batch must reach the relay before the relay's boundary); lossless, the full
#: window batches more writes per broadcast. See benchmarks/history/glomers-loss.md, "third pass".
LOSSY_WINDOW = 105 / 130

# The relay's term under loss (GossipConfig.hub_term, the "hub term", see _relay_hub.py).
# Under loss one agent relays hub_term windows in a row instead of one, and repeats what it
# broadcast in its next broadcasts: copies of a write reach every agent a window apart from
# the first broadcast on, without waiting for the next relay to hold it (a hop, 100 ms), so
# the window may be shorter than the hop.
#: Under loss with ``hub_term`` > 1, the window is this share of ``push_interval`` (0.092 s
#: for the WAN default 0.13 s). h-glom4: with acks riding on batches and fewer lone echoes,
#: 92 ms costs 3.80-3.98 messages per write in Glomers at 20 % loss (seeds 1-10) with every
#: median at 426-454 ms (96 ms before h-glom4: ~4.0 and 450-468; benchmarks/history/glomers-loss.md).
HUB_WINDOW = 92 / 130


class Context:
    """Shared state of one core's components (see the module docstring)."""

    def __init__(
        self,
        name: str,
        config: GossipConfig,
        rng: random.Random,
        replicas: ReplicaSet,
        policy: ReplicationPolicy,
        quotas: QuotaSet | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.rng = rng
        self.replicas = replicas
        self.policy = policy
        self.now = -math.inf
        self.links: dict[str, Link] = {}
        self.outbox: list[tuple[str, Message]] = []
        #: Messages for every fanout link at once (a Push or an Ack), sent once by the driver.
        self.broadcasts: list[Message] = []
        self.flush_at: float | None = None  # the next window boundary with work, if any
        self.chunk = chunk_size(config.chunk_bytes, config.max_frame)
        #: The overlay mode of the moment (set by the core, which caches the overlay).
        self.mode: Callable[[], Mode] = lambda: FULL
        #: In a grid-shaped tree, our children in each writer's tree (set by the core, from
        #: the cached overlay); None: pass on to every link (see _push_receive._forward).
        self.grid: Callable[[], GridTrees | None] = lambda: None
        #: The tree's shortcut links (GossipConfig.tree_writer_top; set by the core, from the
        #: cached overlay): (names we relay nothing to, names our own writes skip too).
        self.shortcuts: Callable[[], tuple[frozenset[str], frozenset[str]]] = lambda: _NONE2
        #: The security gate (credentials only, see gate.py); None: trust every peer.
        self.gate: Gate | None = None
        #: Quotas across connections (issue #11, see guard.py).
        self.guard = Guard(quotas, config.flood_rate, config.flood_burst)
        #: (peer, shard) -> repairs asked of that peer: a shard found differing in an
        #: anti-entropy round, or a lost push (a counter for the metrics; no behaviour).
        self.repairs_asked: dict[tuple[str, str], int] = {}

        #: When a loss was last noticed (a repair asked, a relay batch unconfirmed): the
        #: rotating relay adds redundancy only while the network loses frames (relay.py).
        self.loss_seen_at = -math.inf
        #: When a peer last sent us a SyncRequest (a repair it asked, or a round's request):
        #: a sign of loss on the sender's side too, for the tail check (_tail_check.py).
        self.sync_asked_at = -math.inf
        #: When a broadcast Push (a medium that fans out: a broker) last came, from anyone:
        #: while they stream in, anti-entropy rounds over broadcast links may be skipped
        #: (AntiEntropy.pushes_suffice).
        self.broadcast_in_at = -math.inf
        #: Rotating relay under loss with a hub term (see _relay_hub.py): how long before a
        #: window boundary our own batch should leave so that it reaches that boundary's
        #: relay just before the boundary (the relay's ``lead``); None: at the boundary.
        self.flush_lead: Callable[[float], float | None] = lambda now: None
        #: The boundary (window index) the scheduled flush aims a batch at, when it was
        #: scheduled ahead of it by ``flush_lead``; None: an ordinary boundary flush.
        self.aim: int | None = None
        #: Told, with the shard's name, when a peer asks for our ack of a shard it waits on
        #: (a WANT_ACK Push, on a link or broadcast; see acks.py): the agent commits what it
        #: holds of the shard now, since an ack covers only what is on disk. Set by whoever
        #: builds the core (``GossipCore(on_ack_wanted=...)``), never by a driver.
        self.on_ack_wanted: Callable[[str], None] | None = None
        #: Whether this agent has a listen address (set by the core's components, from the
        #: membership view, which holds it); see :meth:`client_hub`.
        self.listens: Callable[[], bool] = lambda: True
        self._names_src: object = None
        self._names_cache: tuple[list[str], frozenset[str]] = ([], frozenset())

    def count_repair(self, peer: str, shard: str) -> None:
        """Count one repair of ``shard`` asked of ``peer`` (see :attr:`repairs_asked`)."""
        key = (peer, shard)
        self.repairs_asked[key] = self.repairs_asked.get(key, 0) + 1

    def lossy(self, now: float) -> bool:
        """Whether a loss was noticed within the last :data:`LOSS_MEMORY` seconds."""
        return now - self.loss_seen_at < LOSS_MEMORY

    def send(self, peer: str, msg: Message) -> None:
        """Queue ``msg`` to ``peer`` (the driver reads the outbox after each call)."""
        self.outbox.append((peer, msg))

    def broadcast(self, msg: Message) -> None:
        """Queue ``msg`` for every fanout link at once (see :class:`~.links.Link.fanout`)."""
        self.broadcasts.append(msg)

    def window(self, now: float) -> float:
        """The batching window at ``now``: ``push_interval``, longer in a tree when
        ``tree_push_interval`` is (the LAN config: every hop of a tree applies, commits and
        forwards, so batching pays at each), shorter under loss in the rotating relay (see
        :data:`LOSSY_WINDOW`). Every agent that noticed the loss uses the same aligned
        windows, so they agree on whose turn it is; one that did not yet sends its batch to
        another relay, which passes it on (correct, a broadcast more)."""
        w = self.config.push_interval
        if self.config.tree_push_interval > w and self.mode() == TREE:
            return self.config.tree_push_interval
        if now - self.loss_seen_at < LOSS_MEMORY and self.config.align_windows and w > 0:
            if self.mode() == RELAY:
                return w * (HUB_WINDOW if self.config.hub_term > 1 else LOSSY_WINDOW)
        return w

    def schedule_flush(self, now: float) -> None:
        """Ask for a flush at the end of the current batching window (or, for our own batch
        under the hub term, ahead of a boundary by ``flush_lead``: see _relay_hub.py)."""
        lead = None
        if self.config.hub_term > 1 and self.loss_seen_at > -math.inf and self.config.align_windows:
            lead = self.flush_lead(now)
        if self.flush_at is not None:
            if lead is not None:
                # A flush already due after the aimed time would make our batch miss the
                # boundary: aimed instead (an earlier one makes it anyway).
                w = self.window(now)
                m = math.floor((now + lead) / w) + 1
                at = max(now, m * w - lead)
                if at < self.flush_at:
                    self.flush_at, self.aim = at, m
            return
        w = self.window(now)
        if w <= 0:
            self.flush_at = now
        elif self.config.align_windows:
            if lead is None:
                self.flush_at = (self.window_index(now) + 1) * w
                self.aim = None
            else:
                # Ahead of the boundary by the lead, so the batch reaches that boundary's
                # relay just before it broadcasts (_relay_hub.py).
                m = math.floor((now + lead) / w) + 1
                self.flush_at = max(now, m * w - lead)
                self.aim = m
        else:
            self.flush_at = now + w

    def flush_by(self, at: float) -> None:
        """Have the next flush come at ``at`` at the latest (a tree's relay passing news on,
        ``tree_relay_wait``): an earlier one already due stays."""
        if self.flush_at is None or at < self.flush_at:
            self.flush_at = at

    def window_index(self, now: float) -> int:
        return window_index(now, self.window(now))

    def window_start(self, now: float) -> float:
        """Start of the batching window holding ``now``."""
        w = self.window(now)
        if w <= 0:
            return now
        return self.window_index(now) * w if self.config.align_windows else now - w

    # Nothing about a replica's content is cached here: the core would go stale if anything
    # changed a replica behind its back (and anti-entropy would then wrongly see "equal"). A
    # ReplicaSet caches its digests, invalidated by its own document observers, which see
    # every change. The list of names is derived once per object the ReplicaSet returns: one
    # that returns the same (immutable) sequence while its shards stay the same
    # (ShardRegistry does) makes shard_names() and holds() O(1).

    def _names(self) -> tuple[list[str], frozenset[str]]:
        src = self.replicas.shard_names()
        if src is not self._names_src or not isinstance(src, tuple):
            names = sorted(set(src))
            self._names_src, self._names_cache = src, (names, frozenset(names))
        return self._names_cache

    def names_token(self) -> object:
        """An object that stays the same while the shard names do (to skip work per name)."""
        return self._names()[1]

    def shard_names(self) -> list[str]:
        """The shards held here, sorted (a fresh list: the caller may change it)."""
        return list(self._names()[0])

    def holds(self, shard: str) -> bool:
        """Whether ``shard`` is held here (asked of the ReplicaSet when it can say in O(1):
        while an agent joins a mesh the names change with every shard it receives, and
        rebuilding the cached names for each would make the join quadratic)."""
        holds = getattr(self.replicas, "holds", None)
        if holds is not None:
            return bool(holds(shard))
        return shard in self._names()[1]

    def state_vector(self, shard: str) -> bytes:
        """Our state vector of ``shard`` (empty if we do not hold it)."""
        return self.replicas.state_vector(shard) if self.holds(shard) else EMPTY_STATE_VECTOR

    def readable(self, peer: str, shards: list[str]) -> list[str]:
        """``shards`` cut to those ``peer`` may read (all of them without credentials)."""
        conn = self.links.get(peer)
        if self.gate is None or conn is None or conn.identity is None:
            return shards
        gate, identity = self.gate, conn.identity
        return [s for s in shards if gate.may_send(identity, s)]

    def live_links(self) -> list[Link]:
        return [c for c in self.links.values() if not c.closing]

    # -- Clients of listening agents (full mesh) ---------------------------------------------
    # ("Clients", as GossipConfig.lan()'s docstring names this block.)
    #
    # In a full mesh every agent pushes only its own writes, to the agents it links with, and
    # nobody forwards. Agents without a listen address (behind NAT: "clients") cannot link
    # with each other, so without a rule two clients of one listening agent saw each other's
    # writes only through anti-entropy, and replicated() on one never counted the other.
    # The rule (h-hubfwd):
    #
    # * A client picks one hub: the first by name of its open links to agents that listen
    #   (:meth:`client_hub`). Its Pushes to that hub carry ``Push.forward``; to its other
    #   links, none. The writer decides, so one agent passes each write on, not every
    #   listening agent it is linked with.
    # * In a full mesh a Push with ``forward`` from a client is passed on (what changed the
    #   receiver's state, as in a tree) only to the receiver's links WITHOUT an address
    #   (:meth:`clients_only`): the listening agents got the write from the writer itself
    #   (in a full mesh a client dials every listening agent). The hub's copies carry no
    #   ``forward``: they are not passed on again.
    # * Acks climb back as in a tree: an ack a listening agent gets directly from a client is
    #   relayed (``RelayedAck``) to its other clients that sent it the shard or asked for its
    #   acks lately (acks.py, ``Acks.learn``), so the writer's ``replicated()`` counts them;
    #   a client's WANT_ACK to its hub is passed on to the hub's other clients (as a tree
    #   passes it on), so a reader's too.
    #
    # An agent that listens sends nothing new, and an agent that listens forwards nothing
    # unless a client asked it to: a mesh of listening agents sends the same frames as before
    # (the golden traces pin it). Cost: per client write, one Push per other client of the
    # hub (what they need) and their acks relayed back.

    def client_hub(self) -> str | None:
        """The link our own writes ask to be passed on (see the block comment above): in a
        full mesh, if we do not listen, the first by name of our open links to agents that
        listen; else None."""
        if self.mode() != FULL or self.listens():
            return None
        best: str | None = None
        for c in self.links.values():
            if c.listens and not c.closing and not c.fanout and (best is None or c.name < best):
                best = c.name
        return best

    def clients_only(self, source: Link) -> bool:
        """Whether what ``source`` asked us to pass on goes only to our links without an
        address: in a full mesh, from a client (see the block comment above). (A Push with
        ``forward`` from an agent that listens, in a full mesh, comes only while the overlay
        changes mode: it is passed on as before.)"""
        return not source.listens and self.mode() == FULL
