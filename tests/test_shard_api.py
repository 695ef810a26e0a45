"""The agent/shard API as issue #2 writes it, plus names, changes and bad remote input."""

from __future__ import annotations

import asyncio

import pycrdt
import pytest

import crdtsync
from crdtsync import (
    Agent,
    Change,
    ClosedError,
    CrdtSyncError,
    DataDirLocked,
    InvalidShardName,
    InvalidUpdate,
)


async def test_the_documented_example_works_exactly(tmp_path):
    data_dir = tmp_path / "data" / "planner"
    async with Agent("planner", data_dir=data_dir) as agent:
        board = await agent.shard("board")
        board["tasks"] = {"t1": {"title": "crawl", "done": False, "attempts": 0}}
        board["tasks"]["t1"]["attempts"] = 1
        board["log"] = ["started"]
        board["log"].append("step 1")
        with board.transaction():
            board["tasks"]["t1"]["done"] = True
            del board["tasks"]["t1"]["title"]
        await board.flush()
        assert board.snapshot() == {
            "tasks": {"t1": {"done": True, "attempts": 1}},
            "log": ["started", "step 1"],
        }
        assert type(board.snapshot()["tasks"]["t1"]["attempts"]) is int
        assert isinstance(board.doc, pycrdt.Doc)
    async with Agent("planner", data_dir=data_dir) as agent:
        board = await agent.shard("board")
        assert board.snapshot() == {
            "tasks": {"t1": {"done": True, "attempts": 1}},
            "log": ["started", "step 1"],
        }


async def test_nested_dicts_merge_per_key_across_replicas(tmp_path):
    async with Agent("a", data_dir=tmp_path / "a") as a, Agent("b", data_dir=tmp_path / "b") as b:
        sa, sb = await a.shard("board"), await b.shard("board")
        sa["tasks"] = {"t1": {"done": False}}
        sb.apply_remote(sa.doc.get_update(), "a")
        sa["tasks"]["t1"]["done"] = True  # concurrent edits of different keys
        sb["tasks"]["t1"]["owner"] = "b"
        ua, ub = sa.doc.get_update(), sb.doc.get_update()
        sa.apply_remote(ub, "b")
        sb.apply_remote(ua, "a")
        assert sa.snapshot() == sb.snapshot() == {"tasks": {"t1": {"done": True, "owner": "b"}}}


async def test_transaction_is_one_delta_and_one_change(tmp_path):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        board = await agent.shard("board")
        board["tasks"] = {"t1": {"title": "x"}}
        received: list[Change] = []

        async def follow():
            async for change in board.changes():
                received.append(change)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        await board.flush()
        before = board.stats().total_updates
        with board.transaction():
            board["tasks"]["t1"]["done"] = True
            del board["tasks"]["t1"]["title"]
            board["n"] = 1
        await board.flush()
        assert board.stats().total_updates == before + 1
        await asyncio.sleep(0.01)
        assert len(received) == 1
        change = received[0]
        assert change.shard == "board" and change.local and change.origin is None
        assert set(change.paths) == {("tasks", "t1", "done"), ("tasks", "t1", "title"), ("n",)}
        task.cancel()


async def test_changes_report_remote_origin(tmp_path):
    async with Agent("a", data_dir=tmp_path / "a") as a, Agent("b", data_dir=tmp_path / "b") as b:
        sa, sb = await a.shard("s"), await b.shard("s")
        seen: list[Change] = []

        async def follow():
            async for change in sb.changes():
                seen.append(change)
                return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        sa["log"] = ["x"]
        sb.apply_remote(sa.doc.get_update(), "a")
        await asyncio.wait_for(task, 2)
        assert seen == [Change("s", "a", (("log",),))]
        assert not seen[0].local


async def test_changes_end_when_agent_closes(tmp_path):
    agent = Agent("a", data_dir=tmp_path / "a")
    await agent.start()
    shard = await agent.shard("s")

    async def follow():
        return [c async for c in shard.changes()]

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    shard["x"] = 1
    await agent.close()
    assert len(await asyncio.wait_for(task, 2)) == 1
    with pytest.raises(ClosedError):
        await agent.shard("s")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 129,
        "../etc",
        "/abs",
        "a//b",
        "a/",
        "sp ace",
        "nul\x00",
        "ü",
        ".hidden",
        5,
        None,
        "a\nb",
    ],
)
async def test_bad_shard_names_are_clear_errors(tmp_path, name):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        with pytest.raises(InvalidShardName) as err:
            await agent.shard(name)
        assert "shard name" in str(err.value)
    assert not any(
        p.name not in ("data.mdb", "lock.mdb", "LOCK") for p in (tmp_path / "a").rglob("*")
    )


