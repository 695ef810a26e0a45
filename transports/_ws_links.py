"""Connections of :class:`~crdtsync.transports.websocket.WebsocketTransport`.

The per-connection record (:class:`_Link`) and its snapshot (:class:`ConnectionInfo`), and the
mixin that runs one connection: opening it (an accepted websocket, routed to the Yjs door by its
path, or a dial, with seed tracking), its reader and writer (frames in order, back-pressure)
tasks, and its end reported to the core exactly once. Split
from :mod:`crdtsync.transports.websocket`, whose docstring describes the behaviour; that
module re-exports :class:`ConnectionInfo`. The receive side (the reader, decoding, the first
frame handed to the core's handshake) is the mixin :mod:`crdtsync.transports._ws_receive`,
the base of :class:`_LinkRunner`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

from crdtsync.transports._ws_early import client_options
from crdtsync.transports._ws_inline import InlineFrames
from crdtsync.transports._ws_receive import _LinkReceive
from crdtsync.transports.yjsdoor import PATH_PREFIX as _YJS_PREFIX
from crdtsync.transports.yjsdoor import YjsDoor
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from crdtsync import wire
from crdtsync.errors import CloseCode, UsageError
from crdtsync.gossip import GossipCore, Handshake
from crdtsync.messages import Close, Hello
from crdtsync.observer import Observer
from crdtsync.quotas import ConnectionCap
from crdtsync.security.acl import PeerIdentity

if TYPE_CHECKING:
    from crdtsync.security.credentials import Credentials

__all__ = ["ConnectionInfo"]

#: The transport's logger: log lines keep the name of the module users configure.
logger = logging.getLogger("crdtsync.transports.websocket")

#: Websocket close reasons are limited to 123 bytes of UTF-8.
_MAX_CLOSE_REASON = 123


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A snapshot of one accepted connection (see :meth:`WebsocketTransport.connections`).

    Attributes:
        peer: the peer's agent name (from its Hello).
        outbound: True if this agent dialled it, False if it dialled us.
        address: the listen address the peer advertised, or None.
        remote: the socket address at the other end, as ``host:port``.
        since: when the handshake completed, on the transport's clock.
        queued_bytes: frames waiting to be written to it (our queue and the socket buffer).
        paused: whether the core was told to pause pushes to it (back-pressure).
        latency: round-trip time of the last websocket ping, seconds (0 before the first).
        identity: the peer as authenticated by its certificate or the mesh-secret handshake
            (name and permissions), None without credentials.
    """

    peer: str
    outbound: bool
    address: str | None
    remote: str | None
    since: float
    queued_bytes: int
    paused: bool
    latency: float
    identity: PeerIdentity | None = None


class _CloseRequest(NamedTuple):
    """Queued after the last frame of a connection: close it with this code."""

    code: int
    reason: str


@dataclass(eq=False, slots=True)
class _Link:
    """One websocket connection, inbound or outbound, and its send queue."""

    ws: Connection
    outbound: bool
    dialled: str | None  # the address from core.dials(), for outbound connections
    peer: str | None = None  # set once core.connection_made accepted its Hello
    hello: Hello | None = None
    accepted_at: float = 0.0
    queue: deque[bytes | _CloseRequest] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    handshake: Handshake | None = None  # the core's, once authenticated (with credentials)
    hello_queued: bool = False  # our Hello is in the queue (or was sent)
    hello_sent: bool = False
    paused: bool = False
    closing: bool = False  # a close was requested: nothing more is queued or handled
    watchdog: asyncio.TimerHandle | None = None
    identity: PeerIdentity | None = None  # set once authenticated (with credentials only)
    # Fair reading's wait for the frame the reader gets next, when the inline path asked
    # the core already (_frame_inline): asked once per frame, as before.
    read_wait: float | None = None
    # The writer task waits for frames with none queued: a frame may be written at once
    # (_Effects._enqueue; only on connections that support it, see _ws_inline).
    writer_idle: bool = False

    def label(self) -> str:
        if self.peer is not None:
            return self.peer
        return _format_address(self.ws.remote_address) or "?"


