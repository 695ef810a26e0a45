"""The JSON form of shard values (exact, reversible) and RFC 7386 merge-patch on real shards."""

from __future__ import annotations

import asyncio
import math

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Agent, CrdtSyncError, UsageError
from crdtsync.jsonform import (
    JsonFormError,
    dumps,
    from_json,
    loads,
    merge_patch,
    shard_json,
    to_json,
)
from crdtsync.values import INT_MAX, INT_MIN

# -- the form itself ---------------------------------------------------------------------------

EXPECTED_FORMS = [
    (0, "0"),
    (-7, "-7"),
    (2**53 - 1, "9007199254740991"),
    (-(2**53) + 1, "-9007199254740991"),
    (2**53, '{"$int":"9007199254740992"}'),
    (INT_MIN, '{"$int":"-9223372036854775808"}'),
    (INT_MAX, '{"$int":"9223372036854775807"}'),
    (3.0, "3.0"),
    (0.1, "0.1"),
    (-0.0, "-0.0"),
    (1e100, "1e+100"),
    (5e-324, "5e-324"),
    (math.inf, '{"$float":"Infinity"}'),
    (-math.inf, '{"$float":"-Infinity"}'),
    (True, "true"),
    (None, "null"),
    ("héllo ✓", '"héllo ✓"'),
    (b"\x00\x01\xff", '{"$bytes":"AAH/"}'),
    (b"", '{"$bytes":""}'),
    ({"$ref": 1, "$$x": 2, "plain": [1, 2.5]}, '{"$$ref":1,"$$$x":2,"plain":[1,2.5]}'),
    ({"$int": 3}, '{"$$int":3}'),  # a map whose key looks like a tag stays a map
    # plain (already decoded) values inside containers are never decoded a second time
    (
        {"b": b"\x00\x01", "i": b"\x01" + bytes(8)},
        '{"b":{"$bytes":"AAE="},"i":{"$bytes":"AQAAAAAAAAAA"}}',
    ),
    ([b"\x00x"], '[{"$bytes":"AHg="}]'),
]


@pytest.mark.parametrize(("value", "text"), EXPECTED_FORMS, ids=[t for _, t in EXPECTED_FORMS])
def test_documented_form_and_back(value: object, text: str) -> None:
    assert dumps(to_json(value)) == text
    back = from_json(loads(text))
    assert back == value and type(back) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, back) == math.copysign(1, value)


def test_nan_round_trips() -> None:
    assert dumps(to_json(math.nan)) == '{"$float":"NaN"}'
    assert math.isnan(from_json(loads('{"$float":"NaN"}')))


def test_input_only_forms() -> None:
    assert from_json({"$int": 5}) == 5 and type(from_json({"$int": 5})) is int
    assert from_json({"$float": 3}) == 3.0 and type(from_json({"$float": 3})) is float
    assert from_json({"$float": "2.5"}) == 2.5
    assert from_json(loads("12345678901234567")) == 12345678901234567  # exact, not a double
    text = from_json({"$text": "hi"})
    assert isinstance(text, pycrdt.Text)


leaves = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=20)
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400)  # cheap (about 1 ms each), and containers of bytes need many
@given(values | st.dictionaries(st.text(max_size=3), st.binary(max_size=10), max_size=3))
def test_every_value_round_trips_through_text(value: object) -> None:
    back = from_json(loads(dumps(to_json(value))))
    assert _same(back, value)


def _same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)  # type: ignore[attr-defined]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))  # type: ignore[arg-type]
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)  # type: ignore[arg-type]
    return a == b


BAD_TEXT = [
    ("NaN literal", '{"a": NaN}', "NaN is not JSON"),
    ("Infinity literal", "[Infinity]", "Infinity is not JSON"),
    ("overflowing number", "[1e400]", "overflows a double"),
    ("duplicate key", '{"a": 1, "a": 2}', "duplicate key 'a'"),
    ("syntax", '{"a": }', "invalid JSON"),
    ("trailing garbage", "{} x", "invalid JSON"),
    ("not utf-8", b'{"a": "\xff"}', "not UTF-8"),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in BAD_TEXT], ids=[i for i, _, _ in BAD_TEXT]
)
def test_strict_parse_refuses(text: str | bytes, message: str) -> None:
    with pytest.raises(JsonFormError, match=message):
        loads(text)


