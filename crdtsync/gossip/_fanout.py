"""The core's calls for drivers whose medium fans out (an MQTT broker): a mixin of the core.

A websocket carries one peer; a broker topic carries every subscriber. For such a driver the
core offers, beside the per-link contract of :mod:`crdtsync.gossip.core`::

    peer = core.connection_made(hello, now, outbound=...)
    core.broadcast_link(peer)            # this link's pushes and acks go as broadcasts
    for msg in core.broadcasts_to_send(): publish it once, for every broadcast link
        # a Push on the shard's topic, an Ack on the sender's
    core.receive_broadcast(sender, msg, now)   # a broadcast from another agent, link or not
    core.discovered(name, address, now)  # the medium says this agent exists (presence)
    core.departed(name, now)             # the medium says it is gone (a Last Will)

A broadcast Push needs no link with its sender: it is applied, passed on to the links that are
not broadcast links (an agent on websockets and a broker bridges them), and its sequence number
is checked per sender and shard (a gap asks for a repair, :mod:`~crdtsync.gossip.repair`).
Without broadcast links nothing changes: no broadcast is ever made and the per-link messages
are the same, frame for frame (the golden traces pin it).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import CloseCode, InvalidShardName, InvalidUpdate, ProtocolError, UsageError
from ..messages import Ack, Message, PeerEntry, Push
from . import _yjs
from ._context import Context
from .acks import WANT_ACK
from .components import Components
from .links import Link

__all__: list[str] = []


class _Fanout:
    """Mixin of :class:`~crdtsync.gossip.GossipCore`: broadcast links (module docstring).

    The attributes declared below belong to the core (set in its ``__init__``).
    """

    _ctx: Context
    _conns: dict[str, Link]
    _p: Components
    name: str
    _light: int
    _holdable: tuple[int, bool]

    def _advance(self, now: float) -> None:  # pragma: no cover - the core's
        raise NotImplementedError

    def broadcast_link(self, peer: str) -> None:
        """The link with ``peer`` (just accepted) is carried by a medium that fans out: what
        the core sends it from now on joins :meth:`broadcasts_to_send`, except replies,
        membership and anti-entropy, which stay per link."""
        conn = self._conns.get(peer)
        if conn is None:
            raise UsageError(f"broadcast_link({peer!r}), which is not connected")
        if self._ctx.gate is not None:
            raise UsageError("broadcast links are not supported with credentials")
        conn.fanout = True
        self._p.pushes.any_fanout = True
        self._p.acks.any_fanout = True

    def broadcasts_to_send(self) -> list[Message]:
        """Messages to publish once for all broadcast links (a Push: on its shard's topic; an
        Ack: on ours), in order; emptied."""
        out, self._ctx.broadcasts = self._ctx.broadcasts, []
        return out

    def receive_broadcast(self, sender: str, msg: Message, now: float) -> bool:
        """Handle a broadcast from ``sender``, whether or not we hold a link with it. Returns
        False if it was not used (an Ack from an agent not in our membership view).

        Raises:
            ProtocolError: a message that is not a Push or an Ack, or an invalid one (nothing
                of it was applied); the driver counts it and drops it.
        """
        if self._ctx.gate is not None:
            raise UsageError("broadcasts are not supported with credentials")
        # As a Push or an Ack on a link (GossipCore.receive): it moves no membership, dial,
        # pruning or anti-entropy timer, so only the relay's, the repairs' and the acks' are
        # computed again. (A full generation bump per broadcast made every effects pass
        # recompute the dial candidates over all members: ~5 % of a swarm process at N = 128.)
        self._ctx.now = max(self._ctx.now, now)
        self._light += 1
        self._holdable = (-1, False)
        if sender == self.name:
            return False
        conn = self._conns.get(sender)
        if isinstance(msg, Push):
            self._p.pushes.on_broadcast(sender, conn, msg, now)
            return True
        if isinstance(msg, Ack):
            if msg.relayed or msg.forward:
                raise ProtocolError("a broadcast Ack carries its own states only")
            return self._p.acks.on_broadcast_ack(sender, msg)
        raise ProtocolError(f"a broadcast {type(msg).__name__}", CloseCode.UNKNOWN_MESSAGE)

    def receive_broadcasts(
        self, items: Sequence[tuple[str, Message]], now: float
    ) -> list[bool | ProtocolError]:
        """:meth:`receive_broadcast` for several broadcasts, each ``(sender, message)``, in
        order (those one turn of the driver's event loop brought): per message, what
        :meth:`receive_broadcast` returned or the ProtocolError it raised (nothing of that
        message applied; the others are).

        The updates of the Pushes among them are applied per shard in one pycrdt transaction
        where the replica set can (:meth:`crdtsync.replica.ReplicaSet.apply_many`): with a hundred
        writers on one broker, a receiver that fell behind gets several per read, and a
        transaction each (commit, observers, store append, digest reset) was a fifth of its
        CPU (issue 14). Every update is still validated first, and every change record names
        its writer. With a link that is not a broadcast link (a bridge to websocket peers,
        which forwards each update's own delta), or for a single message, it goes through
        :meth:`receive_broadcast`, as do a shard's messages the replica set did not batch
        (``apply_many`` returned False).
        """
        if len(items) < 2 or any(not c.fanout for c in self._conns.values()):
            return [self._receive_one(sender, msg, now) for sender, msg in items]
        if self._ctx.gate is not None:
            raise UsageError("broadcasts are not supported with credentials")
        self._ctx.now = max(self._ctx.now, now)
        self._light += 1  # (as in receive_broadcast)
        self._holdable = (-1, False)
        pushes = self._p.pushes
        out: list[bool | ProtocolError] = []
        taken: list[tuple[int, str, Push]] = []  # (index in out, sender, Push) to apply
        groups: dict[str, list[tuple[bytes, _yjs.UpdateInfo, str, str | None]]] = {}
        members: dict[str, list[int]] = {}  # shard -> its Pushes, as indices in taken
        for sender, msg in items:
            i = len(out)
            out.append(True)
            if sender == self.name:
                out[i] = False
            elif not isinstance(msg, Push):
                out[i] = self._receive_one(sender, msg, now)
            else:
                try:
                    infos = pushes.broadcast_infos(msg, now, every=True)
                except ProtocolError as exc:
                    out[i] = exc
                    continue
                if infos is None:
                    continue  # a shard our policy does not hold
                group = groups.setdefault(msg.shard, [])
                for j, (u, info) in enumerate(zip(msg.updates, infos, strict=True)):
                    if info is not None:  # (None: a WANT_ACK, owed once the shard's are in)
                        group.append((u, info, sender, msg.author(j)))
                members.setdefault(msg.shard, []).append(len(taken))
                taken.append((i, sender, msg))
        again: set[int] = set()
        for shard, group in groups.items():
            try:
                done = not group or self._ctx.replicas.apply_many(shard, group)
            except (InvalidUpdate, InvalidShardName):
                done = False  # one of them was refused: found below, one by one
            if not done:
                again.update(members[shard])
        for k, (i, sender, msg) in enumerate(taken):
            conn = self._conns.get(sender)
            if k not in again:
                # A WANT_ACK (the sender waits in replicated()) is owed after the updates of
                # its turn are in, as one by one: a shard the batch brought is held by then.
                for u in msg.updates:
                    if u == WANT_ACK:
                        self._p.acks.owe_broadcast(msg.shard, now)
                pushes.broadcast_applied(sender, conn, msg, now)
                continue
            try:  # (what the batch applied already is a duplicate now: no change)
                pushes.on_broadcast(sender, conn, msg, now)
            except ProtocolError as exc:
                out[i] = exc
        return out

    def _receive_one(self, sender: str, msg: Message, now: float) -> bool | ProtocolError:
        try:
            return self.receive_broadcast(sender, msg, now)
        except ProtocolError as exc:
            return exc

    def discovered(self, name: str, address: str, now: float) -> None:
        """The medium shows that agent ``name`` exists at ``address`` (retained presence on a
        broker): it joins the membership view as any reported agent would, to be dialled if
        the overlay wants a link with it."""
        self._advance(now)
        if name != self.name:
            self._p.members.merge(PeerEntry(name, address, 0, True), self.name, now)

    def departed(self, name: str, now: float) -> None:
        """The medium shows that agent ``name`` is gone (its Last Will, or it said goodbye):
        it leaves the overlay now, instead of after ``suspect_timeout``."""
        self._advance(now)
        self._p.members.left(name, now)
        self._p.repairs.forget(name)
