"""Value format 2 on stores written by the release before it (``tests/fixtures/values-v1``,
written by ``tests/fixtures/make_values_v1_store.py`` with commit 820d6d4): every value reads
back as it was written, the shard is migrated once on open (marker in the store and in the
document), the migration reaches a peer by gossip and the peer does not migrate again; and
the stored form is what JavaScript reads naturally."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Agent
from crdtsync import values as V
from crdtsync.shard import ROOT

FIXTURE = Path(__file__).parent / "fixtures" / "values-v1"
sys.path.insert(0, str(FIXTURE.parent))
from make_values_v1_store import VALUES  # noqa: E402  (after its folder is on sys.path)

EXPECTED = {**VALUES, "text": "hello"}


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def _copy(tmp_path: Path) -> Path:
    data = tmp_path / "old"
    shutil.copytree(FIXTURE, data)
    return data


async def test_a_v1_store_reads_back_exactly_after_migration(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    async with Agent("old", data_dir=data) as agent:
        shard = await agent.shard("legacy")
        snap = shard.snapshot()
        assert _same(snap, EXPECTED), snap
        assert V.is_marked(shard.doc)
        root = shard.doc.get("root", type=pycrdt.Map)
        assert root["int"] == 3.0 and isinstance(root["int"], float)  # a plain Yjs number
        assert root["big"] == {"$int": str(2**60)}
        assert root["float"] == {"$float": 2.0}
        assert bytes(root["bytes"]) == b"\x00\xff"  # untagged
        await shard.flush()
        update = shard.doc.get_update()
    async with Agent("old", data_dir=data) as agent:  # reopened: no second migration
        shard = await agent.shard("legacy")
        assert _same(shard.snapshot(), EXPECTED)
    # a replica that receives the migrated shard reads the same and does not migrate
    async with Agent("b", data_dir=tmp_path / "b") as other:
        replica = await other.shard("legacy")
        replica.apply_remote(update, "old")
        assert _same(replica.snapshot(), EXPECTED)


async def test_migration_happens_once_and_is_marked_in_the_store(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    async with Agent("old", data_dir=data) as agent:
        shard = await agent.shard("legacy")
        before = shard.doc.get_update()
        await shard.flush()
    async with Agent("old", data_dir=data) as agent:
        shard = await agent.shard("legacy")
        assert shard.doc.get_update() == before  # nothing rewritten the second time


def test_the_v2_form_is_json_readable() -> None:
    assert V.encode_value(3) == 3 and V.encode_value(2**53 - 1) == 2**53 - 1
    assert V.encode_value(2**53) == {"$int": str(2**53)}
    assert V.encode_value(-(2**63)) == {"$int": str(-(2**63))}
    assert V.encode_value(2.0) == {"$float": 2.0} and V.encode_value(0.0) == {"$float": 0.0}
    assert V.encode_value(-0.0) == -0.0 and V.encode_value(0.5) == 0.5
    assert V.encode_value(1e300) == 1e300  # whole but beyond 2**53: reads back as float
    assert V.encode_value(b"\x01" + b"\x00" * 8) == b"\x01" + b"\x00" * 8
    # what a JavaScript client writes reads naturally
    assert V.decode_leaf(3.0) == 3 and type(V.decode_leaf(3.0)) is int
    assert type(V.decode_leaf(-0.0)) is float and type(V.decode_leaf(2.0**60)) is float
    assert V.decode_leaf(bytearray(b"\x00\xff")) == b"\x00\xff"
    assert V.decode_leaf({"$int": "12345678901234567890"}) == 12345678901234567890
    assert V.decode_leaf({"$int": "1x"}) == {"$int": "1x"}  # not a tag: a JSON object
    assert V.decode_leaf({"$int": "1", "other": 2.0}) == {"$int": "1", "other": 2}


async def test_a_v2_shard_stored_by_an_old_release_is_not_migrated(tmp_path: Path) -> None:
    """A shard created by an upgraded agent, gossiped to one of the previous release (which
    stores it without the store marker), is left alone once that agent is upgraded."""
    from crdtsync.store import Store

    written = {"int": 3, "bytes": b"\x00\xff", "whole": 2.0, "big": 2**60}
    async with Agent("new", data_dir=tmp_path / "new") as agent:
        shard = await agent.shard("fresh")
        for key, value in written.items():
            shard[key] = value
        update = shard.doc.get_update()
    with Store(tmp_path / "old") as store:  # what the previous release stores: no marker
        store.append("fresh", update)
        store.commit()
    async with Agent("old", data_dir=tmp_path / "old") as agent:
        shard = await agent.shard("fresh")
        assert _same(shard.snapshot(), written)
        assert shard.doc.get_update() == update  # nothing rewritten


async def test_two_agents_migrating_the_same_old_shard_at_once_do_not_duplicate(
    tmp_path: Path,
) -> None:
    """Two real stores written by the previous release (copies of one fixture: a mesh whose
    agents had converged), upgraded and opened independently: both migrate, their migrations
    meet, and every list still has its elements once, every value as it was written."""
    snaps = []
    updates = []
    for name in ("a", "b"):
        data = tmp_path / name
        shutil.copytree(FIXTURE, data)
        async with Agent(name, data_dir=data) as agent:
            shard = await agent.shard("legacy")
            assert V.is_marked(shard.doc)
            snaps.append(shard.snapshot())
            await shard.flush()
            updates.append(shard.doc.get_update())
    assert updates[0] == updates[1]  # byte-identical: the same structs, the same ids
    for name, theirs in (("a", updates[1]), ("b", updates[0])):
        async with Agent(name, data_dir=tmp_path / name) as agent:
            shard = await agent.shard("legacy")
            shard.apply_remote(theirs, "other")
            merged = shard.snapshot()
            assert _same(merged, EXPECTED), merged
            assert len(merged["list"]) == len(VALUES["list"])
            assert len(merged["nested"]["a"]) == len(VALUES["nested"]["a"])


def _v1_leaf(value: Any) -> Any:
    """A value as format 1 stored it (ints as tagged 9-byte buffers, bytes tagged with 0)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return b"\x01" + value.to_bytes(8, "big", signed=True)
    if isinstance(value, bytes):
        return b"\x00" + value
    raise AssertionError(value)


