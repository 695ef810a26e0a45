"""What the broker brings to :class:`~crdtsync.transports.mqtt.MqttTransport` (a mixin,
split from it): every received message is sorted by its topic into a shard push or ack
(broadcast, decoded once per process), a presence record (membership: join, restart, Will)
or a frame of a logical link on our inbox (OPEN with the dialer's Hello, DATA, CLOSE).
Anything that is none of these, or does not decode, is counted as ``garbage`` and never
applied; a link's protocol error closes that link with its code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdtsync import wire
from crdtsync.errors import CloseCode, ProtocolError
from crdtsync.gossip import GossipCore, Handshake
from crdtsync.messages import Ack, Close, Hello, Message, Push
from crdtsync.names import is_valid_shard_name

from ._mqtt_session import BrokerSession
from ._mqtt_topics import (
    CLOSE,
    OPEN,
    BrokerConfig,
    decode_frame,
    encode_frame,
    parse_broadcast_topic,
    parse_inbox_topic,
    parse_presence_topic,
)

__all__ = ["BOOTSTRAP_DIALS", "BROADCAST_KICK_DELAY"]

logger = logging.getLogger("crdtsync.transports.mqtt")

#: An agent without links dials at most this many present agents at once (then PeerLists).
BOOTSTRAP_DIALS = 3

#: Seconds the core's effects may wait after broadcasts alone arrived (an agent on the broker
#: alone; one with websocket peers kicks at once, to pass them on): see _Incoming._on_message.
BROADCAST_KICK_DELAY = 0.02

#: Broadcast frames decoded lately in this process, by their bytes (at most _DECODED_MAX):
#: the broker delivers each publish to every agent, and agents that share a process (a
#: swarm of async agents) decode it once. Messages are frozen, so sharing one is safe; each
#: agent's core still validates and applies the updates to its own document and store.
_DECODED: dict[bytes, Message] = {}
_DECODED_MAX = 256
#: Larger frames are decoded by each agent (the cache holds at most 256 x 64 KiB, whatever
#: a client publishes): a write's push is a few hundred bytes.
_DECODED_MAX_BYTES = 64 << 10


def _decode_broadcast(payload: bytes, max_size: int) -> Message:
    """:func:`wire.decode` of a broadcast frame, shared by this process's agents.

    Raises:
        ProtocolError: as wire.decode (a refused frame is not remembered).
    """
    msg = _DECODED.get(payload)
    if msg is not None and len(payload) <= max_size:
        return msg
    msg = wire.decode(payload, max_size=max_size)
    if len(payload) > _DECODED_MAX_BYTES:
        return msg
    if len(_DECODED) >= _DECODED_MAX:
        del _DECODED[next(iter(_DECODED))]  # the oldest
    _DECODED[payload] = msg
    return msg


#: kinds of topic (see _Incoming._topic)
_INBOX, _BROADCAST, _PRESENCE, _GARBAGE = range(4)
#: (kind, shard or None, sender or agent, whether that name is valid)
_Topic = tuple[int, str | None, str, bool]
#: topics remembered per agent, at most (each agent's inbox, shard and presence topics)
_TOPICS_MAX = 4096


@dataclass(eq=False)
class _Link:
    """One logical connection with another agent, carried on the two inbox topics."""

    remote: str  # the agent at the other end (from the topic, so the broker's ACLs apply)
    id: bytes
    outbound: bool
    created: float
    handshake: Handshake
    peer: str | None = None  # set once the core accepted the Hello
    open: bool = True


class _Incoming:
    """Mixin of :class:`~crdtsync.transports.mqtt.MqttTransport`: handle what the broker
    delivers. The attributes and methods declared below belong to the transport."""

    core: GossipCore
    broker: BrokerConfig
    session: BrokerSession
    counters: dict[str, int]
    _mesh: str
    _max_frame: int
    _closed: bool
    _kick_soon: bool
    _kick_later: asyncio.TimerHandle | None
    _on_activity: Callable[[], None]
    _links: dict[tuple[str, bytes], _Link]
    _by_peer: dict[str, _Link]
    _present: dict[str, str]
    _topics: dict[str, _Topic]
    #: broadcasts received in this turn of the loop, not handed to the core yet: (shard or
    #: None for an acks topic, sender, payload, whether the sender's name is valid)
    _held: list[tuple[str | None, str, bytes, bool]]

    if TYPE_CHECKING:

        def kick(self) -> None: ...

        def _count(self, key: str, n: int = 1) -> None: ...

        def _publish(self, topic: str, payload: bytes) -> None: ...

        def _send(self, link: _Link, frame: bytes, kind: int = ...) -> None: ...

        def _inbox(self, to: str) -> str: ...

        def _dial(self, address: str, name: str | None = None) -> None: ...

        def _send_handshake(self, link: _Link) -> None: ...

        def _close(self, link: _Link, *, report: bool = True, code: int = ...) -> None: ...

        def _drop(self, link: _Link, code: int | None = None) -> None: ...

    # -- incoming ------------------------------------------------------------------------------

    def _topic(self, topic: str) -> _Topic:
        """What ``topic`` is to us (parsed once per topic: a write's topic reaches every
        agent, 127 times a write at N = 128, and the parsing and the name checks were a few
        percent of a receiver's CPU)."""
        known = self._topics.get(topic)
        if known is not None:
            return known
        p, mesh = self.broker.prefix, self._mesh
        kind: _Topic
        sender = parse_inbox_topic(p, mesh, self.core.name, topic)
        broadcast = None if sender is not None else parse_broadcast_topic(p, mesh, topic)
        if sender is not None:
            kind = (_INBOX, None, sender, True)
        elif broadcast is not None:
            shard, sender = broadcast
            kind = (_BROADCAST, shard, sender, is_valid_shard_name(sender))
        else:
            agent = parse_presence_topic(p, mesh, topic)
            kind = (_GARBAGE, None, "", False) if agent is None else (_PRESENCE, None, agent, True)
        if len(self._topics) >= _TOPICS_MAX:
            self._topics.clear()  # (a client publishing on ever new topics gains nothing)
        self._topics[topic] = kind
        return kind

    def _on_message(self, topic: str, payload: bytes) -> None:
        kind, shard, name, valid = self._topic(topic)
        if kind == _BROADCAST:
            # Held until the end of this turn of the event loop (or the next message that is
            # not a broadcast, so the order stays as received), then handed to the core
            # together: a receiver that fell behind gets several per read, and the core
            # applies them per shard in one pycrdt transaction (issue 14).
            if name != self.core.name:  # (a broker without no-local support)
                if not self._held:
                    asyncio.get_running_loop().call_soon(self._take_held)
                self._held.append((shard, name, payload, valid))
            return
        if self._held:
            self._take_held()
        if kind == _INBOX:
            self._on_frame(name, payload)
        elif kind == _PRESENCE:
            self._on_presence(name, payload)
        else:
            self._count("garbage")
            return
        if not self._closed and not self._kick_soon:
            # One kick for every message the client hands over in this turn of the loop: the
            # core's effects (and its next deadline) once per batch, not once per message.
            self._kick_soon = True
            asyncio.get_running_loop().call_soon(self._deferred_kick)

    def _deferred_kick(self) -> None:
        self._kick_soon = False
        if self._kick_later is not None:
            self._kick_later.cancel()
            self._kick_later = None
        if not self._closed:
            self.kick()
            self._on_activity()

    def _take_held(self) -> None:
        """Hand the broadcasts held since the last call to the core, at once, then have the
        core's effects run (soon)."""
        held, self._held = self._held, []
        if not held or self._closed:
            return
        self._count("broadcast_turns")  # (broadcasts_in / broadcast_turns: held per turn)
        got: list[tuple[str, Message]] = []
        for shard, sender, payload, valid in held:
            try:
                got.append((sender, self._broadcast_message(shard, sender, payload, valid)))
            except ProtocolError as exc:
                self._refused_broadcast(sender, exc)
        try:
            results = self.core.receive_broadcasts(got, time.monotonic())
        except Exception:  # noqa: BLE001 - as deliver_directly: a bug must not end the client
            self._count("handler_errors")
            logger.exception("%s: handling received broadcasts failed", self.core.name)
            return
        for (sender, _), used in zip(got, results, strict=True):
            if isinstance(used, ProtocolError):
                self._refused_broadcast(sender, used)
            else:
                self._count("broadcasts_in" if used else "broadcasts_unused")
        if self._kick_soon or self._kick_later is not None or self._closed:
            return
        if len(self._by_peer) >= len(self.core.connected()):
            # Broadcasts alone (no websocket peer to pass them on to): what they leave the
            # core to do (a repair request after a gap, an Ack a WANT_ACK asked for) can wait
            # a little, and the kicks of several receives become one. A kick per receive was
            # a tenth of a receiver's CPU with 32 agents in a process.
            self._kick_later = asyncio.get_running_loop().call_later(
                BROADCAST_KICK_DELAY, self._deferred_kick
            )
            return
        self._kick_soon = True
        asyncio.get_running_loop().call_soon(self._deferred_kick)

    def _broadcast_message(
        self, shard: str | None, sender: str, payload: bytes, valid_sender: bool
    ) -> Message:
        """The message of a Push on a shard's topic (``shard``) or of an Ack on an acks topic
        (None), from ``sender`` (``valid_sender``: whether that is a valid agent name).

        Raises:
            ProtocolError: it is not one (garbage: counted, never applied).
        """
        if not valid_sender:
            raise ProtocolError(f"sender {sender!r}")
        msg = _decode_broadcast(payload, self._max_frame)
        if shard is None and not isinstance(msg, Ack):
            raise ProtocolError(f"a {type(msg).__name__} on an acks topic")
        if shard is not None and not (isinstance(msg, Push) and msg.shard == shard):
            raise ProtocolError(f"not a Push of {shard!r} on its topic")
        return msg

    def _refused_broadcast(self, sender: str, exc: ProtocolError) -> None:
        self._count("garbage")
        if self.counters["garbage"] == 1 or self.counters["garbage"] % 1000 == 0:
            logger.warning("%s: ignoring a broadcast from %s: %s", self.core.name, sender, exc)

    def _on_presence(self, agent: str, payload: bytes) -> None:
        if agent == self.core.name:
            return
        if not is_valid_shard_name(agent):
            self._count("garbage")
            return
        gone = not payload
        instance = None
        if not gone:
            try:
                record: Any = json.loads(payload)
                instance = str(record["instance"])
            except Exception:  # noqa: BLE001 - anything malformed is counted, never used
                self._count("garbage")
                return
        old = self._present.get(agent)
        if gone or (old is not None and old != instance):
            # It stopped, died (its Will), or restarted: its links are dead at its end.
            for link in [lk for lk in self._links.values() if lk.remote == agent]:
                self._drop(link)
        now = time.monotonic()
        if gone:
            if self._present.pop(agent, None) is not None:
                self.core.departed(agent, now)
            return
        assert instance is not None
        self._present[agent] = instance
        if old != instance:
            self.core.discovered(agent, f"mqtt:{agent}", now)
        if any(lk.remote == agent for lk in self._links.values()):
            return
        connected = self.core.connected()
        pending = sum(1 for lk in self._links.values() if lk.peer is None and lk.outbound)
        if (not connected and pending < BOOTSTRAP_DIALS) or (
            self.core.name < agent and agent not in self.core.members()
        ):
            self._dial(f"mqtt:{agent}", agent)

    def _on_frame(self, sender: str, payload: bytes) -> None:
        try:
            kind, link_id, body = decode_frame(payload)
        except ValueError:
            self._count("garbage")
            return
        self._count("received")
        key = (sender, link_id)
        link = self._links.get(key)
        if kind == CLOSE:
            if link is not None:
                self._drop(link, int.from_bytes(body[:2], "big") if len(body) >= 2 else 1005)
            return
        if link is None:
            if kind != OPEN:
                self._count("stale")  # a link we closed or gave up on: tell the other end
                self._publish(self._inbox(sender), encode_frame(CLOSE, link_id, b"\x03\xe8"))
                return
            if not is_valid_shard_name(sender):
                self._count("garbage")
                return
            hs = Handshake(self.core, outbound=False)  # says nothing before the OPEN's Hello
            link = self._links[key] = _Link(
                sender, link_id, outbound=False, created=time.monotonic(), handshake=hs
            )
        elif kind == OPEN:
            return  # a duplicate OPEN
        now = time.monotonic()
        try:
            msg = wire.decode(body, max_size=self._max_frame)
            if link.peer is None:
                self._accept(link, msg, now)
            else:
                self.core.receive(link.peer, msg, now)
        except ProtocolError as exc:
            self._count("refused_frames")
            logger.warning("%s: closing the link with %s: %s", self.core.name, sender, exc)
            if link.peer is not None:
                self._send(link, wire.encode(Close(exc.code)))
            self._close(link, code=exc.code)

    def _accept(self, link: _Link, msg: Message, now: float) -> None:
        if isinstance(msg, Hello) and msg.name != link.remote:
            raise ProtocolError(
                f"a Hello from {msg.name!r} on {link.remote!r}'s topic", CloseCode.BAD_HANDSHAKE
            )
        try:
            peer = link.handshake.receive(msg, now)
        except ProtocolError as exc:
            self._send_handshake(link)  # a concurrent dial gets our Hello before the CLOSE
            if link.handshake.duplicate:
                self._close(link, report=False, code=exc.code)  # the core keeps the other one
                return
            raise
        self._send_handshake(link)  # the acceptor's Hello, ahead of what the core queued
        old = self._by_peer.pop(peer, None)
        if old is not None:  # replaced by this newer link: not reported lost
            self._close(old, report=False)
        link.peer = peer
        self._by_peer[peer] = link
        self.core.broadcast_link(peer)  # its pushes and acks: one publish for all
        if self.session.paused:
            self.core.pause_writing(peer)
