"""The gossip core over an MQTT 5 broker (aiomqtt): :class:`MqttTransport`.

A third driver of the unchanged sans-I/O core (:mod:`crdtsync.gossip`), beside websockets and
the in-process :class:`~crdtsync.testing.LocalHub`. Agents never accept connections: each one
keeps one client connection to the broker, so agents behind NAT take part, and the broker's
clustering, bridges, TLS and ACLs are the operator's.

How the driver contract maps onto a broker (topics in :mod:`._mqtt_topics`):

* *Address and dials.* An agent's address is ``mqtt:<name>``. A dial of it opens a *logical
  link*: an 8-byte random id, and the dialler's Hello in an ``OPEN`` frame on the peer's inbox
  topic ``<prefix>/<mesh>/inbox/<to>/<from>``. The peer answers with its Hello on the same
  link id, once its core accepted the dialler's; every later frame of either side is a
  ``DATA`` frame, and a ``CLOSE`` frame ends the link. So the core sees ordinary
  connections: Hello first, duplicates settled by the core,
  pushes and acks per peer, anti-entropy on every new link (which is how an agent that was
  offline catches up). Frames are QoS 1; MQTT keeps them in order per topic.
* *Handshake roles.* A broker has no connections between agents, so the roles of the core's
  :class:`~crdtsync.gossip.Handshake` are those of the logical link: the agent that publishes
  the ``OPEN`` frame is the dialer (its Hello is in it), the agent that receives it is the
  acceptor, which sends nothing on the link until its core has validated the dialler's Hello
  (an ``OPEN`` with garbage, another mesh or a foreign name gets a ``CLOSE`` frame only). The
  broker itself is no party to a handshake, and broadcast topics have none: the broker's
  login and ACLs guard them.
* *Membership and failure detection.* On every (re)connection an agent publishes a retained
  presence record (its run's instance id) and leaves a Last Will that clears it (an empty
  retained message). When an agent's presence disappears (it stopped, or the broker saw its
  connection die: SIGKILL, a network failure after ``keepalive`` x 1.5), its links are
  reported lost to the core at once; when it reappears with another instance id (it
  restarted), the old links are dropped. Presence is also the seed list: an agent with no
  link dials up to :data:`BOOTSTRAP_DIALS` present agents, and a present agent the core does
  not know is dialled by the smaller name; the core's own PeerList gossip does the rest.
* *Sessions.* The first connection of a run starts clean (frames queued for an earlier run's
  links are useless to this one); reconnections resume the session (``session_expiry``), so
  QoS 1 frames in flight during a short broker hiccup are not lost. The links themselves are
  dropped when the broker connection is (peers saw our Will), and rebuilt afterwards.
* *A refusing broker.* A refused login raises :class:`~crdtsync.errors.BrokerRefused` from
  :meth:`MqttTransport.start`; later failures are retried with exponential backoff and jitter
  (0.5 s doubling to 30 s), logged once per change of state, never in a tight loop.

*Broadcasts.* Every accepted link is a broadcast link (:mod:`crdtsync.gossip._fanout`): the
  core hands out one Push per shard and batch for all of them, published once on
  ``<prefix>/<mesh>/shard/<shard>/<from>`` (the broker fans it out to every agent), published
  at QoS 1 and delivered at QoS 0 (no PUBACK per receiver: a lost delivery is a gap in the
  sender's sequence numbers, repaired over a link), subscribed with MQTT 5's *no local*
  option. A write costs one publish whatever the number
  of agents. A broadcast needs no link with its sender (the core applies it and checks its
  sequence number per sender and shard), so links only carry anti-entropy, repairs and
  membership; presence feeds the membership view directly (``core.discovered`` /
  ``core.departed``). Acks are not sent per write: an agent waiting in ``replicated()``
  broadcasts a WANT_ACK Push, and every agent holding the shard answers with one Ack on
  ``<prefix>/<mesh>/acks/<from>`` (then acks its next two commits of it), link or not.
  Anything on a broadcast topic that is not a well-formed Push of that very shard (or an Ack)
  is counted as ``garbage`` and never applied.
* *With websockets too* (``Agent(listen=..., broker=...)``): one core, two drivers, whose
  effects :mod:`crdtsync._switchboard` routes (frames by the link that carries the peer, dials
  by address, broadcasts to the broker). Such an agent bridges both sides: what a websocket
  peer sends it is broadcast on the broker, what the broker brings is pushed to its websocket
  peers.

An agent on a broker alone gets ``GossipConfig.lan(full_mesh_max=8, overlay_shape="ring")``
unless it passes its own settings: its links carry only anti-entropy, repairs and membership,
so a ring beyond 8 agents does (a join or a departure moves only the edges around that agent;
a tree moved most of them).

Left as it is: credentials (the core's signed records and per-peer permissions) are refused
over a broker; the broker's login and ACLs are the only authentication there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from crdtsync import wire
from crdtsync.errors import BrokerRefused, CloseCode, ProtocolError, UsageError
from crdtsync.gossip import GossipCore, Handshake
from crdtsync.messages import Ack, Close, Hello, Message, Push
from crdtsync.names import is_valid_shard_name
from crdtsync.observer import NULL_OBSERVER, Observer
from crdtsync.transport import CoreTimer

from ._mqtt_session import INFLIGHT_HIGH, INFLIGHT_LOW, BrokerSession
from ._mqtt_topics import (
    CLOSE,
    DATA,
    OPEN,
    BrokerConfig,
    acks_topic,
    decode_frame,
    encode_frame,
    inbox_topic,
    parse_broadcast_topic,
    parse_broker,
    parse_inbox_topic,
    parse_presence_topic,
    presence_topic,
    shard_topic,
)

__all__ = [
    "BOOTSTRAP_DIALS",
    "INFLIGHT_HIGH",
    "INFLIGHT_LOW",
    "MqttTransport",
    "mqtt_factory",
    "parse_broker",
]

logger = logging.getLogger(__name__)

#: An agent without links dials at most this many present agents at once (then PeerLists).
BOOTSTRAP_DIALS = 3

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


def mqtt_factory(url: str, *, insecure: bool = False) -> Callable[..., MqttTransport]:
    """A :class:`~crdtsync.transport.TransportFactory` for the broker at ``url``.

    The URL is checked now (:func:`parse_broker`: malformed, or non-loopback without TLS and a
    login unless ``insecure``), before any agent opens its store.
    """
    broker = parse_broker(url, insecure=insecure)

    def factory(
        core: GossipCore,
        *,
        listen: str | None,
        max_frame: int,
        on_activity: Callable[[], None],
        credentials: object = None,
    ) -> MqttTransport:
        if credentials is not None:
            # The websocket driver authenticates every peer with them; through a broker, frames
            # would be authenticated by the broker's ACLs only. Refusing beats weakening.
            raise UsageError(
                "mesh credentials are not supported over an MQTT broker yet: peers would be "
                "authenticated by the broker's login and ACLs only (use websockets, or no credentials)"
            )
        if listen is not None:
            raise UsageError(
                "the broker driver does not listen (Agent(listen=..., broker=...) runs it beside "
                "the websocket driver)"
            )
        return MqttTransport(core, broker=broker, max_frame=max_frame, on_activity=on_activity)

    return factory


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


class MqttTransport:
    """One agent's driver on an MQTT broker (see the module docstring)."""

    def __init__(
        self,
        core: GossipCore,
        *,
        broker: BrokerConfig,
        max_frame: int,
        on_activity: Callable[[], None],
    ) -> None:
        self.core = core
        self.broker = broker
        self._max_frame = max_frame
        self._on_activity = on_activity
        self._address = f"mqtt:{core.name}"
        self._instance = os.urandom(8).hex()  # this run, in our presence record
        self._mesh = core.mesh
        self._links: dict[tuple[str, bytes], _Link] = {}
        self._by_peer: dict[str, _Link] = {}
        self._present: dict[str, str] = {}  # agent -> instance, from retained presence
        self._timer = CoreTimer(core, self._after_tick)
        self._closed = False
        self._kick_soon = False  # a kick is scheduled for the messages of this loop turn
        #: what happened, for tests and ``Agent.counters``: frames, garbage, stale, attempts...
        self.counters: dict[str, int] = {}
        #: told of every link's close code (see :meth:`set_observer`)
        self.observer: Observer = NULL_OBSERVER
        #: the broker connection
        self.session = BrokerSession(
            broker,
            identifier=f"{broker.prefix}/{self._mesh}/{core.name}",
            name=core.name,
            will=(self._presence_topic(core.name), b""),
            on_connected=self._connected,
            on_message=self._on_message,
            on_lost=self._broker_lost,
            on_pressure=self._pressure,
            counters=self.counters,
        )

    @property
    def address(self) -> str:
        """``mqtt:<name>``: how other agents' cores name this one."""
        return self._address

    @property
    def state(self) -> str:
        """``new``, ``connected``, ``refused`` or ``unreachable``."""
        return self.session.state

    def set_observer(self, observer: Observer) -> None:
        """Report each link's end to ``observer``: the code we closed it with (``"us"``), the
        code of the peer's ``CLOSE`` frame (``"peer"``), or 1006 (``"none"``) when its Will,
        its presence or our broker connection ended it. The agent passes its metrics here."""
        self.observer = observer

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (waiting for the first attempt's outcome), then run in the background.

        Raises:
            BrokerRefused: the broker refused our login; nothing keeps running.
        """
        self.core.set_address(self._address)
        try:
            await self.session.start(self.core.config.connect_timeout)
        except BrokerRefused:
            await self.close()
            raise
        self.kick()

    async def close(self) -> None:
        """Say goodbye on every link, clear our presence, disconnect cleanly (no Will)."""
        if self._closed:
            return
        for link in list(self._links.values()):
            if link.peer is not None:
                self._send(link, wire.encode(Close(CloseCode.GOING_AWAY)))
            self._close(link, report=False, code=CloseCode.GOING_AWAY)
        self._closed = True
        self._timer.close()
        await self.session.close(last=(self._presence_topic(self.core.name), b""))

    async def run(self) -> None:
        """Keep the broker connection up until closed (:meth:`start` runs it for you)."""
        await self.session.run()

    async def _connected(self, client: aiomqtt.Client) -> None:
        """Every (re)connection: subscribe to our inbox and everyone's presence, announce ours."""
        p, mesh, me = self.broker.prefix, self._mesh, self.core.name
        await client.subscribe(inbox_topic(p, mesh, me, None), qos=1)
        await client.subscribe(presence_topic(p, mesh, None), qos=1)
        # Not our own broadcasts (no local). Pushes are delivered at QoS 0: a PUBACK from every
        # receiver for every write was a packet, a socket write and paho's bookkeeping per
        # receive (about a tenth of an agent's CPU at N = 128), and bought nothing: a push the
        # broker could not deliver leaves a gap in its sender's sequence numbers, which the
        # core repairs over a link, and a lost connection rebuilds the links, whose
        # anti-entropy brings what was missed. The writer still publishes at QoS 1 (the broker
        # has it once PUBACKed), acks stay QoS 1 (an agent waits in replicated() for them).
        await client.subscribe(
            shard_topic(p, mesh, None, None), options=SubscribeOptions(qos=0, noLocal=True)
        )
        await client.subscribe(
            acks_topic(p, mesh, None), options=SubscribeOptions(qos=1, noLocal=True)
        )
        record = json.dumps({"v": 1, "instance": self._instance, "address": self._address})
        await client.publish(self._presence_topic(me), record.encode(), qos=1, retain=True)
        asyncio.get_running_loop().call_soon(self.kick)

    def _pressure(self, high: bool) -> None:
        """The broker is not taking our frames as fast as the core makes them (one TCP
        connection carries every link): hold pushes in the core, which bounds its queues and
        replaces what overflows with anti-entropy, instead of growing the client's queue."""
        now = time.monotonic()
        for peer in self._by_peer:
            if high:
                self.core.pause_writing(peer)
            else:
                self.core.resume_writing(peer, now)
        if not high:
            self.kick()

    # -- effects -------------------------------------------------------------------------------

    def kick(self) -> None:
        """Execute the core's effects: frames, dials, the next timer."""
        if self._closed:
            return
        for peer, msg in self.core.data_to_send():
            link = self._by_peer.get(peer)
            if link is None:
                continue
            self._send(link, wire.encode(msg))
            self._count(f"sent_{type(msg).__name__}")
            if isinstance(msg, Close):
                self._close(link, code=msg.code)
        for msg in self.core.broadcasts_to_send():
            self._broadcast(msg)
        for address in self.core.dials():
            self._dial(address)
        self._arm()

    def _broadcast(self, msg: Message) -> None:
        """Publish one broadcast of the core once: the broker fans it out."""
        frame = wire.encode(msg)
        if len(frame) > self._max_frame:
            logger.error(
                "%s: dropping a %d-byte broadcast over max_frame", self.core.name, len(frame)
            )
            return
        p, mesh, me = self.broker.prefix, self._mesh, self.core.name
        if isinstance(msg, Push):
            topic = shard_topic(p, mesh, msg.shard, me)
            self._count("broadcast_pushes")
        elif isinstance(msg, Ack):
            topic = acks_topic(p, mesh, me)
            self._count("broadcast_acks")
        else:  # pragma: no cover - the core broadcasts nothing else
            raise UsageError(f"cannot broadcast a {type(msg).__name__}")
        self._publish(topic, frame)

    def _publish(self, topic: str, payload: bytes) -> None:
        self.session.publish(topic, payload)

    def _send(self, link: _Link, frame: bytes, kind: int = DATA) -> None:
        if not link.open:
            return
        if len(frame) > self._max_frame:
            logger.error("%s: dropping a %d-byte frame over max_frame", self.core.name, len(frame))
            return
        self._publish(self._inbox(link.remote), encode_frame(kind, link.id, frame))

    def _inbox(self, to: str) -> str:
        return inbox_topic(self.broker.prefix, self._mesh, to, self.core.name)

    def _presence_topic(self, agent: str) -> str:
        return presence_topic(self.broker.prefix, self._mesh, agent)

    # -- links ---------------------------------------------------------------------------------

    def _dial(self, address: str, name: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        if name is None and not address.startswith("mqtt:"):
            # another agent's websocket address (an agent on both): reach it by its presence
            name = next((p.name for p in self.core.peers() if p.address == address), None)
        name = name or (address[5:] if address.startswith("mqtt:") else "")
        if self.session.client is None or name not in self._present:
            loop.call_soon(self._dial_failed, address)
            return
        now = time.monotonic()
        for key, old in list(self._links.items()):  # dials the core has given up on
            if (
                old.peer is None
                and old.outbound
                and now - old.created > self.core.config.connect_timeout
            ):
                del self._links[key]
        hs = Handshake(self.core, outbound=True)
        link = _Link(name, os.urandom(8), outbound=True, created=now, handshake=hs)
        self._links[(name, link.id)] = link
        for msg in hs.data_to_send():  # the dialer's Hello opens the link
            self._send(link, wire.encode(msg), kind=OPEN)

    def _send_handshake(self, link: _Link) -> None:
        for msg in link.handshake.data_to_send():
            self._send(link, wire.encode(msg))

    def _dial_failed(self, address: str) -> None:
        if not self._closed:
            self.core.dial_failed(address, time.monotonic())
            self.kick()

    def _close(self, link: _Link, *, report: bool = True, code: int = CloseCode.NORMAL) -> None:
        """Close ``link`` here (reported lost to the core if ``report``) and tell the other end."""
        if not link.open:
            return
        self._send(link, int(code).to_bytes(2, "big"), kind=CLOSE)
        link.open = False
        self.observer.closed(int(code), "us")
        self._links.pop((link.remote, link.id), None)
        if link.peer is not None and self._by_peer.get(link.peer) is link:
            del self._by_peer[link.peer]
            if report:
                self.core.connection_lost(link.peer, time.monotonic())

    def _drop(self, link: _Link, code: int | None = None) -> None:
        """``link`` is gone at the other end (CLOSE frame with ``code``, Will, the broker
        connection)."""
        if not link.open:
            return
        link.open = False
        if code is None:
            self.observer.closed(1006, "none")
        else:
            self.observer.closed(code, "peer")
        self._links.pop((link.remote, link.id), None)
        now = time.monotonic()
        if link.peer is not None:
            if self._by_peer.get(link.peer) is link:
                del self._by_peer[link.peer]
                self.core.connection_lost(link.peer, now)
        elif link.outbound:
            self.core.dial_failed(f"mqtt:{link.remote}", now)

    def _broker_lost(self) -> None:
        for link in list(self._links.values()):
            self._drop(link)
        self._present.clear()
        if not self._closed:
            self.kick()

    # -- incoming ------------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        p, mesh = self.broker.prefix, self._mesh
        sender = parse_inbox_topic(p, mesh, self.core.name, topic)
        broadcast = None if sender is not None else parse_broadcast_topic(p, mesh, topic)
        if sender is not None:
            self._on_frame(sender, payload)
        elif broadcast is not None:
            self._on_broadcast(*broadcast, payload)
        else:
            agent = parse_presence_topic(p, mesh, topic)
            if agent is None:
                self._count("garbage")
                return
            self._on_presence(agent, payload)
        if not self._closed and not self._kick_soon:
            # One kick for every message the client hands over in this turn of the loop: the
            # core's effects (and its next deadline) once per batch, not once per message.
            self._kick_soon = True
            asyncio.get_running_loop().call_soon(self._deferred_kick)

    def _deferred_kick(self) -> None:
        self._kick_soon = False
        if not self._closed:
            self.kick()
            self._on_activity()

    def _on_broadcast(self, shard: str | None, sender: str, payload: bytes) -> None:
        """A Push on a shard's topic (``shard``) or an Ack on an acks topic (None)."""
        if sender == self.core.name:
            return  # (a broker without no-local support)
        try:
            if not is_valid_shard_name(sender):
                raise ProtocolError(f"sender {sender!r}")
            msg = _decode_broadcast(payload, self._max_frame)
            if shard is None and not isinstance(msg, Ack):
                raise ProtocolError(f"a {type(msg).__name__} on an acks topic")
            if shard is not None and not (isinstance(msg, Push) and msg.shard == shard):
                raise ProtocolError(f"not a Push of {shard!r} on its topic")
            used = self.core.receive_broadcast(sender, msg, time.monotonic())
        except ProtocolError as exc:
            self._count("garbage")
            if self.counters["garbage"] == 1 or self.counters["garbage"] % 1000 == 0:
                logger.warning("%s: ignoring a broadcast from %s: %s", self.core.name, sender, exc)
            return
        self._count("broadcasts_in" if used else "broadcasts_unused")

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

    # -- timer ---------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._timer.arm()

    def _after_tick(self) -> None:
        self.kick()
        self._on_activity()