#: Seconds between two WARNING lines for the same kind of refusal (see _warn_limited).
_WARN_EVERY = 10.0


def _format_address(addr: object) -> str | None:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return None if addr is None else str(addr)


def _close_reason(reason: str) -> str:
    data = reason.encode("utf-8")
    if len(data) <= _MAX_CLOSE_REASON:
        return reason
    return data[:_MAX_CLOSE_REASON].decode("utf-8", errors="ignore")


def _close_code(ws: Connection) -> tuple[int, str]:
    """The close code of a finished connection and who closed it: ``"us"``, ``"peer"``, or
    ``"none"`` with 1006 when no close frame came (the connection dropped)."""
    p = ws.protocol
    sent, rcvd = p.close_sent, p.close_rcvd
    if rcvd is not None and (sent is None or p.close_rcvd_then_sent):
        return rcvd.code, "peer"
    if sent is not None:
        return sent.code, "us"
    return 1006, "none"


class _LinkRunner(_LinkReceive):
    """Mixin of :class:`~crdtsync.transports.websocket.WebsocketTransport`: run connections.

    The attributes and methods declared below belong to the transport (set in its
    ``__init__``, defined in it or in :class:`~crdtsync.transports._ws_auth._Authenticator`).
    """

    core: GossipCore
    counters: dict[str, int]
    observer: Observer
    _credentials: Credentials | None
    _client_ssl: ssl.SSLContext | None
    _clock: Callable[[], float]
    _on_activity: Callable[[], None] | None
    _open_timeout: float
    _ping_interval: float | None
    _ping_timeout: float | None
    _close_timeout: float
    _max_frame: int
    _low_water: int
    _max_queue: int
    _compression: str | None
    _loop: asyncio.AbstractEventLoop | None
    _links: set[_Link]
    _by_peer: dict[str, _Link]
    _connecting: set[asyncio.Task[Any]]
    _warned_at: dict[str, float]  # made on first use (_warn_limited)
    _after_receive_pending: bool
    _closing: bool
    _yjs: YjsDoor | None
    _seed_state: dict[str, str]
    _conn_cap: ConnectionCap

    if TYPE_CHECKING:

        def _pump(self) -> None: ...

        def _refuse(self, link: _Link, code: CloseCode, reason: str) -> None: ...

        def _request_close(
            self,
            link: _Link,
            code: int,
            reason: str,
            message: Close | None = None,
            *,
            frame: bytes | None = None,
        ) -> None: ...

        async def _authenticate(self, link: _Link) -> bool: ...

        def _take_early(self, address: str) -> asyncio.Task[ClientConnection] | None: ...

    # -- connections ---------------------------------------------------------------------------

    async def _serve_connection(self, ws: ServerConnection) -> None:
        """websockets handler of an inbound connection (gossip or Yjs door).

        Every inbound connection already holds a slot of the transport's
        :class:`~crdtsync.quotas.ConnectionCap` (in all and per remote host): one over the
        cap was answered 503 or 429 on its upgrade request and never reaches this handler
        (:mod:`crdtsync.transports._ws_admission`), and the slot is freed when the TCP
        connection ends. A gossip connection that has not completed its handshake (its
        Hello accepted by the core) within :meth:`_hello_timeout` is closed with
        ``BAD_HANDSHAKE`` (counted ``handshake_timeout``).
        """
        if self._closing:
            await ws.close(CloseCode.GOING_AWAY, "agent stopping")
            return
        request_path = ws.request.path if ws.request is not None else "/"
        path, _, query = request_path.partition("?")
        if path.startswith(_YJS_PREFIX):
            self._conn_cap.handshaken(id(ws))  # the Yjs door has no Hello (it has its auth)
            if self._yjs is None:
                await ws.close(CloseCode.INVALID_SHARD, "this agent serves no Yjs clients")
                return
            await self._yjs.serve(ws, unquote(path[len(_YJS_PREFIX) :]), query)
            return
        link = _Link(ws, outbound=False, dialled=None)
        assert self._loop is not None
        deadline = self._loop.call_later(self._hello_timeout(), self._handshake_overdue, link)
        try:
            await self._run_link(link)
        finally:
            deadline.cancel()

    def _hello_timeout(self) -> float:
        """Seconds an inbound connection has to get its Hello accepted: the shorter of the
        transport's ``open_timeout`` and the connection cap's ``handshake_timeout``."""
        return min(self._open_timeout, self._conn_cap.handshake_timeout)

    def _handshake_overdue(self, link: _Link) -> None:
        """The handshake deadline of an inbound connection passed: close it unless a Hello was
        accepted (a connection that never speaks must not hold a file descriptor)."""
        if link.peer is None and not link.closing:
            self._count("handshake_timeout")
            timeout = self._hello_timeout()
            self._warn_limited(
                "handshake",
                "%s: closing %s: no Hello within %g s",
                self.core.name,
                link.label(),
                timeout,
            )
            self._refuse(link, CloseCode.BAD_HANDSHAKE, f"no Hello within {timeout:g} s")

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _warn_limited(self, kind: str, msg: str, *args: object) -> None:
        """Log a refusal of ``kind`` at WARNING at most once per :data:`_WARN_EVERY` seconds
        (the rest at DEBUG; the counters count them all): a storm of refused connections must
        not cost a log line each (issue #11: 10 % of a victim's busy time was logging)."""
        warned: dict[str, float] | None = getattr(self, "_warned_at", None)
        if warned is None:
            warned = self._warned_at = {}
        now = self._clock()
        if now - warned.get(kind, -_WARN_EVERY) >= _WARN_EVERY:
            warned[kind] = now
            logger.warning(
                msg + " (more such refusals within %g s are counted, not logged)",
                *args,
                _WARN_EVERY,
            )
        else:
            logger.debug(msg, *args)

    def _client_options(self) -> dict[str, Any]:
        """websockets' ``connect`` arguments of this transport's dials."""
        return client_options(
            max_frame=self._max_frame,
            compression=self._compression,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            close_timeout=self._close_timeout,
            max_queue=self._max_queue,
            ssl=self._client_ssl,
        )

    async def _dial(self, address: str) -> None:
        """Open a connection to ``address`` (from core.dials()) and run it."""
        try:
            if (self._client_ssl is not None) != address.startswith("wss://"):
                raise UsageError("TLS credentials dial wss:// only, others ws:// only")
            early = self._take_early(address)  # opened before the store (_ws_early.py)
            ws = await (early if early is not None else connect(address, **self._client_options()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # OSError, InvalidURI, InvalidHandshake, TimeoutError, ...
            state = self._seed_state.get(address)
            if state is not None and not state.startswith("unreachable"):
                logger.warning(
                    "%s: seed peer %s is unreachable: %s: %s (retrying with backoff; "
                    "agent.seeds shows its state)",
                    self.core.name,
                    address,
                    type(exc).__name__,
                    exc,
                )
            else:
                logger.info(
                    "%s: dial %s failed: %s: %s", self.core.name, address, type(exc).__name__, exc
                )
            if state is not None:
                self._seed_state[address] = f"unreachable: {type(exc).__name__}: {exc}"
            try:
                self.core.dial_failed(address, self._clock())
            except Exception:
                logger.exception("%s: core.dial_failed failed", self.core.name)
            self._pump()
            return
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._connecting.discard(task)
        if address in self._seed_state:
            if self._seed_state[address].startswith("unreachable"):
                logger.info("%s: seed peer %s reached", self.core.name, address)
            self._seed_state[address] = "connected"
        link = _Link(ws, outbound=True, dialled=address)
        if self._closing:
            self._links.add(link)  # so that close() waits for it
            self._request_close(link, int(CloseCode.GOING_AWAY), "agent stopping")
        await self._run_link(link)

    async def _run_link(self, link: _Link) -> None:
        """Run one connection until it is closed, then report it to the core."""
        self._links.add(link)
        if self._credentials is not None and not await self._authenticate(link):
            self._links.discard(link)
            if link.watchdog is not None:
                link.watchdog.cancel()
            self._connection_closed(link)
            link.finished.set()
            return
        # The core decides when our Hello goes (gossip/handshake.py): at once if we dialled,
        # else only once the dialer's Hello was validated (an unknown client learns nothing).
        link.handshake = Handshake(self.core, outbound=link.outbound, identity=link.identity)
        self._queue_handshake(link)
        writer = asyncio.create_task(self._writer(link), name=f"crdtsync-writer-{link.label()}")
        try:
            await self._reader(link)
        finally:
            link.closing = True
            if not writer.done():
                # The connection is closed (the reader only returns then): anything queued
                # cannot be sent any more.
                writer.cancel()
            if link.watchdog is not None:
                link.watchdog.cancel()
            self._links.discard(link)
            self._connection_closed(link)  # before any await: this must happen exactly once
            try:
                await asyncio.gather(writer, return_exceptions=True)
            finally:
                link.finished.set()

    def _queue_handshake(self, link: _Link) -> None:
        """Put what the handshake says to send (our Hello) at the head of ``link``'s queue:
        it is always the first frame, ahead of what the core queued for the peer."""
        assert link.handshake is not None
        frames = [wire.encode(m) for m in link.handshake.data_to_send()]
        if not frames:
            return
        link.queue.extendleft(reversed(frames))
        link.queued_bytes += sum(len(f) for f in frames)
        link.hello_queued = True
        link.wake.set()

    def _connection_closed(self, link: _Link) -> None:
        """Tell the core: connection_lost for an accepted link, dial_failed for a failed dial."""
        ws = link.ws
        logger.info(
            "%s: connection %s closed (sent %s, received %s)",
            self.core.name,
            link.label(),
            ws.protocol.close_sent.code if ws.protocol.close_sent else None,
            ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None,
        )
        self.observer.closed(*_close_code(ws))
        now = self._clock()
        try:
            if link.peer is not None:
                if self._by_peer.get(link.peer) is link:  # not replaced by a newer connection
                    del self._by_peer[link.peer]
                    self.core.connection_lost(link.peer, now)
            elif link.outbound and link.dialled is not None:
                self.core.dial_failed(link.dialled, now)
        except Exception:
            logger.exception(
                "%s: core failed handling the end of connection %s", self.core.name, link.label()
            )
        self._pump()

    async def _writer(self, link: _Link) -> None:
        """Send ``link``'s queued frames in order; close it at a close request."""
        ws = link.ws
        link.writer_idle = False
        try:
            while True:
                if not link.queue:
                    link.wake.clear()
                    # (idle only where frames may be written at once: see _Effects._enqueue)
                    link.writer_idle = isinstance(ws, InlineFrames) and InlineFrames.supported(ws)
                    try:
                        await link.wake.wait()
                    finally:
                        link.writer_idle = False
                    continue
                item = link.queue.popleft()
                if isinstance(item, _CloseRequest):
                    await ws.close(item.code, item.reason)
                    return
                link.queued_bytes -= len(item)
                link.hello_sent = True
                await ws.send(item)
                # send() returned, so the socket buffer is below websockets' write limit:
                # our queue alone says whether the peer keeps up.
                if link.paused and link.queued_bytes <= self._low_water and link.peer is not None:
                    link.paused = False
                    if self._by_peer.get(link.peer) is link and not link.closing:
                        self.core.resume_writing(link.peer, self._clock())
                        self._pump()
        except ConnectionClosed:
            return
        except Exception:
            logger.exception("%s: writer of connection %s failed", self.core.name, link.label())
            ws.transport.abort()
