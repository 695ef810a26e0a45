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

:func:`read_buffered` makes the same paho client read its socket in large chunks. paho reads
one packet per readable event with three ``recv`` calls (the command byte, each byte of the
remaining length, the rest): with a hundred agents in one process, every write cost every
agent an ``epoll`` wake-up and three system calls (issue 14's third pass). Its own packet
state machine still parses what the fast path leaves: with :func:`deliver_directly` too, the
complete PUBLISH packets (QoS 0 and 1) found in the buffer are framed here and handed over
directly, paho's per-packet machinery (three reads from the buffer, its packet dict, the
dispatch) skipped, the first of a read too (the reader reads ahead of paho while paho is
between packets); any other packet, or one not complete yet, goes through paho as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["READ_SIZE", "deliver_directly", "parse_publish", "read_buffered"]

logger = logging.getLogger("crdtsync.transports.mqtt")

#: bytes asked of the socket at once by :func:`read_buffered`: a dozen pushes of a write
#: (~300 bytes each). Not more: what a read brings is handled in one go, so a larger read
#: let one agent of a swarm hold the event loop for a whole backlog (loop stalls of seconds
#: at N = 128, and anti-entropy rounds finding the others behind); what is not read yet
#: stays in the socket, which epoll reports again on the next turn of the loop.
READ_SIZE = 4096


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

    def deliver(parsed: tuple[str, bytes, int, int]) -> Any:
        topic, payload, qos, mid = parsed
        try:
            on_message(topic, payload)
        except Exception:  # noqa: BLE001 - a bug must not end the connection
            count("handler_errors")
            logger.exception("a received message's handling failed")
        if qos == 1:
            return paho._send_puback(mid)
        return 0  # MQTT_ERR_SUCCESS

    def handle_publish() -> Any:
        packet = paho._in_packet
        parsed = parse_publish(packet["command"], packet["packet"])
        if parsed is None:
            return original()  # paho's own decoding (and on_message)
        return deliver(parsed)

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
    reader = getattr(paho, "_crdtsync_reader", None)
    if isinstance(reader, _BufferedReader) and hasattr(paho, "_msgtime_mutex"):
        reader.publish = deliver  # complete PUBLISH packets of a read, framed there
    return True