BAD_FORMS = [
    ("unknown $ key", {"a": {"$foo": 1}}, "/a/$foo", "reserved"),
    ("$ key among others", {"$text": "x", "b": 1}, "/$text", "reserved"),
    ("$int out of range", {"n": {"$int": str(2**63)}}, "/n/$int", "64-bit"),
    ("plain int out of range", {"n": [2**64]}, "/n/0", "64-bit"),
    ("$int not decimal", {"n": {"$int": "1.5"}}, "/n/$int", "decimal"),
    ("$int bool", {"n": {"$int": True}}, "/n/$int", "integer"),
    ("$float junk", {"f": {"$float": "nope"}}, "/f/$float", "number"),
    ("$float inf spelling", {"f": {"$float": "inf"}}, "/f/$float", "Infinity"),
    ("$bytes bad base64", {"b": {"$bytes": "***"}}, "/b/$bytes", "base64"),
    ("$bytes unpadded", {"b": {"$bytes": "AAH"}}, "/b/$bytes", "base64"),
    ("$text not str", {"t": {"$text": 1}}, "/t/$text", "string"),
    ("$xml write", {"x": {"$xml": "<a/>"}}, "/x/$xml", "read-only"),
    ("slash in key pointer", {"a/b": {"$int": "x"}}, "/a~1b/$int", "decimal"),
]


@pytest.mark.parametrize(
    ("obj", "where", "message"), [b[1:] for b in BAD_FORMS], ids=[b[0] for b in BAD_FORMS]
)
def test_bad_forms_name_the_spot(obj: object, where: str, message: str) -> None:
    with pytest.raises(JsonFormError, match=message) as info:
        from_json(obj)
    assert info.value.pointer == where
    assert isinstance(info.value, UsageError) and isinstance(info.value, CrdtSyncError)


def test_depth_is_bounded() -> None:
    deep = loads("[" * 200 + "]" * 200)
    with pytest.raises(JsonFormError, match="deeper"):
        from_json(deep)
    with pytest.raises(JsonFormError):
        loads("[" * 100_000 + "]" * 100_000)


# -- merge patch on a real shard ----------------------------------------------------------------

# RFC 7386 appendix A, the cases whose target and patch are objects (a shard's top is a map).
RFC_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


async def test_rfc7386_cases(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        for i, (target, patch, result) in enumerate(RFC_CASES):
            shard = await agent.shard(f"rfc-{i}")
            for key, value in target.items():
                shard[key] = value
            merge_patch(shard, patch)
            assert shard.snapshot() == result, (target, patch)


async def test_patch_is_one_transaction_and_merges_per_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("board")
        shard["tasks"] = {"t1": {"title": "crawl", "done": False}, "t2": {"title": "x"}}
        seen: list[object] = []

        async def follow() -> None:
            async for change in shard.changes():
                seen.append(change)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        ops = merge_patch(
            shard,
            loads(
                '{"tasks": {"t1": {"done": true, "title": null, "n": {"$int": "9007199254740993"}},'
                ' "t3": {"title": "new", "gone": null}}, "notes": {"$text": "hello"},'
                ' "blob": {"$bytes": "AAE="}, "$$meta": {"v": 1}}'
            ),
        )
        await asyncio.sleep(0.01)
        task.cancel()
        assert len(ops) == 7
        assert len(seen) == 1, "a merge patch is one transaction, so one change record"
        assert shard.snapshot() == {
            "tasks": {
                "t1": {"done": True, "n": 2**53 + 1},
                "t2": {"title": "x"},
                "t3": {"title": "new"},
            },
            "notes": "hello",
            "blob": b"\x00\x01",
            "$meta": {"v": 1},
        }
        assert isinstance(shard["notes"], pycrdt.Text)
        assert shard_json(shard)["notes"] == {"$text": "hello"}
        assert shard_json(shard)["$$meta"] == {"v": 1}
        # Text written through JSON is a live collaborative text.
        shard["notes"].insert(5, " world")
        assert to_json(shard["notes"]) == {"$text": "hello world"}


BAD_PATCHES = [
    ("array at top", ["c"]),
    ("null at top", None),
    ("string at top", "bar"),
    ("tag at top", {"$text": "x"}),
    ("bad value deep inside", {"ok": 1, "tasks": {"t1": {"done": True, "n": {"$int": "no"}}}}),
    ("reserved key late", {"a": 1, "b": {"$nope": 2}}),
]


@pytest.mark.parametrize("patch", [p for _, p in BAD_PATCHES], ids=[i for i, _ in BAD_PATCHES])
async def test_bad_patch_writes_nothing(tmp_path, patch: object) -> None:  # type: ignore[no-untyped-def]
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("board")
        shard["tasks"] = {"t1": {"done": False}}
        await shard.flush()
        before, updates_before = shard.snapshot(), shard.stats().total_updates
        with pytest.raises(JsonFormError):
            merge_patch(shard, patch)
        await shard.flush()
        assert shard.snapshot() == before
        assert shard.stats().total_updates == updates_before


async def test_noop_patch_writes_nothing_and_patch_survives_reopen(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("board")
        await shard.flush()
        n = shard.stats().total_updates
        assert merge_patch(shard, {"absent": None}) == []
        await shard.flush()
        assert shard.stats().total_updates == n
        merge_patch(shard, {"x": {"y": [1, None, {"$float": "NaN"}]}})
        await shard.flush()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("board")
        y = shard.snapshot()["x"]["y"]
        assert y[:2] == [1, None] and math.isnan(y[2])
