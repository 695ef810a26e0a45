"""The gossip core over an MQTT 5 broker (aiomqtt): :class:`MqttTransport`.

A third driver of the unchanged sans-I/O core (:mod:`crdtsync.gossip`), beside websockets and
the in-process :class:`~crdtsync.testing.LocalHub`. Agents never accept connections: each one
keeps one client connection to the broker, so agents behind NAT take part, and the broker's
clustering, bridges, TLS and ACLs are the operator's.

How the driver contract maps onto a broker (topics in :mod:`._mqtt_topics`):

* *Address and dials.* An agent's address is ``mqtt:<name>``. A dial of it opens a *logical
  link*: an 8-byte random id, and the dialler's Hello in an ``OPEN`` frame on the peer's inbox
  topic ``<prefix>/<mesh>/inbox/<to>/<from>``. The peer answers with its Hello on the same
  link id; every later frame of either side is a ``DATA`` frame, and a ``CLOSE`` frame ends the
  link. So the core sees ordinary connections: Hello first, duplicates settled by the core,
  pushes and acks per peer, anti-entropy on every new link (which is how an agent that was
  offline catches up). Frames are QoS 1; MQTT keeps them in order per topic.
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

What it cannot do through the driver contract (see the README, "MQTT: when to choose which"):
one publish per push on a per-shard topic (the core emits one ``Push`` per peer, with
per-link sequence numbers and acks), and sharing one core with the websocket driver (each
driver drains the core's whole outbox, and a core has one address).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from crdtsync import wire
from crdtsync.errors import BrokerRefused, CloseCode, ProtocolError, UsageError
from crdtsync.gossip import GossipCore
from crdtsync.messages import Close, Hello, Message
from crdtsync.names import is_valid_shard_name

from ._mqtt_topics import (
    CLOSE,
    DATA,
    OPEN,
    BrokerConfig,
    decode_frame,
    encode_frame,
    inbox_topic,
    parse_broker,
    parse_inbox_topic,
    parse_presence_topic,
    presence_topic,
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
#: MQTT 5 CONNACK reason codes (and MQTT 3 return codes) that mean "you may not log in":
#: retrying them fast would only hammer the broker.
_REFUSED = {4, 5, 0x86, 0x87, 0x8A, 0x8C}
_BACKOFF_BASE, _BACKOFF_MAX = 0.5, 30.0
#: Bytes published and not yet acknowledged by the broker above which every link is paused
#: (core.pause_writing), and below which they resume.
INFLIGHT_HIGH, INFLIGHT_LOW = 8 << 20, 2 << 20


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
                "an agent on a broker does not listen: pass broker= or listen=, not both"
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
        self._client: aiomqtt.Client | None = None
        self._publishes: dict[asyncio.Task[None], int] = {}  # QoS 1 publishes awaiting PUBACK
        self._inflight = 0  # their bytes
        self._paused = False
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[BaseException | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._state = "new"
        self._rng = random.Random()
        #: what happened, for tests and ``Agent.counters``: frames, garbage, stale, attempts...
        self.counters: dict[str, int] = {}

    @property
    def address(self) -> str:
        """``mqtt:<name>``: how other agents' cores name this one."""
        return self._address

    @property
    def state(self) -> str:
        """``new``, ``connected``, ``refused`` or ``unreachable``."""
        return self._state

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (waiting for the first attempt's outcome), then run in the background.

        Raises:
            BrokerRefused: the broker refused our login; nothing keeps running.
        """
        self.core.set_address(self._address)
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._task = asyncio.create_task(self.run(), name=f"mqtt:{self.core.name}")
        try:
            first = await asyncio.wait_for(
                asyncio.shield(self._first), self.core.config.connect_timeout
            )
        except TimeoutError:
            first = None  # still trying: the agent works offline meanwhile
        if isinstance(first, BrokerRefused):
            await self.close()
            raise first
        self.kick()

    async def close(self) -> None:
        """Say goodbye on every link, clear our presence, disconnect cleanly (no Will)."""
        if self._closed:
            return
        client = self._client
        for link in list(self._links.values()):
            if link.peer is not None:
                self._send(link, wire.encode(Close(CloseCode.GOING_AWAY)))
            self._close(link, report=False)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if client is not None:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*list(self._publishes), return_exceptions=True), 2.0
                )
                await client.publish(
                    self._presence_topic(self.core.name), b"", qos=1, retain=True, timeout=2.0
                )
            except (aiomqtt.MqttError, TimeoutError):
                logger.info(
                    "%s: could not clear our presence; the broker's Will will", self.core.name
                )
        if self._task is not None:
            self._task.cancel()  # leaves the client's context: a clean DISCONNECT
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._publishes):
            task.cancel()

    async def run(self) -> None:
        """Keep one broker connection up until closed: connect, serve, back off, repeat."""
        failures = 0
        clean = True
        while not self._closed:
            try:
                self._count("attempts")
                async with self._new_client(clean) as client:
                    await self._serve(client)
            except aiomqtt.MqttCodeError as exc:
                code = getattr(exc.rc, "value", exc.rc)
                if code in _REFUSED:
                    err = BrokerRefused(f"MQTT broker {self.broker.label()} refused us: {exc}")
                    self._set_state("refused", err)
                else:
                    self._set_state("unreachable", exc)
            except aiomqtt.MqttError as exc:
                self._set_state("unreachable", exc)
            finally:
                self._client = None
                self._broker_lost()
            if self._state == "connected":
                failures = 0  # the connection worked for a while: start the backoff over
                clean = False
                self._set_state("unreachable", ConnectionError("connection to the broker lost"))
            failures += 1
            delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** (failures - 1))
            await asyncio.sleep(delay * (0.5 + 0.5 * self._rng.random()))

    def _new_client(self, clean: bool) -> aiomqtt.Client:
        b = self.broker
        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = b.session_expiry
        client = aiomqtt.Client(
            b.host,
            b.port,
            username=b.username,
            password=b.password,
            identifier=f"{b.prefix}/{self._mesh}/{self.core.name}",
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._presence_topic(self.core.name), b"", qos=1, retain=True),
            clean_start=clean,
            keepalive=b.keepalive,
            properties=connect,
            tls_context=b.ssl_context(),
            timeout=10.0,
            # Small frames, latency first: without it Nagle and delayed ACKs cost ~40 ms a hop.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # Pushes to every peer are in flight at once by design (QoS 1, PUBACKs awaited in
        # parallel): aiomqtt's "pending publish calls" warning past 10 would fire on every burst.
        client.pending_calls_threshold = 1 << 16
        return client

    async def _serve(self, client: aiomqtt.Client) -> None:
        p, mesh, me = self.broker.prefix, self._mesh, self.core.name
        await client.subscribe(inbox_topic(p, mesh, me, None), qos=1)
        await client.subscribe(presence_topic(p, mesh, None), qos=1)
        record = json.dumps({"v": 1, "instance": self._instance, "address": self._address}).encode()
        await client.publish(self._presence_topic(me), record, qos=1, retain=True)
        self._client = client
        self._set_state("connected")
        self.kick()
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                self._count("garbage")
                continue
            self._on_message(message.topic.value, bytes(payload))

    def _set_state(self, state: str, error: BaseException | None = None) -> None:
        """Log once per change of state (not once per attempt); settle start()'s wait."""
        starting = self._first is not None and not self._first.done()
        if starting:
            assert self._first is not None
            self._first.set_result(error if state == "refused" else None)
        if state == self._state:
            return
        self._state = state
        if starting and state == "refused":
            return  # start() raises it: that is the one report
        if state == "connected":
            logger.info("%s: connected to %s", self.core.name, self.broker.label())
        elif state == "refused":
            logger.error("%s: %s (retrying with backoff)", self.core.name, str(error))
        else:
            logger.warning(
                "%s: broker %s unreachable: %s (retrying with backoff)",
                self.core.name,
                self.broker.label(),
                str(error),  # (a string: a record must not keep the exception's frames alive)
            )

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
            if isinstance(msg, Close):
                self._close(link, code=msg.code)
        for address in self.core.dials():
            self._dial(address)
        self._arm()

    def _publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            return
        self._count("published")
        # No timeout of its own: it ends with the PUBACK, or is cancelled with the connection
        # (keepalive notices a dead broker), so the in-flight count stays true.
        task = asyncio.create_task(client.publish(topic, payload, qos=1, timeout=math.inf))
        self._publishes[task] = len(payload)
        self._inflight += len(payload)
        task.add_done_callback(self._published)
        if self._inflight > INFLIGHT_HIGH and not self._paused:
            # The broker is not taking our frames as fast as the core makes them (one TCP
            # connection for every link): hold pushes in the core, which bounds its queues
            # and replaces what overflows with anti-entropy, instead of growing paho's queue.
            self._paused = True
            self._count("paused")
            for peer in self._by_peer:
                self.core.pause_writing(peer)

    def _published(self, task: asyncio.Task[None]) -> None:
        self._inflight -= self._publishes.pop(task, 0)
        if not task.cancelled() and task.exception() is not None:
            self._count("publish_failed")  # the broker connection went: links are dropped
        if self._paused and self._inflight < INFLIGHT_LOW:
            self._paused = False
            if not self._closed:
                now = time.monotonic()
                for peer in self._by_peer:
                    self.core.resume_writing(peer, now)
                self.kick()

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
        name = name or (address[5:] if address.startswith("mqtt:") else "")
        if self._client is None or name not in self._present:
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
        link = _Link(name, os.urandom(8), outbound=True, created=now)
        self._links[(name, link.id)] = link
        self._send(link, wire.encode(self.core.hello()), kind=OPEN)

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
        self._links.pop((link.remote, link.id), None)
        if link.peer is not None and self._by_peer.get(link.peer) is link:
            del self._by_peer[link.peer]
            if report:
                self.core.connection_lost(link.peer, time.monotonic())

    def _drop(self, link: _Link) -> None:
        """``link`` is gone at the other end (CLOSE frame, Will, the broker connection)."""
        if not link.open:
            return
        link.open = False
        self._links.pop((link.remote, link.id), None)
        now = time.monotonic()
        if link.peer is not None:
            if self._by_peer.get(link.peer) is link:
                del self._by_peer[link.peer]
                self.core.connection_lost(link.peer, now)
        elif link.outbound:
            self.core.dial_failed(f"mqtt:{link.remote}", now)

    def _broker_lost(self) -> None:
        for task in list(self._publishes):
            task.cancel()  # frames of links that are gone with the connection
        for link in list(self._links.values()):
            self._drop(link)
        self._present.clear()
        if not self._closed:
            self.kick()

    # -- incoming ------------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        p, mesh = self.broker.prefix, self._mesh
        sender = parse_inbox_topic(p, mesh, self.core.name, topic)
        if sender is not None:
            self._on_frame(sender, payload)
        else:
            agent = parse_presence_topic(p, mesh, topic)
            if agent is None:
                self._count("garbage")
                return
            self._on_presence(agent, payload)
        if not self._closed:
            self.kick()
            self._on_activity()

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
        if gone:
            self._present.pop(agent, None)
            return
        assert instance is not None
        self._present[agent] = instance
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
                self._drop(link)
            return
        if link is None:
            if kind != OPEN:
                self._count("stale")  # a link we closed or gave up on: tell the other end
                self._publish(self._inbox(sender), encode_frame(CLOSE, link_id, b"\x03\xe8"))
                return
            if not is_valid_shard_name(sender):
                self._count("garbage")
                return
            link = self._links[key] = _Link(
                sender, link_id, outbound=False, created=time.monotonic()
            )
            self._send(link, wire.encode(self.core.hello()))
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
            peer = self.core.connection_made(msg, now, outbound=link.outbound)
        except ProtocolError as exc:
            if exc.code == CloseCode.DUPLICATE_NAME and isinstance(msg, Hello):
                self._close(link, report=False, code=exc.code)  # the core keeps the other one
                return
            raise
        old = self._by_peer.pop(peer, None)
        if old is not None:  # replaced by this newer link: not reported lost
            self._close(old, report=False)
        link.peer = peer
        self._by_peer[peer] = link
        if self._paused:
            self.core.pause_writing(peer)

    # -- timer ---------------------------------------------------------------------------------

    def _arm(self) -> None:
        deadline = self.core.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(max(deadline, loop.time() + 0.001), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        self.core.tick(time.monotonic())
        self.kick()
        self._on_activity()
