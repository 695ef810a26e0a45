"""Run an agent's HTTP app with uvicorn inside the agent's own event loop.

uvicorn serves one pre-bound socket, so the port is known (``127.0.0.1:0`` picks a free one)
and a bind failure is raised by :meth:`HttpServer.start` itself. uvicorn's own signal handling
is switched off: the process that runs the agent owns SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn

from ..errors import UsageError
from .access import Authorizer, is_loopback, token_authorizer
from .app import DEFAULT_MAX_BODY, HttpContext, create_app
from .ends import StreamEnds
from .events import EventHub

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["HttpOptions", "HttpServer", "parse_bind"]


@dataclass(frozen=True)
class HttpOptions:
    """How an agent serves HTTP (``Agent(http=HttpOptions(...))`` or just ``http="HOST:PORT"``).

    Attributes:
        bind: ``HOST:PORT`` to listen on (``127.0.0.1:0`` picks a free port).
        authorize: the authorisation hook (see :mod:`crdtsync.http.access`); without one every
            request has full access, which is only allowed on a loopback address.
        insecure: allow binding beyond loopback without an authorizer (anyone who can reach
            the port may read and write every shard).
        max_body: largest request body accepted, in bytes (413 beyond).
    """

    bind: str = "127.0.0.1:8080"
    authorize: Authorizer | None = None
    insecure: bool = False
    max_body: int = DEFAULT_MAX_BODY


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> (host, port).

    Raises:
        UsageError: not of that form.
    """
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise UsageError(f"HTTP bind address must be HOST:PORT, not {bind!r}")
    return host.strip("[]"), int(port)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # the agent's process owns them
        yield


class HttpServer:
    """The HTTP API, dashboard and metrics of one agent (see :mod:`crdtsync.http`)."""

    def __init__(self, agent: Agent, options: HttpOptions | str) -> None:
        if isinstance(options, str):
            # With mesh credentials (TLS mode) the door takes bearer tokens issued by the
            # mesh CA (`crdtsync keys token`); the same credentials guard every door.
            creds = agent.credentials
            authorize = token_authorizer(creds) if creds is not None else None
            options = HttpOptions(bind=options, authorize=authorize)
        self.options = options
        # Event streams end when their token expires or is revoked: the revocation list is
        # the agent's credentials', and the counters are the transport's (agent.counters).
        transport = getattr(agent, "_transport", None)
        ends = StreamEnds(agent.credentials, getattr(transport, "counters", None))
        self.context = HttpContext(
            agent,
            authorize=self.options.authorize,
            max_body=self.options.max_body,
            hub=EventHub(ends),
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.url: str | None = None  #: ``http://host:port`` once started

    @property
    def counters(self) -> dict[str, int]:
        """``http.stream_ended.expired`` and ``.revoked``: event streams ended by their token's
        end (also in ``Agent.counters`` when the agent has a transport)."""
        return self.context.hub.ends.counters

    def end_revoked(self) -> int:
        """End now the event streams whose token the credentials' revocation list revokes
        (``Agent.reload_revocations``; otherwise a timer looks every second); how many."""
        return self.context.hub.ends.check_revocations()

    async def start(self) -> None:
        """Bind and start serving.

        Raises:
            UsageError: a bad address, or one beyond loopback without an authorizer and
                without ``insecure=True``.
            OSError: the port cannot be bound.
        """
        host, port = parse_bind(self.options.bind)
        if not is_loopback(host) and self.options.authorize is None and not self.options.insecure:
            raise UsageError(
                f"refusing to serve HTTP on {host!r} without an authorizer: anyone reaching it could "
                "read and write every shard. Bind 127.0.0.1; or give the agent mesh certificates "
                "(`crdtsync agent --keys KEYS`, Agent(credentials=...)): callers then need bearer "
                "tokens from `crdtsync keys token`; or pass HttpOptions(bind, authorize=...) or, on "
                "a network you trust, HttpOptions(bind, insecure=True) (`--insecure` does not "
                "open the HTTP door)"
            )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets of that proto, and
        # without it every keep-alive response waits ~40 ms (Nagle against delayed ACKs).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        config = uvicorn.Config(
            create_app(self.context),
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws="none",
            http="h11",
            timeout_graceful_shutdown=1,
            server_header=False,
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="crdtsync-http"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what made startup fail
                raise UsageError("HTTP server stopped during startup")
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        """Stop serving: end event streams, let requests in flight finish (1 s at most)."""
        self.context.closing = True
        await self.context.hub.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        if self._sock is not None:
            self._sock.close()