_leaves = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=4),
    st.sampled_from([0.5, 2.0, -0.0, "s", True, None]),
)


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(_leaves, max_size=6),
    keyed=st.dictionaries(st.text("xyz", max_size=3), _leaves, max_size=5),
    deleted=st.lists(st.integers(min_value=0, max_value=5), max_size=2),
    clients=st.tuples(st.integers(1, 2**32), st.integers(1, 2**32)),
)
def test_concurrent_migrations_of_one_old_state_converge_without_duplicates(
    items: list[Any], keyed: dict[str, Any], deleted: list[int], clients: tuple[int, int]
) -> None:
    """Property: an old (format-1) document with a list and a map, some list elements deleted
    before the upgrade, replicated to two replicas with different client ids; each migrates;
    after exchanging their migrations both read the migrated values once each."""
    old: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    root = old.get("root", type=pycrdt.Map)
    with old.transaction():
        root["list"] = pycrdt.Array([_v1_leaf(v) for v in items])
        for key, value in keyed.items():
            root[key] = _v1_leaf(value)
    kept = list(items)
    arr = root["list"]
    for i in deleted:
        if i < len(arr):
            del arr[i]
            del kept[i]
    want = {"list": kept, **keyed}
    replicas = []
    for client in clients:
        doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
        doc.apply_update(old.get_update())
        V.migrate(doc, "root")
        assert V.is_marked(doc)
        replicas.append(doc)
    a, b = replicas
    a_update, b_update = a.get_update(), b.get_update()
    assert a_update == b_update  # the same structs, whichever replica wrote them
    a.apply_update(b_update)
    b.apply_update(a_update)
    for doc in (a, b):
        got = V.to_plain(doc.get("root", type=pycrdt.Map))
        assert _same(got, want), (got, want)


