"""Containers that merge by name, and counters that converge to the sum.

Two agents that both run ``shard["tasks"] = {}`` before they have met each create a *new* map
and store it under the key ``"tasks"`` of the shard's root map. A map key holds one value, so
one of the two maps wins on every replica and the other one's entries are gone. This is how
Yjs works, not a bug of the transport, and it cannot be fixed for keys inside a map.

Yjs does have containers that merge by name: the *root types* of a document. Two replicas
that each call ``doc.get("x", type=Map)`` get the same map. :meth:`Shard.map
<crdtsync.shard.Shard.map>`, :meth:`~crdtsync.shard.Shard.list`,
:meth:`~crdtsync.shard.Shard.text` and :meth:`~crdtsync.shard.Shard.counter` hand out such
containers, created on first use: concurrent first uses on different agents merge.

Layout in the document (for Yjs-level users): the container named ``key`` of kind ``map``
is the root type ``"map:" + key`` (``list:``, ``text:``, ``counter:`` likewise); the shard's
dict-like API keeps using the root map ``"root"``. :func:`plain_state` shows both in one
dict: the root map's keys, then every *non-empty* named container under its key (an empty
one is not shown, because a container that was only opened sends nothing to peers and would
otherwise appear on one replica only). A key used both ways shows the root map's value.

A :class:`Counter` is a named map of per-writer slots: each :class:`~crdtsync.shard.Shard`
object (one Yjs client id, i.e. one process's open shard) adds only to its own slot, so no
write of it ever competes with another writer's; the value is the sum of the slots.
"""

from __future__ import annotations

from typing import Any

import pycrdt

from .errors import UsageError
from .values import decode_leaf, encode_value, to_plain

__all__ = ["KINDS", "Counter", "named_containers", "plain_state", "root_name"]

#: Name of the root map of the dict-like shard API (also :data:`crdtsync.shard.ROOT`).
ROOT = "root"

#: kind -> pycrdt type of the named containers, in the order :func:`plain_state` shows them.
KINDS: dict[str, type[Any]] = {
    "map": pycrdt.Map,
    "list": pycrdt.Array,
    "text": pycrdt.Text,
    "counter": pycrdt.Map,
}


def root_name(kind: str, key: str) -> str:
    """The Yjs root type name of the named container ``key`` of ``kind``."""
    if kind not in KINDS:
        raise UsageError(f"unknown container kind {kind!r}")
    if not isinstance(key, str) or not key:
        raise UsageError("a container name must be a non-empty str")
    return f"{kind}:{key}"


def named_containers(doc: pycrdt.Doc) -> list[tuple[str, str, Any]]:
    """(kind, key, pycrdt container) of every named container present in ``doc``, sorted."""
    found = []
    for name in sorted(doc.keys()):
        kind, sep, key = name.partition(":")
        if sep and key and kind in KINDS:
            found.append((kind, key, doc.get(name, type=KINDS[kind])))
    return found


def counter_value(crdt: pycrdt.Map) -> int:
    """The sum of a counter's slots."""
    total = 0
    for value in crdt.values():
        slot = decode_leaf(value)
        if isinstance(slot, (int, float)) and not isinstance(slot, bool):
            total += int(slot)
    return total


def plain_state(doc: pycrdt.Doc) -> dict[str, Any]:
    """A shard document as one plain dict: the root map, plus non-empty named containers.

    Read in one transaction: pycrdt opens one per key read otherwise, and each commit costs
    time in the number of writers (Yjs clients) the document has seen, so a map of N keys
    written by N clients (one 308 KB Push of 10,000 one-key updates, h-wire's scan) took
    N x N: 3.5 s a snapshot. (Inside an open transaction, e.g. an observer's, it is reused.)
    """
    with doc.transaction():
        root = to_plain(doc.get(ROOT, type=pycrdt.Map))
        out: dict[str, Any] = root if isinstance(root, dict) else {}
        for kind, key, crdt in named_containers(doc):
            if key in out or len(crdt) == 0:
                continue
            out[key] = counter_value(crdt) if kind == "counter" else to_plain(crdt)
    return out


class Counter:
    """A counter that converges to the sum of every agent's increments and decrements.

    Obtain it from :meth:`Shard.counter <crdtsync.shard.Shard.counter>`. Each writer
    (each open :class:`~crdtsync.shard.Shard` object, named ``"<agent>/<Yjs client id>"``)
    keeps its own running total in its own slot, so concurrent increments on different agents
    never overwrite each other, and a restart (a new client id) starts a new slot instead of
    racing its own earlier one. ``value`` is the sum over the slots this replica has seen.
    """

    __slots__ = ("_slot", "crdt")

    def __init__(self, crdt: pycrdt.Map, slot: str) -> None:
        self.crdt = crdt  #: the underlying ``pycrdt.Map`` of slots
        self._slot = slot

    @property
    def value(self) -> int:
        """The current total (converged once every replica has seen every slot)."""
        return counter_value(self.crdt)

    def increment(self, n: int = 1) -> int:
        """Add ``n`` (an int, may be negative) to this writer's slot; the new total here."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise UsageError(f"a counter adds ints, not {type(n).__name__}")
        if n:
            current = decode_leaf(self.crdt.get(self._slot, encode_value(0)))
            self.crdt[self._slot] = encode_value(int(current) + n, f"counter slot {self._slot!r}")
        return self.value

    def decrement(self, n: int = 1) -> int:
        """Subtract ``n``; the new total here."""
        return self.increment(-n)

    def __iadd__(self, n: int) -> Counter:
        self.increment(n)
        return self

    def __isub__(self, n: int) -> Counter:
        self.decrement(n)
        return self

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Counter):
            return self.value == other.value
        if isinstance(other, int):
            return self.value == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Counter({self.value})"
