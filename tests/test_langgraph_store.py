"""CrdtStore against the behaviours LangGraph checks of its own stores, plus replication.

The first part reproduces (in our own code) the behaviours of LangGraph's store tests
(``libs/checkpoint/tests/test_store.py`` in langchain-ai/langgraph: list_namespaces with
prefix/suffix/wildcards/max_depth/pagination, namespace validation, batch deduplication,
search with filters and operators, semantic search with a deterministic embedding function,
pagination, edge cases). The second part is crdtsync's own: exact value round-trips, two agent
processes over websockets sharing memory, and SIGKILL after a returned ``put`` losing nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.store.base")

from langgraph.store.base import GetOp, InvalidNamespaceError, PutOp, SearchOp

from crdtsync import Agent, UnsupportedValue
from crdtsync.langgraph import CrdtStore, open_store, shard_for

pytestmark = pytest.mark.timeout(60)


def embed(texts: list[str]) -> list[list[float]]:
    """A tiny deterministic embedding: letter counts (26 dims). No model, no download."""
    out = []
    for text in texts:
        vec = [0.0] * 26
        for ch in text.lower():
            if "a" <= ch <= "z":
                vec[ord(ch) - 97] += 1.0
        out.append(vec)
    return out


@pytest.fixture
async def agent(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with Agent("lg", data_dir=tmp_path / "lg") as a:
        yield a


@pytest.fixture
async def store(agent: Agent) -> CrdtStore:
    return CrdtStore(agent)


@pytest.fixture
async def vstore(agent: Agent) -> CrdtStore:
    return CrdtStore(agent, index={"dims": 26, "embed": embed, "fields": ["text"]})


# -- list_namespaces ---------------------------------------------------------------------------

NAMESPACES = [
    ("a", "b", "c"),
    ("a", "b", "d", "e"),
    ("a", "b", "d", "i"),
    ("a", "b", "f"),
    ("a", "c", "f"),
    ("b", "a", "f"),
    ("users", "123"),
    ("users", "456", "settings"),
    ("admin", "users", "789"),
]


async def _fill(store: CrdtStore, namespaces: list[tuple[str, ...]]) -> None:
    for i, ns in enumerate(namespaces):
        await store.aput(ns, f"id_{i}", {"data": f"value_{i:02d}"})


async def test_list_namespaces_prefix_suffix_depth_paging(store: CrdtStore) -> None:
    await _fill(store, NAMESPACES)
    ab = [("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f")]
    assert await store.alist_namespaces(prefix=("a", "b")) == ab
    assert await store.alist_namespaces(suffix=("f",)) == [
        ("a", "b", "f"),
        ("a", "c", "f"),
        ("b", "a", "f"),
    ]
    assert await store.alist_namespaces(prefix=("a",), suffix=("f",)) == [
        ("a", "b", "f"),
        ("a", "c", "f"),
    ]
    assert await store.alist_namespaces(prefix=("a", "b"), max_depth=3) == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "b", "f"),
    ]
    assert await store.alist_namespaces(prefix=("a", "b"), limit=2) == ab[:2]
    assert await store.alist_namespaces(prefix=("a", "b"), offset=2) == ab[2:]
    assert await store.alist_namespaces(prefix=("a", "*", "f")) == [
        ("a", "b", "f"),
        ("a", "c", "f"),
    ]
    assert await store.alist_namespaces(suffix=("*", "f")) == [
        ("a", "b", "f"),
        ("a", "c", "f"),
        ("b", "a", "f"),
    ]
    assert await store.alist_namespaces(prefix=("nonexistent",)) == []
    assert await store.alist_namespaces(prefix=("users", "123")) == [("users", "123")]
    assert await store.alist_namespaces() == sorted(NAMESPACES)


async def test_list_namespaces_wildcards(store: CrdtStore) -> None:
    await _fill(
        store,
        [
            ("users", "123"),
            ("users", "456"),
            ("users", "789", "settings"),
            ("admin", "users", "789"),
            ("guests", "123"),
            ("guests", "456", "preferences"),
        ],
    )
    assert await store.alist_namespaces(prefix=("users", "*")) == [
        ("users", "123"),
        ("users", "456"),
        ("users", "789", "settings"),
    ]
    assert await store.alist_namespaces(suffix=("*", "preferences")) == [
        ("guests", "456", "preferences")
    ]
    assert await store.alist_namespaces(prefix=("*", "users"), suffix=("*", "settings")) == []


async def test_list_namespaces_pagination_depth_empty(store: CrdtStore) -> None:
    assert await store.alist_namespaces() == []
    for i in range(20):
        await store.aput(("namespace", f"sub_{i:02d}"), f"id_{i:02d}", {"data": i})
    for offset in (0, 5, 15):
        assert await store.alist_namespaces(prefix=("namespace",), limit=5, offset=offset) == [
            ("namespace", f"sub_{i:02d}") for i in range(offset, offset + 5)
        ]
    await _fill(
        store,
        [
            ("a", "b", "c", "d"),
            ("a", "b", "c", "e"),
            ("a", "b", "f"),
            ("a", "g"),
            ("h", "i", "j", "k"),
        ],
    )
    assert (
        await store.alist_namespaces(max_depth=2, limit=100)
        == [
            ("a", "b"),
            ("a", "g"),
            ("h", "i"),
            ("namespace", "sub_00"),
            *[("namespace", f"sub_{i:02d}") for i in range(1, 20)],
        ][:100]
    )


# -- validation, put/get/delete, batch --------------------------------------------------------


async def test_invalid_namespaces_are_refused(store: CrdtStore) -> None:
    doc = {"foo": "bar"}
    for bad in [(), ("the", "thing.about"), ("some", "fun", ""), ("langgraph", "foo")]:
        with pytest.raises(InvalidNamespaceError):
            await store.aput(bad, "foo", doc)
    # "langgraph" is refused only as the root label, and only through put().
    await store.aput(("foo", "langgraph", "foo"), "bar", doc)
    assert (await store.aget(("foo", "langgraph", "foo"), "bar")).value == doc  # type: ignore[union-attr]
    assert (await store.asearch(("foo", "langgraph", "foo")))[0].value == doc
    await store.adelete(("foo", "langgraph", "foo"), "bar")
    assert await store.aget(("foo", "langgraph", "foo"), "bar") is None
    await store.abatch([PutOp(("langgraph", "foo"), "bar", doc)])
    assert (await store.aget(("langgraph", "foo"), "bar")).value == doc  # type: ignore[union-attr]
    with pytest.raises(InvalidNamespaceError):  # labels are checked on direct batch ops too
        await store.abatch([GetOp(("a.b",), "k")])


async def test_put_get_delete_and_timestamps(store: CrdtStore) -> None:
    assert await store.aget(("docs",), "missing") is None
    await store.adelete(("docs",), "missing")  # deleting nothing is fine
    await store.aput(("docs", "u1"), "k", {"v": 1})
    first = await store.aget(("docs", "u1"), "k")
    assert first is not None and first.value == {"v": 1} and first.namespace == ("docs", "u1")
    await asyncio.sleep(0.01)
    await store.aput(("docs", "u1"), "k", {"v": 2})
    second = await store.aget(("docs", "u1"), "k")
    assert second is not None and second.value == {"v": 2}
    assert second.created_at == first.created_at and second.updated_at > first.updated_at
    await store.adelete(("docs", "u1"), "k")
    assert await store.aget(("docs", "u1"), "k") is None


async def test_batch_last_put_wins_and_reads_in_order(store: CrdtStore) -> None:
    await store.aput(("test",), "key", {"value": 0})
    results = await store.abatch(
        [
            GetOp(("test",), "key"),
            PutOp(("test",), "key", {"value": 1}),
            PutOp(("test",), "key", {"value": 2}),
            SearchOp(("test",), filter={"value": 0}),
        ]
    )
    assert results[0].value == {"value": 0} and results[1] is None and results[2] is None
    assert [r.value for r in results[3]] == [{"value": 0}]
    assert (await store.aget(("test",), "key")).value == {"value": 2}  # type: ignore[union-attr]
    same, also, diff = await asyncio.gather(
        store.asearch(("test",), filter={"value": 2}),
        store.asearch(("test",), filter={"value": 2}),
        store.asearch(("test",), filter={"value": 3}),
    )
    assert same == also and len(same) == 1 and diff == []


async def test_values_round_trip_exactly(store: CrdtStore) -> None:
    value = {
        "int": 3,
        "float": 3.0,
        "big": 2**62 + 1,
        "neg": -(2**63),
        "none": None,
        "t": True,
        "s": "é",
        "nested": {"list": [1, 2.5, None, [3, {"x": 4}]], "empty": {}},
        "l": [],
    }
    await store.aput(("types",), "k", value)
    got = (await store.aget(("types",), "k")).value  # type: ignore[union-attr]
    assert got == value
    assert type(got["int"]) is int and type(got["float"]) is float
    assert type(got["nested"]["list"][0]) is int and type(got["nested"]["list"][3][0]) is int
    assert json.dumps(got, sort_keys=True) == json.dumps(value, sort_keys=True)
    with pytest.raises(UnsupportedValue):
        await store.aput(("types",), "bad", {"ok": 1, "t": (1, 2)})
    assert await store.aget(("types",), "bad") is None  # nothing of it was written


async def test_shard_mapping(agent: Agent) -> None:
    store = CrdtStore(agent, shard_depth=2)
    await store.aput(("memories", "alice smith", "prefs"), "k", {"v": 1})
    await store.aput(("memories", "bob"), "k", {"v": 2})
    await store.aput(("memories",), "k", {"v": 3})
    assert (
        shard_for(("memories", "alice smith", "prefs"), shard_depth=2)
        == "lg/memories/alice.20smith"
    )
    assert {"lg/memories/alice.20smith", "lg/memories/bob", "lg/memories"} <= set(
        agent.shard_names()
    )
    assert [i.value["v"] for i in await store.asearch(("memories",))] == [3, 2, 1]
    assert [i.value["v"] for i in await store.asearch(("memories", "bob"))] == [2]


# -- search with filters ------------------------------------------------------------------------

DOCS = [
    ("doc1", {"text": "red apple", "color": "red", "score": 4.5}),
    ("doc2", {"text": "red car", "color": "red", "score": 3.0}),
    ("doc3", {"text": "green apple", "color": "green", "score": 4.0}),
    ("doc4", {"text": "blue car", "color": "blue", "score": 3.5}),
]


async def test_search_filters_and_operators(store: CrdtStore) -> None:
    for key, value in DOCS:
        await store.aput(("test",), key, value)

    def keys(rs: list[Any]) -> list[str]:
        return sorted(r.key for r in rs)

    assert keys(await store.asearch(("test",), filter={"color": "red"})) == ["doc1", "doc2"]
    assert keys(await store.asearch(("test",), filter={"score": {"$gt": 3.2}})) == [
        "doc1",
        "doc3",
        "doc4",
    ]
    assert keys(
        await store.asearch(("test",), filter={"score": {"$gte": 4.0}, "color": "green"})
    ) == ["doc3"]
    assert keys(await store.asearch(("test",), filter={"score": {"$lte": 3.5, "$ne": 3.0}})) == [
        "doc4"
    ]
    assert keys(await store.asearch(("test",), filter={"color": {"$eq": "blue"}})) == ["doc4"]
    assert len(await store.asearch(("test",), limit=2)) == 2
    assert len(await store.asearch(("test",), limit=2, offset=3)) == 1
    assert await store.asearch(("other",)) == []


async def test_dotted_filter_keys_reach_nested_fields(store: CrdtStore) -> None:
    await store.aput(("docs",), "hyphen", {"user": {"access-level": "nested"}})
    await store.aput(("docs",), "other", {"user": {"access-level": "flat"}})
    found = await store.asearch(("docs",), filter={"user.access-level": "nested"})
    assert [r.key for r in found] == ["hyphen"]


@pytest.mark.parametrize("namespace", [("foo.bar",), ("foo", ""), (123,)])
async def test_invalid_labels_are_refused_by_every_method(
    store: CrdtStore, namespace: tuple
) -> None:  # type: ignore[type-arg]
    calls = [
        store.aget(namespace, "k"),
        store.adelete(namespace, "k"),
        store.asearch(namespace),
        store.alist_namespaces(prefix=namespace),
        store.alist_namespaces(suffix=namespace),
    ]
    for call in calls:
        with pytest.raises(InvalidNamespaceError):
            await call
    assert store.agent.shard_names() == []  # nothing was created


async def test_labels_are_literal_not_patterns(store: CrdtStore) -> None:
    await store.aput(("tenant", "a_%"), "k", {"v": 1})
    await store.aput(("tenant", "ab"), "k", {"v": 2})
    await store.aput(("tenant/x", "a b"), "k", {"v": 3})  # "/" and " " are escaped in shard names
    assert [r.value["v"] for r in await store.asearch(("tenant", "a_%"))] == [1]
    assert [r.value["v"] for r in await store.asearch(("tenant/x",))] == [3]
    assert await store.alist_namespaces(prefix=("tenant", "*")) == [
        ("tenant", "a_%"),
        ("tenant", "ab"),
    ]
    assert [r.value["v"] for r in await store.asearch(())] == [3, 2, 1]


# -- semantic search with a user-supplied embedding function -----------------------------------


async def test_vector_search_ranks_updates_and_index_false(vstore: CrdtStore) -> None:
    await vstore.aput(("test",), "doc1", {"text": "zany zebra Xerxes"})
    await vstore.aput(("test",), "doc2", {"text": "something about dogs"})
    await vstore.aput(("test",), "doc3", {"text": "text about birds"})
    first = await vstore.asearch(("test",), query="Zany Xerxes")
    assert first[0].key == "doc1" and first[0].score is not None
    await vstore.aput(("test",), "doc1", {"text": "new text about dogs"})
    after = {r.key: r.score for r in await vstore.asearch(("test",), query="Zany Xerxes")}
    assert after["doc1"] < first[0].score
    await vstore.aput(("test",), "doc4", {"text": "new text about dogs"}, index=False)
    top = await vstore.asearch(("test",), query="new text about dogs", limit=3)
    assert "doc4" not in [r.key for r in top]
    every = await vstore.asearch(("test",), query="new text about dogs", limit=10)
    assert every[-1].key == "doc4" and every[-1].score is None  # unindexed: last, unscored


async def test_vector_search_with_filters_pagination_edges(vstore: CrdtStore) -> None:
    for key, value in DOCS:
        await vstore.aput(("test",), key, value)
    res = await vstore.asearch(("test",), query="apple", filter={"color": "red"})
    assert res[0].key == "doc1" and len(res) == 2
    res = await vstore.asearch(("test",), query="car", filter={"color": "red"})
    assert res[0].key == "doc2" and len(res) == 2
    res = await vstore.asearch(("test",), query="bbbbluuu", filter={"score": {"$gt": 3.2}})
    assert res[0].key == "doc4" and len(res) == 3
    page1 = await vstore.asearch(("test",), query="apple", limit=2)
    page2 = await vstore.asearch(("test",), query="apple", limit=2, offset=2)
    assert len(page1) == len(page2) == 2 and {r.key for r in page1}.isdisjoint(r.key for r in page2)
    for query in ["", None, "test " * 100, "test!@#$%^&*()"]:
        assert len(await vstore.asearch(("test",), query=query)) == 4


# -- the sync API from another thread ----------------------------------------------------------


def test_sync_api_through_open_store(tmp_path: Path) -> None:
    with open_store("sync", tmp_path / "sync") as store:
        store.put(("users", "123"), "prefs", {"theme": "dark", "n": 1})
        assert store.get(("users", "123"), "prefs").value == {"theme": "dark", "n": 1}  # type: ignore[union-attr]
        assert [i.key for i in store.search(("users",))] == ["prefs"]
        assert store.list_namespaces() == [("users", "123")]
        store.delete(("users", "123"), "prefs")
        assert store.get(("users", "123"), "prefs") is None
    with open_store("sync", tmp_path / "sync") as store:  # reopened from disk
        assert store.list_namespaces() == []


async def test_sync_api_on_the_agents_loop_is_refused(store: CrdtStore) -> None:
    with pytest.raises(Exception, match="use aput"):
        store.put(("a",), "k", {"v": 1})


# -- two processes share memory; SIGKILL after put loses nothing -------------------------------

_CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from crdtsync import Agent
    from crdtsync.langgraph import CrdtStore

    async def main(name, data, listen, peer, count):
        async with Agent(name, data_dir=data, listen=listen,
                         peers=[peer] if peer else []) as agent:
            store = CrdtStore(agent)
            print(json.dumps({"address": agent.address}), flush=True)
            for i in range(count):
                await store.aput(("memories", name), f"m{i}", {"i": i, "by": name})
                print(json.dumps({"acked": i}), flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] or None, int(sys.argv[5])))
""")


