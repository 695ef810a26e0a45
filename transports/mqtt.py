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
  sequence number per sender and shard), so links only carry anti-entropy (skipped while
  broadcasts stream in, see ``AntiEntropy.pushes_suffice``), repairs and
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

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from crdtsync import wire
from crdtsync.errors import BrokerRefused, CloseCode, UsageError
from crdtsync.gossip import GossipCore, Handshake
from crdtsync.messages import Ack, Close, Message, Push
from crdtsync.observer import NULL_OBSERVER, Observer
from crdtsync.transport import CoreTimer

from ._mqtt_incoming import BOOTSTRAP_DIALS, _Incoming, _Link
from ._mqtt_session import INFLIGHT_HIGH, INFLIGHT_LOW, BrokerSession
from ._mqtt_topics import (
    CLOSE,
    DATA,
    OPEN,
    BrokerConfig,
    acks_topic,
    encode_frame,
    inbox_topic,
    parse_broker,
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


class MqttTransport(_Incoming):
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
        self._topics: dict[str, tuple[int, str | None, str, bool]] = {}  # see _Incoming._topic
        self._timer = CoreTimer(core, self._after_tick)
        self._closed = False
        self._kick_soon = False  # a kick is scheduled for the messages of this loop turn
        self._kick_later: asyncio.TimerHandle | None = None  # one after broadcasts alone
        self._held: list[tuple[str | None, str, bytes, bool]] = []  # see _Incoming._take_held
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
        self._take_held()  # what came before the close
        for link in list(self._links.values()):
            if link.peer is not None:
                self._send(link, wire.encode(Close(CloseCode.GOING_AWAY)))
            self._close(link, report=False, code=CloseCode.GOING_AWAY)
        self._closed = True
        self._timer.close()
        if self._kick_later is not None:
            self._kick_later.cancel()
            self._kick_later = None
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
        if self._kick_later is not None:  # this kick serves the broadcasts it waited for
            self._kick_later.cancel()
            self._kick_later = None
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

    # -- timer ---------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._timer.arm()

    def _after_tick(self) -> None:
        self.kick()
        self._on_activity()
