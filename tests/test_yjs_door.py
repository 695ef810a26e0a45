"""The Yjs door with real clients: stock Node ``y-websocket`` providers (``tests/js/driver.mjs``,
npm packages installed into ``tests/js`` on first use) and pycrdt-websocket's ``Provider``,
against real agents on 127.0.0.1 with real LMDB stores.

Needs ``node`` and ``npm`` (the Node tests skip, saying so, only when they are absent).
``CRDTSYNC_YJS_IDLE`` sets the idle period of the awareness test (35 s by default, 60 s with
``CRDTSYNC_SOAK=1``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Agent
from crdtsync.errors import CloseCode
from crdtsync.gossip import GossipConfig
from crdtsync.yjs import sync

JS = Path(__file__).parent / "js"
CFG = GossipConfig(
    push_interval=0.02,
    backoff_base=0.05,
    backoff_max=0.5,
    dial_grace=0.2,
    anti_entropy_interval=1.0,
)
IDLE = float(os.environ.get("CRDTSYNC_YJS_IDLE", "60" if os.environ.get("CRDTSYNC_SOAK") else "35"))


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``tests/js/node_modules``, installed with npm once if missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: the Yjs door tests need Node >= 18 and npm")
    modules = JS / "node_modules"
    if not (modules / "y-websocket").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300)
    return modules


class Node:
    """One Node process running ``driver.mjs``: a JSON command per line, a JSON answer per line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def __call__(self, timeout: float = 60.0, **cmd: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line, "node driver exited"
        answer = json.loads(line)
        assert not (isinstance(answer, dict) and "error" in answer), answer
        return answer


@pytest.fixture
async def node(node_modules: Path) -> AsyncIterator[Node]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS / "driver.mjs"),
        cwd=JS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 << 20,
    )
    try:
        yield Node(proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def yurl(agent: Agent) -> str:
    assert agent.address is not None
    return agent.address + "/yjs"


def dump(doc: pycrdt.Doc) -> dict[str, Any]:
    """The same shape as driver.mjs's dump (text, arr, map), read through pycrdt."""
    arr = doc.get("arr", type=pycrdt.Array)
    mp = doc.get("map", type=pycrdt.Map)
    return {
        "text": str(doc.get("text", type=pycrdt.Text)),
        "arr": [int(v) if isinstance(v, float) and v.is_integer() else v for v in arr],
        "map": {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in mp.items()},
    }


async def test_node_client_and_python_agent_edit_concurrently(node: Node, tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a:
        board = await a.shard("board")
        assert await node(op="open", id="x", url=yurl(a), room="board") == {"ok": True}

        async def python_edits() -> None:
            text = board.doc.get("text", type=pycrdt.Text)
            mp = board.doc.get("map", type=pycrdt.Map)
            for i in range(60):
                text.insert(len(text) // 2, f"<p{i}>")
                mp[f"py{i % 7}"] = i
                await asyncio.sleep(0.005)

        await asyncio.gather(python_edits(), node(op="random", ids=["x"], n=200, seed=3))
        js: dict[str, Any] = {}

        async def same() -> bool:
            js.update(await node(op="dump", id="x"))
            return {k: js[k] for k in ("text", "arr", "map")} == dump(board.doc)

        end = time.monotonic() + 20
        while not await same():
            assert time.monotonic() < end, (js, dump(board.doc))
            await asyncio.sleep(0.1)
        assert "<p59>" in js["text"] and js["map"]["py3"] == 59
        assert a.core is not None  # the client's edits were gossiped as local ones: see below


async def test_three_js_docs_converge_with_the_mesh(node: Node, tmp_path: Path) -> None:
    async with (
        Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a,
        Agent(
            "b", tmp_path / "b", listen="ws://127.0.0.1:0", peers=[a.address or ""], gossip=CFG
        ) as b,
        Agent(
            "c", tmp_path / "c", listen="ws://127.0.0.1:0", peers=[a.address or ""], gossip=CFG
        ) as c,
    ):
        for agent, doc_id in ((a, "x"), (b, "y"), (a, "z")):
            assert await node(op="open", id=doc_id, url=yurl(agent), room="mesh/board") == {
                "ok": True
            }
        await node(op="random", ids=["x", "y", "z"], n=200, seed=11)
        result = await node(op="converge", ids=["x", "y", "z"], timeout=30)
        assert result["ok"], result
        state = result["state"]
        assert state["text"] or state["arr"] or state["map"]
        shards = [await agent.shard("mesh/board") for agent in (a, b, c)]
        await until(
            lambda: all(
                dump(s.doc) == {k: state[k] for k in ("text", "arr", "map")} for s in shards
            ),
            30,
        )


async def test_client_joining_a_5mb_shard_syncs_it(node: Node, tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a:
        big = await a.shard("big")
        chunk = "x" * 1000
        with big.transaction():
            for i in range(5200):
                big[f"k{i}"] = f"{i}:{chunk}"
        await big.flush()
        assert len(big.doc.get_update()) > 5_000_000
        assert await node(op="open", id="x", url=yurl(a), room="big", timeout=60) == {"ok": True}
        got = await node(op="big", id="x")
        assert got["keys"] == 5200 and got["bytes"] > 5_000_000


async def test_awareness_keeps_an_idle_stock_client_connected(node: Node, tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a:
        await node(op="open", id="x", url=yurl(a), room="idle")
        await node(op="open", id="y", url=yurl(a), room="idle")
        await asyncio.sleep(IDLE)
        for doc_id in ("x", "y"):
            stats = await node(op="stats", id=doc_id)
            assert stats == {"connects": 1, "closes": 0, "status": "connected"}, stats
            assert (await node(op="awareness", id=doc_id))["states"] == 2


async def test_garbage_closes_only_that_client(node: Node, tmp_path: Path) -> None:
    async with (
        Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a,
        Agent(
            "b", tmp_path / "b", listen="ws://127.0.0.1:0", peers=[a.address or ""], gossip=CFG
        ) as b,
    ):
        board = await a.shard("board")
        board["k"] = "v"
        await node(op="open", id="x", url=yurl(a), room="board")
        await until(lambda: bool(a.peers) and a.peers[0].state == "connected")
        before = board.doc.get_update()
        garbage = {
            "ff00": CloseCode.MALFORMED_FRAME,  # unknown message type
            "0002": CloseCode.MALFORMED_FRAME,  # update without its payload
            "000203010203": CloseCode.INVALID_UPDATE,  # update whose bytes are not an update
            "00000401020304": CloseCode.INVALID_UPDATE,  # step 1 with a bad state vector
            "0100": CloseCode.MALFORMED_FRAME,  # empty awareness payload
        }
        for hexframe, code in garbage.items():
            closed = await node(op="raw", url=yurl(a) + "/board", hex=hexframe)
            assert closed["code"] == code, (hexframe, closed)
        assert board.doc.get_update() == before
        await node(op="edit", id="x", text="still here", key="ok")
        await until(lambda: board.doc.get("map", type=pycrdt.Map).get("ok") == "still here")
        stats = await node(op="stats", id="x")
        assert stats["connects"] == 1 and stats["closes"] == 0
        assert a.peers[0].state == "connected"
        shard_b = await b.shard("board")
        await until(lambda: shard_b.doc.get("map", type=pycrdt.Map).get("ok") == "still here")


async def test_text_frames_and_bad_rooms_are_refused(tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a:
        async with connect(yurl(a) + "/board?x=1") as ws:
            first = await ws.recv()
            assert sync.decode(first).kind == sync.SYNC  # our step 1: the query was stripped
            await ws.send("hello")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.MALFORMED_FRAME
        async with connect(yurl(a) + "/a//b") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.INVALID_SHARD
        assert a.registry.names() == ["board"]  # nothing was opened for the bad name


class _Channel:
    """pycrdt's ``Channel`` over a ``websockets`` client connection."""

    def __init__(self, ws: Any, path: str) -> None:
        self._ws = ws
        self.path = path

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        await self._ws.send(message)

    async def recv(self) -> bytes:
        return bytes(await self._ws.recv())


async def test_pycrdt_provider_syncs_both_ways(tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a:
        board = await a.shard("board")
        board.doc.get("text", type=pycrdt.Text).insert(0, "from agent")
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        text = doc.get("text", type=pycrdt.Text)
        async with (
            connect(yurl(a) + "/board", max_size=None) as ws,
            pycrdt.Provider(doc, _Channel(ws, "board")),
        ):
            await until(lambda: str(text) == "from agent")
            text.insert(len(text), " and provider")
            agent_text = board.doc.get("text", type=pycrdt.Text)
            await until(lambda: str(agent_text) == "from agent and provider")
            agent_text.insert(0, ">")
            await until(lambda: str(text) == ">from agent and provider")


#: Python value -> what driver.mjs reports the JavaScript value to be ($bytes: Uint8Array,
#: $number: -0; plain JSON otherwise).
PY_TO_JS: dict[str, tuple[Any, Any]] = {
    "int": (3, 3),
    "neg": (-7, -7),
    "safe": (2**53 - 1, 2**53 - 1),
    "big": (2**60, {"$int": str(2**60)}),
    "half": (0.5, 0.5),
    "whole_float": (2.0, {"$float": 2}),
    "negzero": (-0.0, {"$number": "-0"}),
    "bytes": (b"\x00\xff", {"$bytes": "00ff"}),
    "lookalike": (b"\x01" + b"\x00" * 8, {"$bytes": "01" + "00" * 8}),
    "str": ("héllo 🎉", "héllo 🎉"),
    "flag": (True, True),
    "none": (None, None),
    "nested": ({"a": [1, b"x"]}, {"a": [1, {"$bytes": "78"}]}),
}

#: JavaScript value (as sent to driver.mjs) -> what Python reads.
JS_TO_PY: dict[str, tuple[Any, Any]] = {
    "int": (3, 3),
    "neg": (-7, -7),
    "half": (2.5, 2.5),
    "bytes": ({"$bytes": "00ff"}, b"\x00\xff"),
    "lookalike": ({"$bytes": "01" + "00" * 8}, b"\x01" + b"\x00" * 8),
    "big": ({"$int": str(2**60)}, 2**60),
    "str": ("s", "s"),
    "flag": (False, False),
    "none": (None, None),
    "object": ({"a": 1, "b": [2, 0.5]}, {"a": 1, "b": [2, 0.5]}),
    # lib0 writes a whole JS number up to 2**31 as a varint, -0 with a sign Yrs drops: int 0
    "negzero": ({"$number": "-0"}, 0),
    "huge": (2.0**60, 2.0**60),  # a whole JS number beyond 2**53: a float
    "whole_tag": ({"$float": 2}, 2.0),
    # a JS BigInt (Yjs stores it as a signed 64-bit int): the exact Python int
    "bigint": ({"$bigint": "5"}, 5),
    "bigint_big": ({"$bigint": str(2**53 + 1)}, 2**53 + 1),
    "bigint_max": ({"$bigint": str(2**63 - 1)}, 2**63 - 1),
    "bigint_min": ({"$bigint": str(-(2**63))}, -(2**63)),
}


def _typed(value: Any) -> Any:
    """Value with its type, recursively, so that 3 != 3.0 (and -0.0 != 0.0) in comparisons."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, float):
        return ("float", repr(value))  # -0.0 != 0.0 here
    return (type(value).__name__, value)


async def test_values_round_trip_between_python_and_javascript(node: Node, tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a:
        shard = await a.shard("values")
        for key, (py, _) in PY_TO_JS.items():
            shard[key] = py
        await node(op="open", id="x", url=yurl(a), room="values")
        root = (await node(op="dump", id="x"))["root"]
        assert root == {k: js for k, (_, js) in PY_TO_JS.items()}
        for key, (js, _) in JS_TO_PY.items():
            await node(op="set", id="x", key="js_" + key, value=js)
        want = {"js_" + k: py for k, (_, py) in JS_TO_PY.items()}
        await until(lambda: all(k in shard.snapshot() for k in want))
        snap = shard.snapshot()
        assert _typed({k: snap[k] for k in want}) == _typed(want)
        assert _typed({k: snap[k] for k in PY_TO_JS}) == _typed(
            {k: py for k, (py, _) in PY_TO_JS.items()}
        )


async def test_an_update_splitting_an_emoji_is_refused(node: Node, tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a:
        shard = await a.shard("emoji")
        text = shard.doc.get("text", type=pycrdt.Text)
        text += "x😀y😀z"
        await node(op="open", id="x", url=yurl(a), room="emoji")
        await node(op="open", id="y", url=yurl(a), room="emoji")
        # whole characters are fine (UTF-16 indices: the emoji are 1-2 and 4-5)
        assert (await node(op="text", id="y", delete=[4, 2]))["text"] == "x😀yz"
        await until(lambda: str(text) == "x😀yz")
        for _ in range(200):  # client x must have y's edit before it edits (a loaded machine)
            if (await node(op="dump", id="x"))["text"] == "x😀yz":
                break
            await asyncio.sleep(0.05)
        # half of one: Yjs would keep "x\ufffdyz", Yrs "x😀z"; the update is refused
        assert (await node(op="text", id="x", delete=[2, 1]))["text"] == "x\ufffdyz"
        await until(lambda: a.counters.get("yjs.refused.INVALID_UPDATE", 0) >= 1)
        await asyncio.sleep(0.5)
        assert str(text) == "x😀yz"
        assert (await node(op="stats", id="x"))["closes"] >= 1
        assert (await node(op="stats", id="y"))["closes"] == 0
        assert (await node(op="dump", id="y"))["text"] == "x😀yz"  # the other client unharmed


@pytest.mark.parametrize(
    "edit",
    [
        {"insert": [2, "Z"]},  # between the halves: Yjs "x\ufffdZ\ufffdy", Yrs after the emoji
        {"format": [2, 3, {"bold": True}]},  # a Format item starting inside the emoji
        {"delete": [1, 1]},  # the high half only
    ],
    ids=["insert", "format", "delete-high"],
)
async def test_every_edit_inside_a_surrogate_pair_is_refused(
    node: Node, tmp_path: Path, edit: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Inserting between the halves of an emoji, formatting from its middle, or deleting its
    first half: refused like the delete above; the shard and the other client keep the text."""
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a:
        shard = await a.shard("emoji")
        text = shard.doc.get("text", type=pycrdt.Text)
        text += "x😀y"
        await node(op="open", id="v", url=yurl(a), room="emoji")
        await node(op="open", id="w", url=yurl(a), room="emoji")
        before = shard.doc.get_update()
        await node(op="text", id="v", **edit)
        await until(lambda: a.counters.get("yjs.refused.INVALID_UPDATE", 0) >= 1)
        await asyncio.sleep(0.5)
        assert str(text) == "x😀y" and shard.doc.get_update() == before
        assert "update splits a UTF-16 surrogate pair" in caplog.text  # for that reason
        assert (await node(op="stats", id="v"))["closes"] >= 1
        assert (await node(op="stats", id="w"))["closes"] == 0
        assert (await node(op="dump", id="w"))["text"] == "x😀y"


async def test_rich_content_written_by_js_round_trips_through_the_mesh(
    node: Node, tmp_path: Path
) -> None:
    async with (
        Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", gossip=CFG) as a,
        Agent(
            "b", tmp_path / "b", listen="ws://127.0.0.1:0", peers=[a.address or ""], gossip=CFG
        ) as b,
    ):
        await node(op="open", id="x", url=yurl(a), room="rich")
        await node(op="rich", id="x")
        written = await node(op="richdump", id="x")
        assert {"insert": "bold", "attributes": {"bold": True}} in written["delta"]
        shard_b = await b.shard("rich")
        await until(lambda: "subdoc" in shard_b.doc.get("root", type=pycrdt.Map))
        await shard_b.flush()
        async with Agent(
            "c", tmp_path / "c", listen="ws://127.0.0.1:0", peers=[b.address or ""], gossip=CFG
        ) as c:
            shard_c = await c.shard("rich")
            await until(lambda: "subdoc" in shard_c.doc.get("root", type=pycrdt.Map))
            await node(op="open", id="y", url=yurl(c), room="rich")
            assert await node(op="richdump", id="y") == written
        snap = shard_b.snapshot()
        assert snap["rich"] == "plain bold"
        assert snap["xml"] == '<p class="lead"><bold>hello</bold></p>'
        assert snap["subdoc"] == {"$subdoc": "sub-1"}


def test_the_readme_example_runs(node_modules: Path, tmp_path: Path) -> None:
    """examples/yjs_board.py with examples/yjs_board.mjs (npm packages next to the client, as
    examples/README.md says): both sides read what the other wrote, the int as a JS number."""
    import sys

    examples = Path(__file__).resolve().parent.parent / "examples"
    client = tmp_path / "client" / "yjs_board.mjs"
    client.parent.mkdir()
    shutil.copy(examples / "yjs_board.mjs", client)
    (client.parent / "node_modules").symlink_to(node_modules, target_is_directory=True)
    out = subprocess.run(
        [
            sys.executable,
            str(examples / "yjs_board.py"),
            "--data",
            str(tmp_path),
            "--client",
            str(client),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "python read: from_js='hello from JavaScript' "
        "tasks={'t1': 'write the docs', 't2': 'review the docs'}",
        'js read: tasks={"t1":"write the docs"} count=3 (number)',
        "js saw the ack",
    ], out.stdout


def test_a_backlog_of_live_updates_goes_merged_in_order() -> None:
    """What a client's writer sends for a backlog (``_yjsdoor_client._coalesced``): runs of
    live updates merged into one update message (each run at most MERGE_BYTES of updates),
    every other frame in its place; a doc applying what is sent ends where the updates lead."""
    from crdtsync.transports import _yjsdoor_client as client_side

    src: pycrdt.Doc[Any] = pycrdt.Doc()
    live: list[bytes] = []
    src.observe(lambda event: live.append(event.update))
    mp = src.get("map", type=pycrdt.Map)
    for i in range(6):
        mp[f"k{i}"] = "x" * (i * 100)
    big = src.get("text", type=pycrdt.Text)
    big += "y" * (client_side.MERGE_BYTES + 1)
    mp["last"] = 1
    frames = [(sync.encode_sync(sync.UPDATE, u), u) for u in live]
    aware = (sync.encode_awareness([sync.AwarenessEntry(5, 1, "{}")]), None)
    batch = [*frames[:3], aware, *frames[3:6], frames[6], frames[7]]
    out = client_side._coalesced(batch)
    assert len(out) == 5  # 3 merged, awareness, 3 merged, the big one alone, the last
    assert out[1] == aware[0] and out[3] == frames[6][0] and out[4] == frames[7][0]
    dst: pycrdt.Doc[Any] = pycrdt.Doc()
    for frame in out:
        msg = sync.decode(frame)
        if msg.kind == sync.SYNC:
            assert msg.sub == sync.UPDATE
            dst.apply_update(msg.payload)
    assert dst.get_update() == src.get_update()
    assert client_side._coalesced(frames[:1]) == [frames[0][0]]  # one update: sent as it came
