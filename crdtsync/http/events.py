"""Server-sent events of shard changes, resumable with ``Last-Event-ID``.

One :class:`EventHub` per HTTP server. The first subscriber of a shard starts one follower
task that iterates ``shard.changes()`` and numbers every change; the last few thousand stay in
a ring buffer so a client that reconnects with ``Last-Event-ID`` gets exactly the records it
missed. Event ids are ``<epoch>:<seq>``: the epoch is random per server start, so an id from
an earlier process (or a record that fell out of the buffer) is recognised, and the client is
sent a ``reset`` event with the whole shard instead of a silent gap.

A stream opened with a bearer token ends when the token expires or is revoked, with a last
``error`` event saying which (:mod:`.ends`): a token's access ends on every door.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ..jsonform import shard_json
from .ends import StreamEnds

if TYPE_CHECKING:
    from ..changes import Change
    from ..shard import Shard
    from .access import Access

__all__ = ["EventHub", "ShardEvent", "format_sse"]

BUFFER = 4096  # records kept per shard for resumption
PING = 15.0  # seconds between keep-alive comments
IDLE = 60.0  # a follower with no subscriber for this long stops at its next change


@dataclass(frozen=True, slots=True)
class ShardEvent:
    """One numbered change record."""

    seq: int
    origin: str | None
    paths: tuple[tuple[str | int, ...], ...]
    dropped: int
    time: float
    author: str | None = None  # the agent that wrote it (Change.author), None if unknown

    def to_json(self, shard: str) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "shard": shard,
            "origin": self.origin,
            "local": self.origin is None,
            "author": self.author,
            "paths": [list(p) for p in self.paths],
            "dropped": self.dropped,
            "time": self.time,
        }


@dataclass
class _Follow:
    shard: Shard
    buffer: deque[ShardEvent] = field(default_factory=lambda: deque(maxlen=BUFFER))
    seq: int = 0
    waiters: set[asyncio.Event] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    ended: bool = False
    idle_since: float | None = None  # monotonic time the last subscriber left


def format_sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE message (``data`` as one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class EventHub:
    """Followers of the shards somebody listens to over HTTP, and their subscribers."""

    def __init__(self, ends: StreamEnds | None = None) -> None:
        self.epoch = secrets.token_hex(4)
        self._follows: dict[str, _Follow] = {}
        self._closed = asyncio.Event()
        #: Ends the streams whose token expires or is revoked.
        self.ends = ends if ends is not None else StreamEnds()

    def follow(self, shard: Shard) -> _Follow:
        """Start (once) numbering the changes of ``shard``."""
        f = self._follows.get(shard.name)
        if f is None or f.ended:
            # Numbering continues across followers, so an old id never matches a new record.
            f = _Follow(shard, seq=f.seq if f is not None else 0)
            self._follows[shard.name] = f
            f.task = asyncio.get_running_loop().create_task(self._run(f), name=f"sse:{shard.name}")
        return f

    async def _run(self, f: _Follow) -> None:
        try:
            feed = cast("AsyncGenerator[Change, None]", f.shard.changes())  # (an async generator)
            async with contextlib.aclosing(feed) as changes:
                async for change in changes:
                    f.seq += 1
                    f.buffer.append(
                        ShardEvent(
                            f.seq,
                            change.origin,
                            change.paths,
                            change.dropped,
                            time.time(),
                            change.author,
                        )
                    )
                    for waiter in f.waiters:
                        waiter.set()
                    if f.waiters or f.idle_since is None:
                        continue
                    if time.monotonic() - f.idle_since > IDLE:
                        return  # nobody listened for a while: stop paying for paths
        finally:
            f.ended = True
            for waiter in f.waiters:
                waiter.set()

    async def stream(
        self,
        shard: Shard,
        last_event_id: str | None,
        *,
        snapshot: bool,
        wait: float | None = None,
        access: Access | None = None,
    ) -> AsyncIterator[bytes]:
        """The SSE byte stream for one subscriber of ``shard``.

        Without ``Last-Event-ID`` it starts with a ``snapshot`` event (the whole shard, JSON
        form). With a known id it replays what was missed; with an unknown or expired one it
        starts with a ``reset`` event carrying the whole shard. Every change is then a
        ``change`` event (origin, paths; and the shard's JSON form when ``snapshot``).
        When the token of ``access`` expires or is revoked, a last ``error`` event (a problem
        body) says so and the stream ends.
        """
        f = self.follow(shard)
        await asyncio.sleep(0)  # a new follower listens before the snapshot is taken
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait if wait is not None else math.inf
        wake = asyncio.Event()
        f.waiters.add(wake)
        f.idle_since = None
        ticket = self.ends.hold(access, wake, f"/shards/{shard.name}/events")
        try:
            start = f.seq
            if ticket is not None and ticket.ended is not None:  # (revoked while opening)
                yield format_sse("error", ticket.problem())
                return
            if last_event_id is None:
                yield format_sse(
                    "snapshot",
                    {"shard": shard.name, "value": shard_json(shard)},
                    f"{self.epoch}:{start}",
                )
            else:
                resumed = self._resume_point(f, last_event_id)
                if resumed is None:
                    yield format_sse(
                        "reset",
                        {
                            "shard": shard.name,
                            "value": shard_json(shard),
                            "reason": f"cannot resume from {last_event_id!r}",
                        },
                        f"{self.epoch}:{start}",
                    )
                else:
                    start = resumed
            sent = start
            while True:
                if ticket is not None and ticket.ended is not None:
                    yield format_sse("error", ticket.problem())
                    return
                for event in [e for e in f.buffer if e.seq > sent]:
                    data = event.to_json(shard.name)
                    if snapshot:
                        data["value"] = shard_json(shard)
                    yield format_sse("change", data, f"{self.epoch}:{event.seq}")
                    sent = event.seq
                left = deadline - loop.time()
                if f.ended or self._closed.is_set() or left <= 0:
                    return
                wake.clear()
                closed = asyncio.ensure_future(self._closed.wait())
                waited = asyncio.ensure_future(wake.wait())
                try:
                    done, _ = await asyncio.wait(
                        {waited, closed},
                        timeout=min(PING, left),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:  # (also when the client left and the stream is cancelled)
                    waited.cancel()
                    closed.cancel()
                if not done and loop.time() < deadline:
                    yield b": ping\n\n"
        finally:
            self.ends.release(ticket)
            f.waiters.discard(wake)
            if not f.waiters:
                f.idle_since = time.monotonic()

    def _resume_point(self, f: _Follow, last_event_id: str) -> int | None:
        epoch, _, seq_text = last_event_id.partition(":")
        if epoch != self.epoch or not (seq_text.isascii() and seq_text.isdigit()):
            return None
        seq = int(seq_text)
        if seq > f.seq:
            return None
        oldest = f.buffer[0].seq if f.buffer else f.seq + 1
        if seq < oldest - 1:  # some records after it fell out of the buffer
            return None
        return seq

    async def close(self) -> None:
        """End every stream and follower."""
        self._closed.set()
        self.ends.close()
        tasks = [f.task for f in self._follows.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
