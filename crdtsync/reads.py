"""The asyncio side of :meth:`Agent.read` and :meth:`Agent.read_many`.

The decisions (whom to ask, when a quorum is reached, when to hedge or give up) are the pure
core's (:mod:`crdtsync.sharding`, :mod:`crdtsync.query`); this module starts a read in the
core, wakes the transport, waits for the outcome and merges the answers by CRDT join
(:class:`crdtsync.readcache.ReadCache`). Concurrent reads of one shard share one request, and
a read within the cache's ttl of the last one asks nobody.

:class:`Reader` knows no agent: it is given three narrow collaborators, each a Protocol below:
the shards held here (:class:`LocalShards`, the agent's shard registry), the core's read
service (:class:`ReadService`, today :class:`crdtsync.sharding.Sharding`; None without peers)
and a wake-up object (:class:`Wakeup`, :class:`crdtsync._activity.Activity`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import pycrdt

from . import updates
from .errors import ReplicationTimeout, ShardNotFound, UsageError
from .names import MAX_SHARD_NAME, validate_shard_name
from .query import NOT_FOUND, OK, TIMEOUT, Outcome
from .readcache import ReadCache, snapshot_of

_NO_PEERS = "create the Agent with listen=, peers= or broker="

__all__ = ["Reader", "Quorum", "LocalShards", "ReadService", "Wakeup"]

#: How many holders must answer: an int, "one", "majority" (floor(R/2)+1) or "all" (R).
Quorum = int | str | None


class LocalReplica(Protocol):
    """A shard held here, as a read sees it (:class:`crdtsync.shard.Shard`)."""

    @property
    def doc(self) -> pycrdt.Doc[Any]: ...
    def snapshot(self) -> dict[str, Any]: ...


class LocalShards(Protocol):
    """The shards held here (:class:`crdtsync._registry.ShardRegistry`)."""

    def names(self) -> list[str]: ...
    def open(self, name: str) -> LocalReplica: ...


class ReadService(Protocol):
    """The core's remote reads (:class:`crdtsync.sharding.Sharding`): start, poll, cancel."""

    def quorum_size(self, shard: str, quorum: int | str | None) -> int: ...
    def read(
        self, shard: str, *, quorum: int, state_vector: bytes, now: float, timeout: float
    ) -> int: ...
    def scan(
        self, prefix: str, *, state_vectors: dict[str, bytes], now: float, timeout: float
    ) -> int: ...
    def result(self, qid: int) -> Outcome | None: ...
    def cancel(self, qid: int) -> None: ...


class Wakeup(Protocol):
    """Kick the transport; wait for it to report activity (:class:`crdtsync._activity.Activity`)."""

    def kick(self) -> None: ...
    async def wait(self, timeout: float) -> None: ...


_POLL = 0.02  # longest wait between two looks at the outcome (wake-ups can be missed)
_GRACE = 1.0  # beyond the read's own timeout, before the driver stops waiting for the core