@pytest.mark.parametrize("name", ["a", "board", "sensors/kitchen", "A-1_b.c:d", "x" * 128])
async def test_good_shard_names(tmp_path, name):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        (await agent.shard(name))["k"] = 1
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        assert (await agent.shard(name)).snapshot() == {"k": 1}


async def test_names_that_prefix_each_other_do_not_collide(tmp_path):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        for name in ["a", "a/b", "ab", "a:b"]:
            (await agent.shard(name))["who"] = name
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        assert agent.shard_names() == ["a", "a/b", "a:b", "ab"]
        for name in ["a", "a/b", "ab", "a:b"]:
            assert (await agent.shard(name)).snapshot() == {"who": name}


async def test_second_agent_on_same_dir_is_refused(tmp_path):
    async with Agent("a", data_dir=tmp_path / "a"):
        with pytest.raises(DataDirLocked):
            async with Agent("b", data_dir=tmp_path / "a"):
                pass


GARBAGE = [
    bytes(range(256)),
    b"",
    b"\x01",
    b"\xff" * 40,
]


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_bad_remote_update_is_rejected_and_nothing_persisted(tmp_path, garbage):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        shard["k"] = "v"
        await shard.flush()
        before = (shard.doc.get_update(), shard.stats())
        with pytest.raises(InvalidUpdate):
            shard.apply_remote(garbage, "evil")
        await shard.flush()
        assert (shard.doc.get_update(), shard.stats()) == before


async def test_truncated_update_is_rejected(tmp_path):
    src = pycrdt.Doc()
    src.get("root", type=pycrdt.Map)["k"] = "a long enough value"
    good = src.get_update()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        for cut in range(1, len(good)):
            with pytest.raises(InvalidUpdate):
                shard.apply_remote(good[:cut], "evil")
        assert shard.snapshot() == {}
        assert shard.apply_remote(good, "ok") is not None
        assert shard.snapshot() == {"k": "a long enough value"}


def test_every_public_name_imports():
    assert len(set(crdtsync.__all__)) == len(crdtsync.__all__)
    for name in crdtsync.__all__:
        assert getattr(crdtsync, name) is not None
    assert issubclass(InvalidUpdate, CrdtSyncError)


def test_the_api_s_argument_and_result_types_are_exported():
    from crdtsync import gossip, reads, sharding, store, transport

    for name, home in [
        ("GossipConfig", gossip),
        ("PeerStatus", gossip),
        ("ShardingConfig", sharding),
        ("Quorum", reads),
        ("ShardStats", store),
        ("Transport", transport),
        ("TransportFactory", transport),
    ]:
        assert name in crdtsync.__all__
        assert getattr(crdtsync, name) is getattr(home, name)


def test_testing_and_cli_public_names_import():
    import crdtsync.cli
    import crdtsync.testing

    for module in (crdtsync.testing, crdtsync.cli):
        for name in module.__all__:
            assert getattr(module, name) is not None


async def test_compaction_on_demand_keeps_state(tmp_path):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        for i in range(50):
            shard[f"k{i}"] = i
        del shard["k3"]
        stats = await shard.compact()
        assert stats.log_count == 0 and stats.snapshot_bytes > 0
        shard["after"] = True
        expected = shard.snapshot()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        assert (await agent.shard("s")).snapshot() == expected


