"""The pieces of the MQTT driver that do no I/O: broker URLs, topic names, link frames.

Kept apart from :mod:`crdtsync.transports.mqtt` so that they are tested on their own (topic
escaping above all) and the driver module stays about the event loop.

Topics (every level built by :func:`topic_level`, so a name can never add, remove or widen a
level)::

    <prefix>/<mesh>/presence/<agent>        retained; empty payload = gone (Last Will)
    <prefix>/<mesh>/inbox/<to>/<from>       point-to-point link frames, QoS 1
    <prefix>/<mesh>/shard/<shard>/<from>    a broadcast Push of that shard (one per batch), QoS 1 in, 0 out
    <prefix>/<mesh>/acks/<from>             a broadcast Ack (the sender's durable states), QoS 1

Broadcast payloads are one wire frame (:mod:`crdtsync.wire`), no link header: every subscriber
receives the same bytes.

The sender is a topic level, not a field of the payload, so that a broker ACL can pin it to
the client's user name (mosquitto: ``pattern write crdtsync/+/inbox/+/%u``).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import struct
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qs, quote, unquote, urlsplit

from crdtsync.errors import InsecureBroker, UsageError

__all__ = [
    "CLOSE",
    "DATA",
    "OPEN",
    "BrokerConfig",
    "decode_frame",
    "encode_frame",
    "acks_topic",
    "inbox_topic",
    "level_name",
    "parse_broker",
    "parse_inbox_topic",
    "parse_broadcast_topic",
    "parse_presence_topic",
    "presence_topic",
    "shard_topic",
    "topic_level",
]

#: Link frame kinds: OPEN starts a logical link (carries the dialler's Hello), DATA carries one
#: wire frame, CLOSE ends the link (carries a 2-byte close code).
OPEN, DATA, CLOSE = 0, 1, 2
_VERSION = 1
_HEADER = struct.Struct(">BB8s")  # version, kind, link id
#: Characters a topic level keeps as they are; everything else is %XX-escaped (UTF-8 bytes).
_SAFE = "-._~"


@lru_cache(maxsize=4096)  # every frame in and out names a mesh, an agent, a shard: reused
def topic_level(name: str) -> str:
    """``name`` as exactly one topic level: ``/``, ``+``, ``#``, ``$``, ``%`` and any other
    character outside ``A-Z a-z 0-9 - . _ ~`` become ``%XX``. Never empty (an empty name
    is refused), so the level can neither split, match as a wildcard, nor
    collide with another name's (the escaping is injective: :func:`level_name` inverts it)."""
    if not name:
        raise UsageError("an empty name has no topic level")
    return quote(name, safe=_SAFE)


@lru_cache(maxsize=4096)  # (a refused level raises: errors are not cached)
def level_name(level: str) -> str:
    """The name :func:`topic_level` escaped into ``level`` (strict: refuses a level that it
    would not have produced, so two spellings never map to one name)."""
    name = unquote(level, errors="strict")  # (UnicodeDecodeError is a ValueError)
    if not name or topic_level(name) != level:
        raise ValueError(f"not an escaped topic level: {level!r}")
    return name


def presence_topic(prefix: str, mesh: str, agent: str | None) -> str:
    """The retained presence topic of ``agent`` (None: the wildcard for every agent)."""
    return f"{prefix}/{topic_level(mesh)}/presence/{'+' if agent is None else topic_level(agent)}"


def inbox_topic(prefix: str, mesh: str, to: str, sender: str | None) -> str:
    """The topic ``sender`` publishes link frames for ``to`` on (None: any sender)."""
    return f"{prefix}/{topic_level(mesh)}/inbox/{topic_level(to)}/{'+' if sender is None else topic_level(sender)}"


def shard_topic(prefix: str, mesh: str, shard: str | None, sender: str | None) -> str:
    """The topic ``sender`` broadcasts pushes of ``shard`` on (None: the wildcard)."""
    level = "+" if shard is None else topic_level(shard)
    who = "+" if sender is None else topic_level(sender)
    return f"{prefix}/{topic_level(mesh)}/shard/{level}/{who}"


def acks_topic(prefix: str, mesh: str, sender: str | None) -> str:
    """The topic ``sender`` broadcasts its acks on (None: the wildcard)."""
    return f"{prefix}/{topic_level(mesh)}/acks/{'+' if sender is None else topic_level(sender)}"


