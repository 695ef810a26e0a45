"""The knobs of the gossip protocol (:class:`GossipConfig`), with the reason for each default."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import UsageError

__all__ = ["GossipConfig"]


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Every knob of the gossip protocol, with the reason for its default.

    Times are in seconds, sizes in bytes.
    """

    #: Batching window: deltas for one peer+shard wait at most this long and leave as one Push.
    #: These defaults suit a WAN (see :meth:`lan` for a LAN). 0.13 s is above a 100 ms WAN
    #: hop, so an aligned relay forwards at the very next boundary, and long enough that a
    #: rotating relay's window batches enough writes: at 100 writes/s over 25 agents it costs
    #: 2.7 messages per write (0.11 s: 3.1), for 290 ms median latency
    #: (benchmarks/gossip_sim.py).
    push_interval: float = 0.13
    #: Flush on multiples of push_interval (needs roughly synchronised clocks to pay off;
    #: harmless without): a relay hop then costs one window, not latency + a random wait.
    align_windows: bool = True
    #: A link that carried no Push in the current window sends a delta at once instead of
    #: waiting for the boundary. Off: under load it moves the wait to the first relay (aligned
    #: windows) and costs extra messages; it only pays at light load.
    send_when_idle: bool = False
    #: Up to this many live agents, everyone connects to everyone: one hop, no forwarding.
    full_mesh_max: int = 8
    #: Up to this many live agents (and more than full_mesh_max), everyone still connects to
    #: everyone, but each batching window has one *relay*, taking turns in a fixed order: a
    #: writer pushes its window's batch to that relay only, and the relay sends what it got
    #: to every other agent at the next boundary. A window then costs (writers + N-1)
    #: messages, spread evenly over the agents over time (no hub), and a write two hops.
    #: Beyond 64, N-1 connections per agent and N-1 frames per relay turn cost more than a
    #: tree's extra hops. 0 disables it. It needs aligned windows (push_interval > 0 and
    #: align_windows) to pay off, and clocks synchronised well within a window for the agents
    #: to agree on whose turn it is; it is correct without (only more messages).
    relay_max: int = 64
    #: A batch pushed to a relay is pushed again (to the relay of the moment) when no relay
    #: broadcast covering it came back within this long: above two windows plus one link
    #: latency (0.22 + 0.1 s for the WAN defaults), the time the round trip takes.
    relay_retry: float = 0.45
    #: Rotating relay under loss: windows one relay keeps its turn for (the *hub term*,
    #: gossip/_relay_hub.py). Above 1, while frames are lost, the relay of the moment repeats
    #: its last broadcasts in its next ones, writers aim their batches at its boundary by the
    #: measured link delay, and the window is ``HUB_WINDOW`` x push_interval (may be shorter
    #: than a hop); 1: one window per turn (the one-window rotation under loss). Lossless,
    #: both are the same rotation. 20 by default since h-glom5 (benchmarks/history/glomers-loss.md, "h-glom",
    #: "h-glom4", "h-glom5"): with a broadcast sent off our windows kept out of the link's
    #: delay (h-glom5), Glomers at 20 % loss meets its row on the bench's seed (seeds 1-20 in
    #: that section), where the rotation's median is 445-485 ms.
    hub_term: int = 20
    #: Relay broadcasts carry the relay's state vector (Push.hint) when it is at most this
    #: long, so that a receiver that missed an earlier broadcast notices it at the next one
    #: (the connection-level sequence numbers would only show it at that relay's next turn).
    hint_max: int = 4096
    #: Rotating relay: the connections beyond a tree's are dialled once the membership view
    #: has not changed for this long, so that a mesh growing past relay_max (agents starting
    #: together) does not first dial everyone; until then relays flood (forward=True).
    relay_settle: float = 2.0
    #: Children per agent in the spanning tree of larger meshes: degree fanout+1, depth log_b n.
    #: 5 keeps 25 agents within 4 hops of each other with no agent above a quarter of the
    #: traffic (benchmarks/gossip_sim.py).
    fanout: int = 5
    #: The batching window while the overlay is a tree (beyond ``full_mesh_max`` and the
    #: relay), when longer than ``push_interval`` (0: the same). A write then crosses several
    #: agents in turn, each an apply, a commit and a forward, so a Push that carries more
    #: updates saves work at every hop; a link idle for a window still sends at once
    #: (``send_when_idle``). :meth:`lan` sets 10 ms: at 64 agents and 200 updates/s on one
    #: 2-core host, 2 ms windows made 8-31 Pushes per update and a p99 of 0.9-2.0 s, 10 ms
    #: 8-11 and 0.19-0.62 s; on an idle host each hop may wait a window (the simulator: p50
    #: 1.9 -> 22 ms). See benchmarks/history/fanout-32-64.md, issue 18, branch h-n64.
    tree_push_interval: float = 0.0
    #: In a tree, how long news a Push brought (what a relay passes on) may wait before it
    #: leaves, at most. -1 (the class default, for the WAN settings' aligned windows): the
    #: tree's window, like the agent's own writes. 0 (:meth:`lan`'s default since h-n64c): the
    #: window batches once, at the writer's first hop, and a relay passes a lone delta on at
    #: once on an idle link, the deltas of a batch together at the end of the driver's turn;
    #: it then sends at most one Push per link for each one it received. Above 0: everything
    #: forwarded is held that long at most. At 64 agents (simulator, virtual time: agents on
    #: separate machines) 200 updates/s p99 53 -> 13 ms with as many Pushes, and the burst
    #: complete in 3.5 ms against 13.6; on one quiet 2-core host (load 0.6-2) the p99 was
    #: lower in 5 of 6 pairs at the same CPU (h-n64c: 4 of 7 at load <= 3, medians 40 against
    #: 55 ms, the same CPU); at load 3-18, where relays that wait a window re-batch, no clear
    #: gain, and about 9 % more CPU per update at 200/s (13 same-run pairs, 0.84-1.31x). See
    #: benchmarks/history/fanout-32-64.md, issue 18, h-n64b and h-n64c.
    tree_relay_wait: float = -1.0
    #: Agents forming a clique at the top of the tree: more than one spreads the root's load.
    tree_core: int = 1
    #: In a tree (``overlay_shape="tree"``), the first this-many agents in rank order (the
    #: tree's core and the levels below it, breadth first) are the tree's *top*: every agent
    #: also links to each of them, and sends its own writes to them directly as well as along
    #: the tree; relays pass news on along the tree only (never onto such a shortcut link),
    #: and the top agents send their own writes to the tree and the other top agents. A
    #: write then reaches the top in one hop and every agent within 1 + (depth below the
    #: top) hops, instead of up to twice the tree's depth (a leaf writer: up to 6 hops at 64
    #: agents with fanout 5; 4 with a top of 1, 3 with 6). Costs: k more Pushes per write
    #: at the writer, a few duplicates where the writer's path up meets the top's news coming
    #: down (an apply that finds nothing new, not passed on), and k * (N - 1) more links.
    #: 0 (the default): off, the plain tree. Measured at 64 agents (h-root): the simulator's
    #: p99 -8.5 % (top 1) / -13 % (top 6) with 0.5 ms hops, -24 / -36 % with 2-10 ms hops;
    #: on one 2-core host no gain shown (top 1's p99 lower in 9 of 17 runs at load <= 2.7,
    #: for 2-10 % more CPU). See benchmarks/history/fanout-32-64.md, issue 18, h-root.
    tree_writer_top: int = 0
    #: The overlay beyond full_mesh_max (and the relay): ``"tree"``, the spanning tree above
    #: (log_fanout N hops: the shape for pushes that travel on links), or ``"ring"``: each
    #: agent linked to the one before and the one after it in rank order. A joiner in a tree
    #: shifts the heap position of every agent ranked after it, so most edges move (at
    #: N = 128 on a broker: dozens of full PeerLists per write while agents came and went); in
    #: a ring a join or a departure moves only the edges around that one agent. For agents
    #: whose pushes do not travel on links (an MQTT broker fans them out), whose links carry
    #: anti-entropy, repairs and membership only: the broker driver's default. ``"grid"``:
    #: the agents in rank order fill a grid of ceil(sqrt(N)) columns, each linked to its row
    #: and its column (2 (sqrt(N) - 1) links), and an update is passed on along its writer's
    #: own breadth-first tree: two hops from any writer to every agent, one apply per agent
    #: (:mod:`crdtsync.gossip._source_tree`; issue 18, branch h-tree).
    overlay_shape: str = "tree"
    #: In a tree, how long after the last Push of a shard on a link the receiver's ack must
    #: cover our state of it; if it does not, what it lacks is pushed again (at most 4 times,
    #: this long apart). A lost Push shows as a gap at the next one, but the last Push of a
    #: stream has none, and a tree's periodic anti-entropy meets the one neighbour that holds
    #: it only after about degree x ``anti_entropy_interval``: at 64 agents and 10 % loss the
    #: last write took 18-52 s to reach every agent (issue 17, h-loss64; crdtsync/gossip/
    #: _tail_check.py). Armed only while loss was seen lately (never over TCP). Above the
    #: time an ack takes: the receiver's commit (an agent commits received updates within
    #: 0.2 s), ``ack_delay``, at most ``ack_interval`` between standalone Acks, a round trip.
    #: 0: off. 2 s in the class defaults (the WAN settings: standalone Acks go at most once
    #: a second, after ``ack_delay``, a commit and a 0.2 s round trip); :meth:`lan` sets
    #: 0.5 s. With the WAN settings at 65 and 100 agents (100 ms links, 10 % loss, one
    #: writer) the last write took 4-44 s to reach every agent, or more than 60 s (6 of 12
    #: runs); with it 2.6-28.7 s, 8 of 12 runs within 7.4 s (issue 17, h-aeretry, simulator:
    #: benchmarks/history/fanout-32-64.md).
    tail_check: float = 2.0
    #: How many times an anti-entropy round's lost step is tried again while loss was seen
    #: lately (``repair_timeout`` apart, adaptive under loss like a repair's): the initiator
    #: asks again for the Diffs its SyncRequest has not brought, and the peer that sent
    #: Digests starts a round of its own when neither a SyncRequest nor a Diff came back
    #: (:mod:`crdtsync.gossip._round_retry`). Without it
    #: a round whose Digests, SyncRequest or reply Diff is lost just ends, and the next round
    #: with that peer comes about degree x ``anti_entropy_interval`` later (issue 17,
    #: h-aeretry). 0 (the class default): off; :meth:`lan` sets 2. Measured: the retry comes
    #: within one timeout, but the time until every agent holds every key did not move
    #: measurably at 25 and 64 agents on ``lan()``; on the class defaults it pushed one of 20
    #: Glomers seeds over 4 msgs/write, hence off there.
    round_retries: int = 0
    #: The tail check in a full mesh too (where ``tail_check`` is above 0; on in :meth:`lan`,
    #: off in the class defaults, whose 2 s check was measured in trees only): there it
    #: compares the receiver's ack with what our last Push of the shard carried (its writers' clocks
    #: and its deletes), never with our whole state, which holds the other writers' updates
    #: that the receiver gets from them, not from us (a stale ack of ours would look like a
    #: loss: with a different writer for every update, 2.5 Pushes per update were pushed again
    #: comparing whole states; h-loss64). A full mesh's last Push lost waited for a round:
    #: 0.9-4.9 s at 25 agents and 10 % loss (issue 17, h-meshtail; crdtsync/gossip/
    #: _tail_check.py).
    tail_check_full: bool = False
    #: Mean time between anti-entropy rounds: long enough to be cheap (one message per idle
    #: round), short enough that a lost push is repaired within seconds.
    anti_entropy_interval: float = 5.0
    #: Relative jitter of that interval, so that agents do not all start rounds together.
    anti_entropy_jitter: float = 0.25
    #: In a tree, a periodic round with a neighbour whose pushes flow both ways without a
    #: sequence gap is skipped (the pushes are the anti-entropy), but not for longer than
    #: this many intervals in a row.
    anti_entropy_skip_max: int = 6
    #: Shards repaired per anti-entropy round at most; the rest wait for the next round, which
    #: starts as soon as this one is done (see antientropy.py), so a round's burst stays
    #: bounded. Each round costs a pass over every shard's digest, so fewer, larger rounds
    #: join a mesh of thousands of shards faster (the Diffs still leave within reply_budget).
    max_sync_shards: int = 1024
    #: An agent holding at most this many shards sends each small one whole with its first
    #: anti-entropy message on a new link and asks for the peer's at once (the early ask,
    #: :mod:`~crdtsync.gossip._early_ask`): a joiner holds a shard's state after four one-way
    #: messages instead of six, with no new message. 0: off.
    early_sync_shards: int = 16
    #: Largest Push built from a queue; a bigger batch is split (a single bigger delta is
    #: sent alone).
    max_batch_bytes: int = 256 << 10
    #: Pushes queued for one peer beyond this are dropped and replaced by anti-entropy, so a
    #: slow peer cannot grow our memory.
    max_queue_bytes: int = 4 << 20
    #: Standalone Ack messages go to a peer at most this often; acks ride on Pushes for free.
    ack_interval: float = 1.0
    #: An owed ack waits this long for a Push to the peer to ride on before it goes alone:
    #: a couple of windows, short next to the time a caller of replicated() waits anyway.
    ack_delay: float = 0.25
    #: A repair asked for (after a gap in Push sequence numbers, a state-vector hint or an ack
    #: we do not cover) is asked again after this long while its Diff has not come (the
    #: request or the reply may be lost too): a WAN round trip plus a window. Also how long
    #: an ack we do not cover may wait for what it covers before that counts as a loss.
    repair_timeout: float = 0.35
    #: A peer without a connection for this long is declared dead and leaves the overlay:
    #: long enough to ride out a reconnect, short enough to re-route the tree quickly.
    suspect_timeout: float = 5.0
    #: Dead agents are remembered this long (so stale "alive" reports cannot resurrect them).
    forget_timeout: float = 3600.0
    #: A dial with neither connection_made nor dial_failed after this long counts as failed.
    connect_timeout: float = 10.0
    #: First reconnect delay; doubles per failure up to backoff_max; each delay is jittered
    #: down to half, so agents that lost the same peer do not redial in lockstep.
    backoff_base: float = 0.5
    #: Longest reconnect delay: a healed partition is noticed within this.
    backoff_max: float = 30.0
    #: Of two agents that both want a connection, the one with the smaller name dials; the
    #: other dials too after this grace (in case their views disagree).
    dial_grace: float = 1.0
    #: Dials under way at once at most (0: no limit); the rest wait for one to end. A full
    #: mesh forming dials everyone at once: at 64 agents on one 2-core host, 2,016 websocket
    #: handshakes in 5 processes starved each other past the 10 s Hello timeout, and every
    #: timeout was redialled (issue 18: the mesh never formed). In a full mesh, the larger
    #: name's grace (``dial_grace``) also grows with its place in the smaller one's queue.
    #: The WAN defaults do not limit (the rotating relay dials beyond its tree only once the
    #: view settled, ``relay_settle``); :meth:`lan` does.
    max_dialing: int = 0
    #: Connections the overlay does not need are kept this long before being closed, so that
    #: converging views do not make connections flap.
    prune_grace: float = 5.0
    #: A full PeerList goes to one random peer this often: membership anti-entropy.
    peer_exchange_interval: float = 30.0
    #: Messages per second a peer may send us on average before it is refused as flooding.
    flood_rate: float = 2000.0
    #: Burst allowance of that token bucket (an anti-entropy round after a partition sends
    #: one Diff per shard).
    flood_burst: float = 10000.0
    #: Largest frame the driver should accept (wire.decode max_size).
    max_frame: int = 16 << 20
    #: A Diff (or a single delta) longer than this (or than half of max_frame, if smaller)
    #: travels as DiffChunk pieces of that size: no frame is ever over max_frame, and a big
    #: shard's first sync does not hold up pushes for the time of one huge frame.
    chunk_bytes: int = 1 << 20
    #: Largest update reassembled from DiffChunks: bounds what one peer can make us buffer.
    #: A shard larger than this cannot be synced from scratch (raise it for such shards).
    max_diff_bytes: int = 256 << 20
    #: Replies (Digests, Diffs, chunks) sent to one peer per batching window at most; the
    #: rest waits for the next window, and for resume_writing while the transport is paused,
    #: coalesced per shard. So a peer that asks and never reads cannot grow our send queue.
    reply_budget: int = 1 << 20
    #: Other agents' acks are passed on (relayed) so that acks reach agents that are not
    #: directly connected (tree, relay). In a tree they ride on a link's pushes at most this
    #: often, and go alone at most this often: every agent's ack crosses every tree link, so
    #: this bounds their bytes (newest state per agent and shard, coalesced).
    ack_relay_interval: float = 1.0
    #: Bytes of relayed acks per message at most; more waits for the next message.
    max_relayed_bytes: int = 64 << 10
    #: In a tree, an ack is passed on at most this many hops from the agent that made it:
    #: every ack crossing every link would cost O(N^2) state vectors per ack_relay_interval.
    #: A writer so hears from its neighbourhood, which is what replicated(k) needs for small
    #: k: with fanout 5, hops 2 reaches at least 6 agents (from a leaf) and up to 36.
    ack_relay_hops: int = 2

    def __post_init__(self) -> None:
        if self.push_interval < 0 or self.anti_entropy_interval <= 0:
            raise UsageError("push_interval must be >= 0 and anti_entropy_interval > 0")
        if self.tree_push_interval < 0:
            raise UsageError("tree_push_interval must be >= 0")
        if self.tree_relay_wait < 0 and self.tree_relay_wait != -1.0:
            raise UsageError("tree_relay_wait must be >= 0, or -1 (the tree's window)")
        if self.max_dialing < 0:
            raise UsageError("max_dialing must be >= 0")
        if self.hub_term < 1:
            raise UsageError("hub_term must be >= 1")
        if self.tree_writer_top < 0:
            raise UsageError("tree_writer_top must be >= 0")
        if self.fanout < 1 or self.tree_core < 1 or self.full_mesh_max < 1:
            raise UsageError("fanout, tree_core and full_mesh_max must be >= 1")
        if self.overlay_shape not in ("tree", "ring", "grid"):
            raise UsageError(
                f"overlay_shape must be 'tree', 'ring' or 'grid', not {self.overlay_shape!r}"
            )
        if not 0 <= self.anti_entropy_jitter < 1:
            raise UsageError("anti_entropy_jitter must be in [0, 1)")
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise UsageError("need 0 < backoff_base <= backoff_max")
        if self.flood_rate <= 0 or self.flood_burst < 1:
            raise UsageError("flood_rate must be > 0 and flood_burst >= 1")
        if (
            self.relay_max < 0
            or self.relay_retry <= 0
            or self.hint_max < 0
            or self.relay_settle < 0
        ):
            raise UsageError(
                "need relay_max >= 0, relay_retry > 0, hint_max >= 0 and relay_settle >= 0"
            )
        if (
            min(
                self.chunk_bytes,
                self.max_frame,
                self.max_diff_bytes,
                self.reply_budget,
                self.max_relayed_bytes,
            )
            < 1
        ):
            raise UsageError(
                "chunk_bytes, max_frame, max_diff_bytes, reply_budget and max_relayed_bytes must be >= 1"
            )
        if self.early_sync_shards < 0:
            raise UsageError("early_sync_shards must be >= 0")
        if self.ack_relay_interval < 0 or not 0 <= self.ack_relay_hops <= 255:
            raise UsageError("ack_relay_interval must be >= 0 and ack_relay_hops in [0, 255]")

    @classmethod
    def lan(cls, **overrides: Any) -> GossipConfig:
        """Settings for agents on one LAN or one host: latency first, messages second.

        The defaults of the class suit a WAN (100 ms links): 130 ms windows aligned to the
        clock, so that a relay forwards a batch at the very next boundary. On a LAN a hop
        costs well under a millisecond, so waiting for a window boundary would be most of the
        latency. Here a delta goes out at once on a link that was idle for a window, and what
        accumulates right after it waits at most ``push_interval`` (2 ms) and leaves as one
        batch, Nagle-like. Windows are not aligned (agents' monotonic clocks are unrelated),
        so the rotating relay, which needs them, is off: a full mesh up to 32 agents, a tree
        beyond. (A full mesh is what a hub gives its clients: one hop; two between
        two clients that do not listen, through the hub: ``_context.py``, "Clients". At 32 agents a tree of
        fanout 5 made most writes travel 3 to 5 hops, each an apply and a forward in a
        loaded process, and every agent owed acks to each neighbour. At 64 agents a full mesh
        forms (dials paced, at most 4 under way per agent) and has the lower latency at 200
        updates/s, but loses the burst: the writer pushes each window to 63 links, where a
        tree's relays batch (benchmarks/history/fanout-32-64.md, issue 18).) In the tree the window is
        10 ms (``tree_push_interval``), paid once, at the writer's first hop: relays pass news
        on without a window of their own (``tree_relay_wait`` 0), so a write crosses the
        tree's 4-6 hops at 64 agents in one window plus the links' time. Acks go out within
        10 ms (at most 20 standalone Acks per second and peer) so that ``replicated()``
        answers within a group commit or two; repairs are asked again after 100 ms, and so
        is a lost step of an anti-entropy round, twice at most under loss
        (``round_retries``); a tree link's last Push is pushed again when no ack covers it
        within 500 ms under loss (``tail_check``, above an agent's 0.2 s commit of received
        updates and its ack), and so is a full-mesh link's, compared with what that Push
        carried (``tail_check_full``); dials are retried from 100 ms up to 5 s, at most 4 under way
        at once.

        Args:
            overrides: any field, replacing the LAN value.
        """
        lan = cls(
            push_interval=0.002,
            align_windows=False,
            send_when_idle=True,
            full_mesh_max=32,
            tree_push_interval=0.01,
            tree_relay_wait=0.0,
            relay_max=0,
            ack_delay=0.01,
            ack_interval=0.05,
            ack_relay_interval=0.05,
            repair_timeout=0.1,
            tail_check=0.5,
            tail_check_full=True,
            round_retries=2,
            backoff_base=0.1,
            backoff_max=5.0,
            dial_grace=0.25,
            connect_timeout=5.0,
            max_dialing=4,
        )
        return replace(lan, **overrides)
