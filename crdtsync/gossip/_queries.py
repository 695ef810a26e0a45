"""The read-only inspection API of :class:`~crdtsync.gossip.GossipCore`.

What a driver, the agent or a test asks the core without changing it: replication acks,
peers and their states, the overlay in use, membership, the security counters. A mixin of the
core (:class:`_Queries`), split from :mod:`crdtsync.gossip.core` to keep the facade short; it
owns no state, every answer comes from the core's components.
"""

from __future__ import annotations

from ._context import Context
from .components import Components
from .effects import PeerStatus
from .gate import Gate
from .links import Link
from .membership import PeerState
from .overlay import FULL, RELAY, Mode, OverlayView
from .security import Security

__all__: list[str] = []


class _Queries:
    """Mixin of :class:`~crdtsync.gossip.GossipCore`: answers about its state.

    The attributes declared below belong to the core (set in its ``__init__``).
    """

    _ctx: Context
    _conns: dict[str, Link]
    _p: Components
    _sec: Security

    @property
    def gate(self) -> Gate | None:
        """The security gate, or None without credentials."""
        return self._ctx.gate

    @property
    def security_counters(self) -> dict[str, int]:
        """Security events with credentials (see :meth:`secure`): ``forbidden`` (messages
        dropped at the receive boundary) and ``forbidden.<Type>``, ``restricted`` (handled in
        part), ``unsent`` (outgoing messages cut: the peer may not read them, or we may not
        write the shard), ``unverified_acks`` (relayed acks without a valid signature),
        ``refused_members`` (membership entries forged, unsigned or beyond
        ``MAX_INCARNATION``); and, with or without credentials, ``limited_death_reports``
        (reports of death over their reporter's budget, :mod:`.membership`),
        ``capped_members`` (members on unverifiable word over ``HEARSAY_CAP``) and
        ``unheld_acks_dropped`` (acks of shards not held over ``MAX_UNHELD_ACKS``)."""
        return self._sec.counters()

    @property
    def quota_counters(self) -> dict[str, int]:
        """Refusals by the quotas that hold across connections (issue #11,
        :mod:`crdtsync.gossip.guard`), ``quota.<name>``: ``flood``, ``flood-share``, ``update-limits``,
        ``refused-updates`` (a peer kept sending them: closed), ``read-paced`` (a heavy peer's
        frame waited to be read), ``bytes-per-peer``, ``bytes-total``, ``cpu-per-peer``, ``shards``,
        ``shards-per-peer``, ``transfer-per-peer``, ``transfer-total``, ``transfer-timeout``,
        ``replies.bytes-per-peer``, ``replies.bytes-total`` (a reply waited)."""
        return dict(self._ctx.guard.counters)

    @property
    def repairs_asked(self) -> dict[tuple[str, str], int]:
        """(peer, shard) -> how many repairs of the shard this agent asked of the peer: an
        anti-entropy round found the shard's digests differing, or a push was lost (a
        sequence gap, an ack we do not cover; retries count again). A copy; counters only,
        for the metrics (``crdtsync_anti_entropy_repairs_total``)."""
        return dict(self._ctx.repairs_asked)

    @property
    def last_refusal(self) -> str:
        """Why the last message was dropped or cut at the receive boundary."""
        return self._sec.last_refusal

    @property
    def refusals(self) -> int:
        """How many messages were dropped or cut there (a driver logs one line each)."""
        return self._sec.refusals

    def replicated(self, shard: str, state_vector: bytes, delete_set: bytes) -> tuple[str, ...]:
        """Peers whose latest durable ack of ``shard`` covers (state_vector, delete_set).

        The agent passes what it wants replicated (e.g. its own state right after a write) and
        waits until at least k peers are returned. Peers that are not directly connected
        count too: acks are relayed (in a tree, and through the rotating relay), within about
        :attr:`GossipConfig.ack_relay_interval` per hop.
        """
        return self._p.acks.replicated(shard, state_vector, delete_set)

    def peers(self) -> tuple[PeerStatus, ...]:
        """Every agent known here, sorted by name, with connection state and replication lag.

        Left out: dead agents without a listen address (clients that came and went, such as
        the observer of ``crdtsync inspect --peer``). Nothing can dial them and nothing waits
        for them; the membership table keeps them until ``forget_timeout`` only so that a
        stale report cannot bring them back, and listing them made every inspection leave a
        ghost in every agent's peer list. Dead agents that listen stay listed.
        """
        desired = self._views().desired
        out = []
        for name in self._p.members.names():
            m = self._p.members[name]
            conn = self._conns.get(name)
            if conn is None and m.status == PeerState.DEAD and m.address is None:
                continue
            acked = self._p.acks.acked.get(name, {})
            out.append(
                PeerStatus(
                    name=name,
                    address=m.address,
                    state=PeerState.CONNECTED if conn is not None else m.status,
                    incarnation=m.incarnation,
                    neighbour=name in desired,
                    queued_bytes=conn.push.queued_bytes if conn else 0,
                    dropped=conn.push.dropped if conn else 0,
                    acked=tuple(acked[s] for s in sorted(acked)),
                )
            )
        return tuple(out)

    @property
    def incarnation(self) -> int:
        """This agent's current membership incarnation."""
        return self._p.members.incarnation

    def connected(self) -> tuple[str, ...]:
        """Names of the peers currently connected, sorted."""
        return tuple(sorted(self._conns))

    def mode(self) -> str:
        """The overlay in use: :data:`FULL`, :data:`RELAY` or :data:`TREE` (see the module
        docstring); it follows the number of live agents in our view."""
        return self._mode()

    def relay_at(self, now: float) -> str | None:
        """Rotating relay: the agent relaying the batching window that holds ``now``, as this
        agent sees it (None outside mode :data:`RELAY`)."""
        return (
            self._p.relay.relay_of(self._ctx.window_index(now)) if self._mode() == RELAY else None
        )

    def neighbours(self) -> frozenset[str]:
        """Agents the overlay wants this agent connected to."""
        return self._views().desired

    def members(self, *, listening: bool = False) -> tuple[str, ...]:
        """Other agents not declared dead (connected, alive or suspect), sorted: the view
        placement is computed from. ``listening``: only those with a listen address."""
        return self._p.members.live(listening=listening)

    def _mode(self) -> Mode:
        mode = self._p.overlay.view().mode  # (_views(), inlined: asked for every Push)
        if mode == RELAY and self._p.pushes.any_fanout:
            # A medium that fans out (a broker) already is the relay: pushes go as one
            # broadcast, and acks the full mesh's way (broadcast when most agents want them).
            return FULL
        return mode

    def _views(self) -> OverlayView:
        return self._p.overlay.view()

    def _shortcuts(self) -> tuple[frozenset[str], frozenset[str]]:
        """The tree's shortcut links (GossipConfig.tree_writer_top): (no relay, no own write)."""
        view = self._p.overlay.view()
        return view.no_relay, view.no_write