def _spawn(name: str, data: Path, peer: str, count: int) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, name, str(data), "ws://127.0.0.1:0", peer, str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    address = json.loads(child.stdout.readline())["address"]
    return child, address


async def test_two_processes_share_memory_and_survive_sigkill(tmp_path: Path) -> None:
    a, addr_a = _spawn("pa", tmp_path / "pa", "", 0)
    b, _ = _spawn("pb", tmp_path / "pb", addr_a, 500)
    try:
        assert b.stdout is not None
        acked = [json.loads(b.stdout.readline())["acked"] for _ in range(15)]
        os.kill(b.pid, signal.SIGKILL)  # mid-write: every acked put returned after its flush
        b.wait()
        assert acked == list(range(15))
        # B's disk, reopened alone after SIGKILL, holds every acknowledged put ...
        async with Agent("pb", data_dir=tmp_path / "pb") as pb:
            on_disk = {i.key for i in await CrdtStore(pb).asearch(("memories", "pb"), limit=1000)}
        assert {f"m{i}" for i in acked} <= on_disk
        # ... and once B rejoins A, a third agent that only knows A reads the same memories as
        # B (A may hold a put B made after the last ack we read; then B gets it back from A).
        async with (
            Agent("pb", data_dir=tmp_path / "pb", peers=[addr_a]) as pb,
            Agent("pc", data_dir=tmp_path / "pc", peers=[addr_a]) as pc,
        ):
            store_b, store_c = CrdtStore(pb), CrdtStore(pc)

            async def same() -> tuple[dict[str, Any], dict[str, Any]]:
                ns = ("memories", "pb")
                return (
                    {i.key: i.value for i in await store_b.asearch(ns, limit=1000)},
                    {i.key: i.value for i in await store_c.asearch(ns, limit=1000)},
                )

            for _ in range(200):
                mine, got = await same()
                if got == mine:
                    break
                await asyncio.sleep(0.05)
            assert got == mine and on_disk <= set(got)
            assert all(type(v["i"]) is int for v in got.values())
    finally:
        for child in (a, b):
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
            if child.stdout is not None:
                child.stdout.close()


