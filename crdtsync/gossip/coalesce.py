"""The local coalescing window: a stream of local writes leaves as one update per window.

An agent streaming small writes (an LLM writing its output token by token, each token its own
transaction) would otherwise cost the core, the wire and every receiver one update per write:
one Push, one validation, one pycrdt transaction and one observer call per token at each
follower (issue 17's stream row). With a LAN config (``send_when_idle`` without aligned
windows, :meth:`~crdtsync.gossip.config.GossipConfig.lan`), the core's push window applies to
local writes too, per agent:

* a write after a whole quiet window goes at once (no latency added to a lone write);
* a write within a window of the last hand-over waits for the window's end; the second of
  two windows in a row that held a dense stream (:data:`GROW_AT` writes or more per
  ``push_interval``: 2,000 writes/s on the LAN config) doubles the next, up to
  ``push_interval * 2**MAX_DOUBLINGS`` (16 ms), and one under that rate halves it again. A
  moderate rate (1,000 writes/s) therefore keeps the first window and waits at most
  ``push_interval`` (2 ms): only a stream dense enough for the per-push cost to matter pays
  the longer wait. One dense window alone is not such a stream: a paced writer that was
  late (its process waited for a CPU) writes what it owes in one go, and widening the next
  window for that made the writes that followed wait up to 4 ms instead of 2 (issue 18:
  the paced p99);
* a widened window (the stream was dense), or a first one that already holds a dense
  window's worth of writes (:data:`GROW_AT`), ends early when the writer's stream pauses:
  :data:`PAUSE` after its last write (:meth:`Coalescer.pause_at`, a deadline the core reports
  through ``next_deadline`` and acts on in ``tick``, so every driver and the simulator see
  the same pause). The last window of a burst then goes when the burst ends, not up to 16 ms
  later (issue 17/18: the 8-agent burst paid that wait whole). A stream that never was dense
  and has not written that many in its window still waits for the window's end, so a sparse
  stream (tokens read from a network) is not pushed write by write. A writer that yields
  after each write and waits for a CPU meanwhile does not look paused: the driver's timer
  comes due behind the writer's next step, which writes first and moves the deadline;
* at a window's end the deltas held for each shard are merged into one update (the
  :class:`~crdtsync.replica.ReplicaSet`'s optional ``merge``: pycrdt merges consecutive
  characters of one client into one struct), then pushed to every peer holding the shard.

With aligned (WAN) windows (``align_windows`` without ``send_when_idle``: the class defaults)
every write waits for the window's boundary anyway, so the coalescer is *aligned*
(:attr:`Coalescer.aligned`): it holds a shard's local writes from the first of a window to the
boundary's flush, where they are merged into one update per shard and queued for every peer
holding the shard, then sent with the rest of the window (:class:`~crdtsync.gossip.window.
Window`). Its ``due`` stays None: the boundary is the window's flush (``flush_at``), which the
window's first write asks for. Before (issue 17/18, branch h-wanburst), each write was queued
for every link on its own and went as its own update in the window's Push: a 5,000-write
burst cost every receiver 5,000 validations, place records and pycrdt applies instead of a
few squashed ones, and the writer a hand-over and 7 queue appends per write (the WAN burst
spent 2.7x the CPU per update of the LAN one). Deltas handed over together (one driver turn,
:meth:`GossipCore.local_updates`) are merged in every config. Pure state: times come in as
arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["GROW_AT", "MAX_DOUBLINGS", "PAUSE", "Coalescer"]

#: A busy stream's window grows to at most push_interval * 2**MAX_DOUBLINGS.
MAX_DOUBLINGS = 3
#: Writes per ``push_interval`` at or beyond which the next window doubles (under it, the
#: next window halves).
GROW_AT = 4
#: Seconds without a local write after which a window that may end at a pause goes (its
#: writer's stream paused: :meth:`Coalescer.pause_at`).
PAUSE = 0.0005


class Coalescer:
    """The coalescing window of one agent's local writes (see the module docstring).

    Args:
        base: the first window, in seconds (the LAN config's ``push_interval``); 0 turns
            holding off (every write goes at once).
        pause: seconds without a write that end a window that may end at a pause.
    """

    def __init__(self, base: float, pause: float = PAUSE, *, aligned: bool = False) -> None:
        self.base = base
        self.pause = pause
        #: Aligned windows (see the module docstring): writes wait for the window's flush,
        #: per shard from the first of the window (:meth:`hold_aligned`), never at once.
        self.aligned = aligned
        #: shard -> deltas held until :attr:`due`, in the order written.
        self.held: dict[str, list[bytes]] = {}
        #: When the held deltas go (None: nothing held).
        self.due: float | None = None
        self._last = -math.inf  # when deltas last went
        self._busy = 0  # doublings of the window now in force
        self._dense = False  # the last window held a dense stream
        self._count = 0  # writes held in the open window
        self._wrote = -math.inf  # when the last write was held

    @property
    def window(self) -> float:
        """The length of the current window, in seconds."""
        return self.base * float(1 << self._busy)

    def hold(self, shard: str, deltas: Sequence[bytes], now: float) -> bool:
        """Hold ``deltas`` of ``shard`` written at ``now`` and return False, or return True
        when they go at once (a quiet window since the last hand-over: nothing to batch)."""
        if self.base <= 0:
            return True
        if self.due is None:
            end = self._last + self.window
            if now >= end:  # quiet for a window: at once, and the next window narrows
                self._busy = max(0, self._busy - 1) if now < end + self.window else 0
                self._dense = False
                self._last = now
                return True
            # Written again within the window: wait for its end.
            self.due = end
        self.held.setdefault(shard, []).extend(deltas)
        self._count += len(deltas)
        self._wrote = now
        return False

    def hold_aligned(self, shard: str, deltas: Sequence[bytes]) -> None:
        """Hold ``deltas`` of ``shard`` until the window's flush (aligned windows; the caller
        asks for that flush when the shard's first write of the window comes)."""
        self.held.setdefault(shard, []).extend(deltas)
        self._count += len(deltas)

    @property
    def holding(self) -> bool:
        """Whether local writes are held: in an open window, or for the flush (aligned)."""
        return self.due is not None or bool(self.held)

    def add(self, shard: str, delta: bytes, now: float) -> bool:
        """Add one write to the open window and return True, or return False (nothing done)
        when no window is open, or when this write would make the window one that may end at
        a pause (the caller then hands it over with :meth:`hold`, so that its driver reads the
        new deadline: :meth:`pause_at`). Aligned: True when the window holds writes of
        ``shard`` already (its flush is asked for), else False."""
        if self.aligned:
            held = self.held.get(shard)
            if held is None:
                return False
            held.append(delta)
            self._count += 1
            return True
        if self.due is None or (not self._busy and self._count + 1 == GROW_AT):
            return False
        self.held.setdefault(shard, []).append(delta)
        self._count += 1
        self._wrote = now
        return True

    def paused(self) -> bool:
        """Whether the open window may end once the writer's stream pauses: it was
        widened (the stream was dense for two windows in a row: its pause is most likely the
        end of a burst), or it holds at least a dense window's worth of writes (``GROW_AT``
        per ``push_interval`` of its length; see the module docstring)."""
        if self.due is None:
            return False
        return bool(self._busy) or self._count >= GROW_AT

    def pause_at(self) -> float | None:
        """When the open window ends because the writer paused (its last write + ``pause``),
        if it may (:meth:`paused`) and that comes before its end (:attr:`due`); else None.
        A later write moves it: the caller checks again when it comes (:meth:`paused_by`)."""
        due = self.due
        if due is None or not self.paused():
            return None
        at = self._wrote + self.pause
        return at if at < due else None

    def paused_by(self, now: float) -> bool:
        """Whether the open window may end at ``now``, because the writer paused."""
        at = self.pause_at()
        return at is not None and now >= at

    def take(self, now: float) -> dict[str, list[bytes]]:
        """The held deltas per shard, which go now (at :attr:`due`, or earlier on close)."""
        held, self.held, self.due = self.held, {}, None
        writes, self._count = self._count, 0  # made within the window
        if self.aligned:  # the window is the flush's: nothing to widen or narrow
            return held
        per_window = GROW_AT << self._busy  # GROW_AT per push_interval, for this window
        if writes >= per_window:
            # A dense stream (the second dense window in a row): the per-push cost
            # matters, widen. A first one may be a late writer's catch-up: keep the window.
            if self._dense:
                self._busy = min(self._busy + 1, MAX_DOUBLINGS)
            self._dense = True
        else:  # under that rate latency matters more: narrow (no band where a wide one stays)
            self._busy = max(0, self._busy - 1)
            self._dense = False
        self._last = now
        return held
