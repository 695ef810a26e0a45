"""The asyncio driver of one :class:`~crdtsync.gossip.GossipCore` over real websockets.

:class:`WebsocketTransport` owns no protocol decisions: it executes the core's effects (frames
to send, connections to open, timers) and feeds it what the network does (handshakes, frames,
closed connections, failed dials, flow control), exactly as the driver contract in the
:mod:`crdtsync.gossip` docstring says. :mod:`crdtsync.transports.memory` drives the same core
over a simulated network.

Connections
-----------
One websocket per pair of agents carries every shard. Both sides send their Hello as the first
frame when the core's :class:`~crdtsync.gossip.Handshake` says (the rule is the core's, in
:mod:`crdtsync.gossip.handshake`; this driver only queues what it returns): the dialer at once,
the acceptor only once the dialer's Hello was validated by ``core.connection_made`` (and, with
credentials, the handshake starts after authentication), so a client that sends nothing,
garbage or another mesh's Hello gets no byte naming this mesh, agent, address or shard, only a
websocket close frame with the code and its name. The first frame received must be the peer's
Hello (``Handshake.receive``), every later one goes to ``core.receive``. Each connection has
one reader (decode, validate, call the core) and one writer task: core calls never await the
network, and the writer keeps the order of frames. Effects are executed after every batch of received frames (once per
event-loop iteration), after every timer tick and whenever :meth:`WebsocketTransport.kick` is
called.

A second connection carrying the same agent is settled by the core
(``core.connection_made(hello, now, outbound=...)``): it either replaces the first one (the
driver then closes the old one with ``DUPLICATE_NAME`` and does not report it lost) or is
refused with ``DUPLICATE_NAME`` (two simultaneous dials: both sides keep the connection the
smaller name dialled). Either way it is logged at INFO level, not as a protocol error.

Authentication
--------------
With ``credentials`` (:class:`~crdtsync.security.credentials.Credentials`) every connection
proves who is at the other end *before* either side sends its Hello, so an unauthenticated
client learns nothing (no mesh name, agent name, address or shard name):

* TLS credentials: the transport listens and dials ``wss://`` with mutual TLS (TLS 1.3,
  the mesh CA as the only trust anchor). The acceptor's TLS certificate names nobody; once
  the TLS handshake is done, the client's certificate is checked (present, dates, revocation
  list) and its name and permissions are read from it, then the acceptor sends its own agent
  certificate in one frame, which the client checks the same way and against the key TLS
  proved (:mod:`crdtsync.security.tls`).
* Mesh-secret credentials: the four-frame challenge-response of
  :mod:`crdtsync.security.handshake` runs first, on ``ws://``.

A failed authentication closes the connection with its specific close code
(``UNAUTHENTICATED``, ``REPLAYED``, ``CERT_EXPIRED``, ``CERT_REVOKED``) and the generic reason
"authentication failed", logs one warning line and bumps :attr:`WebsocketTransport.counters`.
The authenticated :class:`~crdtsync.security.acl.PeerIdentity` is kept on the connection (see
:meth:`WebsocketTransport.connections`); the peer's Hello must carry the same name, else the
connection is closed with ``IDENTITY_MISMATCH`` before the core sees the Hello. Our own Hello
to an authenticated peer names only the shards its permissions let it read. A revocation list
that changes while connections are open closes those of revoked peers with ``CERT_REVOKED``
(looked at every second; see :mod:`crdtsync.transports._ws_auth`).

Errors
------
Every frame from a peer is validated (:func:`crdtsync.wire.decode`, then the core). A frame that
breaks the protocol closes *that* connection with the :class:`~crdtsync.errors.CloseCode` of the
:class:`~crdtsync.errors.ProtocolError` (a :class:`~crdtsync.messages.Close` message, then the
websocket close frame with the same code), logged as one warning line; any other exception while
handling a frame closes it with ``INTERNAL_ERROR`` and is logged with its traceback. Everything
else keeps serving.

* Text frames: ``MALFORMED_FRAME`` (crdtsync frames are binary); text that is not even UTF-8
  is refused by websockets itself with 1007.
* Size: frames up to ``max_frame`` are decoded. Frames up to twice that are still read, then
  refused with ``OVERSIZE`` (4008), so a peer with a slightly different limit learns exactly
  why. Larger frames are refused by websockets itself from the frame header, before any of the
  payload is buffered, with the websocket code 1009 (message too big): memory per connection
  stays bounded by ``max_queue * 2 * max_frame`` on the receiving side.
* Frames we would send above ``max_frame`` are dropped with an error log instead of being sent:
  the peer would refuse them with ``OVERSIZE``, and the anti-entropy round after the reconnect
  would send the same frame again, forever.

Back-pressure
-------------
Frames wait in a per-connection queue. When the queue plus the socket's write buffer exceed
``high_water`` bytes the core is told ``pause_writing`` (it then holds and, beyond its own limit,
drops pushes for that peer, replacing them by anti-entropy); when the queue drains below a
quarter of that, ``resume_writing`` (checked by the connection's writer task after each frame
it sent, so a frame that would take a link over ``high_water`` always goes through that task,
never at once: ``_Effects._enqueue``). Frames the core sends regardless of the pause
(anti-entropy answers, membership) are capped by ``max_send_buffer``: a peer that makes us queue
more than that without reading it is disconnected with ``FLOODING``.

Shutdown
--------
:meth:`WebsocketTransport.close` stops listening and dialling, sends every accepted peer a
``Close(GOING_AWAY)`` message (so its core takes this agent out of the overlay at once instead
of suspecting it) followed by a websocket close frame with code 1001, waits for every connection
to finish its closing handshake (aborting those that do not within ``close_timeout``) and stops
every task it started.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from crdtsync.transports._ws_admission import Admission
from crdtsync.transports._ws_auth import _Authenticator
from crdtsync.transports._ws_early import EarlyDials, _EarlyDialing
from crdtsync.transports._ws_effects import _Effects
from crdtsync.transports._ws_links import (
    ConnectionInfo,
    _format_address,
    _Link,
    _LinkRunner,
)
from crdtsync.transports._ws_shutdown import _Shutdown
from crdtsync.transports.yjsdoor import ShardOpener, YjsDoor
from websockets.asyncio.server import Server, serve

from crdtsync.errors import UsageError
from crdtsync.gossip import GossipCore
from crdtsync.observer import NULL_OBSERVER, Observer
from crdtsync.quotas import ConnectionCap

if TYPE_CHECKING:
    from crdtsync.security.credentials import Credentials

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_MAX_SEND_BUFFER",
    "ConnectionInfo",
    "WebsocketTransport",
    "default_connection_cap",
]

logger = logging.getLogger(__name__)

#: Bytes queued for one peer (our queue plus the socket's write buffer) above which the core is
#: told to pause pushes to it; it resumes below a quarter of this.
DEFAULT_HIGH_WATER = 1 << 20
#: Bytes queued for one peer above which it is disconnected (``FLOODING``): it makes us send
#: more than it reads, and only a bound keeps our memory bounded.
DEFAULT_MAX_SEND_BUFFER = 64 << 20


def default_connection_cap() -> ConnectionCap:
    """The default :class:`~crdtsync.quotas.ConnectionCap` (issue #11): 512 inbound
    connections in all (under the usual limit of 1,024 file descriptors: 1,013 connections
    that never said Hello locked every new peer out), 128 from one host (a loopback mesh of
    ``relay_max`` = 64 agents dials 63 from 127.0.0.1), 10 s to complete the handshake."""
    return ConnectionCap(max_total=512, max_per_address=128, handshake_timeout=10.0)


class WebsocketTransport(_Effects, _LinkRunner, _Authenticator, _EarlyDialing, _Shutdown):
    """Carry one gossip core's traffic over websockets (see the module docstring).

    Args:
        core: the gossip core to drive. If it has no address (or the ``listen`` URL, whose
            port may be 0), its address is set to the URL actually listened on, so that
            peers learn a dialable address from its Hello.
        listen: ``ws://host:port`` to accept connections on (port 0 picks a free port; use
            an IP address then, not a name that resolves to several), or None to only dial;
            ``wss://host:port`` with TLS credentials.
        max_frame: largest frame accepted from a peer or sent to one, in bytes; None means
            ``core.config.max_frame`` (16 MiB by default).
        clock: the monotonic clock whose readings are passed to the core as ``now``.
        on_activity: called after each batch of received frames was handled and its effects
            executed (the agent wakes ``replicated()`` waiters there); exceptions are logged.
        open_timeout: seconds for the TCP and websocket opening handshakes.
        ping_interval: seconds between websocket keepalive pings (None: no keepalive).
        ping_timeout: a connection whose ping gets no pong in this long is dropped.
        close_timeout: seconds allowed for a closing handshake before the socket is aborted.
        high_water: back-pressure threshold, see :data:`DEFAULT_HIGH_WATER`.
        max_send_buffer: hard cap of bytes queued for one peer, see
            :data:`DEFAULT_MAX_SEND_BUFFER`.
        max_queue: received messages websockets buffers per connection before it stops
            reading the socket (memory bound: this times ``2 * max_frame``).
        compression: websockets ``compression`` ("deflate" or None). Off by default: Yjs
            updates are compact binary already, deflate costs CPU and zlib state per
            connection, and frame limits would apply to inflated sizes.
        credentials: authenticate every connection with these (see "Authentication" in the
            module docstring); None: no authentication (loopback or ``insecure`` only; the
            agent enforces that policy).
        connection_cap: inbound connections in all and per remote host, and the time one
            may take to complete its handshake (default :func:`default_connection_cap`).
    """

    def __init__(
        self,
        core: GossipCore,
        *,
        listen: str | None = None,
        max_frame: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_activity: Callable[[], None] | None = None,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 10.0,
        high_water: int = DEFAULT_HIGH_WATER,
        max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER,
        max_queue: int = 4,
        compression: str | None = None,
        credentials: Credentials | None = None,
        connection_cap: ConnectionCap | None = None,
    ) -> None:
        self.core = core
        self._conn_cap = connection_cap if connection_cap is not None else default_connection_cap()
        self._credentials = credentials
        if credentials is not None and core.gate is None:
            from crdtsync.security.gate import CredentialGate

            core.secure(CredentialGate(credentials))  # permissions and signed records
        tls = credentials is not None and credentials.tls
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        if credentials is not None and credentials.tls:
            self._client_ssl = credentials.client_context()
            if listen is not None:
                self._server_ssl = credentials.server_context()
        #: Security events: ``auth_ok``, ``auth_failed`` and ``auth_failed.<code name>`` (we
        #: refused a peer), ``auth_refused`` (a peer refused us with a 4012-4017 code); and the
        #: Yjs door's ``yjs.*`` (see :class:`~crdtsync.transports.yjsdoor.YjsDoor`).
        self.counters: dict[str, int] = {}
        self._listen = listen
        self._host: str | None = None
        self._port = 0
        if listen is not None:
            self._host, self._port = _parse_listen(listen, tls=tls)
        self._max_frame = core.config.max_frame if max_frame is None else max_frame
        if (
            self._max_frame < 1
            or high_water < 1
            or max_send_buffer < max(high_water, self._max_frame)
        ):
            raise UsageError("need max_frame >= 1, high_water >= 1 and max_send_buffer >= both")
        self._clock = clock
        self._on_activity = on_activity
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._high_water = high_water
        self._low_water = high_water // 4
        self._max_send_buffer = max_send_buffer
        self._max_queue = max_queue
        self._compression = compression

        self._address: str | None = None
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None  # fires at the core's next deadline
        self._timer_off = False  # set by close(): no more ticks
        self._ticked_at = -math.inf  # the last tick's time (see _Effects._arm)
        self._armed: float | None = math.nan  # deadline the timer is set for
        self._links: set[_Link] = set()
        self._by_peer: dict[str, _Link] = {}
        self._dial_tasks: set[asyncio.Task[None]] = set()
        self._connecting: set[asyncio.Task[Any]] = set()
        self._after_receive_pending = False
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()
        self._stopping = asyncio.Event()  # set when close() starts: ends pending authentications
        self._yjs: YjsDoor | None = None
        self._early_dials: EarlyDials | None = None  # adopt_early_dials (_ws_early.py)
        self._seed_state: dict[
            str, str
        ] = {}  # seed address -> "dialling" | "connected" | "unreachable: ..."
        #: Told of every peer connection's close code (see :meth:`set_observer`).
        self.observer: Observer = NULL_OBSERVER

    def set_observer(self, observer: Observer) -> None:
        """Report each peer connection's end to ``observer`` (its close code, and who closed
        it); the agent passes its metrics here. Yjs door clients are not peers: not reported."""
        self.observer = observer

    def watch_seeds(self, addresses: Iterable[str]) -> None:
        """Track dials of these seed addresses: the first failure of each is logged as a
        WARNING (later ones at INFO), and :meth:`seed_status` reports them."""
        for address in addresses:
            self._seed_state.setdefault(address, "dialling")

    def seed_status(self) -> dict[str, str]:
        """Per seed address: ``"dialling"``, ``"connected"`` or ``"unreachable: <error>"``
        (the last dial's outcome; dials are retried with backoff)."""
        return dict(self._seed_state)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (if ``listen`` was given), arm the timer and start the first dials.

        Raises:
            UsageError: already started.
            OSError: the listen address cannot be bound.
        """
        if self._started:
            raise UsageError("WebsocketTransport.start() called twice")
        self._started = True
        self._loop = asyncio.get_running_loop()
        if self._host is not None:
            admission = Admission(
                self._conn_cap,
                self._clock,
                self._count,
                self._warn_limited,
                lambda: self.core.name,
            )
            self._server = await serve(
                self._serve_connection,
                self._host,
                self._port,
                process_request=admission.process_request,  # the connection cap, pre-upgrade
                create_connection=admission.connection_class(),  # counted from TCP accept
                compression=self._compression,
                open_timeout=self._open_timeout,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                close_timeout=self._close_timeout,
                max_size=2 * self._max_frame,
                max_queue=self._max_queue,
                ssl=self._server_ssl,
            )
            port = self._server.sockets[0].getsockname()[1]
            host = f"[{self._host}]" if ":" in self._host else self._host
            scheme = "wss" if self._server_ssl is not None else "ws"
            self._address = f"{scheme}://{host}:{port}"
            core_address = self.core.address
            if core_address is None or core_address == self._listen:
                # The core advertises this in its Hello; with port 0 it was not known before.
                self.core.set_address(self._address)
        self._pump()  # (arms the timer)
        self._watch_revocations()  # TLS: open connections of revoked peers are closed
        if self._early_dials is not None:  # after the first dials took theirs
            self._loop.call_soon(self._drop_early_dials)

    def serve_yjs(self, open_shard: ShardOpener) -> YjsDoor:
        """Serve y-websocket clients at ``/yjs/<shard>`` on this transport's listener, with
        ``open_shard`` (the agent's ``shard``) to reach shards; the agent calls this before
        :meth:`start`. Other request paths stay the gossip door. Returns the door (counters)."""
        self._yjs = YjsDoor(open_shard, self._credentials, counters=self.counters)
        return self._yjs

    @property
    def yjs(self) -> YjsDoor | None:
        """The Yjs door, if :meth:`serve_yjs` was called."""
        return self._yjs

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def address(self) -> str | None:
        """The ``ws://host:port`` URL actually listened on (after :meth:`start`), else None."""
        return self._address

    def kick(self) -> None:
        """Execute the core's pending effects now.

        Call it after calling ``core.local_update`` or ``core.durable`` (or any other core
        method) from outside the transport: queued frames are handed to their writers, dials
        are started and the timer is re-armed. A no-op before :meth:`start` and after
        :meth:`close`.
        """
        if self._started and not self._closing:
            self._pump()

    # -- queries -------------------------------------------------------------------------------

    def connections(self) -> dict[str, ConnectionInfo]:
        """Accepted connections by peer name, as snapshots."""
        out = {}
        for peer in sorted(self._by_peer):
            link = self._by_peer[peer]
            out[peer] = ConnectionInfo(
                peer=peer,
                outbound=link.outbound,
                address=link.hello.address if link.hello is not None else None,
                remote=_format_address(link.ws.remote_address),
                since=link.accepted_at,
                queued_bytes=self._buffered(link),
                paused=link.paused,
                latency=link.ws.latency,
                identity=link.identity,
            )
        return out


def _parse_listen(listen: str, *, tls: bool = False) -> tuple[str, int]:
    parts = urlsplit(listen)
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid listen URL {listen!r}: {exc}") from None
    scheme = "wss" if tls else "ws"
    if parts.scheme != scheme or not parts.hostname or port is None or parts.path not in ("", "/"):
        hint = " (TLS credentials listen on wss://)" if tls else " (wss:// needs TLS credentials)"
        raise UsageError(f"listen must look like {scheme}://host:port, not {listen!r}{hint}")
    return parts.hostname, port
