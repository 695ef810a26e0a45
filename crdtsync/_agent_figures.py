"""The agent's read-only figures: what the HTTP API, the metrics and ``inspect`` read.

A mixin of :class:`~crdtsync.agent.Agent` (:class:`_AgentFigures`) with a small, typed, public
surface: :attr:`~_AgentFigures.counters`, :attr:`~_AgentFigures.quarantined`,
:meth:`~_AgentFigures.metrics`, :attr:`~_AgentFigures.peers` (who is known and what each
acked), :meth:`~_AgentFigures.local_shard` (a held shard, without subscribing),
:attr:`~_AgentFigures.gossiping`, :meth:`~_AgentFigures.shard_stats`,
:meth:`~_AgentFigures.store_size`, :meth:`~_AgentFigures.replication_lag`,
:attr:`~_AgentFigures.repairs` and :meth:`~_AgentFigures.send_buffers`. Upper layers use these
instead of the agent's private parts, so a restructure of the agent cannot silently break them.

Replication lag in seconds needs to know *when* this agent reached each state: a
:class:`DurableHistory` records, per shard and per group commit, the time the commit made a
state durable here, its state vector and the updates committed so far. A peer's lag on a shard
is then measured from the oldest such state its latest durable ack does not cover.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _extensions, updates
from .observer import NULL_OBSERVER, Observer
from .store import ShardStats, Store

if TYPE_CHECKING:
    from ._registry import ShardRegistry
    from .gossip import GossipCore, PeerStatus
    from .shard import Shard
    from .transport import Transport

__all__ = ["DurableHistory", "ReplicationLag", "StoreSize"]


@dataclass(frozen=True, slots=True)
class StoreSize:
    """How big this agent's store is (see :meth:`Agent.store_size`).

    Attributes:
        file_bytes: disk space the data directory's files occupy (allocated blocks).
        map_bytes: the LMDB map size (address space reserved; it grows by doubling).
    """

    file_bytes: int
    map_bytes: int


@dataclass(frozen=True, slots=True)
class ReplicationLag:
    """How far one peer is behind this agent on one shard (see :meth:`Agent.replication_lag`).

    Attributes:
        peer: the other agent.
        shard: a shard held here that the peer has acknowledged holding.
        updates: updates committed here since the newest state the peer's latest durable ack
            covers (0: it has everything durable here).
        seconds: how long ago the oldest state it lacks became durable here (0.0: none).
    """

    peer: str
    shard: str
    updates: int
    seconds: float


@dataclass(slots=True)
class _Entry:
    at: float  # time.monotonic() when the commit made this state durable here
    state_vector: bytes
    before: int  # updates of the shard committed here before this commit


def _covers(have: Mapping[int, int], state_vector: bytes) -> bool:
    return all(
        have.get(client, 0) >= clock
        for client, clock in updates.decode_state_vector(state_vector).items()
    )


class DurableHistory:
    """When each durable state of each shard was reached here (see the module docstring).

    It is itself an :class:`~crdtsync.observer.Observer` of the group committer (for the
    updates each commit appended) and forwards every event to ``then`` (the metrics).

    Memory is bounded: at most ``limit`` states per shard. When full, every other state of
    the older half is dropped, so recent states keep their resolution and old ones thin out
    (a lag older than the retained states is reported from the oldest one: a lower bound).
    """

    def __init__(self, then: Observer = NULL_OBSERVER, limit: int = 64) -> None:
        self._then = then
        self._limit = max(4, limit)
        self._totals: dict[str, int] = {}  # updates committed here per shard since start
        self._last: Mapping[str, tuple[int, int]] = {}  # the last commit's counts
        self._entries: dict[str, list[_Entry]] = {}

    # -- Observer ---------------------------------------------------------------------------

    def committed(self, seconds: float, writes: Mapping[str, tuple[int, int]]) -> None:
        """Count the commit's updates per shard, then tell ``then``."""
        for shard, (n, _) in writes.items():
            self._totals[shard] = self._totals.get(shard, 0) + n
        self._last = writes
        self._then.committed(seconds, writes)

    def compacted(self, shard: str, seconds: float, bytes_before: int, bytes_after: int) -> None:
        """Tell ``then``."""
        self._then.compacted(shard, seconds, bytes_before, bytes_after)

    def closed(self, code: int, by: str) -> None:
        """Tell ``then``."""
        self._then.closed(code, by)

    # -- states ------------------------------------------------------------------------------

    def durable(self, shard: str, state_vector: bytes, now: float) -> None:
        """The commit just reported to :meth:`committed` made ``state_vector`` of ``shard``
        durable at ``now``."""
        total = self._totals.get(shard, 0)
        entry = _Entry(now, state_vector, total - self._last.get(shard, (0, 0))[0])
        entries = self._entries.setdefault(shard, [])
        if entries and entries[-1].state_vector == state_vector:
            return  # (a delete, or meta only: no newer state to measure from)
        entries.append(entry)
        if len(entries) > self._limit:
            half = len(entries) // 2
            entries[:half] = entries[:half:2]

    def lag(self, shard: str, acked: bytes, now: float) -> tuple[int, float]:
        """(updates, seconds) a peer whose latest durable ack of ``shard`` is ``acked`` lags
        behind this agent's durable states."""
        entries = self._entries.get(shard)
        if not entries:
            return 0, 0.0
        have = updates.decode_state_vector(acked) if acked else {}
        # States only grow, so the entries it covers are a prefix: bisect for the first it
        # lacks (a few decodes, not one per entry).
        lo, hi = 0, len(entries)
        while lo < hi:
            mid = (lo + hi) // 2
            if _covers(have, entries[mid].state_vector):
                lo = mid + 1
            else:
                hi = mid
        if lo == len(entries):
            return 0, 0.0
        e = entries[lo]
        return self._totals.get(shard, 0) - e.before, max(0.0, now - e.at)