# -- concurrency and partial replication, in process over websockets ---------------------------


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_concurrent_puts_of_one_item_converge_to_one_whole_value(tmp_path: Path) -> None:
    async with (
        Agent("c1", data_dir=tmp_path / "c1", listen="ws://127.0.0.1:0") as a1,
        Agent("c2", data_dir=tmp_path / "c2", peers=[a1.address]) as a2,
    ):
        s1, s2 = CrdtStore(a1), CrdtStore(a2)
        await s1.aput(("board",), "seed", {"v": 0})
        await _until(lambda: _has(s2, ("board",), "seed"))
        # Both write the same item at once (neither has seen the other's put) ...
        await asyncio.gather(
            s1.aput(("board",), "k", {"by": "c1", "n": 1, "only1": True}),
            s2.aput(("board",), "k", {"by": "c2", "n": 2, "only2": True}),
        )

        async def agree() -> bool:
            v1, v2 = await s1.aget(("board",), "k"), await s2.aget(("board",), "k")
            return v1 is not None and v2 is not None and v1.value == v2.value

        await _until(agree)
        value = (await s1.aget(("board",), "k")).value  # type: ignore[union-attr]
        # ... and both replicas keep one of the two values whole, never a mix.
        assert value in ({"by": "c1", "n": 1, "only1": True}, {"by": "c2", "n": 2, "only2": True})


