"""The narrow view of a :class:`~crdtsync.gossip.GossipCore` that its plug-ins get."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import Message
from .policy import CoreView

if TYPE_CHECKING:
    from ..replica import ReplicaSet
    from .config import GossipConfig
    from .core import GossipCore

__all__ = ["_View"]


class _View:
    """The narrow view of a :class:`GossipCore` its plug-ins get (:class:`CoreView`)."""

    __slots__ = ("_core",)

    def __init__(self, core: GossipCore) -> None:
        self._core = core

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def mesh(self) -> str:
        return self._core.mesh

    @property
    def replicas(self) -> ReplicaSet:
        return self._core.replicas

    @property
    def config(self) -> GossipConfig:
        return self._core.config

    @property
    def address(self) -> str | None:
        return self._core.address

    def connected(self) -> tuple[str, ...]:
        return self._core.connected()

    def members(self, *, listening: bool = False) -> tuple[str, ...]:
        return self._core.members(listening=listening)

    def replicated(self, shard: str, state_vector: bytes, delete_set: bytes) -> tuple[str, ...]:
        return self._core.replicated(shard, state_vector, delete_set)

    def send(self, peer: str, msg: Message) -> None:
        self._core._ctx.send(peer, msg)

    def overlay_changed(self) -> None:
        self._core.overlay_changed()

    def reply_room(self, peer: str) -> bool:
        ctx = self._core._ctx
        conn = ctx.links.get(peer)
        if conn is None or conn.closing or not conn.writable:
            return False
        return ctx.guard.reply_room(peer, ctx.now)

    def replied(self, peer: str, size: int) -> None:
        self._core._ctx.guard.replied(peer, size)


def _check_view(view: _View) -> CoreView:
    return view  # mypy: _View implements CoreView