def _dir_bytes(path: Path) -> int:
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    except OSError:
        return 0
    return total


class _AgentFigures:
    """Mixin of :class:`~crdtsync.agent.Agent`: its read-only figures (module docstring).

    The attributes and methods declared below belong to the agent.
    """

    name: str
    data_dir: Path
    _core: GossipCore | None
    _history: DurableHistory
    _transport: Transport | None
    _registry: ShardRegistry | None

    if TYPE_CHECKING:

        def _require_store(self) -> Store: ...

        def _require_registry(self) -> ShardRegistry: ...

        def shard_names(self) -> list[str]: ...

    @property
    def counters(self) -> dict[str, int]:
        """Counters of the transport: for websockets the gossip door's (``auth_ok``,
        ``auth_failed``, ``auth_failed.<close code>``) and the Yjs door's (``yjs.connected``,
        ``yjs.updates``, ``yjs.refused.<close code>``), for a broker its traffic (``attempts``,
        ``published``, ``received``, ``garbage``, ``stale``, ``paused``...); and the core's
        gate (``forbidden``, ``forbidden.<message type>``, ``restricted``, ``unsent``,
        ``unverified_acks``, ``refused_members``, ``limited_death_reports``, ``capped_members``,
        ``unheld_acks_dropped``:
        :attr:`GossipCore.security_counters`; ``revoked_closed``, ``yjs.revoked_closed``:
        connections closed by a revocation, :meth:`reload_revocations`); the
        core's quotas (``quota.<name>``: :attr:`GossipCore.quota_counters`); and
        ``shards_quarantined`` (:attr:`quarantined`)."""
        out = dict(getattr(self._transport, "counters", {}))
        if self._core is not None:
            out.update(self._core.security_counters)  # permissions and signed records
            out.update(self._core.quota_counters)  # quotas across connections (issue #11)
        if self._registry is not None:
            out["shards_quarantined"] = len(self._registry.quarantined())
        return out

    @property
    def quarantined(self) -> dict[str, str]:
        """``{shard: reason}`` of the shards this agent's store holds but does not load or
        serve: an update stored before the work limits (issue #11) that would cost
        super-linear time or memory to load. The rest of the store is served as usual; opening
        a quarantined shard raises :class:`~crdtsync.errors.ShardQuarantined`. Empty until
        started."""
        return self._registry.quarantined() if self._registry is not None else {}

    def metrics(self) -> dict[str, Any]:
        """This agent's operational figures now (the same as its Prometheus ``/metrics``)."""
        return _extensions.sample_metrics(self)

    @property
    def peers(self) -> tuple[PeerStatus, ...]:
        """Every agent known here: address, connection state, and the durable state each has
        acknowledged per shard (compare with :meth:`Shard.replicated`). Empty without gossip."""
        return self._core.peers() if self._core is not None else ()

    def local_shard(self, name: str) -> Shard | None:
        """The shard ``name`` if this agent holds it, else None.

        Unlike :meth:`shard`, it never creates the shard and never subscribes to it (under
        partial replication, opening a shard makes this agent one of its holders): what a
        read or an inspection tool wants.
        """
        if name not in self.shard_names():
            return None
        return self._require_registry().open(name)

    @property
    def gossiping(self) -> bool:
        """Whether this agent runs the gossip protocol (it was started with ``listen=``,
        ``peers=`` or ``broker=``): only then can it wait for replication."""
        return self._core is not None

    def shard_stats(self, name: str) -> ShardStats | None:
        """Committed sizes and counts of shard ``name`` in this agent's store (log and
        snapshot bytes, updates ever, last compaction), or None if it holds no such shard."""
        if name not in self.shard_names():
            return None
        return self._require_store().stats(name)

    def store_size(self) -> StoreSize:
        """The disk space of this agent's store and its LMDB map size."""
        store = self._require_store()
        return StoreSize(file_bytes=_dir_bytes(self.data_dir), map_bytes=store.map_size())

    def replication_lag(self, now: float | None = None) -> tuple[ReplicationLag, ...]:
        """Per peer and shard held here that the peer has acknowledged: how far behind it is.

        ``now``: a ``time.monotonic()`` reading (default: now). A peer is measured against the states that
        became durable *here* (local writes and those received from others alike), by its
        latest durable ack (direct or relayed); a delete does not move a state vector, so a
        peer lacking only deletes shows no lag. Only states reached since this agent started
        are recorded: a peer behind only on older ones shows none (anti-entropy repairs it).
        """
        now = time.monotonic() if now is None else now
        held = set(self.shard_names())
        out: list[ReplicationLag] = []
        for peer in self.peers:
            for state in peer.acked:
                if state.shard in held:
                    n, seconds = self._history.lag(state.shard, state.state_vector, now)
                    out.append(ReplicationLag(peer.name, state.shard, n, round(seconds, 3)))
        return tuple(sorted(out, key=lambda lag: (lag.peer, lag.shard)))

    @property
    def repairs(self) -> dict[tuple[str, str], int]:
        """(peer, shard) -> repairs this agent asked of that peer: the shard differed in an
        anti-entropy round, or a push was lost (see
        :attr:`GossipCore.repairs_asked <crdtsync.gossip.GossipCore.repairs_asked>`)."""
        return self._core.repairs_asked if self._core is not None else {}

    def send_buffers(self) -> dict[str, int]:
        """Peer name -> bytes the transport holds for it, not yet written to its socket (its
        send queue plus the socket's write buffer), for a transport that reports them (the
        websocket driver's ``connections()``); empty otherwise.

        Pushes are queued in two places: the core holds them per peer between flush windows
        and while the link is paused (``PeerStatus.queued_bytes``), and the transport holds
        the frames it was given until the peer reads them (this). A slow reader shows here
        first; once this passes the transport's high-water mark, the core pauses and its own
        queue grows.
        """
        connections = getattr(self._transport, "connections", None)
        if not callable(connections):
            return {}
        return {str(peer): int(info.queued_bytes) for peer, info in connections().items()}