def _v1_write_on_store(data: Path) -> None:
    """What an agent of the previous release writes in a store copied from the fixture: the
    int set to 4 and a fifth list element (format 1), with the metadata it keeps beside."""
    from crdtsync import updates as U
    from crdtsync.store import Store

    with Store(data) as store:
        loaded = store.load("legacy")
        assert loaded is not None and loaded.snapshot is None
        doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=4242)
        for update in loaded.log:
            doc.apply_update(update)
        before = doc.get_state()
        root = doc.get("root", type=pycrdt.Map)
        with doc.transaction():
            root["int"] = _v1_leaf(4)
            root["list"].append(_v1_leaf(5))
        store.append("legacy", doc.get_update(before))
        sv = U.state_vector(doc)
        store.put_meta("legacy", "state_vector", sv)
        store.put_meta("legacy", "digest", U.digest(doc))
        store.commit()


async def _migrate_alone(name: str, data: Path) -> None:
    async with Agent(name, data_dir=data) as agent:
        shard = await agent.shard("legacy")
        assert V.is_marked(shard.doc)
        await shard.flush()


async def _meet(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Agents a and b, each migrated alone, then connected over websockets on 127.0.0.1:
    both snapshots once they hold the same state."""
    import asyncio

    from crdtsync.gossip import GossipConfig

    cfg = GossipConfig(push_interval=0.02, backoff_base=0.05, anti_entropy_interval=0.5)
    async with (
        Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", gossip=cfg) as a,
        Agent("b", data_dir=tmp_path / "b", peers=[a.address or ""], gossip=cfg) as b,
    ):
        sa, sb = await a.shard("legacy"), await b.shard("legacy")
        for _ in range(400):
            if sa.doc.get_state() == sb.doc.get_state() and V.to_plain(
                sa.doc.get("root", type=pycrdt.Map)
            ) == V.to_plain(sb.doc.get("root", type=pycrdt.Map)):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("a and b did not converge in 20 s")
        return sa.snapshot(), sb.snapshot()


def _differing_old_states(tmp_path: Path) -> None:
    """Two stores of the previous release that had not converged: b holds a write a lacks."""
    for name in ("a", "b"):
        shutil.copytree(FIXTURE, tmp_path / name)
    _v1_write_on_store(tmp_path / "b")


async def test_migrations_of_differing_old_states_converge_and_keep_every_format(
    tmp_path: Path,
) -> None:
    """Two agents whose old (format-1) states differ migrate each alone, then meet over real
    websockets: their replicas converge to one document, every value of it reads in the new
    format (no int read as bytes, no tag byte left), and every list element shows once, at
    any depth, though both migrations rewrote it (values.repair_rewrites on each agent). What
    is not kept (which write to the int wins) is in the next test."""
    _differing_old_states(tmp_path)
    await _migrate_alone("a", tmp_path / "a")
    await _migrate_alone("b", tmp_path / "b")
    snap_a, snap_b = await _meet(tmp_path)
    assert _same(snap_a, snap_b)
    assert snap_a["int"] in (3, 4) and type(snap_a["int"]) is int
    want = {**EXPECTED, "int": snap_a["int"], "list": [*VALUES["list"], 5]}
    assert _elements(snap_a) == _elements(want)
    assert len(snap_a["list"]) == len(want["list"])


def _elements(value: Any) -> Any:
    """``value`` with every list made the multiset of its elements (typed, recursively):
    equal for two values whose lists hold the same elements as often, in any order (two
    concurrent inserts after one element are ordered by client id, not by intent)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _elements(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(sorted((_elements(v) for v in value), key=repr))
    if isinstance(value, float):
        return f"float:{value!r}"
    return f"{type(value).__name__}:{value!r}"


@pytest.mark.xfail(
    strict=True,
    reason="known limit (README, values migration): replicas whose old states differ derive "
    "different migration ids; a's rewrite of the int (the 3 it had) is a write concurrent "
    "with b's later old-release write of 4, and Yjs's last-writer rule lets it win",
)
async def test_migrations_of_differing_old_states_keep_later_writes(tmp_path: Path) -> None:
    _differing_old_states(tmp_path)
    await _migrate_alone("a", tmp_path / "a")
    await _migrate_alone("b", tmp_path / "b")
    snap, _ = await _meet(tmp_path)
    assert snap["int"] == 4  # b's write, later than the 3 a rewrote


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(_leaves, min_size=1, max_size=6),
    extra=st.lists(st.tuples(st.integers(0, 6), _leaves), max_size=3),
    deleted=st.lists(st.integers(min_value=0, max_value=6), max_size=2),
    clients=st.tuples(st.integers(1, 2**32), st.integers(1, 2**32), st.integers(1, 2**32)),
)
def test_migrations_of_differing_old_states_repair_to_one_copy_each(
    items: list[Any],
    extra: list[tuple[int, Any]],
    deleted: list[int],
    clients: tuple[int, int, int],
) -> None:
    """Property: three replicas of an old list; the second and third first get old-release
    inserts and deletes the first lacks (different ones), then all three migrate and meet, in
    two rounds, each repairing after it receives (values.repair_rewrites): all converge, and
    the list holds every element of the union of their edits exactly once."""
    old: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    root = old.get("root", type=pycrdt.Map)
    root["list"] = pycrdt.Array([_v1_leaf(v) for v in items])
    replicas = []
    for client in clients:
        doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
        doc.apply_update(old.get_update())
        replicas.append(doc)
    _, b, c = replicas
    arr_b = b.get("root", type=pycrdt.Map)["list"]
    for i, value in extra:
        arr_b.insert(min(i, len(arr_b)), _v1_leaf(value))
    arr_c = c.get("root", type=pycrdt.Map)["list"]
    for i in deleted:
        if i < len(arr_c):
            del arr_c[i]
    merged: pycrdt.Doc[Any] = pycrdt.Doc(client_id=9)  # the old releases' merge, for `want`
    for doc in replicas:
        merged.apply_update(doc.get_update())
    want = [V._decode_v1(v) for v in merged.get("root", type=pycrdt.Map)["list"]]
    for doc in replicas:
        V.migrate(doc, "root")
    for _ in range(2):
        for doc in replicas:
            for other in replicas:
                if other is not doc:
                    doc.apply_update(other.get_update())
                    V.repair_rewrites(doc)
    lists = [V.to_plain(doc.get("root", type=pycrdt.Map))["list"] for doc in replicas]
    assert all(_same(x, lists[0]) for x in lists), lists
    assert _elements(lists[0]) == _elements(want), (lists[0], want)


async def test_two_agents_upgraded_at_once_meet_over_websockets(tmp_path: Path) -> None:
    """Two stores of the previous release holding the same state, opened by two agents that
    gossip over websockets from the start: whichever migrates first, or both, every value
    reads back once, as written."""
    for name in ("a", "b"):
        shutil.copytree(FIXTURE, tmp_path / name)
    snap_a, snap_b = await _meet(tmp_path)
    assert _same(snap_a, EXPECTED), snap_a
    assert _same(snap_b, EXPECTED), snap_b


def test_the_written_out_empty_marker_is_what_migrate_writes_on_an_empty_document() -> None:
    """A new shard is marked with ``_registry._EMPTY_MARKER`` (bytes written out, not a
    migration run at open): it must stay exactly what ``values.migrate`` writes into an
    empty document, and a shard marked either way must hold the same state."""
    from crdtsync import _registry

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    assert V.migrate(doc, ROOT) == 0
    assert V.is_marked(doc)
    assert doc.get_update() == _registry._EMPTY_MARKER
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    other.apply_update(_registry._EMPTY_MARKER)
    assert V.is_marked(other)
    assert other.get_state() == doc.get_state()
    assert other.get_update() == doc.get_update()


async def test_a_new_shard_is_marked_and_persisted_with_the_empty_marker(tmp_path: Path) -> None:
    """``agent.shard()`` of a new shard writes the marker as a local change: it is stored
    (the shard reopens marked) and its state is the marker's."""
    from crdtsync import _registry

    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        assert V.is_marked(shard.doc)
        assert shard.doc.get_update() == _registry._EMPTY_MARKER
        await shard.flush()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        assert V.is_marked(shard.doc)
        assert shard.doc.get_update() == _registry._EMPTY_MARKER
