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
revocation). Its read scopes let a client sync and see awareness; its write scopes let its
updates in. A token is checked before anything of the shard is sent. Without credentials the
door is open, as the gossip door: the agent then listens on loopback only.

Awareness
---------
Awareness updates are relayed verbatim to every client of the room on this agent, the sender
included (as the reference y-websocket server does): stock clients renew their awareness every
15 s and drop a connection that received nothing for 30 s, so the echo keeps idle clients
connected. A joining client gets every known state; a leaving client's states are announced
as removed. Awareness is not gossiped between agents (it is presence, not data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import pycrdt
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from crdtsync import updates
from crdtsync.errors import (
    CloseCode,
    ClosedError,
    CredentialsError,
    InvalidShardName,
    InvalidUpdate,
    ProtocolError,
)
from crdtsync.names import validate_shard_name
from crdtsync.yjs import surrogates, sync

if TYPE_CHECKING:
    from crdtsync.security.acl import PeerIdentity
    from crdtsync.security.credentials import Credentials
    from crdtsync.shard import Shard
    from crdtsync.updates import UpdateInfo

__all__ = ["PATH_PREFIX", "YjsDoor"]

logger = logging.getLogger(__name__)

#: Request paths under this prefix are Yjs rooms; the rest of the path is the shard name.
PATH_PREFIX = "/yjs/"
#: Bytes queued for one client above which it is disconnected (``FLOODING``).
DEFAULT_MAX_SEND_BUFFER = 256 << 20
#: Live updates queued for one client are sent merged into one update message, up to this
#: many bytes of updates (a bigger one goes alone): see :meth:`YjsDoor._writer`.
MERGE_BYTES = 1 << 20

#: A client's reader hands the event loop over after this many frames (0: never); the
#: updates it read meanwhile are applied as one batch when it does.
READ_TURN = 32
#: Merged runs kept for the other clients' writers (they merge the same runs): see
#: :func:`_coalesced`.
_MERGED_KEPT = 8

#: What a client's writer sends: a frame, and the update it carries if it is a live update
#: (mergeable with the next ones); None ends the writer.
_Queued = tuple[bytes, "bytes | None"]

ShardOpener = Callable[[str], Awaitable["Shard"]]


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    label: str
    writable: bool
    queue: asyncio.Queue[_Queued | None] = field(default_factory=asyncio.Queue)
    queued: int = 0
    awareness_ids: set[int] = field(default_factory=set)
    closing: bool = False
    writer: asyncio.Task[None] | None = None
    #: Validated updates read from this client, not applied yet (see YjsDoor._flush).
    pending: list[tuple[bytes, UpdateInfo]] = field(default_factory=list)


class _Room:
    """The clients of one shard on this agent, and the awareness states they announced."""

    def __init__(self, door: YjsDoor, shard: Shard) -> None:
        self.door = door
        self.shard = shard
        self.clients: set[_Client] = set()
        self.awareness: dict[int, sync.AwarenessEntry] = {}
        self.sender: _Client | None = None  # the client whose update is being applied
        #: IDs of the low surrogates in the shard's text (see crdtsync.yjs.surrogates).
        #: Computed on the first client update (a read-only room never pays for it).
        self._lows: set[surrogates.ID] | None = None
        self._sub: Any = shard.doc.observe(self._on_transaction)

    def _on_transaction(self, event: Any) -> None:
        update = event.update
        if updates.is_noop(update):
            return
        if self._lows is not None and surrogates.may_have_astral(update):
            self._lows |= surrogates.low_surrogates(update)
        frame = sync.encode_sync(sync.UPDATE, update)
        for client in self.clients:
            if client is not self.sender:
                self.door.send(client, frame, update)

    @property
    def may_split(self) -> bool:
        """Whether an update without astral characters could split a surrogate pair here:
        False once the shard's text is known to hold none (then the update's walk, most of
        the check's cost, is skipped)."""
        return self._lows is None or bool(self._lows)

    @property
    def lows(self) -> set[surrogates.ID]:
        """Low-surrogate IDs of the shard's text, kept up to date by the observer."""
        if self._lows is None:
            self._lows = surrogates.low_surrogates(self.shard.doc.get_update())
        return self._lows

    def broadcast(self, frame: bytes) -> None:
        for client in self.clients:
            self.door.send(client, frame)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the shard (and its doc) may be closed already
            self.shard.doc.unobserve(self._sub)


class YjsDoor:
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

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

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
        if self._credentials is not None:
            try:
                identity = self._authenticate(ws, query)
            except CredentialsError as exc:
                await self._refuse(ws, CloseCode.UNAUTHENTICATED, f"authentication failed: {exc}")
                return
            if not identity.permissions.may_read(name):
                await self._refuse(ws, CloseCode.FORBIDDEN, f"token may not read {name!r}")
                return
            writable = identity.permissions.may_write(name)
            label = identity.name
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
        client = _Client(ws, f"yjs:{label}@{_peer(ws)}", writable)
        room.clients.add(client)
        self._count("yjs.connected")
        writer = client.writer = asyncio.create_task(
            self._writer(client), name=f"crdtsync-{client.label}"
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
            self._flush(room, client)  # (a client that sent and left: its updates count)
            room.clients.discard(client)
            client.queue.put_nowait(None)
            self._leave(room, client)
            if not room.clients:
                room.close()
                if self._rooms.get(name) is room:
                    del self._rooms[name]
            await asyncio.gather(writer, return_exceptions=True)

    def _failed(self, client: _Client, name: str, exc: Exception) -> tuple[CloseCode, str]:
        """Count and log why ``client`` is being closed; the close code and reason to send
        (a FORBIDDEN client first gets the y-protocols "permission denied" message)."""
        if isinstance(exc, ProtocolError):
            self._count(f"yjs.refused.{exc.code.name}")
            logger.warning("%s on %r: %s (close %d)", client.label, name, exc, int(exc.code))
            if exc.code == CloseCode.FORBIDDEN:
                self.send(client, sync.encode_auth_denied(str(exc)))
            return exc.code, str(exc)
        if isinstance(exc, ClosedError):
            return CloseCode.GOING_AWAY, "shard closed"
        logger.error("%s on %r: internal error", client.label, name, exc_info=exc)
        return CloseCode.INTERNAL_ERROR, "internal error"

    def _authenticate(self, ws: ServerConnection, query: str) -> PeerIdentity:
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
        return self._credentials.verify_token(token)

    def _handle(self, room: _Room, client: _Client, frame: str | bytes) -> None:
        if isinstance(frame, str):
            raise ProtocolError(
                "text frame (y-protocols frames are binary)", CloseCode.MALFORMED_FRAME
            )
        msg = sync.decode(frame)
        if msg.kind == sync.SYNC:
            if msg.sub == sync.STEP1:
                try:
                    updates.decode_state_vector(msg.payload)  # strict, before pycrdt sees it
                    answer = room.shard.doc.get_update(msg.payload)
                except (InvalidUpdate, ValueError) as exc:
                    raise ProtocolError(
                        f"bad state vector: {exc}", CloseCode.INVALID_UPDATE
                    ) from None
                self.send(client, sync.encode_sync(sync.STEP2, answer))
            else:
                self._apply(room, client, msg.payload)
        elif msg.kind == sync.AWARENESS:
            for entry in sync.decode_awareness(msg.payload):
                if entry.left:
                    room.awareness.pop(entry.client, None)
                    client.awareness_ids.discard(entry.client)
                else:
                    room.awareness[entry.client] = entry
                    client.awareness_ids.add(entry.client)
            room.broadcast(sync.wrap_awareness(msg.payload))
        elif msg.kind == sync.QUERY_AWARENESS:
            self.send(client, sync.encode_awareness(list(room.awareness.values())))

    def _apply(self, room: _Room, client: _Client, update: bytes) -> None:
        if not client.writable:
            try:
                noop = updates.is_noop(update)
            except InvalidUpdate as exc:
                raise ProtocolError(f"invalid update: {exc}", CloseCode.INVALID_UPDATE) from None
            if noop:  # a read-only client's (empty) answer to our step 1
                return
            raise ProtocolError(
                f"read-only: this token may not change shard {room.shard.name!r}",
                CloseCode.FORBIDDEN,
            )
        try:
            info = updates.validate_update(update)
        except InvalidUpdate as exc:
            raise ProtocolError(f"invalid update: {exc}", CloseCode.INVALID_UPDATE) from None
        if not info.changes_anything:
            # Nothing in it: typically a new client's answer to our step 1 (its empty doc).
            # Applying it would change nothing; checking it must not make the room scan the
            # whole shard for surrogates (seconds for a big one, blocking the event loop).
            return
        astral = surrogates.may_have_astral(update)
        if astral or room.may_split:
            cut = surrogates.splits(update, lambda: room.lows)
            if cut is not None:
                raise ProtocolError(
                    f"update splits a UTF-16 surrogate pair at {cut} (half of an emoji): Yjs"
                    " and Yrs replicas would diverge",
                    CloseCode.INVALID_UPDATE,
                )
        client.pending.append((update, info))
        if astral:
            # Its low surrogates must be in room.lows before the next update is checked:
            # the observer adds them when it is applied (pending updates never hold any).
            self._flush(room, client, raise_=True)
        elif len(client.pending) == 1:
            # Applied when the reader hands the loop over, with what it reads until then.
            asyncio.get_running_loop().call_soon(self._flush, room, client)

    def _flush(self, room: _Room, client: _Client, *, raise_: bool = False) -> None:
        """Apply ``client``'s pending updates (validated as they were read) in one
        transaction. If the shard refuses the batch, they are applied one by one, so that
        those before the refused one land as they would have alone; the client is then
        closed (``raise_``: the error is raised instead, for its reader's own handler)."""
        batch, client.pending = client.pending, []
        if not batch:
            return
        done = 0
        room.sender = client
        try:
            try:
                room.shard.apply_remote_batch(
                    [u for u, _ in batch], client.label, [i for _, i in batch]
                )
                done = len(batch)
            except InvalidUpdate:
                for update, info in batch:
                    room.shard.apply_remote(update, client.label, info)
                    done += 1
        except Exception as exc:
            if isinstance(exc, InvalidUpdate):
                exc = ProtocolError(f"invalid update: {exc}", CloseCode.INVALID_UPDATE)
            if raise_:
                raise exc from None
            if not client.closing:
                code, reason = self._failed(client, room.shard.name, exc)
                client.closing = True  # (its reader stops at its next frame)
                self._spawn(self._close(client, code, reason))
        finally:
            room.sender = None
            if done:
                self.counters["yjs.updates"] = self.counters.get("yjs.updates", 0) + done

    def _leave(self, room: _Room, client: _Client) -> None:
        gone = [
            sync.AwarenessEntry(cid, room.awareness[cid].clock + 1, "null")
            for cid in client.awareness_ids
            if cid in room.awareness
        ]
        for entry in gone:
            del room.awareness[entry.client]
        if gone:
            room.broadcast(sync.encode_awareness(gone))

    # -- sending ---------------------------------------------------------------------------

    def send(self, client: _Client, frame: bytes, update: bytes | None = None) -> None:
        """Queue ``frame`` for ``client`` (never awaits: called from the doc's observer).
        ``update``: the update a live-update frame carries, so that it can be merged."""
        if client.closing:
            return
        client.queued += len(frame)
        if client.queued > self._max_send_buffer:
            client.closing = True
            self._count("yjs.refused.FLOODING")
            logger.warning("%s: does not read what we send; disconnected", client.label)
            self._spawn(self._close(client, CloseCode.FLOODING, "client does not read"))
            return
        client.queue.put_nowait((frame, update))

    def _spawn(self, close: Awaitable[None]) -> None:
        """Run ``close`` in a task of its own, referenced until done (from a callback or the
        doc's observer, which cannot await)."""

        async def run() -> None:
            await close

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # a reference, so that the task is not collected midway
        task.add_done_callback(self._tasks.discard)

    async def _writer(self, client: _Client) -> None:
        """Send what is queued for ``client``, in order. Whatever has piled up meanwhile is
        taken at once, and runs of live updates in it go as one merged update message: under
        a burst the writer falls behind, and one websocket send per update per client was
        most of the door's CPU (profiled: 8 clients, 28,000 sends for 4,000 updates). A
        y-websocket client applies a merged update as it would the updates one by one."""
        while True:
            item = await client.queue.get()
            if item is None:
                return
            batch = [item]
            end = False
            while not client.queue.empty():
                more = client.queue.get_nowait()
                if more is None:
                    end = True
                    break
                batch.append(more)
            client.queued -= sum(len(frame) for frame, _ in batch)
            try:
                for frame in _coalesced(batch, self._merged):
                    await client.ws.send(frame)
            except ConnectionClosed:
                return
            if end:
                return

    async def _close(self, client: _Client, code: CloseCode, reason: str) -> None:
        client.closing = True
        # Let what is queued (e.g. the permission-denied message) go out first.
        client.queue.put_nowait(None)
        if client.writer is not None and client.writer is not asyncio.current_task():
            await asyncio.wait([client.writer], timeout=1.0)
        await client.ws.close(int(code), reason.encode("utf-8")[:123].decode("utf-8", "ignore"))

    async def _refuse(self, ws: ServerConnection, code: CloseCode, reason: str) -> None:
        self._count(f"yjs.refused.{code.name}")
        logger.warning("yjs client %s refused: %s (close %d)", _peer(ws), reason, int(code))
        await ws.close(int(code), reason.encode("utf-8")[:123].decode("utf-8", "ignore"))

    def close_all(self) -> list[Awaitable[None]]:
        """Close every client (the agent is stopping); returns the closes to await."""
        closes: list[Awaitable[None]] = []
        for room in list(self._rooms.values()):
            for client in list(room.clients):
                closes.append(self._close(client, CloseCode.GOING_AWAY, "agent stopping"))
        return closes


#: Runs merged lately, by the identities of their updates: (the updates, kept so that the
#: identities stay theirs; the merged frame).
_MergeCache = OrderedDict[tuple[int, ...], tuple[list[bytes], bytes]]


def _coalesced(batch: list[_Queued], cache: _MergeCache | None = None) -> list[bytes]:
    """The frames of ``batch`` in order, each run of live updates (up to :data:`MERGE_BYTES`)
    merged into one update message. With ``cache``, a run merged lately (the same update
    objects: the observer queues one object for every client of a room) is not merged
    again: the clients that fall behind together all get the same runs."""
    out: list[bytes] = []
    run: list[_Queued] = []
    size = 0

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0][0])
        elif run:
            parts = [update for _, update in run if update is not None]
            key = tuple(map(id, parts))
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                out.append(hit[1])
            else:
                frame = sync.encode_sync(sync.UPDATE, pycrdt.merge_updates(*parts))
                out.append(frame)
                if cache is not None:
                    cache[key] = (parts, frame)
                    if len(cache) > _MERGED_KEPT:
                        cache.popitem(last=False)
        run.clear()

    for frame, update in batch:
        if update is None or len(update) > MERGE_BYTES:
            flush()
            size = 0
            out.append(frame)
            continue
        if size + len(update) > MERGE_BYTES:
            flush()
            size = 0
        run.append((frame, update))
        size += len(update)
    flush()
    return out


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else "?"
