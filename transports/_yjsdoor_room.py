"""The room side of the Yjs door: a mixin of :class:`~crdtsync.transports.yjsdoor.YjsDoor`
(split from it; the door is the public entry).

A room (:class:`_Room`) is the clients of one shard on this agent: the one observer on the
shard's document that sends every change to them (but the client it came from), the
awareness states they announced, and the shard's low-surrogate IDs the split check needs.
:class:`_Frames` is what a client's frames do to its room: sync step 1 answered, awareness
relayed, an update validated as it is read (strict parser, read-only tokens, the surrogate
check) and queued, then applied with the others of the reader's turn in one transaction
(:meth:`_Frames._flush`); and a leaving client's awareness announced as removed. The
methods stay methods of the door (one ``self``), so the split moved them unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from crdtsync.transports._yjsdoor_client import _Client, _Sending

from crdtsync import updates
from crdtsync.errors import CloseCode, InvalidUpdate, ProtocolError
from crdtsync.yjs import surrogates, sync

if TYPE_CHECKING:
    from crdtsync.shard import Shard

__all__: list[str] = []


class _Room:
    """The clients of one shard on this agent, and the awareness states they announced."""

    def __init__(self, door: _Sending, shard: Shard) -> None:
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


class _Frames(_Sending):
    """Mixin of :class:`~crdtsync.transports.yjsdoor.YjsDoor`: handle a client's frames in
    its room and apply its updates to the shard."""

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
