"""Links and connections of the simulated network (:mod:`crdtsync.transports.memory`).

The link model (:class:`LinkConfig`, :class:`LinkStats`), the simulated connection and node
records, and the mixin of :class:`~crdtsync.transports.memory.Network` that carries frames over
links (latency, jitter, loss, duplication, reordering, partitions) and opens and closes
connections as websockets would. Split from :mod:`crdtsync.transports.memory`, whose docstring
describes the model; that module re-exports the public names.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from crdtsync.transports._sim_replicas import MemoryReplicas

from crdtsync import wire
from crdtsync.errors import CloseCode, ProtocolError
from crdtsync.gossip import GossipCore, Handshake
from crdtsync.messages import Close, Hello, Message

__all__ = ["LinkConfig", "LinkStats", "Node"]


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Behaviour of one direction of a link.

    Attributes:
        latency: one-way delay of a frame, seconds.
        jitter: extra delay, uniform in [0, jitter]; frames stay in order unless reordered.
        loss: probability that a frame is dropped.
        duplicate: probability that a frame is delivered twice.
        reorder: probability that a frame is delayed by up to 2*latency more, out of order.
    """

    latency: float = 0.05
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0


@dataclass(slots=True)
class LinkStats:
    """Frames and bytes sent over one direction of a link."""

    messages: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Conn:
    id: int
    dialer: str
    acceptor: str
    address: str
    open_for: dict[str, bool] = field(default_factory=dict)
    peer_name: dict[str, str | None] = field(default_factory=dict)  # side -> name its core uses
    last_arrival: dict[str, float] = field(default_factory=dict)
    hello_arrival: dict[str, float] = field(
        default_factory=dict
    )  # side -> when its peer's Hello lands
    handshakes: dict[str, Handshake] = field(default_factory=dict)  # side -> its handshake

    def other(self, side: str) -> str:
        return self.acceptor if side == self.dialer else self.dialer


@dataclass(slots=True)
class Node:
    """One simulated agent: its replicas survive crashes, its core does not."""

    name: str
    address: str | None
    seeds: tuple[str, ...]
    replicas: MemoryReplicas
    core: GossipCore | None
    generation: int = 0
    conns: dict[str, int] = field(default_factory=dict)  # peer name -> conn id
    tick_at: float | None = None
    tick_token: int | None = None
    commit_pending: bool = False
    #: Shards a peer asked for our ack of (the core's ``on_ack_wanted`` signal; a simulated
    #: commit always comes within ``commit_delay``, so it is only counted here).
    acks_wanted: Counter[str] = field(default_factory=Counter)

    def ack_wanted(self, shard: str) -> None:
        """The core's ``on_ack_wanted``: a peer waits for our ack of ``shard``."""
        self.acks_wanted[shard] += 1