class _BufferedReader:
    """paho's ``_sock_recv`` served from one large ``recv`` at a time, and ``loop_read``
    that goes on while bytes are buffered (the socket is not readable again for them)."""

    def __init__(self, paho: Any) -> None:
        self._paho = paho
        self._raw_recv: Callable[[int], bytes] = paho._sock_recv
        self._raw_loop_read: Callable[..., Any] = paho.loop_read
        self._buf = b""
        self._pos = 0
        self._sock: object = None  # the socket the buffered bytes came from
        #: :func:`deliver_directly`'s handler of a parsed PUBLISH (None: paho frames all)
        self.publish: Callable[[tuple[str, bytes, int, int]], Any] | None = None
        #: (socket, what its last read ahead of paho gave: the error it raised, or None for
        #: the end of the stream), handed to paho's next read of that socket (see _fill)
        self._deferred: tuple[object, OSError | None] | None = None

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes, from the buffer, else from one ``recv(READ_SIZE)`` (raising
        as paho's own: BlockingIOError when nothing is there; b"" at the end)."""
        sock = self._paho._sock
        if self._pos >= len(self._buf) or sock is not self._sock:
            if self._deferred is not None:
                deferred_sock, error = self._deferred
                self._deferred = None
                if deferred_sock is sock:  # what _fill's read gave, now paho's
                    if error is not None:
                        raise error
                    return b""
            data = self._raw_recv(READ_SIZE)
            if not data:
                return data
            self._buf, self._pos, self._sock = data, 0, sock
        pos = self._pos
        end = pos + bufsize
        self._pos = min(end, len(self._buf))
        if pos == 0 and end >= len(self._buf):
            return self._buf
        return self._buf[pos:end]

    def buffered(self) -> int:
        """Bytes read from the current socket and not handed to paho yet."""
        if self._paho._sock is not self._sock:
            return 0
        return len(self._buf) - self._pos

    def _fill(self) -> None:
        """One ``recv(READ_SIZE)`` into the empty buffer ahead of paho, so that the first
        complete PUBLISH packets of a read are framed here too (through paho, the first of
        every read was: with one or two packets per read, most of them). Nothing there
        (BlockingIOError) leaves it to paho; an error or the end of the stream is kept for
        paho's next read of this socket, which raises it or returns b"" as its own would."""
        sock = self._paho._sock
        try:
            data = self._raw_recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._deferred = (sock, exc)
            return
        if not data:
            self._deferred = (sock, None)
            return
        self._buf, self._pos, self._sock = data, 0, sock

    def loop_read(self, max_packets: int = 1) -> Any:
        paho = self._paho
        if (
            self.publish is not None
            and paho._sock is not None
            and self._deferred is None
            and not self.buffered()
            and paho._in_packet["command"] == 0
        ):
            self._fill()
            if self.buffered():
                err = self._publishes()
                if err:
                    return err
                if not self.buffered():
                    return 0  # every packet of this read went (paho's MQTT_ERR_SUCCESS)
        rc = self._raw_loop_read(max_packets)
        # Every complete packet already read goes now: epoll will not say so again. (A
        # partial one stays in paho's own state until the rest comes.)
        while rc == 0 and self.buffered():
            if self.publish is not None:
                err = self._publishes()
                if err is None:
                    continue  # some went; look again
                if err:
                    return err
            rc = self._raw_loop_read(1)
        return rc

    def _publishes(self) -> Any:
        """Frame and hand over the complete PUBLISH packets at the buffer's position while
        paho is between packets: None if one or more went (and the last PUBACK queued
        fine), 0 if the next packet is not one (paho reads it), an error code of paho's
        PUBACK otherwise."""
        paho, buf, publish = self._paho, self._buf, self.publish
        assert publish is not None
        end = len(buf)
        pos = self._pos
        went = False
        rc: Any = 0
        while pos < end and paho._sock is self._sock and paho._in_packet["command"] == 0:
            header = buf[pos]
            if header & 0xF0 != 0x30:
                break  # not a PUBLISH
            i, length, shift = pos + 1, 0, 0
            while True:  # the remaining length, a variable byte integer (at most 4 bytes)
                if i >= end or shift > 21:
                    length = -1
                    break
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if length < 0 or i + length > end:
                break  # not complete in this read (or malformed): paho's state machine
            parsed = parse_publish(header, buf[i : i + length])
            if parsed is None:
                break  # QoS 2, malformed...: paho's own decoding
            self._pos = pos = i + length
            went = True
            rc = publish(parsed)
            if rc:
                break
        if not went:
            return 0
        with paho._msgtime_mutex:  # as paho after a packet (its keepalive looks at it)
            paho._last_bytes_received = time.monotonic()
        return rc or None


def read_buffered(client: object) -> bool:
    """Make the paho client under aiomqtt's ``client`` read its socket ``READ_SIZE`` bytes at
    a time and handle every packet those bring in one go. Install it on a connected client
    before anything is read from a new socket (bytes buffered from an old socket are dropped
    when paho's socket changes). Returns False, installing nothing, when paho's private
    ``_sock_recv``, ``_sock`` or ``loop_read`` are missing."""
    paho: Any = getattr(client, "_client", None)
    if not all(hasattr(paho, a) for a in ("_sock_recv", "_sock", "loop_read", "_packet_read")):
        return False
    reader = _BufferedReader(paho)
    paho._sock_recv = reader.recv
    paho.loop_read = reader.loop_read
    paho._crdtsync_reader = reader  # for deliver_directly's fast path
    return True
