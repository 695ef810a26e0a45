"""A shard: one named pycrdt document, durable in the agent's store, replicated by gossip.

Every change to a shard takes one path, whatever its origin::

    validate  ->  apply to the Doc  ->  append to the store log  ->  notify
    (values.encode_value for local writes, updates.validate_update for remote ones)

The third and fourth steps run in the Doc's transaction observer, so a local write, a remote
update and a Yjs-level edit through :attr:`Shard.doc` are persisted and announced the same way.
Appends are buffered; the group committer makes them durable (see :meth:`Shard.flush`).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import pycrdt

from . import updates
from ._shard_changes import _ChangeStream
from ._shard_durable import DIGEST_META as DIGEST_META  # (re-exported: the registry uses it)
from ._shard_durable import LOCAL_RUN_MAX, _DurableState
from ._shard_remote import _RemoteApply
from .changes import ChangeFeed
from .containers import ROOT, Counter, named_containers, plain_state, root_name
from .errors import ClosedError, StoreError, UsageError
from .values import encode_value
from .views import _LEAVES, ListView, MapView, _maybe_live, _same_live, _set_leaf, mark_closed, wrap
from .yjs.doc import apply_validated_many
from .yjs.state import EMPTY_STATE_VECTOR

if TYPE_CHECKING:
    from .store import ShardStats, Store

__all__ = ["Shard", "ShardHost", "ROOT"]

# DIGEST_META (from ._shard_durable): the store metadata key of a shard's committed digest.

# ROOT (from .containers): the root map in the pycrdt Doc that the dict-like API uses.

DeltaHook = Callable[["Shard", bytes, "str | None"], None]


class ShardHost(Protocol):
    """What a shard needs of whoever serves it (the agent): group commits and replication waits.

    A typed seam so that :mod:`crdtsync.shard` never imports (or reaches into) the agent.
    """

    async def flush(self) -> None:
        """Return once every change made before the call is on disk (one shared fsync)."""

    async def compact(self, name: str) -> ShardStats:
        """Fold shard ``name``'s log into its snapshot, in one store transaction."""

    async def replicated(self, shard: Shard, peers: int, timeout: float) -> None:
        """Return once ``peers`` other agents acknowledged ``shard``'s current state on disk;
        :class:`~crdtsync.errors.ReplicationTimeout` otherwise."""


#: Methods the agent, its registry and the gossip core call on a shard, not agent code: kept
#: callable under their names, but left out of ``dir(Shard)`` and so of ``help(Shard)``.
_INTERNAL = frozenset(
    {
        "apply_remote",
        "apply_remote_batch",
        "apply_remote_many",
        "apply_remote_by_writer",
        "capture",
        "mark_durable",
        "mark_dirty",
        "durable_state",
        "close",
        "__weakref__",
    }
)


class _ShardType(type(MapView)):  # type: ignore[misc]
    """Metaclass of :class:`Shard`: hides :data:`_INTERNAL` from ``dir()`` (``help()``)."""

    def __dir__(cls) -> list[str]:
        return [name for name in super().__dir__() if name not in _INTERNAL]


