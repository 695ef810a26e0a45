"""The sans-I/O gossip core of crdtsync: who to talk to, what to send, what to apply. No I/O.

:class:`GossipCore` (:mod:`.core`) is the facade a driver calls (see its module docstring for
the driver contract); the protocol's parts live in modules of their own, each owning its state:

==================  =============================================================================
``core``            the facade: driver API, local writes, dispatch table of ``receive``
``_connections``    the facade's handshake, connections and ``receive`` (a mixin of the core)
``_timers``         the facade's ``tick`` order, ``next_deadline``, ``dials``, effects (a mixin)
``config``          :class:`GossipConfig`, every knob with the reason for its default
``policy``          :class:`ReplicationPolicy`, :class:`Service`, :class:`CoreView` (plug-ins)
``membership``      SWIM: reports settled by incarnation, refutation, suspicion timers
``_peer_states``    :class:`PeerState`, :class:`Event`, the transition table (re-exported by ``membership``)
``_report_budget``  reports of death acted on, bounded per reporter (a token bucket each)
``overlay``         FULL / RELAY / TREE as pure functions, :class:`OverlayView`
``dialer``          seeds, dial candidates, :class:`~.dialer.Backoff`
``links``           :class:`~.links.Link`, the replacement rule
``push``            push queues, batching, back-pressure (the per-link send side)
``_push_fanout``    fanout links: shared queue, broadcasts sent and received (a mixin of ``Pushes``)
``_push_receive``   a received Push: checks, quotas, apply (a mixin of ``Pushes``)
``_push_forward``   what a received Push changed, passed on; WANT_ACKs along a tree (its base)
``coalesce``        the LAN configs' coalescing window for a stream of local writes
``_fanout``         the core's calls for a medium that fans out (a broker): broadcasts, presence
``relay``           the rotating relay: own batches, retries, hints, turns
``window``          what leaves at a window boundary, in order
``antientropy``     Summary / Digests / SyncRequest / Diff rounds, the skip rule
``_early_ask``      a joiner's few small shards sent whole and asked for with its first round
``_roots``          the Summary root over (shard, digest) pairs and its cache
``repair``          sequence gaps, hints, ack lags, retries
``transfer``        reply budget, DiffChunk transfers
``guard``           quotas across connections (issue #11): messages, bytes, CPU, new shards,
                    unfinished transfers, replies, keyed by peer name
``acks``            owed and relayed acks, ``replicated()``
``_ack_records``    the records of acks: per link, per broadcast, the relayed-ack budget
``_acks_relayed``   acks passed on: a tree's relayed acks and WANT_ACKs, the relay's (a mixin)
``gate``            :class:`~.gate.Gate`: what the core asks of credentials (permissions, records)
``security``        receive boundary, send-path filter and signing, certificate exchange
``_context``        the state every component shares; ``_yjs``: the one door to the Yjs layer
==================  =============================================================================

Protocol
--------
*Push.* Every delta made here is queued for the peers the overlay says (below), and in a tree
every remote delta that changed our state (``ReplicaSet.apply`` returned it) is queued for
every connected peer but the one it came from; ``apply`` returning None means "nothing new",
so a duplicate is never forwarded and floods die out (``Push.forward``). Queues are flushed
once per batching window
(:attr:`GossipConfig.push_interval`) as one :class:`~crdtsync.messages.Push` per peer and
shard, so the number of messages grows with the number of busy links, not with the write rate.
Windows are aligned to multiples of the interval so that, with synchronised clocks and a link
latency below the window, a relay forwards a batch at the very next boundary: each hop then
costs one window instead of latency plus a random wait.

*A stream of local writes* (LAN configs: ``send_when_idle``, windows not aligned) is coalesced
by the core itself (:mod:`~crdtsync.gossip.coalesce`): a write after a quiet window goes at
once; later ones wait for the end of their window, which doubles while the stream stays dense
(up to 16 ms) and halves when it thins, and leave as one update per shard, runs of items
squashed by the :class:`~crdtsync.replica.ReplicaSet`'s optional ``merge``. A driver may add a
write to an open window from anywhere with :meth:`GossipCore.hold_local` (nothing to execute).

*Lost pushes.* Pushes carry a sequence number per connection and shard. A gap means one was
lost, and Yjs cannot integrate a client's later structs without it (they stay pending, and so
nothing is forwarded to the agents behind us): the receiver asks the sender for a repair at
once (``SyncRequest``), again every :attr:`GossipConfig.repair_timeout` until the ``Diff``
comes. Rotating-relay broadcasts carry the relay's state vector instead (``Push.hint``): a
receiver that does not cover it after applying the batch missed an earlier one, and asks that
relay. And every agent learns the others' durable states (acks, relayed, below): one that
holds what we lack, still after ``repair_timeout``, shows a loss even once the mesh is quiet,
when no later push would. Over TCP nothing is lost; this is for lossy transports and the
simulator.

*Overlay.* :meth:`GossipCore.mode`, from the number N of live agents in our view:

* ``FULL`` (N <= :attr:`GossipConfig.full_mesh_max`): everyone connects to everyone and pushes
  its own deltas to all directly: one hop, nothing forwarded.
* ``RELAY`` (N <= :attr:`GossipConfig.relay_max`): everyone connects to everyone, and the
  agents take turns, in rank order, as the *relay* of one batching window each. At a window
  boundary a writer sends its batch of the window that ended to the coming window's relay only
  (one message, ``Push.relay``); the relay passes on, at the end of its window, everything it
  got to every other agent (one message each, with its own writes and its state vector as
  ``Push.hint``). A window costs (writers + N-1) messages instead of writers x (N-1), every
  agent carries the same share over N windows (no hub), and a write takes two hops: between
  one and two windows plus two latencies. A relay passes on a batch *as it is*, even one it
  cannot integrate yet: a writer's next batch may reach the next relay before the broadcast of
  its previous one. A writer pushes a batch again (up to three times) when no broadcast covering
  it came back within :attr:`GossipConfig.relay_retry`. While we are not connected to
  everyone (joins; connections beyond a tree's wait :attr:`GossipConfig.relay_settle` after
  the last view change, so a mesh growing past relay_max does not first dial everyone),
  relays flood instead (``Push.forward``). Turns follow window indices of the clock, so agents
  agree on them only with clocks synchronised well within a window; without, it stays
  correct, only costlier.
* ``TREE`` (larger meshes): one spanning tree, computed by every agent from the same
  membership view: agents ordered by a hash of (mesh, name), the first
  :attr:`GossipConfig.tree_core` forming a clique at the top and each agent having
  :attr:`GossipConfig.fanout` children (heap layout). A tree carries every delta exactly once
  per link and direction, the least possible; anti-entropy is what makes it safe when the
  tree is broken (crash, partition, disagreeing views). Every hop is an apply, a commit and
  a forward, so a tree may batch with a longer window of its own
  (:attr:`GossipConfig.tree_push_interval`: 10 ms with the LAN settings, against 2 ms).

*Pull (anti-entropy).* Every :attr:`GossipConfig.anti_entropy_interval` (with jitter), and on
every new connection (by the side with the smaller name), a round with one peer:

1. A -> B ``Summary(root)``: a hash over A's sorted (shard, digest) pairs. Equal roots: done,
   one message whatever the number of shards.
2. B -> A ``Digests``: B's per-shard digests.
3. A compares. Shards only A has: ``Diff(diff(empty))`` straight away. Shards whose digests
   differ (even with equal state vectors: a lost delete changes the digest, not the state
   vector) or that only B has: A -> B ``SyncRequest`` with A's state vectors.
4. B -> A ``Diff(diff(sv_A), sv_B)``: what A lacks plus B's whole delete set.
5. A applies it; if A's digest still differs from B's, A -> B ``Diff(diff(sv_B))``.

In a tree, a periodic round with a neighbour whose pushes flow both ways without a sequence
gap is skipped: such a link already carries everything a round would find, so under load the
pushes are the anti-entropy (at most :attr:`GossipConfig.anti_entropy_skip_max` rounds in a row
are skipped); likewise with the rotating relay while hinted broadcasts keep coming. Rounds are
bounded to :attr:`GossipConfig.max_sync_shards` shards.

*Replies.* Digests and Diffs are answers to a peer's requests; they are kept as requests
(coalesced per shard) and sent within :attr:`GossipConfig.reply_budget` bytes per window, and
not at all while the driver has paused the link: a peer that asks and never reads costs one
entry per shard, not a growing send queue. A Diff (or a single delta) longer than
:attr:`GossipConfig.chunk_bytes` or half of :attr:`GossipConfig.max_frame` goes as
:class:`~crdtsync.messages.DiffChunk` pieces, which the receiver joins (up to
:attr:`GossipConfig.max_diff_bytes`) before validating and applying the whole: no frame is
ever refused as oversize, however big a shard grows.

*Membership.* Seeds are dialled while we have no connection; every connection starts with a
full :class:`~crdtsync.messages.PeerList`, and changes (joins, deaths, refutations) are flooded
in later windows; one random peer gets a full list every
:attr:`GossipConfig.peer_exchange_interval`. A peer whose connection was lost (or cannot be
dialled) is *suspect*; after :attr:`GossipConfig.suspect_timeout` without a connection it is
declared *dead* and leaves the overlay. SWIM incarnations settle conflicting reports: a higher
incarnation wins, at equal incarnations "dead" wins, and an agent told it is dead raises its own
incarnation (refutes); reports of death that make an agent refute are bounded per reporter
(:mod:`~crdtsync.gossip.membership`). Dials back off exponentially with jitter per address; dead agents that
would be our overlay neighbours if alive keep being redialled (with backoff), so a healed
partition is bridged by a few agents, not by everyone at once. Of two agents that want an
edge, the smaller name dials; if both dial anyway (seeds, views that disagree), both keep the
connection the smaller name dialled, and a later connection (the peer restarted: another
``Hello.instance``, or noticed a dead link first) replaces the old one (see
:meth:`GossipCore.connection_made`). Connections the overlay does not need are closed after
:attr:`GossipConfig.prune_grace` with ``Close(NORMAL)``.

*Back-pressure.* Pushes queued for a peer beyond :attr:`GossipConfig.max_queue_bytes` (a slow
link, or paused by the driver) are dropped and replaced by an anti-entropy round once the
link drains: memory stays bounded and the peer still converges.

*Acks.* After :meth:`GossipCore.durable`, peers that sent us a shard (or said they hold it) are
owed our on-disk (state vector, delete set): piggybacked on a Push to them within
:attr:`GossipConfig.ack_delay`, or else sent as an :class:`~crdtsync.messages.Ack` (at most
once per :attr:`GossipConfig.ack_interval`). With the rotating relay they go to the window's
relay instead (on our batch, or alone at a boundary), and it passes them on with its broadcast.
In a tree, every agent passes the acks it learns on to its other neighbours
(``RelayedAck``, newest per agent and shard, riding on pushes at most once per
:attr:`GossipConfig.ack_relay_interval`), up to :attr:`GossipConfig.ack_relay_hops` hops
from their origin. :meth:`GossipCore.replicated` says which agents' acks cover a given state
(``updates.covers``): directly connected or not.

*Partial replication.* With a partial :class:`~crdtsync.gossip.policy.ReplicationPolicy`
(the driver passes :class:`crdtsync.sharding.Sharding` with a ``replication_factor``), a
placement policy decides which agents hold which shards and everything above is restricted to
the holders of a shard: pushes, forwarding and anti-entropy rounds of a shard only involve
peers that hold it (what each holds comes from its Hello and later ``Holdings`` messages), and
deltas of shards not held here are ignored. The co-holders of a shard are kept connected
besides the overlay. Placement, hand-off and remote reads are :mod:`crdtsync.sharding`
(``core.policy``); without a replication factor every agent holds every shard, as above.

*Flooding and quotas.* Each peer *name* has a token bucket (:attr:`GossipConfig.flood_rate`
messages per second, bursts of :attr:`GossipConfig.flood_burst`), kept across its
reconnections; a peer that exceeds it is refused with ``FLOODING``. All peers together share
one more budget, and remote updates, new shards, chunked transfers and replies have quotas too
(:mod:`.guard`).
"""

from __future__ import annotations

from .config import GossipConfig
from .core import (
    ALIVE,
    CONNECTED,
    DEAD,
    EMPTY_STATE_VECTOR,
    SUSPECT,
    Effects,
    GossipCore,
    PeerStatus,
)
from .guard import QuotaSet
from .handshake import Handshake
from .membership import PeerState
from .overlay import FULL, RELAY, TREE, Mode, OverlayView
from .policy import CoreView, FullReplication, ReplicationPolicy, Service

__all__ = [
    "ALIVE",
    "CONNECTED",
    "DEAD",
    "EMPTY_STATE_VECTOR",
    "FULL",
    "RELAY",
    "SUSPECT",
    "TREE",
    "CoreView",
    "Effects",
    "FullReplication",
    "GossipConfig",
    "GossipCore",
    "Handshake",
    "Mode",
    "OverlayView",
    "PeerState",
    "PeerStatus",
    "QuotaSet",
    "ReplicationPolicy",
    "Service",
]
