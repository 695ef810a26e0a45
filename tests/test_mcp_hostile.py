"""Hostile MCP tool calls, through the official SDK client: a clear tool error, nothing written.

The house rule: bad input never crashes an agent or corrupts a shard. For an MCP tool that
means each bad call returns a tool error whose text says what was wrong (never the SDK's bare
``Error executing tool X``, which is what a crash inside a tool becomes), nothing of the call
is written, and the agent then serves the next call. The listed cases are ones that crashed
or wrote half a patch before; the fuzz draws arguments over every tool's input schema.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError

from crdtsync import Agent
from crdtsync.mcp import CrdtMcp

pytestmark = pytest.mark.timeout(120)

LONE = "\ud800"  # half of a UTF-16 pair: a str Python holds and UTF-8 (and Yrs) cannot
BARE = re.compile(r"Error executing tool \w+")


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if getattr(c, "text", None))


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Agent, CrdtMcp, Client]]:
    """One agent holding 'board' and 'work' (a number, a list, a Text, a counter, a claim)."""
    async with Agent("solo", data_dir=tmp_path / "solo") as agent:
        server = CrdtMcp(agent)
        async with server.watching(), Client(server.server) as client:
            for tool, args in (
                ("write", {"shard": "board", "patch": {"n": 1, "log": [{"x": 1}], "m": {}}}),
                ("insert_text", {"shard": "board", "path": "/notes", "text": "ab"}),
                ("increment_counter", {"shard": "board", "key": "cnt"}),
                ("claim_task", {"shard": "work", "task": "t1", "members": 1}),
            ):
                result = await client.call_tool(tool, args)
                assert not result.is_error, _text(result)
            yield agent, server, client


async def _state(agent: Agent) -> dict[str, Any]:
    return {name: (await agent.shard(name)).snapshot() for name in agent.shard_names()}


def _clear(message: str) -> None:
    """A tool error a caller can act on: more than the SDK's bare crash text, no traceback."""
    assert not BARE.fullmatch(message.strip()), f"bare error: {message!r}"
    assert "Traceback" not in message


# Each of these crashed (a bare "Error executing tool X"), and the marked ones wrote part of
# the call before crashing, at integ 472fb3d.
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("read", {"shard": "board", "path": "/" + LONE}, "lone surrogate"),
    ("write", {"shard": "board", "patch": {"k": LONE}}, "at /k: the string"),
    ("write", {"shard": "board", "patch": {"ok": 1, "k": [LONE]}}, "at /k/0"),  # wrote ok
    ("write", {"shard": "fresh", "patch": {"k": LONE}}, "lone surrogate"),  # created 'fresh'
    ("write", {"shard": "board", "patch": {"ok": 1, "k": {"$text": LONE}}}, "/k/$text"),  # wrote
    ("write", {"shard": "board", "path": "/" + LONE, "patch": {"a": 1}}, "lone surrogate"),
    ("write", {"shard": "board", "patch": {"k": {"$int": "1" * 5000}}}, "64-bit range"),
    ("append", {"shard": "board", "path": "/log", "value": LONE}, "lone surrogate"),
    ("append", {"shard": "board", "path": "/" + LONE, "value": 1}, "lone surrogate"),
    ("append", {"shard": "fresh", "path": "/" + LONE, "value": 1}, "lone surrogate"),
    ("insert_text", {"shard": "board", "path": "/" + LONE, "text": "x"}, "lone surrogate"),
    ("insert_text", {"shard": "fresh", "path": "/" + LONE, "text": "x"}, "lone surrogate"),
    ("wait_until_replicated", {"shard": "board", "peers": 2**80}, "needs peers"),
    ("wait_until_replicated", {"shard": "board", "timeout": 0.01}, "needs peers"),
    ("increment_counter", {"shard": "board", "key": LONE}, "key: a str with a lone surrogate"),
    ("increment_counter", {"shard": "fresh", "key": LONE}, "lone surrogate"),
    ("claim_task", {"shard": "work", "task": LONE, "members": 1}, "task: a str"),
    ("complete_task", {"shard": "work", "task": LONE}, "task: a str"),
    ("complete_task", {"shard": "work", "task": "t1", "result": LONE}, "value refused"),
    ("release_task", {"shard": "work", "task": LONE}, "task: a str"),
    # an argument no tool takes was dropped: this patch landed on the shard's top level
    ("write", {"shard": "board", "patch": {"a": 1}, "pth": "/m"}, "pth\n  Extra inputs"),
    ("list_shards", {"verbose": True}, "verbose\n  Extra inputs are not permitted"),
    # not a crash, but the message named a Python class: 'a _DerivedInt value'
    ("read", {"shard": "board", "path": "/n/x"}, "/n is the number 1"),
    ("read", {"shard": "board", "path": "/cnt/x"}, "/cnt is a counter"),
]


async def test_hostile_calls_are_clear_tool_errors_that_write_nothing(tmp_path: Path) -> None:
    async with served(tmp_path) as (agent, _server, client):
        before = await _state(agent)
        for tool, args, expected in CASES:
            result = await client.call_tool(tool, args)
            message = _text(result)
            assert result.is_error, (tool, args, message)
            _clear(message)
            assert expected in message, (tool, args, message)
            assert await _state(agent) == before, (tool, args)  # nothing written, nothing made
        result = await client.call_tool("read", {"shard": "board", "path": "/n"})
        assert not result.is_error and result.structured_content["value"] == 1


