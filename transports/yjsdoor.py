"""The Yjs door: y-websocket clients edit an agent's shards live at ``ws://HOST:PORT/yjs/<shard>``.

:class:`YjsDoor` serves the y-protocols sync protocol (:mod:`crdtsync.yjs.sync`) on the agent's
websocket server, beside the gossip door (:class:`~crdtsync.transports.websocket.WebsocketTransport`
routes by request path; the query string is stripped). Stock clients work as they are: npm
``y-websocket`` providers (browser or Node), pycrdt-websocket ``Provider``s.

One update path
---------------
A client's update is a remote update like a peer's: it is validated with the strict Yjs v1
parser (and the surrogate check) as it is read, then :meth:`Shard.apply_remote_batch
<crdtsync.shard.Shard.apply_remote_batch>` applies it, appends it to the store and announces
it; the agent's delta hook hands it to the gossip core, so the mesh gets it like any local
write. Everything that changes the shard (local writes, gossip, other clients) reaches every
client of the room through one observer on the shard's document. A bad message (not
y-protocols, an invalid update or state vector) closes *that* client with a specific code;
nothing of it was applied.

Under a burst a client's validated updates are applied together: those its reader takes
from the socket before it hands the event loop over (at most :data:`READ_TURN`) go in one
transaction, so the store entry, the gossip announcement, the observer and the frame sent
to every other client are paid once per batch, not once per update (the door's own
per-update cost had been most of its burst latency against ``@y/websocket-server``).

Close codes (:class:`~crdtsync.errors.CloseCode`)
-------------------------------------------------
``MALFORMED_FRAME`` 4004 (not a y-protocols message, or a text frame), ``INVALID_UPDATE``
4006 (not a valid update, or one that splits a UTF-16 surrogate pair: see
:mod:`crdtsync.yjs.surrogates`), ``INVALID_SHARD`` 4007 (the path names no valid shard), ``FLOODING`` 4009 (the client
does not read what we send), ``INTERNAL_ERROR`` 4011, ``UNAUTHENTICATED`` 4012 (no or a bad
token), ``FORBIDDEN`` 4013 (the token does not allow reading the shard, or a read-only client
sent a change; it first gets a y-protocols "permission denied" message with the reason).

Authentication
--------------
With credentials the agent requires a bearer token (``crdtsync keys token``), as
``?token=...`` (browsers cannot set headers on a websocket) or ``Authorization: Bearer ...``,
verified by :meth:`Credentials.verify_token
<crdtsync.security.credentials.Credentials.verify_token>` (CA signature, mesh, dates,
revocation). A client stays connected only while its token does: at the token's ``exp`` (plus
the verification leeway; one timer per client) it is closed with ``CERT_EXPIRED`` 4015, and a
revocation of the token closes it with ``CERT_REVOKED`` 4016 (the transport's revocation sweep).
Its read scopes let a client sync and see awareness; its write scopes let its
updates in. A token is checked before anything of the shard is sent. Without credentials the
door is open, as the gossip door: the agent then listens on loopback only.

Awareness
---------
Awareness updates are relayed verbatim to every client of the room on this agent, the sender
included (as the reference y-websocket server does): stock clients renew their awareness every
15 s and drop a connection that received nothing for 30 s, so the echo keeps idle clients
connected. A joining client gets every known state; a leaving client's states are announced
as removed. Awareness is not gossiped between agents (it is presence, not data).

Modules
-------
This module is the public entry: :class:`YjsDoor`, a connection's admission (shard name,
token) and its reader. Two private mixins of the door, split from it to keep each module a
few hundred lines, hold the rest: :mod:`crdtsync.transports._yjsdoor_room` the rooms and what
a client's frames do to them (validation, batched application to the shard, awareness), and
:mod:`crdtsync.transports._yjsdoor_client` a client's state, its send queue and writer (merged
runs of live updates) and how it is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from crdtsync.transports._yjsdoor_client import MERGE_BYTES as MERGE_BYTES
from crdtsync.transports._yjsdoor_client import _Client, _MergeCache, _peer
from crdtsync.transports._yjsdoor_room import _Frames, _Room
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from crdtsync import updates
from crdtsync.errors import CloseCode, ClosedError, CredentialsError, InvalidShardName
from crdtsync.names import validate_shard_name
from crdtsync.security.tokens import token_deadline
from crdtsync.yjs import sync

if TYPE_CHECKING:
    from crdtsync.security.acl import PeerIdentity
    from crdtsync.security.credentials import Credentials
    from crdtsync.shard import Shard

__all__ = ["PATH_PREFIX", "YjsDoor"]

logger = logging.getLogger(__name__)

#: Request paths under this prefix are Yjs rooms; the rest of the path is the shard name.
PATH_PREFIX = "/yjs/"
#: Bytes queued for one client above which it is disconnected (``FLOODING``).
DEFAULT_MAX_SEND_BUFFER = 256 << 20

#: A client's reader hands the event loop over after this many frames (0: never); the
#: updates it read meanwhile are applied as one batch when it does.
READ_TURN = 32

ShardOpener = Callable[[str], Awaitable["Shard"]]


class YjsDoor(_Frames):
    """Serve y-websocket clients on an agent's shards (see the module docstring).

    Args:
        open_shard: opens (and, under partial replication, subscribes to) a shard by name:
            the agent's :meth:`~crdtsync.agent.Agent.shard`.
        credentials: the agent's credentials; None: no authentication (loopback only).
        max_send_buffer: bytes queued for one client beyond which it is disconnected.
        counters: the dict to count events in (see :attr:`counters`).
    """

    def __init__(
        self,
        open_shard: ShardOpener,
        credentials: Credentials | None = None,
        *,
        max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER,
        counters: dict[str, int] | None = None,
    ) -> None:
        self._open_shard = open_shard
        self._credentials = credentials
        self._max_send_buffer = max_send_buffer
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._merged: _MergeCache = OrderedDict()  # runs merged for one writer, for the others
        #: ``yjs.connected``, ``yjs.refused.<code name>``, ``yjs.updates`` (shared with the
        #: transport's counters when it passes its own dict).
        self.counters: dict[str, int] = {} if counters is None else counters

    def clients(self, shard: str) -> int:
        """How many clients are connected to ``shard`` on this agent now."""
        room = self._rooms.get(shard)
        return len(room.clients) if room is not None else 0

    # -- one connection --------------------------------------------------------------------

    async def serve(self, ws: ServerConnection, name: str, query: str) -> None:
        """Run one client connection on shard ``name`` until it closes."""
        try:
            validate_shard_name(name)
        except InvalidShardName as exc:
            await self._refuse(ws, CloseCode.INVALID_SHARD, str(exc))
            return
        writable = True
        label = "anonymous"
        serial = None
        deadline: float | None = None
        if self._credentials is not None:
            try:
                identity, deadline = self._authenticate(ws, query)
            except CredentialsError as exc:
                await self._refuse(ws, CloseCode.UNAUTHENTICATED, f"authentication failed: {exc}")
                return
            if not identity.permissions.may_read(name):
                await self._refuse(ws, CloseCode.FORBIDDEN, f"token may not read {name!r}")
                return
            writable = identity.permissions.may_write(name)
            label, serial = identity.name, identity.serial
        try:
            shard = await self._open_shard(name)
        except ClosedError:
            await self._refuse(ws, CloseCode.GOING_AWAY, "agent stopping")
            return
        room = self._rooms.get(name)
        if room is None or room.shard is not shard:
            if room is not None:
                room.close()
            room = self._rooms[name] = _Room(self, shard)
        client = _Client(ws, f"yjs:{label}@{_peer(ws)}", writable, serial=serial)
        room.clients.add(client)
        self._count("yjs.connected")
        writer = client.writer = asyncio.create_task(
            self._writer(client), name=f"crdtsync-{client.label}"
        )
        expiry = (
            asyncio.get_running_loop().call_later(
                max(0.0, deadline - time.time()), self._expire, client
            )
            if deadline is not None
            else None
        )
        try:
            self.send(client, sync.encode_sync(sync.STEP1, updates.state_vector(shard.doc)))
            if room.awareness:
                self.send(client, sync.encode_awareness(list(room.awareness.values())))
            read = 0
            async for frame in ws:
                if client.closing:
                    break
                self._handle(room, client, frame)
                read += 1
                if READ_TURN and read % READ_TURN == 0:
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        except Exception as exc:  # each kind gets its close code from _failed
            # What this client sent before the bad frame was valid: it is applied first.
            self._flush(room, client)
            if not client.closing:
                await self._close(client, *self._failed(client, name, exc))
        finally:
            if expiry is not None:
                expiry.cancel()
            self._flush(room, client)  # (a client that sent and left: its updates count)
            room.clients.discard(client)
            client.queue.put_nowait(None)
            self._leave(room, client)
            if not room.clients:
                room.close()
                if self._rooms.get(name) is room:
                    del self._rooms[name]
            await asyncio.gather(writer, return_exceptions=True)

    def _authenticate(self, ws: ServerConnection, query: str) -> tuple[PeerIdentity, float]:
        """The identity the client's token grants, and when the token stops being accepted
        (the connection is closed then: :meth:`_expire`)."""
        assert self._credentials is not None
        token = None
        values = parse_qs(query).get("token")
        if values:
            token = values[0]
        else:
            header = ws.request.headers.get("Authorization") if ws.request is not None else None
            if header is not None and header.lower().startswith("bearer "):
                token = header[7:].strip()
        if not token:
            raise CredentialsError("a bearer token is required (?token= or Authorization)")
        return self._credentials.verify_token(token), token_deadline(token)

    async def _refuse(self, ws: ServerConnection, code: CloseCode, reason: str) -> None:
        self._count(f"yjs.refused.{code.name}")
        logger.warning("yjs client %s refused: %s (close %d)", _peer(ws), reason, int(code))
        await ws.close(int(code), reason.encode("utf-8")[:123].decode("utf-8", "ignore"))

    def close_revoked(self, revoked: Collection[int]) -> int:
        """Close every client whose token is in ``revoked`` with ``CERT_REVOKED`` (the
        revocation list changed while it was connected); returns how many, counted
        (``yjs.revoked_closed``) and logged once each."""
        n = 0
        for room in list(self._rooms.values()):
            for client in list(room.clients):
                if client.closing or client.serial is None or client.serial not in revoked:
                    continue
                n += 1
                self._count("yjs.revoked_closed")
                logger.warning("yjs client %s closed: its token was revoked", client.label)
                client.closing = True  # nothing it sends from now on is read
                self._spawn(self._close(client, CloseCode.CERT_REVOKED, "token revoked"))
        return n

    def _expire(self, client: _Client) -> None:
        """The token ``client`` was admitted with expired while it was connected: close it
        with ``CERT_EXPIRED``, counted (``yjs.expired_closed``) and logged once."""
        if client.closing:
            return
        self._count("yjs.expired_closed")
        logger.warning("yjs client %s closed: its token expired", client.label)
        client.closing = True  # nothing it sends from now on is read
        self._spawn(self._close(client, CloseCode.CERT_EXPIRED, "token expired"))

    def close_all(self) -> list[Awaitable[None]]:
        """Close every client (the agent is stopping); returns the closes to await."""
        closes: list[Awaitable[None]] = []
        for room in list(self._rooms.values()):
            for client in list(room.clients):
                closes.append(self._close(client, CloseCode.GOING_AWAY, "agent stopping"))
        return closes