async def test_a_pushed_batch_is_one_transaction_one_entry_one_change(tmp_path):
    """Issue 17: the updates of one Push (``ReplicaSet.apply_batch``) are applied in ONE pycrdt
    transaction: one store entry, one change, one combined delta to forward; the result is
    the same as applying them one by one, and a batch refused by the delete check changes
    nothing at all."""
    from crdtsync import updates

    src = pycrdt.Doc()
    root = src.get("root", type=pycrdt.Map)
    sent: list[bytes] = []
    src.observe(lambda e: sent.append(e.update))
    for i in range(5):
        root[f"k{i}"] = i  # (raw pycrdt values: enough to count entries and compare states)
    async with (
        Agent("a", data_dir=tmp_path / "a") as agent,
        Agent("b", data_dir=tmp_path / "b") as other,
    ):
        one_by_one = await other.shard("s")
        for u in sent:
            one_by_one.apply_remote(u, "peer")
        reg = agent.registry
        board = await agent.shard("s")
        await board.flush()
        before = board.stats().total_updates
        received: list[Change] = []
        board.on_change(received.append)
        deltas = reg.apply_batch("s", sent, "peer", [updates.validate_update(u) for u in sent])
        await board.flush()
        assert board.stats().total_updates == before + 1  # one store entry for 5 updates
        assert len(deltas) == 1 and len(received) == 1 and received[0].origin == "peer"
        assert board.snapshot() == one_by_one.snapshot() == {f"k{i}": i for i in range(5)}
        sv = updates.decode_state_vector(updates.state_vector(board.doc))
        assert sv[src.client_id] == 5
        # A batch whose last update deletes in this replica's future: refused, nothing applied.
        board["mine"] = 1
        own = board.doc.client_id
        evil = pycrdt.Doc()
        evil.get("root", type=pycrdt.Map)["x"] = 1
        good = evil.get_update()
        from crdtsync.yjs.state import encode_delete_set

        future = b"\x00" + encode_delete_set({own: [(10_000, 5)]})  # no structs, a delete set
        digest = board.digest()
        with pytest.raises(InvalidUpdate):
            reg.apply_batch(
                "s", [good, future], "peer", [updates.validate_update(u) for u in (good, future)]
            )
        assert board.digest() == digest and "x" not in board.snapshot()


async def test_the_state_vector_a_remote_batch_reuses_is_the_docs(tmp_path):
    """apply_remote_batch reuses the state vector the last batch ended with while no
    transaction changed the doc since: it must then be exactly the doc's, whatever came
    between (local writes, updates out of order held back, duplicates). (An observer cannot
    write back: pycrdt runs observers in a read-only transaction.)"""
    from crdtsync.yjs.state import decode_state_vector

    async with Agent("r", data_dir=tmp_path / "r") as agent:
        shard = await agent.shard("s")
        writers = [pycrdt.Doc() for _ in range(5)]
        maps = [w.get("root", type=pycrdt.Map) for w in writers]
        reused = 0
        held: list[bytes] = []
        for step in range(40):
            i = step % len(writers)
            before = writers[i].get_state()
            maps[i][f"x{i}-{step}"] = step
            update = writers[i].get_update(before)
            if step % 7 == 3:
                held.append(update)  # delivered later: the next update of i waits for it
                continue
            if step % 5 == 0:
                shard[f"local-{step}"] = step  # a local write between two batches
            if shard._sv_memo[0] == shard._changes:
                assert shard._sv_memo[1] == decode_state_vector(shard.doc.get_state()), step
                reused += 1
            shard.apply_remote(update, f"w{i}")
            shard.apply_remote(update, f"w{i}")  # a duplicate changes nothing
            if step % 9 == 0 and held:
                shard.apply_remote(held.pop(0), "late")
            if shard._sv_memo[0] == shard._changes:
                state = shard.doc.get_state()
                assert shard._sv_memo[1] == decode_state_vector(state), step
        for update in held:
            shard.apply_remote(update, "late")
        assert reused > 10  # the memo was used, not always missed
        for m in maps:
            for key, value in m.items():
                assert shard[key] == value


def test_a_leaf_set_from_an_observer_is_refused_as_pycrdt_refuses_it() -> None:
    """A leaf is set through pycrdt's transaction handle (``views._set_leaf``, one nested
    transaction object fewer per write); in a read-only transaction (a map observer's) it
    takes pycrdt's public path: the same refusal, nothing written."""
    from crdtsync.views import _set_leaf

    refusals = []
    for write in (lambda m: m.__setitem__("x", 1), lambda m: _set_leaf(m, "x", 1)):
        doc = pycrdt.Doc()
        root = doc.get("root", type=pycrdt.Map)

        def observer(_event: object, root: pycrdt.Map = root, write: object = write) -> None:
            write(root)  # type: ignore[operator]

        root.observe(lambda event: observer(event))
        with pytest.raises(ExceptionGroup) as refused:
            root["a"] = 1
        refusals.append([repr(e) for e in refused.value.exceptions])
        assert root.to_py() == {"a": 1.0}
    assert refusals[0] == refusals[1]
    assert "Read-only transaction" in refusals[0][0]
    # outside an observer it writes as pycrdt does, one transaction, observers run once
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    seen = []
    doc.observe(lambda ev: seen.append(ev.update))
    _set_leaf(root, "k", "v")
    with doc.transaction():
        _set_leaf(root, "k2", 2)
        _set_leaf(root, "k3", None)
    assert root.to_py() == {"k": "v", "k2": 2.0, "k3": None} and len(seen) == 2