async def test_lone_surrogate_keys_the_sdk_client_cannot_send(tmp_path: Path) -> None:
    """A raw JSON-RPC client can send ``{"\\ud800": 1}`` (the SDK's own client fails to encode
    it), so these go to the server's ``call_tool``: the tool error must itself be sendable."""
    async with served(tmp_path) as (agent, server, _client):
        before = await _state(agent)
        for tool, args in (
            ("write", {"shard": "board", "patch": {"ok": 1, LONE: 1}}),
            ("write", {"shard": "board", "patch": {"m": {LONE: 1}}}),
            ("append", {"shard": "board", "path": "/log", "value": {LONE: 1}}),
            ("complete_task", {"shard": "work", "task": "t1", "result": {"a": {LONE: 2}}}),
        ):
            with pytest.raises(ToolError) as caught:
                await server.server.call_tool(tool, args)
            message = str(caught.value)
            _clear(message)
            assert "lone surrogate" in message, message
            message.encode("utf-8")  # the pointer in it is escaped: it can go over the wire
            assert await _state(agent) == before, (tool, args)


# -- fuzz over the tools' input schemas --------------------------------------------------------

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from([LONE, "a" + LONE, "$x", "$$x", "", "x" * 3000, "/", "~1", "0", "99"]),
)
_json = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=4), st.sampled_from(["$int", LONE])), inner),
        st.builds(lambda v: {"$int": v}, inner),
        st.builds(lambda v: {"$text": v}, inner),
        st.builds(lambda v: {"$bytes": v}, inner),
    ),
    max_leaves=8,
)


def _mostly(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """A good value three times in four, else a bad one (so that calls also get through)."""
    return st.one_of(
        st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), st.sampled_from(bad)
    )


_names = _mostly(["board", "work", "fresh"], ["bad name!", "", LONE, "x" * 200])
_paths = _mostly(
    ["", "/n", "/log", "/m", "/m/k", "/new", "/notes", "/log/0"],
    ["/", "/n/x", "/log/0/x", "/log/9", "/notes/0", "/cnt", "/cnt/x", "/new/a", "/" + LONE]
    + ["log", "/log/01"],
)
_ints = _mostly([0, 1, 2], [-3, 5, 2**63, 2**80, -(2**63)])
_by_field = {
    "shard": _names,
    "path": _paths,
    "key": _mostly(["cnt", "new"], ["n", "log", "notes", "", "/cnt", LONE]),
    "task": _mostly(["t1", "t2", "a/b"], ["", LONE]),
    "index": _ints,
    "by": _ints,
    "peers": _ints,
    "members": _ints,
    "timeout": _mostly([0.05, 1.0], [0.0, -1.0, 1000.0]),
    "text": _mostly(["x", "", "\U0001f600"], [LONE]),
}


def _draw_calls(tools: dict[str, dict[str, Any]], count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` tool calls drawn (deterministically) over the tools' argument schemas: each
    field left out, given a plausible value, or any JSON form value; sometimes an extra field."""
    calls: list[tuple[str, dict[str, Any]]] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        tool = data.draw(st.sampled_from(sorted(tools)))
        args: dict[str, Any] = {}
        for field in tools[tool]["properties"]:
            how = data.draw(st.sampled_from(["plausible"] * 10 + ["any", "missing"]))
            if how == "missing":
                continue
            plausible = _by_field.get(field, _json)
            args[field] = data.draw(plausible if how == "plausible" else _json)
        if data.draw(st.integers(0, 7)) == 0:  # refused: no tool takes it
            args["unexpected"] = data.draw(_json)
        calls.append((tool, args))

    collect()
    return calls


async def test_fuzzed_tool_calls_answer_or_refuse_clearly(tmp_path: Path) -> None:
    async with served(tmp_path) as (agent, server, client):
        listed = (await client.list_tools()).tools
        schemas = {t.name: t.input_schema for t in listed}
        answered = refused = 0
        for tool, args in _draw_calls(schemas, 150):
            before = await _state(agent)
            try:
                await server.server.call_tool(tool, args)  # any argument, even unsendable ones
                answered += 1
            except ToolError as exc:
                refused += 1
                _clear(str(exc))
                str(exc).encode("utf-8")  # the message can be sent
                assert await _state(agent) == before, (tool, args, str(exc))
        # Both paths exercised. How many calls get through depends on the machine (a call
        # with a short timeout may time out under load): 15 of 150 on a quiet machine, 7 in
        # two CI runs side by side; so only "some" is asserted.
        assert answered >= 1 and refused >= 50, (answered, refused)
        result = await client.call_tool("read", {"shard": "board", "path": "/n"})
        assert not result.is_error, _text(result)  # the agent still serves


def test_another_sdks_tool_table_is_served_as_is_and_said(caplog: pytest.LogCaptureFixture) -> None:
    """The refusal of unknown arguments reaches into the SDK's private tool table (mcp 2.x).
    An SDK without it must not stop the server from starting: it serves as the SDK does
    (unknown arguments ignored) and logs a WARNING once (README, the logging paragraph)."""
    from types import SimpleNamespace

    with caplog.at_level("WARNING", logger="crdtsync.mcp.server"):
        CrdtMcp._refuse_unknown_arguments(SimpleNamespace(server=object()))  # type: ignore[arg-type]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "ignored (not refused)" in caplog.records[0].getMessage()