class _Connections:
    """Mixin of :class:`~crdtsync.transports.memory.Network`: frames, dials and closes.

    The attributes and methods declared below belong to the network (set in its ``__init__``
    or defined in it).
    """

    rng: random.Random
    now: float
    nodes: dict[str, Node]
    default_link: LinkConfig
    detect_delay: float
    links: dict[tuple[str, str], LinkStats]
    by_type: Counter[str]
    trace: list[tuple[float, str, str, str, int]] | None
    errors: list[tuple[float, str, str | None, CloseCode]]
    duplicates: int
    last_data_at: float
    _by_address: dict[str, str]
    _conns: dict[int, _Conn]
    _seq: int

    if TYPE_CHECKING:

        def link(self, a: str, b: str) -> LinkConfig: ...

        def _cut(self, a: str, b: str) -> bool: ...

        def _schedule(self, t: float, kind: str, args: tuple[Any, ...]) -> int: ...

        def _after(self, node: Node) -> None: ...

    def _transmit(self, conn: _Conn, src: str, msg: Message) -> None:
        if not conn.open_for.get(src):
            return
        dst = conn.other(src)
        frame = wire.encode(msg)
        kind = type(msg).__name__
        stats = self.links.setdefault((src, dst), LinkStats())
        stats.messages += 1
        stats.bytes += len(frame)
        self.by_type[kind] += 1
        if kind not in ("Summary", "PeerList", "Hello", "Close"):
            self.last_data_at = self.now
        if self.trace is not None:
            self.trace.append((round(self.now, 9), src, dst, kind, len(frame)))
        link = self.link(src, dst)
        if isinstance(msg, (Hello, Close)):
            # Faults beyond TCP are injected between the handshake and the close only: a
            # connection whose Hello is lost would just hang, and a clean close delivers its
            # code (websockets carries it in the close frame too), so losing a Close would
            # only make a pruned peer look crashed, which tests nothing of the protocol.
            link = replace(link, loss=0.0, duplicate=0.0, reorder=0.0)
        if link.loss and self.rng.random() < link.loss:
            return
        copies = 2 if link.duplicate and self.rng.random() < link.duplicate else 1
        for _ in range(copies):
            delay = link.latency + (self.rng.random() * link.jitter if link.jitter else 0.0)
            t = self.now + delay
            if link.reorder and self.rng.random() < link.reorder:
                t += self.rng.random() * 2 * link.latency
            else:  # in order, like one TCP stream
                t = max(t, conn.last_arrival.get(dst, 0.0))
                conn.last_arrival[dst] = t
            if isinstance(msg, Hello):
                conn.hello_arrival[dst] = t
            else:  # never before the Hello, however reordered (same time: queued after it)
                t = max(t, conn.hello_arrival.get(dst, 0.0))
            self._schedule(t, "frame", (conn.id, dst, frame))

    def _dial(self, node: Node, address: str) -> None:
        target = self._by_address.get(address)
        link = self.link(node.name, target) if target else self.default_link
        if target is None or self.nodes[target].core is None or self._cut(node.name, target):
            # refused (nobody there) or silently dropped (partition): fail after a while
            delay = (
                2 * link.latency
                if target is None or self.nodes[target].core is None
                else self.detect_delay
            )
            self._schedule(self.now + delay, "dial_failed", (node.name, node.generation, address))
            return
        self._seq += 1
        conn = _Conn(self._seq, node.name, target, address)
        conn.open_for = {node.name: False, target: False}
        conn.peer_name = {node.name: None, target: None}
        self._conns[conn.id] = conn
        # TCP + websocket handshake, as websockets does it: the acceptor has the connection
        # when the upgrade request arrives, one latency after the dial; the dialler has it (and
        # sends its Hello) when the response arrives, one more later. The core's Handshake
        # decides when each side's Hello goes (the acceptor's only once the dialler's Hello
        # arrived and was accepted: an unknown client learns nothing).
        self._schedule(
            self.now + link.latency,
            "accepted",
            (conn.id, node.generation, self.nodes[target].generation),
        )

    def _close(self, conn: _Conn, side: str, *, notify_self: bool) -> None:
        """``side`` closes ``conn``: it stops now; the other side learns after one latency."""
        if conn.open_for.get(side):
            conn.open_for[side] = False
            node = self.nodes[side]
            name = conn.peer_name.get(side)
            if name is not None and node.conns.get(name) == conn.id:
                del node.conns[name]
                if notify_self and node.core is not None:
                    node.core.connection_lost(name, self.now)
        other = conn.other(side)
        t = max(self.now + self.link(side, other).latency, conn.last_arrival.get(other, 0.0))
        self._schedule(t, "close", (conn.id, other))

    def _ev_dial_failed(self, name: str, generation: int, address: str) -> None:
        node = self.nodes[name]
        if node.core is None or node.generation != generation:
            return
        node.core.dial_failed(address, self.now)
        self._after(node)

    def _ev_accepted(self, cid: int, gen_dialer: int, gen_acceptor: int) -> None:
        conn = self._conns[cid]
        a, b = self.nodes[conn.dialer], self.nodes[conn.acceptor]
        if a.core is None or a.generation != gen_dialer:
            self._conns.pop(cid, None)
            return
        latency = self.link(b.name, a.name).latency
        if b.core is None or b.generation != gen_acceptor or self._cut(a.name, b.name):
            self._conns.pop(cid, None)
            self._schedule(self.now + latency, "dial_failed", (a.name, gen_dialer, conn.address))
            return
        conn.open_for[b.name] = True
        self._open_handshake(conn, b.name, b.core, outbound=False)
        self._schedule(self.now + latency, "connected", (cid, gen_dialer))

    def _open_handshake(self, conn: _Conn, side: str, core: GossipCore, *, outbound: bool) -> None:
        """``side`` has the connection: start its handshake and send what it says."""
        conn.handshakes[side] = Handshake(core, outbound=outbound)
        self._send_handshake(conn, side)

    def _send_handshake(self, conn: _Conn, side: str) -> None:
        for msg in conn.handshakes[side].data_to_send():
            self._transmit(conn, side, msg)

    def _ev_connected(self, cid: int, gen_dialer: int) -> None:
        conn = self._conns.get(cid)
        if conn is None:
            return
        a = self.nodes[conn.dialer]
        if a.core is None or a.generation != gen_dialer:  # it died meanwhile: the acceptor learns
            self._schedule(
                self.now + self.link(a.name, conn.acceptor).latency, "close", (cid, conn.acceptor)
            )
            return
        conn.open_for[a.name] = True
        self._open_handshake(conn, a.name, a.core, outbound=True)

    def _ev_frame(self, cid: int, dst: str, frame: bytes) -> None:
        conn = self._conns.get(cid)
        node = self.nodes[dst]
        if conn is None or not conn.open_for.get(dst) or node.core is None:
            return
        src = conn.other(dst)
        if self._cut(src, dst):
            return
        core = node.core
        msg: Message | None = None
        try:
            msg = wire.decode(frame, max_size=core.config.max_frame)
            name = conn.peer_name.get(dst)
            if name is None:
                try:
                    name = conn.handshakes[dst].receive(msg, self.now)
                finally:  # the acceptor's Hello, ahead of what the core queued (or the Close)
                    self._send_handshake(conn, dst)
                conn.peer_name[dst] = name
                old = node.conns.get(name)
                node.conns[name] = cid
                if old is not None and old in self._conns:  # replaced: close, not "lost"
                    self.duplicates += 1
                    self._transmit(
                        self._conns[old], dst, Close(CloseCode.DUPLICATE_NAME, "replaced")
                    )
                    self._close(self._conns[old], dst, notify_self=False)
            else:
                core.receive(name, msg, self.now)
        except ProtocolError as exc:
            hs = conn.handshakes.get(dst)
            if hs is not None and hs.duplicate and conn.peer_name.get(dst) is None:
                self.duplicates += 1  # the core keeps its other connection to that agent
            else:
                self.errors.append((self.now, dst, conn.peer_name.get(dst), exc.code))
            self._transmit(conn, dst, Close(exc.code, str(exc)[:100]))
            self._close(conn, dst, notify_self=True)
        self._after(node)

    def _ev_cut(self, cid: int) -> None:
        # keepalive timeout of a connection across a partition (if it was not healed since)
        conn = self._conns.get(cid)
        if conn is not None and self._cut(conn.dialer, conn.acceptor):
            self._ev_close(cid, conn.dialer)
            self._ev_close(cid, conn.acceptor)

    def _ev_close(self, cid: int, side: str) -> None:
        conn = self._conns.get(cid)
        if conn is None:
            return
        node = self.nodes[side]
        was_open = conn.open_for.get(side, False)
        conn.open_for[side] = False
        name = conn.peer_name.get(side)
        if was_open and name is not None and node.conns.get(name) == cid:
            del node.conns[name]
            if node.core is not None:
                node.core.connection_lost(name, self.now)
                self._after(node)
        elif was_open and name is None and conn.dialer == side and node.core is not None:
            # closed before the handshake completed: the dial failed
            node.core.dial_failed(conn.address, self.now)
            self._after(node)
        if not any(conn.open_for.values()):
            self._conns.pop(cid, None)