class Reader:
    """Reads of one agent (see the module docstring).

    Args:
        shards: the shards held here.
        service: the core's read service, or None when the agent has no peers.
        wakeup: kicks the transport and waits for its activity.
        cache_ttl: seconds a remote answer is served from the cache.
    """

    def __init__(
        self,
        shards: LocalShards,
        service: ReadService | None,
        wakeup: Wakeup,
        *,
        cache_ttl: float = 0.25,
    ) -> None:
        self._shards = shards
        self._service = service
        self._wakeup = wakeup
        self.cache = ReadCache(ttl=cache_ttl)
        self._inflight: dict[str, tuple[int, asyncio.Future[pycrdt.Doc[Any]]]] = {}

    async def read(
        self, name: str, *, quorum: Quorum = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        return snapshot_of(await self.read_doc(name, quorum=quorum, timeout=timeout))

    async def read_doc(
        self, name: str, *, quorum: Quorum = None, timeout: float = 5.0
    ) -> pycrdt.Doc[Any]:
        """:meth:`read`'s document: the shard's own (held here, quorum 1) or the cache's join
        of the holders' answers. Read it, never write to it: the doors take their JSON form
        from it (a ``Text`` stays a Text, where the plain dict has its ``str``)."""
        validate_shard_name(name)
        if timeout <= 0:
            raise UsageError("timeout must be > 0")
        local = name in self._shards.names()
        sharding = self._service
        if sharding is None:
            if isinstance(quorum, int) and quorum > 1:  # as replicated() without peers
                raise UsageError(f"read(quorum={quorum}) needs peers: {_NO_PEERS}")
            if local:
                return self._shards.open(name).doc
            raise ShardNotFound(f"shard {name!r} is not held here, and this agent has no peers")
        k = sharding.quorum_size(name, quorum)
        if local and k <= 1:
            return self._shards.open(name).doc
        if not local:
            cached = self.cache.fresh_doc(name, time.monotonic(), k)
            if cached is not None:
                return cached
            running = self._inflight.get(name)
            if running is not None and running[0] >= k:
                return await asyncio.shield(running[1])
        future: asyncio.Future[pycrdt.Doc[Any]] = asyncio.get_running_loop().create_future()
        if not local:
            self._inflight[name] = (k, future)
        try:
            doc = await self._fetch(sharding, name, k, local, timeout)
            if not future.done():
                future.set_result(doc)
            return doc
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            if self._inflight.get(name, (0, None))[1] is future:
                del self._inflight[name]

    async def _fetch(
        self, sharding: ReadService, name: str, k: int, local: bool, timeout: float
    ) -> pycrdt.Doc[Any]:
        base = None
        if local:  # we count as one answer; the others' diffs go on top of our state
            doc = self._shards.open(name).doc
            sv, base = updates.state_vector(doc), doc.get_update()
        else:
            sv = self.cache.state_vector(name)
        need = k - 1 if local else k
        qid = sharding.read(
            name, quorum=need, state_vector=sv, now=time.monotonic(), timeout=timeout
        )
        out = await self._wait(sharding, qid, timeout)
        if out.status == OK:
            answers = [u for _, u in out.answers.get(name, ())]
            return self.cache.join(name, answers, now=time.monotonic(), quorum=k, base=base)
        if out.status == NOT_FOUND and not local:
            asked = ", ".join(out.answered) or "no agent"
            raise ShardNotFound(f"shard {name!r}: no agent holds it (asked: {asked})")
        got = len(out.answers.get(name, ())) + (1 if local else 0)
        raise ReplicationTimeout(
            f"shard {name!r}: {got} of {k} holders answered within {timeout}s "
            f"(none from: {', '.join(out.missing) or 'no other holder known'})",
            out.missing,
        )

    async def read_many(
        self, prefix: str, *, quorum: Quorum = None, timeout: float = 5.0
    ) -> dict[str, dict[str, Any]]:
        if not isinstance(prefix, str) or len(prefix) > MAX_SHARD_NAME:
            raise UsageError(f"prefix must be a string of at most {MAX_SHARD_NAME} characters")
        if timeout <= 0:
            raise UsageError("timeout must be > 0")
        local = {n for n in self._shards.names() if n.startswith(prefix)}
        out: dict[str, dict[str, Any]] = {n: self._shards.open(n).snapshot() for n in sorted(local)}
        sharding = self._service
        if sharding is None:
            return out
        svs = {n: self.cache.state_vector(n) for n in _cached(self.cache, prefix) if n not in local}
        qid = sharding.scan(prefix, state_vectors=svs, now=time.monotonic(), timeout=timeout)
        res = await self._wait(sharding, qid, timeout)
        if res.status == TIMEOUT:
            raise ReplicationTimeout(
                f"read_many({prefix!r}): no answer within {timeout}s from {', '.join(res.missing)}",
                res.missing,
            )
        short = []
        for name, answers in res.answers.items():
            k = sharding.quorum_size(name, quorum)
            have = len(answers) + (1 if name in local else 0)
            if have < k:
                short.append(name)
                continue
            if name in local:
                if k > 1:
                    doc = self._shards.open(name).doc
                    joined = self.cache.join(
                        name,
                        [u for _, u in answers],
                        now=time.monotonic(),
                        quorum=k,
                        base=doc.get_update(),
                    )
                    out[name] = snapshot_of(joined)
                continue
            joined = self.cache.join(
                name, [u for _, u in answers], now=time.monotonic(), quorum=have
            )
            out[name] = snapshot_of(joined)
        if short:
            raise ReplicationTimeout(
                f"read_many({prefix!r}): fewer holders than the quorum have {', '.join(short)}", ()
            )
        return dict(sorted(out.items()))

    async def scan(self, prefix: str, *, timeout: float = 5.0) -> Outcome:
        """Ask every other live agent for its shards named ``prefix...``; the raw outcome
        (answers per shard and agent), for inspection tools."""
        sharding = self._service
        if sharding is None:
            raise UsageError("scan() needs peers: create the Agent with listen= or peers=")
        qid = sharding.scan(prefix, state_vectors={}, now=time.monotonic(), timeout=timeout)
        return await self._wait(sharding, qid, timeout)

    async def _wait(self, sharding: ReadService, qid: int, timeout: float) -> Outcome:
        self._wakeup.kick()
        deadline = time.monotonic() + timeout + _GRACE
        try:
            while True:
                out = sharding.result(qid)
                if out is not None:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    sharding.cancel(qid)
                    return Outcome(
                        qid, TIMEOUT, {}, (), ("the core did not end the read",), time.monotonic()
                    )
                await self._wakeup.wait(min(remaining, _POLL))
        except BaseException:
            sharding.cancel(qid)  # cancelled: forget it
            raise


def _cached(cache: ReadCache, prefix: str) -> list[str]:
    return [n for n in cache.names() if n.startswith(prefix)]
