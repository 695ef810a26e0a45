"""Repair of lost pushes: sequence gaps, relay hints, and acks we do not cover.

Pushes carry a sequence number per link and shard; a gap means one was lost, and Yjs cannot
integrate a client's later structs without it. The receiver asks the sender for a repair at
once (``SyncRequest``), and again every ``repair_timeout`` until the ``Diff`` comes. Relay
broadcasts carry the relay's state vector (``Push.hint``), and every agent learns the others'
durable states (acks): one that holds what we lack, still after ``repair_timeout``, shows a loss
even once the mesh is quiet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _yjs

__all__ = ["LinkRepair", "sv_covers"]


@dataclass(slots=True)
class LinkRepair:
    """Sequence numbers received from one peer and the repairs asked of it."""

    seq_in: dict[str, int] = field(
        default_factory=dict
    )  # last Push seq received, per shard
    repairs: dict[str, float] = field(
        default_factory=dict
    )  # shard -> when repair was asked


def sv_covers(a: bytes, b: bytes) -> bool:
    """Whether state vector ``a`` has every clock of ``b`` (both already validated)."""
    if a == b:
        return True
    have = _yjs.decode_state_vector(a)
    return all(
        have.get(client, 0) >= clock
        for client, clock in _yjs.decode_state_vector(b).items()
    )
