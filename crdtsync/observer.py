"""What the store's committer and the transports report as it happens: the ``Observer`` hooks.

The lower layers (the group committer, the websocket and MQTT drivers) must not import
Prometheus, nor anything above them. They call an :class:`Observer` they are given instead;
:class:`crdtsync.metrics.MetricsSink` is the one the composition root gives every agent (through
:mod:`crdtsync._extensions`), and :data:`NULL_OBSERVER` ignores everything (the default, so a
committer or transport built on its own needs none).

Every hook runs in the event-loop thread of the agent, after the event, and must be cheap (a
few dict and float updates). It should not raise; the group committer logs an exception from
:meth:`Observer.committed` and goes on, so a metrics bug never holds up a flush.

The sans-I/O gossip core reports nothing here: it keeps plain counters that a driver or the
metrics read when asked (:attr:`crdtsync.gossip.GossipCore.repairs_asked`), so it stays free of
callbacks into upper layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["NULL_OBSERVER", "NullObserver", "Observer"]


class Observer(Protocol):
    """Hooks called as durability and transport events happen (see the module docstring)."""

    def committed(self, seconds: float, writes: Mapping[str, tuple[int, int]]) -> None:
        """One group commit succeeded: it took ``seconds`` (the LMDB write transaction and its
        fsync) and appended, per shard, ``(updates, bytes)`` to the log (metadata entries are
        not counted). ``len(writes)`` is the group-commit size in shards."""

    def compacted(self, shard: str, seconds: float, bytes_before: int, bytes_after: int) -> None:
        """A compaction of ``shard`` folded its log into its snapshot in ``seconds``; the
        shard's stored bytes (log + snapshot) went from ``bytes_before`` to ``bytes_after``."""

    def closed(self, code: int, by: str) -> None:
        """A peer connection closed with close ``code`` (a websocket code, or a
        :class:`~crdtsync.errors.CloseCode`); ``by`` is ``"us"`` (we sent the close),
        ``"peer"`` (it did) or ``"none"`` (the connection dropped: code 1006)."""


class NullObserver:
    """An :class:`Observer` that ignores everything."""

    def committed(self, seconds: float, writes: Mapping[str, tuple[int, int]]) -> None:
        """Ignored."""

    def compacted(self, shard: str, seconds: float, bytes_before: int, bytes_after: int) -> None:
        """Ignored."""

    def closed(self, code: int, by: str) -> None:
        """Ignored."""


#: The shared do-nothing observer.
NULL_OBSERVER: Observer = NullObserver()