class Shard(MapView, _RemoteApply, _DurableState, _ChangeStream, metaclass=_ShardType):
    """A named, durable, replicated document that reads and writes like a ``dict``.

    ``shard["key"] = value`` stores any supported value (see :mod:`crdtsync.values`); nested
    dicts become CRDT maps and lists CRDT arrays, so concurrent edits merge per key and per
    element. Obtain shards from :meth:`crdtsync.Agent.shard`, never construct them directly.
    """

    __slots__ = (
        "name",
        "_doc",
        "_client_id",
        "_store",
        "_notify",
        "_on_delta",
        "_feed",
        "_origin",
        "_author",
        "_last_delta",
        "_dirty",
        "_durable",
        "_since_open",
        "_closed",
        "_deep_sub",
        "_tx_sub",
        "_listeners",
        "_host",
        "_digest",
        "_digest_stored",
        "_ds_memo",
        "_sv_memo",
        "_changes",
        "_backlog",
        "_held",
        "_held_lost",
        "_agent",
        "_local_run",
        "__weakref__",
    )

    def __init__(
        self,
        name: str,
        doc: pycrdt.Doc,
        store: Store,
        *,
        notify: Callable[[], None],
        on_delta: DeltaHook | None = None,
        host: ShardHost | None = None,
        agent: str | None = None,
        digest: bytes | None = None,
    ) -> None:
        self.name = name
        self._agent = agent
        self._doc = doc
        self._client_id = doc.client_id  # (a pycrdt property: a call into Rust per read)
        self._store = store
        self._notify = notify
        self._on_delta = on_delta
        self._host = host
        self._feed = ChangeFeed(name)
        self._origin: str | None = None
        self._author: str | None = None  # the writer of the remote update being applied
        self._last_delta: bytes | None = None
        self._dirty = False
        # (state vector, delete set) on disk. None until first read: what the doc held when
        # opened (loaded from the store), computed then, not here. The delete set costs a
        # walk of every item in pycrdt (49 ms of a reopen of a 13 MB shard, issue 17), and a
        # reopen whose shard is never acked before its next commit never needs it.
        self._durable: tuple[bytes, bytes] | None = None
        #: changes before the durable state at open was computed: (the state vector before the
        #: first, the delete set of each), so that it can still be computed exactly
        self._since_open: tuple[bytes, list[bytes]] | None = None
        #: (pycrdt's own update against the doc's state, its canonical delete set): see capture
        self._ds_memo: tuple[bytes, bytes] = (b"", b"")
        sv = updates.state_vector(doc)
        if sv == EMPTY_STATE_VECTOR:  # a new shard: costs nothing now, and saves the notes
            self._durable = (sv, self._delete_set(sv))
        # ``digest``: the one stored with the entries ``doc`` was loaded from (the registry
        # answers Summaries with it while the shard is not open: issue 11), so that the first
        # Summary after a restart does not walk the delete set (1.2 ms of a catch-up's
        # handshake for automerge-paper). Any change resets it.
        self._digest: bytes | None = digest or None
        #: whether the store's "digest" metadata may hold this shard's digest as committed
        #: (the registry answers a peer's Summary from it without opening the shard)
        self._digest_stored = True
        #: (:attr:`_changes` at the end of the last remote batch, the doc's state vector
        #: then, decoded): the next batch reuses it while the doc is unchanged (see
        #: apply_remote_batch)
        self._sv_memo: tuple[int, dict[int, int]] = (-1, {})
        #: transactions that changed the doc (counted by its observer, whoever made them)
        self._changes = 0
        self._local_run: list[bytes] = []  # this shard's own writes since the last capture
        self._closed = False
        self._deep_sub: Any = None
        self._listeners = 0
        self._backlog = updates.Backlog()  # remote updates not causally ready yet
        #: the writer and the clock ends of each update held in _backlog (_shard_remote.py);
        #: _held_lost: some were forgotten, their writers unknown until the backlog empties
        self._held: dict[bytes, tuple[str | None, tuple[tuple[int, int], ...]]] = {}
        self._held_lost = False
        super().__init__(doc.get(ROOT, type=pycrdt.Map))
        self._tx_sub = doc.observe(self._on_transaction)

    # -- reading -----------------------------------------------------------------------------

    @property
    def doc(self) -> pycrdt.Doc:
        """The underlying ``pycrdt.Doc``, for Yjs-level work; its changes persist and replicate too."""
        return self._doc

    def snapshot(self) -> dict[str, Any]:
        """A plain, detached copy of the shard's current state: its keys, and its non-empty
        named containers (:meth:`map`, :meth:`list`, :meth:`text`, :meth:`counter`)."""
        return plain_state(self._doc)

    def to_py(self) -> dict[str, Any]:
        """Same as :meth:`snapshot`."""
        return plain_state(self._doc)

    # -- containers that merge by name (see crdtsync.containers) -----------------------------

    def map(self, key: str) -> MapView:
        """The map named ``key``, created on first use. Unlike ``shard[key] = {}``, maps that
        several agents create concurrently under one name are one map: every entry survives.
        ``shard[key]`` reads it too (unless the shard also has a plain key ``key``)."""
        return MapView(self._named("map", key))

    def list(self, key: str) -> ListView:
        """The list named ``key``, created on first use; concurrent creations merge (their
        elements interleave in one converged order)."""
        return ListView(self._named("list", key))

    def text(self, key: str) -> pycrdt.Text:
        """The ``pycrdt.Text`` named ``key``, created on first use: the type for streaming
        text (``answer += token`` appends a few bytes; rewriting a ``str`` per token stores
        the whole string each time)."""
        return self._named("text", key)  # type: ignore[no-any-return]

    def counter(self, key: str) -> Counter:
        """The counter named ``key``: ``increment(n)`` / ``decrement(n)`` from any number of
        agents, and ``value`` converges to the sum of all of them (see
        :class:`~crdtsync.containers.Counter`)."""
        slot = f"{self._agent or 'local'}/{self._doc.client_id}"
        return Counter(self._named("counter", key), slot)

    def _named(self, kind: str, key: str) -> Any:
        from .containers import KINDS

        name = root_name(kind, key)
        if name not in self._doc.keys():  # noqa: SIM118 (Doc has no __contains__ in its types)
            self._check_open()
        return self._doc.get(name, type=KINDS[kind])

    def _named_value(self, key: str) -> Any:
        for kind, k, crdt in named_containers(self._doc):
            if k == key and len(crdt) > 0:
                return (
                    Counter(crdt, f"{self._agent or 'local'}/{self._doc.client_id}")
                    if kind == "counter"
                    else wrap(crdt)
                )
        raise KeyError(key)

    def __getitem__(self, key: str) -> Any:
        try:
            return super().__getitem__(key)
        except KeyError:
            return self._named_value(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if (
            type(value) in _LEAVES and type(key) is str and key.isascii() and not self._closed
        ):  # a write's common
            _set_leaf(self.crdt, key, encode_value(value, repr(key)))  # case: MapView's, sooner
            return
        self._check_open()
        if isinstance(value, Counter) and key not in self.crdt and value.crdt.doc is self._doc:
            return  # ``shard[key] += n`` on a counter: already counted
        if self._is_named(key, value) and key not in self.crdt:
            return  # ``shard[key] += ...`` on a named Text or list: already appended in place
        super().__setitem__(key, value)

    def _is_named(self, key: str, value: Any) -> bool:
        """Whether ``value`` is the live named container shown under ``key``."""
        if not _maybe_live(value):
            return False  # a leaf is no live container (and a write's common case: no scan)
        return any(
            k == key and _same_live(crdt, value) for _kind, k, crdt in named_containers(self._doc)
        )

    def __delitem__(self, key: str) -> None:
        self._check_open()
        super().__delitem__(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot_keys())

    def __len__(self) -> int:
        return len(self._snapshot_keys())

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key in self.crdt:
            return True
        try:
            self._named_value(key)
        except KeyError:
            return False
        return True

    def _snapshot_keys(self) -> builtins.list[str]:
        # The top-level keys snapshot() shows, in its order (without copying values).
        keys = [str(k) for k in self.crdt.keys()]  # noqa: SIM118 (a pycrdt.Map)
        seen = set(keys)
        for _kind, key, crdt in named_containers(self._doc):
            if key not in seen and len(crdt) > 0:
                keys.append(key)
                seen.add(key)
        return keys

    def stats(self) -> ShardStats:
        """Sizes and counts of the shard's durable log and snapshot."""
        return self._store.stats(self.name)

    # -- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Shard]:
        """Group several changes into one transaction: one delta, one change record."""
        self._check_open()
        with self._doc.transaction():
            yield self

    async def flush(self) -> None:
        """Return once every change made to this agent's shards before the call is on disk.

        Concurrent callers share one fsync (group commit). Changes nobody flushes still reach
        the disk within the agent's ``durability_interval`` (50 ms by default; updates
        received from peers within its ``received_durability_interval``, 0.2 s).
        """
        await self._require_host().flush()

    async def compact(self) -> ShardStats:
        """Fold the shard's log into its snapshot now, in one atomic store transaction."""
        return await self._require_host().compact(self.name)

    async def replicated(self, peers: int = 1, timeout: float = 5.0) -> None:
        """Return once at least ``peers`` other agents hold every change made so far on disk.

        Raises:
            ReplicationTimeout: not enough peers acknowledged within ``timeout`` seconds; the
                exception's ``lagging`` names the peers that had not caught up.
        """
        await self._require_host().replicated(self, peers, timeout)

    # -- the one update path: every change persisted and announced ---------------------------

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        update = event.update
        if updates.is_noop(update):
            return
        if self._durable is None:  # (the doc cannot be read in its own observer: note it)
            if self._since_open is None:
                self._since_open = (event.before_state, [])
            self._since_open[1].append(event.delete_set)
        self._changed_by(update)

    def _changed_by(self, update: bytes) -> None:
        """Persist and announce ``update``, what changed the doc (also for ``_apply_whole``)."""
        self._changes += 1
        if self._closed:
            raise ClosedError(f"shard {self.name!r} is closed; the change was not persisted")
        self._store.append(self.name, update)
        self._dirty = True
        self._digest = None
        self._notify()
        origin = self._origin
        if origin is not None:
            self._last_delta = update
        elif len(run := self._local_run) < LOCAL_RUN_MAX:  # folded at capture (_shard_durable)
            run.append(update)
        if self._feed.active:
            self._feed.publish(origin, self._agent if origin is None else self._author)
        if self._on_delta is not None:
            self._on_delta(self, update, origin)

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop persisting and end change iteration (the agent calls this on close)."""
        self._closed = True
        mark_closed(self._doc)
        self._feed.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"shard {self.name!r} is closed")

    def _require_host(self) -> ShardHost:
        self._check_open()
        if self._host is None:
            raise UsageError(f"shard {self.name!r} is not served by an agent")
        return self._host

    def __repr__(self) -> str:
        return f"<Shard {self.name!r}>"


def load_doc(
    snapshot: bytes | None, log: list[bytes], name: str, *, trusted: bool = False
) -> pycrdt.Doc:
    """Rebuild a shard's Doc from its stored snapshot and log.

    With ``trusted`` (the store verified every entry's checksum, see
    :attr:`crdtsync.store.LoadedShard.verified`) the entries are applied without being parsed
    again: they were validated before they were stored. Otherwise each is validated first.

    Raises:
        StoreError: a stored update does not apply (the store is damaged).
    """
    doc = pycrdt.Doc()
    try:
        if trusted:  # in transactions of APPLY_BATCH entries (one around all is slow for text)
            apply_validated_many(doc, [snapshot, *log] if snapshot else log)
            return doc
        with doc.transaction():
            if snapshot:
                updates.apply_update(doc, snapshot)
            for update in log:
                updates.apply_update(doc, update)
    except Exception as exc:
        raise StoreError(f"shard {name!r}: a stored update does not apply: {exc}") from exc
    return doc
