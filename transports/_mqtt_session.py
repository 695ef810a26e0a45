"""One agent's connection to an MQTT 5 broker, kept up with backoff: :class:`BrokerSession`.

The part of the MQTT driver (:mod:`crdtsync.transports.mqtt`) that knows nothing of links or
the gossip core: connect (with the Last Will, a persistent session after the first connection
of a run, TCP_NODELAY), report a refused login once, retry everything else with exponential
backoff and jitter (logged once per change of state), publish at QoS 1 with the bytes in
flight counted (so the driver can pause the core's links), and disconnect cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
from collections.abc import Awaitable, Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from crdtsync.errors import BrokerRefused

from ._mqtt_fastpath import deliver_directly, read_buffered
from ._mqtt_topics import BrokerConfig

__all__ = ["INFLIGHT_HIGH", "INFLIGHT_LOW", "BrokerSession"]

logger = logging.getLogger("crdtsync.transports.mqtt")

#: MQTT 5 CONNACK reason codes (and MQTT 3 return codes) that mean "you may not log in":
#: retrying them fast would only hammer the broker.
_REFUSED = {4, 5, 0x86, 0x87, 0x8A, 0x8C}
_BACKOFF_BASE, _BACKOFF_MAX = 0.5, 30.0
#: Bytes published and not yet acknowledged by the broker above which the driver pauses its
#: links (core.pause_writing), and below which they resume.
INFLIGHT_HIGH, INFLIGHT_LOW = 8 << 20, 2 << 20


class BrokerSession:
    """The broker connection of one agent (see the module docstring).

    Args:
        broker: where and how to connect.
        identifier: the MQTT client id (stable per agent, for its persistent session).
        name: for log lines.
        will: (topic, payload) the broker publishes, retained, if we vanish.
        on_connected: subscribe and announce; called on every (re)connection.
        on_message: (topic, payload) of every message received.
        on_lost: the connection is gone (after a refused or failed attempt too).
        on_pressure: True once the bytes in flight pass INFLIGHT_HIGH, False once they fall
            below INFLIGHT_LOW.
        counters: where to count attempts, publishes and failures.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        identifier: str,
        name: str,
        will: tuple[str, bytes],
        on_connected: Callable[[aiomqtt.Client], Awaitable[None]],
        on_message: Callable[[str, bytes], None],
        on_lost: Callable[[], None],
        on_pressure: Callable[[bool], None],
        counters: dict[str, int],
    ) -> None:
        self.broker = broker
        self._identifier = identifier
        self._name = name
        self._will = will
        self._on_connected = on_connected
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_pressure = on_pressure
        self.counters = counters
        self.client: aiomqtt.Client | None = None  # while connected
        self.state = "new"  # new, connected, refused or unreachable
        self.inflight = 0  # bytes published and not yet acknowledged
        self.paused = False
        self._publishes: dict[asyncio.Task[None], int] = {}
        self._first: asyncio.Future[BaseException | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._rng = random.Random()

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def start(self, timeout: float) -> None:
        """Run in the background, after waiting (up to ``timeout``) for the first attempt.

        Raises:
            BrokerRefused: the broker refused our login; nothing keeps running.
        """
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self.run(), name=f"mqtt:{self._name}")
        try:
            first = await asyncio.wait_for(asyncio.shield(self._first), timeout)
        except TimeoutError:
            first = None  # still trying: the agent works offline meanwhile
        if isinstance(first, BrokerRefused):
            await self.close()
            raise first

    async def close(self, last: tuple[str, bytes] | None = None) -> None:
        """Wait briefly for what is in flight, publish ``last`` (retained), disconnect cleanly
        (a DISCONNECT: the broker drops our Will)."""
        if self._closed:
            return
        self._closed = True
        client = self.client
        if client is not None:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*list(self._publishes), return_exceptions=True), 2.0
                )
                if last is not None:
                    await client.publish(last[0], last[1], qos=1, retain=True, timeout=2.0)
            except (aiomqtt.MqttError, TimeoutError):
                logger.info("%s: could not publish before disconnecting", self._name)
        if self._task is not None:
            self._task.cancel()  # leaves the client's context: a clean DISCONNECT
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._publishes):
            task.cancel()

    async def run(self) -> None:
        """Keep one broker connection up until closed: connect, serve, back off, repeat."""
        failures = 0
        clean = True  # a run's first connection: frames queued for an earlier run are useless
        while not self._closed:
            try:
                self._count("attempts")
                async with self._new_client(clean) as client:
                    # Messages are handled as they come, from the subscriptions on: what they
                    # make us publish (a handshake's answer, a dial) needs the client already.
                    self.client = client
                    self._deliver_directly(client)
                    await self._on_connected(client)
                    self._set_state("connected")
                    # Direct delivery leaves aiomqtt's queue empty: the loop then only waits
                    # for the disconnection (aiomqtt ends it with an MqttError).
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            self._on_message(message.topic.value, bytes(payload))
                        else:
                            self._count("garbage")
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
                self.client = None
                for task in list(self._publishes):
                    task.cancel()  # frames of links that are gone with the connection
                self._on_lost()
            if self.state == "connected":
                failures = 0  # the connection worked for a while: start the backoff over
                clean = False  # resume the session: QoS 1 frames in flight are kept
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
            identifier=self._identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._will[0], self._will[1], qos=1, retain=True),
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

    def _deliver_directly(self, client: aiomqtt.Client) -> bool:
        """Received messages go to ``on_message`` from the reader callback, not through
        aiomqtt's queue: see :mod:`._mqtt_fastpath` (False: the queue serves)."""
        read_buffered(client)
        return deliver_directly(client, self._on_message, self._count)

    def _set_state(self, state: str, error: BaseException | None = None) -> None:
        """Log once per change of state (not once per attempt); settle start()'s wait."""
        starting = self._first is not None and not self._first.done()
        if starting:
            assert self._first is not None
            self._first.set_result(error if state == "refused" else None)
        if state == self.state:
            return
        self.state = state
        if starting and state == "refused":
            return  # start() raises it: that is the one report
        if state == "connected":
            logger.info("%s: connected to %s", self._name, self.broker.label())
        elif state == "refused":
            logger.error("%s: %s (retrying with backoff)", self._name, str(error))
        else:
            logger.warning(
                "%s: broker %s unreachable: %s (retrying with backoff)",
                self._name,
                self.broker.label(),
                str(error),  # (a string: a record must not keep the exception's frames alive)
            )

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 in the background (in call order); dropped while disconnected."""
        client = self.client
        if client is None:
            return
        self._count("published")
        # No timeout of its own: it ends with the PUBACK, or is cancelled with the connection
        # (keepalive notices a dead broker), so the in-flight count stays true.
        task = asyncio.create_task(client.publish(topic, payload, qos=1, timeout=math.inf))
        self._publishes[task] = len(payload)
        self.inflight += len(payload)
        task.add_done_callback(self._published)
        if self.inflight > INFLIGHT_HIGH and not self.paused:
            self.paused = True
            self._count("paused")
            self._on_pressure(True)

    def _published(self, task: asyncio.Task[None]) -> None:
        self.inflight -= self._publishes.pop(task, 0)
        if not task.cancelled() and task.exception() is not None:
            self._count("publish_failed")  # the broker connection went: links are dropped
        if self.paused and self.inflight < INFLIGHT_LOW:
            self.paused = False
            if not self._closed:
                self._on_pressure(False)
