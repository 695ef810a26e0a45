"""LangGraph long-term memory on crdtsync shards: :class:`CrdtStore`.

``CrdtStore`` implements LangGraph's ``BaseStore`` (``put``/``get``/``delete``/``search``/
``list_namespaces``, their async variants, ``batch``/``abatch``) over the shards of one
:class:`~crdtsync.Agent`, so a graph's memory is durable on disk, replicated to every agent of
the mesh, and merged without conflicts when two graphs write at once.

Namespace -> shard mapping
--------------------------
The first ``shard_depth`` labels of a namespace (default 1) name the shard::

    ("memories", "alice", "prefs")  ->  shard "lg/memories"            (shard_depth=1)
    ("memories", "alice", "prefs")  ->  shard "lg/memories/alice"      (shard_depth=2)

Labels are escaped into the shard-name alphabet: every character outside ``A-Za-z0-9_-:`` is
written as ``.`` plus two hex digits per UTF-8 byte (LangGraph forbids ``.`` in labels, so the
escape is unambiguous). Inside the shard, item ``(namespace, key)`` is the top-level entry
``shard[json.dumps([*namespace, key])]`` holding ``{"ns", "key", "value", "created_at",
"updated_at"}`` (plus ``"vectors"`` with semantic search). So everything under one top-level
label lives in one shard, ``search`` of a prefix at least ``shard_depth`` long reads exactly one
shard on the local replica, and a shorter prefix reads the shards named by that prefix.

Values come back exactly as they were put: crdtsync keeps ``int`` (64-bit) apart from
``float``, and ``None``, ``bool``, ``str``, nested ``dict``/``list`` as they are (see
:mod:`crdtsync.values`). A tuple, a set, a dict with non-``str`` keys or an int beyond 64 bits
is refused (``UnsupportedValue``/``IntOutOfRange``) before anything is written. A ``put``
replaces the whole item; when two agents put the same item concurrently one whole value wins on
every replica (Yjs map semantics), never a mix. ``created_at`` is kept across updates.

Partial replication: with ``remote_reads=True`` a shard this agent does not hold is read from
its holders (``Agent.read`` / ``Agent.read_many``); writes always go through the local agent.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from .. import Agent, ShardNotFound, UsageError
from ._match import best_score, matches, ns_matches, until_wildcard

__all__ = ["CrdtStore", "open_store", "shard_for"]

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:")


def _escape(label: str) -> str:
    return "".join(c if c in _SAFE else "".join(f".{b:02x}" for b in c.encode()) for c in label)


def shard_for(namespace: tuple[str, ...], *, prefix: str = "lg", shard_depth: int = 1) -> str:
    """The shard that holds items of ``namespace`` (see the module docs for the mapping)."""
    return "/".join([prefix, *(_escape(label) for label in namespace[:shard_depth])])


def _item_id(namespace: tuple[str, ...], key: str) -> str:
    return json.dumps([*namespace, key], ensure_ascii=False)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class CrdtStore(BaseStore):
    """A LangGraph ``BaseStore`` whose items live in replicated, durable crdtsync shards.

    Args:
        agent: a started :class:`~crdtsync.Agent`.
        prefix: first segment of every shard name this store uses (``"lg"``).
        shard_depth: how many leading namespace labels name the shard (see module docs).
        durable: await ``flush()`` after each batch of writes, so a returned ``put`` survives
            SIGKILL (one shared fsync per batch); False leaves it to the agent's background
            commit (``durability_interval``).
        remote_reads: read shards not held here from their holders (partial replication).
        index: semantic search: ``{"dims", "embed", "fields"}`` as for LangGraph's stores;
            ``embed`` must be a function or ``Embeddings`` you pass (nothing is downloaded).
        loop: the event loop the agent runs on (default: the running loop); sync methods
            called from other threads run there. From that loop itself use the async methods.
    """

    supports_ttl = False

    def __init__(
        self,
        agent: Agent,
        *,
        prefix: str = "lg",
        shard_depth: int = 1,
        durable: bool = True,
        remote_reads: bool = False,
        index: IndexConfig | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if shard_depth < 1:
            raise UsageError("shard_depth must be >= 1")
        self.agent = agent
        self.prefix = prefix
        self.shard_depth = shard_depth
        self.durable = durable
        self.remote_reads = remote_reads
        self._loop = loop
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
        self.index_config = dict(index) if index else None
        self.embeddings = ensure_embeddings(index.get("embed")) if index else None
        fields = (index or {}).get("fields") or ["$"]
        self._fields = [(p, p if p == "$" else tokenize_path(p)) for p in fields]

    # -- sync entry point: run the async implementation on the agent's loop -------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` on the agent's loop from another thread (see ``loop`` in the class doc)."""
        loop = self._loop
        if loop is None:
            raise UsageError(
                "CrdtStore has no event loop: create it inside the agent's loop, "
                "pass loop=, or use crdtsync.langgraph.open_store()"
            )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise UsageError(
                "sync CrdtStore methods cannot run on the agent's own event loop "
                "(they would block it); use aput/aget/asearch/... there"
            )
        return asyncio.run_coroutine_threadsafe(self.abatch(list(ops)), loop).result()

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Execute ``ops`` in order; the puts of one shard are one transaction, one delta."""
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for _i, op in enumerate(ops):
            if isinstance(op, PutOp):
                puts[(tuple(op.namespace), op.key)] = op  # the last put of an item wins
            elif not isinstance(op, (GetOp, SearchOp, ListNamespacesOp)):
                raise TypeError(f"unknown operation type: {type(op).__name__}")
        # Reads see the state before this batch's writes, as LangGraph's own stores do.
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                results[i] = await self._get(tuple(op.namespace), op.key)
            elif isinstance(op, SearchOp):
                results[i] = await self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = await self._list_namespaces(op)
        if puts:
            await self._apply_puts(list(puts.values()))
        return results

    # -- writes --------------------------------------------------------------------------------

    async def _apply_puts(self, puts: list[PutOp]) -> None:
        vectors = await self._embed_puts(puts)
        by_shard: dict[str, list[PutOp]] = {}
        for op in puts:
            by_shard.setdefault(self._shard_name(tuple(op.namespace)), []).append(op)
        shards = []
        for name, group in by_shard.items():
            items = await self.agent.shard(name)
            now = _now()
            entries: dict[str, dict[str, Any] | None] = {}
            for op in group:
                ns = tuple(op.namespace)
                item_id = _item_id(ns, op.key)
                if op.value is None:
                    entries[item_id] = None
                    continue
                old = items.get(item_id)
                created = old["created_at"] if old is not None and "created_at" in old else now
                entry: dict[str, Any] = {
                    "ns": list(ns),
                    "key": op.key,
                    "value": dict(op.value),
                    "created_at": created,
                    "updated_at": now,
                }
                if (ns, op.key) in vectors:
                    entry["vectors"] = vectors[(ns, op.key)]
                entries[item_id] = entry
            with items.transaction():  # validates every value before the first write lands
                items.update({k: v for k, v in entries.items() if v is not None})
                for item_id in [k for k, v in entries.items() if v is None]:
                    if item_id in items:
                        del items[item_id]
            shards.append(items)
        if self.durable and shards:
            await shards[0].flush()  # flushes every shard of the agent: one group commit

    async def _embed_puts(
        self, puts: list[PutOp]
    ) -> dict[tuple[tuple[str, ...], str], dict[str, bytes]]:
        if self.embeddings is None:
            return {}
        wanted: list[tuple[tuple[str, ...], str, str, str]] = []  # ns, key, path, text
        for op in puts:
            if op.value is None or op.index is False:
                continue
            paths = self._fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
            for path, tokens in paths:
                texts = get_text_at_path(op.value, tokens)
                for n, text in enumerate(texts):
                    label = f"{path}.{n}" if len(texts) > 1 else path
                    wanted.append((tuple(op.namespace), op.key, label, text))
        if not wanted:
            return {}
        embedded = await self.embeddings.aembed_documents([w[3] for w in wanted])
        out: dict[tuple[tuple[str, ...], str], dict[str, bytes]] = {}
        for (ns, key, path, _), vector in zip(wanted, embedded, strict=True):
            out.setdefault((ns, key), {})[path] = struct.pack(f"<{len(vector)}d", *vector)
        return out

    # -- reads ---------------------------------------------------------------------------------

    async def _get(self, namespace: tuple[str, ...], key: str) -> Item | None:
        state = await self._read_shard(self._shard_name(namespace))
        entry = (state or {}).get(_item_id(namespace, key))
        return _to_item(entry) if entry is not None else None

    async def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        n = len(prefix)
        candidates = [
            e
            for state in (await self._read_scope(prefix)).values()
            for e in _entries(state)
            if tuple(e["ns"][:n]) == prefix and matches(e["value"], op.filter)
        ]
        # Newest first (as the Postgres store), then by namespace and key: a stable order.
        candidates.sort(key=lambda e: (e["ns"], e["key"]))
        candidates.sort(key=lambda e: e["updated_at"], reverse=True)
        if not (op.query and self.embeddings is not None):
            return [_to_item(e, SearchItem) for e in candidates[op.offset : op.offset + op.limit]]
        query = await self.embeddings.aembed_query(op.query)
        scored = [(best_score(query, e["vectors"]), e) for e in candidates if e.get("vectors")]
        scored.sort(key=lambda se: se[0], reverse=True)
        kept = [
            _to_item(e, SearchItem, score) for score, e in scored[op.offset : op.offset + op.limit]
        ]
        if len(kept) < op.limit:  # items without vectors come last, unscored (as InMemoryStore)
            unscored = [e for e in candidates if not e.get("vectors")]
            skip = max(0, op.offset - len(scored))
            kept += [_to_item(e, SearchItem) for e in unscored[skip : skip + op.limit - len(kept)]]
        return kept

    async def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        scope: tuple[str, ...] = ()
        for cond in op.match_conditions or ():
            if cond.match_type == "prefix":
                scope = tuple(until_wildcard(cond.path))
        found = {
            tuple(e["ns"])
            for state in (await self._read_scope(scope)).values()
            for e in _entries(state)
        }
        namespaces = [
            ns for ns in found if all(ns_matches(c, ns) for c in op.match_conditions or ())
        ]
        if op.max_depth is not None:
            namespaces = list({ns[: op.max_depth] for ns in namespaces})
        return sorted(namespaces)[op.offset : op.offset + op.limit]

    def _shard_name(self, namespace: tuple[str, ...]) -> str:
        return shard_for(namespace, prefix=self.prefix, shard_depth=self.shard_depth)

    async def _read_shard(self, name: str) -> dict[str, Any] | None:
        if name in self.agent.shard_names():
            return (await self.agent.shard(name)).snapshot()
        if not self.remote_reads:
            return None
        try:
            return await self.agent.read(name)
        except ShardNotFound:
            return None

    async def _read_scope(self, prefix: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Every shard that can hold items whose namespace starts with ``prefix``."""
        if len(prefix) >= self.shard_depth:
            state = await self._read_shard(self._shard_name(prefix))
            return {"": state} if state is not None else {}
        base = self._shard_name(prefix)

        def wanted(name: str) -> bool:
            return name == base or name.startswith(base + "/")

        out: dict[str, dict[str, Any]] = {}
        if self.remote_reads:
            out = {k: v for k, v in (await self.agent.read_many(prefix=base)).items() if wanted(k)}
        for name in self.agent.shard_names():
            if wanted(name) and name not in out:
                out[name] = (await self.agent.shard(name)).snapshot()
        return out