async def _has(store: CrdtStore, ns: tuple[str, ...], key: str) -> bool:
    return await store.aget(ns, key) is not None


async def test_remote_reads_when_partially_replicated(tmp_path: Path) -> None:
    async with (
        Agent(
            "r1", data_dir=tmp_path / "r1", listen="ws://127.0.0.1:0", replication_factor=1
        ) as a1,
        Agent("r2", data_dir=tmp_path / "r2", peers=[a1.address], replication_factor=1) as a2,
    ):
        writer = CrdtStore(a1, shard_depth=2)
        await writer.aput(("users", "ann"), "prefs", {"theme": "dark"})
        await writer.aput(("users", "bob"), "prefs", {"theme": "light"})
        # r2 does not listen: a client, it holds no placed shard, so only remote reads find them.
        local, remote = (
            CrdtStore(a2, shard_depth=2),
            CrdtStore(a2, shard_depth=2, remote_reads=True),
        )
        assert not [n for n in a2.shard_names() if n.startswith("lg/users")]
        assert await local.aget(("users", "ann"), "prefs") is None

        async def found() -> bool:
            item = await remote.aget(("users", "ann"), "prefs")
            return item is not None and item.value == {"theme": "dark"}

        await _until(found)
        everyone = await remote.asearch(("users",))  # a prefix shorter than shard_depth: read_many
        assert sorted(i.value["theme"] for i in everyone) == ["dark", "light"]
        assert await remote.alist_namespaces(prefix=("users",)) == [
            ("users", "ann"),
            ("users", "bob"),
        ]


# -- inside a LangGraph graph --------------------------------------------------------------------


async def test_graph_with_sync_and_async_nodes_on_the_agents_loop(store: CrdtStore) -> None:
    from typing import TypedDict

    from langgraph.config import get_store
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        total: int

    def sync_node(state: State) -> State:  # LangGraph runs it in a worker thread
        get_store().put(("graph",), "a", {"v": 1})
        return {"total": get_store().get(("graph",), "a").value["v"]}  # type: ignore[union-attr]

    async def async_node(state: State) -> State:
        await get_store().aput(("graph",), "b", {"v": 2})
        found = await get_store().asearch(("graph",))
        return {"total": sum(i.value["v"] for i in found)}

    builder = StateGraph(State)
    builder.add_node("sync", sync_node)
    builder.add_node("async", async_node)
    builder.add_edge(START, "sync")
    builder.add_edge("sync", "async")
    builder.add_edge("async", END)
    assert await builder.compile(store=store).ainvoke({}) == {"total": 3}
    assert {i.key for i in await store.asearch(("graph",))} == {"a", "b"}
