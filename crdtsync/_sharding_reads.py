"""Remote reads of :class:`~crdtsync.sharding.Sharding`: asking holders, answering them.

Who holds a shard as far as this agent knows, quorum specs, starting a read or a scan through
the :class:`~crdtsync.query.QueryTable`, its outcome, and the answer to a peer's
:class:`~crdtsync.messages.ReadRequest` (split into frames near ``max_batch_bytes``). A mixin
of :class:`~crdtsync.sharding.Sharding` (:class:`_RemoteReads`), split from
:mod:`crdtsync.sharding`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import CloseCode, InvalidUpdate, UsageError, map_exceptions
from .messages import Message, ReadReply, ReadRequest
from .placement import PlacementState
from .query import Outcome, QueryTable
from .yjs.state import EMPTY_STATE_VECTOR, decode_state_vector

if TYPE_CHECKING:
    from .gossip.policy import CoreView

__all__: list[str] = []

_INVALID_UPDATE: dict[type[Exception], CloseCode] = {InvalidUpdate: CloseCode.INVALID_UPDATE}

#: Read requests queued per peer at most; an older one is dropped (its asker times out).
MAX_READS_QUEUED = 16


@dataclass(slots=True)
class _ReadJob:
    """The answer to one ReadRequest still to send: (shard, state vector asked, or None when
    not held here), sorted, and the next entry if its diff was built but did not fit."""

    id: int
    todo: deque[tuple[str, bytes | None]]
    carry: tuple[str, bytes | None] | None = field(default=None)


class _RemoteReads:
    """Mixin of :class:`~crdtsync.sharding.Sharding`: remote reads and scans.

    The attributes and methods declared below belong to :class:`~crdtsync.sharding.Sharding`.
    """

    placement: PlacementState | None
    queries: QueryTable
    _peer_holds: dict[str, frozenset[str]]
    _reads_out: dict[str, deque[_ReadJob]]  # read answers waiting for the reply budget

    if TYPE_CHECKING:

        @property
        def core(self) -> CoreView: ...

        def _send(self, peer: str, msg: Message) -> None: ...

        def _have(self) -> set[str]: ...

        def _sync_view(self) -> None: ...

        def _update_extra(self) -> None: ...

    def _on_read_request(self, peer: str, msg: ReadRequest) -> None:
        """Queue the answer to ``msg``; it goes out through the reply budget (see
        :meth:`_serve_reads`): a request for everything (an empty prefix) costs one entry
        per shard here, not its whole answer at once (issue #11: 11 bytes asked for 4 MB)."""
        for _, sv in msg.shards:
            with map_exceptions(_INVALID_UPDATE):
                decode_state_vector(sv)
        have = self._have()
        todo: list[tuple[str, bytes | None]] = [
            (shard, sv if shard in have else None) for shard, sv in msg.shards
        ]
        if msg.prefix is not None:
            asked = {s for s, _ in msg.shards}
            todo += [
                (shard, EMPTY_STATE_VECTOR)
                for shard in sorted(have)
                if shard.startswith(msg.prefix) and shard not in asked
            ]
        todo.sort(key=lambda r: r[0])
        jobs = self._reads_out.setdefault(peer, deque())
        jobs.append(_ReadJob(msg.id, deque(todo)))
        while len(jobs) > MAX_READS_QUEUED:  # a peer that asks and never reads
            jobs.popleft()  # (its asker times out and asks another holder)
        self._serve_reads(peer)

    def _serve_reads(self, peer: str) -> None:
        """Send queued read answers to ``peer`` in frames near ``max_batch_bytes``, at most
        ``reply_budget`` bytes per call, while :meth:`CoreView.reply_room` allows; the rest
        waits for :meth:`tick` (back-pressure)."""
        jobs = self._reads_out.get(peer)
        limit = self.core.config.max_batch_bytes
        sent = 0
        while jobs and sent < self.core.config.reply_budget and self.core.reply_room(peer):
            job = jobs[0]
            batch: list[tuple[str, bytes | None]] = []
            size = 0
            while job.todo:
                if job.carry is None:
                    shard, sv = job.todo[0]
                    job.carry = (shard, None if sv is None else self.core.replicas.diff(shard, sv))
                n = len(job.carry[1] or b"")
                if batch and size + n > limit:
                    break
                batch.append(job.carry)
                size += n
                job.carry = None
                job.todo.popleft()
            last = not job.todo
            self._send(peer, ReadReply(job.id, tuple(batch), last))
            self.core.replied(peer, size + 16)
            sent += size + 16
            if last:
                jobs.popleft()
        if not jobs:
            self._reads_out.pop(peer, None)

    def holders(self, shard: str) -> tuple[str, ...]:
        """Agents that hold ``shard`` as far as this agent knows, best first.

        With placement: the placement holders in our view, then connected peers announcing
        the shard. Full replication: connected peers that announced it, then the others.
        """
        if self.placement is not None:
            self._sync_view()
            placed = list(self.placement.holders(shard))
        else:
            placed = []
        announced = [
            peer
            for peer in self.core.connected()
            if shard in self._peer_holds.get(peer, frozenset())
        ]
        out = list(dict.fromkeys(placed + announced))
        if self.placement is None:
            out += [peer for peer in self.core.connected() if peer not in out]
        return tuple(out)

    def quorum_size(self, shard: str, quorum: int | str | None) -> int:
        """Resolve a quorum spec: None/"one" -> 1, "majority" -> floor(n/2)+1, "all" -> n,
        where n is the number of holders of ``shard`` (placement holders, R at most); an int
        as is.

        Raises:
            UsageError: an unknown spec or an int < 1.
        """
        if quorum is None or quorum == "one":
            return 1
        if isinstance(quorum, int) and not isinstance(quorum, bool):
            if quorum < 1:
                raise UsageError(f"quorum must be >= 1, not {quorum}")
            return quorum
        if self.placement is not None:
            n = len(self.placement.holders(shard))
        else:
            n = 1 + len(
                [q for q in self.core.connected() if shard in self._peer_holds.get(q, frozenset())]
            )
        if quorum == "majority":
            return n // 2 + 1
        if quorum == "all":
            return n
        raise UsageError(f"quorum must be an int, 'one', 'majority' or 'all', not {quorum!r}")

    def read(
        self, shard: str, *, quorum: int, state_vector: bytes, now: float, timeout: float
    ) -> int:
        """Start reading ``shard`` from its holders (not this agent); return the query id.

        ``quorum`` data answers are needed; ``state_vector`` is that of the copy the caller
        has (cached or local), so replies hold only what it lacks.
        """
        targets = [h for h in self.holders(shard) if h != self.core.name]
        qid = self.queries.read(
            shard,
            targets,
            quorum=quorum,
            state_vector=state_vector,
            now=now,
            timeout=timeout,
            connected=self.core.connected(),
        )
        self._send_queries()
        self._update_extra()
        return qid

    def scan(
        self, prefix: str, *, state_vectors: dict[str, bytes], now: float, timeout: float
    ) -> int:
        """Start reading every shard named ``prefix...`` from every other live agent."""
        if self.placement is not None:
            targets = list(self.core.members(listening=True))
        else:
            targets = list(self.core.connected())
        qid = self.queries.scan(
            prefix, targets, state_vectors=state_vectors, now=now, timeout=timeout
        )
        self._send_queries()
        self._update_extra()
        return qid

    def result(self, qid: int) -> Outcome | None:
        """The outcome of a read or scan once it ended (returned once), else None."""
        out = self.queries.result(qid)
        if out is not None:
            self._update_extra()
        return out

    def cancel(self, qid: int) -> None:
        """Forget a read the caller gave up on."""
        self.queries.cancel(qid)
        self._update_extra()

    def _send_queries(self) -> None:
        if not self.queries.active():
            return
        for peer, req in self.queries.sends(self.core.connected()):
            self._send(peer, req)
