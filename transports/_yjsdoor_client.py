"""One client of the Yjs door, and the door's sending half: a mixin of
:class:`~crdtsync.transports.yjsdoor.YjsDoor` (split from it; the door is the public entry).

What is here is what the door does *to* a client, whatever room it is in: its state
(:class:`_Client`: the socket, its send queue and byte count, its awareness IDs, the updates
read from it and not applied yet), queueing a frame for it without awaiting (the doc's
observer calls :meth:`_Sending.send`; a client past ``max_send_buffer`` is closed
``FLOODING``), its writer task, which sends what piled up with runs of live updates merged
(:func:`_coalesced`, a merge shared between the clients that fell behind together), and
closing it with a close code (:meth:`_Sending._failed` picks the code for an error). The
methods stay methods of the door (one ``self``: its counters, tasks and merge cache), so
the split moved them unchanged. The logger is the door's (``crdtsync.transports.yjsdoor``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pycrdt
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from crdtsync.errors import CloseCode, ClosedError, ProtocolError
from crdtsync.yjs import sync

if TYPE_CHECKING:
    from crdtsync.updates import UpdateInfo

__all__: list[str] = []

logger = logging.getLogger("crdtsync.transports.yjsdoor")

#: Live updates queued for one client are sent merged into one update message, up to this
#: many bytes of updates (a bigger one goes alone): see :meth:`_Sending._writer`.
MERGE_BYTES = 1 << 20

#: Merged runs kept for the other clients' writers (they merge the same runs): see
#: :func:`_coalesced`.
_MERGED_KEPT = 8

#: What a client's writer sends: a frame, and the update it carries if it is a live update
#: (mergeable with the next ones); None ends the writer.
_Queued = tuple[bytes, "bytes | None"]

#: Runs merged lately, by the identities of their updates: (the updates, kept so that the
#: identities stay theirs; the merged frame).
_MergeCache = OrderedDict[tuple[int, ...], tuple[list[bytes], bytes]]


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
    #: Validated updates read from this client, not applied yet (see _Frames._flush).
    pending: list[tuple[bytes, UpdateInfo]] = field(default_factory=list)
    #: The serial (``jti``) of the token it was admitted with (None: no credentials), so a
    #: revocation closes it (:meth:`YjsDoor.close_revoked`).
    serial: int | None = None


class _Sending:
    """Mixin of :class:`~crdtsync.transports.yjsdoor.YjsDoor`: queue frames for a client,
    run its writer, close it. The attributes declared below belong to the door (set in its
    ``__init__``)."""

    counters: dict[str, int]
    _max_send_buffer: int
    _tasks: set[asyncio.Task[None]]
    _merged: _MergeCache

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

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
