"""Received PUBLISH packets handed straight to the MQTT driver: :func:`deliver_directly`.

With a hundred agents on one broker, every write reaches every agent: paho's own handling
of each received PUBLISH (a ``Properties`` object built from tables, an ``MQTTMessage``
with a ``threading.Condition``, a topic-filter walk, then aiomqtt's own message object, its
queue, and a task plus an ``asyncio.wait`` per message) cost more CPU than applying the
update (issue 14's profiles). Here the paho client that aiomqtt drives reads a PUBLISH with
:func:`parse_publish` (the fixed MQTT 5 layout: topic, packet id, properties skipped) and
calls the driver's ``on_message(topic, payload)`` at once, acking QoS 1 as paho would.

Nothing the driver relies on is lost: it reads no property (it never asks for topic
aliases, so a broker must send full topic names), and retained, duplicate or QoS 0/1
messages are handled alike. Anything unusual (QoS 2, an empty topic, a packet this parser
cannot read, manual acks) goes to paho's own code. The hook uses paho's private
``_handle_publish``, ``_in_packet`` and ``_send_puback`` (paho-mqtt 2.x, which aiomqtt 2
requires) and aiomqtt's private ``_client``; without them it installs nothing and paho's
and aiomqtt's ordinary path serves (see :func:`deliver_directly`'s result).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["deliver_directly", "parse_publish"]

logger = logging.getLogger("crdtsync.transports.mqtt")


def parse_publish(header: int, data: bytes) -> tuple[str, bytes, int, int] | None:
    """(topic, payload, qos, packet id) of an MQTT 5 PUBLISH packet's variable part
    ``data`` (everything after the fixed header, whose first byte is ``header``), or None
    if it is not one this reader handles (QoS 2, an empty topic, malformed): paho's own
    decoder then takes it."""
    qos = (header >> 1) & 3
    if qos > 1:
        return None
    end = len(data)
    if end < 2:
        return None
    n = (data[0] << 8) | data[1]
    pos = 2 + n
    if n == 0 or pos > end:
        return None
    try:
        topic = bytes(data[2:pos]).decode()
    except UnicodeDecodeError:
        return None
    mid = 0
    if qos:
        if pos + 2 > end:
            return None
        mid = (data[pos] << 8) | data[pos + 1]
        pos += 2
    length = shift = 0
    while True:  # the properties' length, a variable byte integer (at most 4 bytes)
        if pos >= end or shift > 21:
            return None
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    pos += length
    if pos > end:
        return None
    return topic, bytes(data[pos:]), qos, mid


def deliver_directly(
    client: object, on_message: Callable[[str, bytes], None], count: Callable[[str], None]
) -> bool:
    """Make the paho client under aiomqtt's ``client`` hand each received PUBLISH to
    ``on_message(topic, payload)``. When it raises, ``count("handler_errors")`` and a log
    line (never raised into paho, which would drop the connection); a topic that is not
    UTF-8, ``count("garbage")``. Returns False, installing nothing, when the
    private parts it needs are missing (aiomqtt's queue then serves as before)."""
    paho: Any = getattr(client, "_client", None)
    original = getattr(paho, "_handle_publish", None)
    if (
        original is None
        or not hasattr(paho, "_in_packet")
        or not hasattr(paho, "_send_puback")
        or getattr(paho, "_manual_ack", False)
    ):
        return False

    def handle_publish() -> Any:
        packet = paho._in_packet
        parsed = parse_publish(packet["command"], packet["packet"])
        if parsed is None:
            return original()  # paho's own decoding (and on_message)
        topic, payload, qos, mid = parsed
        try:
            on_message(topic, payload)
        except Exception:  # noqa: BLE001 - a bug must not end the connection
            count("handler_errors")
            logger.exception("a received message's handling failed")
        if qos == 1:
            return paho._send_puback(mid)
        return 0  # MQTT_ERR_SUCCESS

    def on_paho_message(_client: object, _userdata: object, message: Any) -> None:
        try:  # what paho's own decoding handed over (the packets handle_publish passed on)
            topic, payload = message.topic, bytes(message.payload)
        except UnicodeDecodeError:
            count("garbage")  # never one of our topics
            return
        try:
            on_message(topic, payload)
        except Exception:  # noqa: BLE001
            count("handler_errors")
            logger.exception("a received message's handling failed")

    paho._handle_publish = handle_publish
    paho.on_message = on_paho_message
    return True