def parse_broadcast_topic(prefix: str, mesh: str, topic: str) -> tuple[str | None, str] | None:
    """(shard, sender) of a shard topic, (None, sender) of an acks topic, None otherwise
    (not a broadcast topic of this mesh, or a level no name escapes to)."""
    head = f"{prefix}/{topic_level(mesh)}/"
    if not topic.startswith(head):
        return None
    levels = topic[len(head) :].split("/")
    try:
        if len(levels) == 3 and levels[0] == "shard":
            return level_name(levels[1]), level_name(levels[2])
        if len(levels) == 2 and levels[0] == "acks":
            return None, level_name(levels[1])
    except ValueError:
        return None
    return None


def parse_presence_topic(prefix: str, mesh: str, topic: str) -> str | None:
    """The agent a presence topic is about, or None if it is not one of this mesh's."""
    head = f"{prefix}/{topic_level(mesh)}/presence/"
    if not topic.startswith(head) or "/" in topic[len(head) :]:
        return None
    try:
        return level_name(topic[len(head) :])
    except ValueError:
        return None


def parse_inbox_topic(prefix: str, mesh: str, me: str, topic: str) -> str | None:
    """The sender of a frame on our inbox topic, or None if the topic is not ours."""
    head = f"{prefix}/{topic_level(mesh)}/inbox/{topic_level(me)}/"
    if not topic.startswith(head) or "/" in topic[len(head) :]:
        return None
    try:
        return level_name(topic[len(head) :])
    except ValueError:
        return None


def encode_frame(kind: int, link: bytes, body: bytes = b"") -> bytes:
    """One MQTT payload: version, kind, 8-byte link id, then the wire frame (or close code)."""
    return _HEADER.pack(_VERSION, kind, link) + body


def decode_frame(payload: bytes) -> tuple[int, bytes, bytes]:
    """(kind, link id, body) of a payload; ValueError for anything else."""
    if len(payload) < _HEADER.size:
        raise ValueError("short link frame")
    version, kind, link = _HEADER.unpack_from(payload)
    if version != _VERSION or kind not in (OPEN, DATA, CLOSE):
        raise ValueError(f"unknown link frame version {version} / kind {kind}")
    return kind, link, payload[_HEADER.size :]


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to reach the broker (from :func:`parse_broker`)."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = None
    prefix: str = "crdtsync"
    cafile: str | None = None
    keepalive: int = 10
    session_expiry: int = 60

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifying TLS (the system roots, or ``cafile``), or None for plain ``mqtt://``."""
        return ssl.create_default_context(cafile=self.cafile) if self.tls else None

    def loopback(self) -> bool:
        """Whether the broker is on this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def label(self) -> str:
        """The URL without the password, for logs and errors."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.prefix}"


def parse_broker(url: str, *, insecure: bool = False) -> BrokerConfig:
    """Parse ``mqtt[s]://[user[:password]@]host[:port][/prefix][?cafile=PATH&keepalive=S]``.

    The password may instead come from ``$CRDTSYNC_MQTT_PASSWORD`` (so it is not in a
    process listing). A broker beyond loopback must use ``mqtts://`` and a user name, unless
    ``insecure``: anything else lets whoever is on the path read and forge the mesh's frames.

    Raises:
        UsageError: a malformed URL or prefix.
        InsecureBroker: a non-loopback broker without TLS and authentication.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise UsageError(f"a broker URL is mqtt://host:port or mqtts://host:port, not {url!r}")
    if not parts.hostname:
        raise UsageError(f"no broker host in {url!r}")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise UsageError(f"bad broker port in {url!r}") from exc
    prefix = parts.path.strip("/") or "crdtsync"
    if any(not lvl or "+" in lvl or "#" in lvl for lvl in prefix.split("/")) or prefix.startswith(
        "$"
    ):
        raise UsageError(f"topic prefix {prefix!r}: no empty levels, '+', '#' or leading '$'")
    query = parse_qs(parts.query)
    unknown = set(query) - {"cafile", "keepalive", "session_expiry"}
    if unknown:
        raise UsageError(
            f"unknown broker URL options {sorted(unknown)} (cafile, keepalive, session_expiry)"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username and password is None:
        password = os.environ.get("CRDTSYNC_MQTT_PASSWORD")
    cfg = BrokerConfig(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=username,
        password=password,
        prefix=prefix,
        cafile=query["cafile"][0] if "cafile" in query else None,
        keepalive=int(query["keepalive"][0]) if "keepalive" in query else 10,
        session_expiry=int(query["session_expiry"][0]) if "session_expiry" in query else 60,
    )
    if not insecure and not cfg.loopback() and not (cfg.tls and cfg.username and cfg.password):
        raise InsecureBroker(
            f"refusing broker {cfg.label()} without TLS (mqtts://) and a user name and password: "
            "anyone on the path could read and forge the mesh's frames; pass insecure=True "
            "(`--insecure`) on a network you trust"
        )
    return cfg