def _entries(state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The item entries of a shard's state (other keys, written by non-store code, are skipped)."""
    for entry in state.values():
        if isinstance(entry, dict) and "ns" in entry and "key" in entry and "value" in entry:
            yield entry


def _to_item(entry: dict[str, Any], cls: type[Item] = Item, score: float | None = None) -> Any:
    kwargs: dict[str, Any] = {
        "namespace": tuple(entry["ns"]),
        "key": entry["key"],
        "value": entry["value"],
        "created_at": datetime.fromisoformat(entry["created_at"]),
        "updated_at": datetime.fromisoformat(entry["updated_at"]),
    }
    if cls is SearchItem:
        return SearchItem(**kwargs, score=score)
    return Item(**kwargs)


@contextmanager
def open_store(
    name: str,
    data_dir: Any = None,
    *,
    store_options: dict[str, Any] | None = None,
    **agent_options: Any,
) -> Iterator[CrdtStore]:
    """A ``CrdtStore`` for synchronous code: runs an :class:`~crdtsync.Agent` on a background
    thread's event loop for the duration of the ``with`` block (then flushes and closes it).

    ``agent_options`` go to ``Agent`` (``listen=``, ``peers=``, ...), ``store_options`` to
    ``CrdtStore`` (``shard_depth=``, ``index=``, ...).
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"crdtsync-{name}", daemon=True)
    thread.start()
    agent = Agent(name, data_dir, **agent_options)
    try:
        asyncio.run_coroutine_threadsafe(agent.start(), loop).result()
        try:
            yield CrdtStore(agent, loop=loop, **(store_options or {}))
        finally:
            asyncio.run_coroutine_threadsafe(agent.close(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
