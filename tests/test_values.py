"""Type fidelity: every supported value round-trips exactly, locally and through a replica."""

from __future__ import annotations

import math

import pycrdt
import pytest

from crdtsync import Agent, IntOutOfRange, UnsupportedValue
from crdtsync.values import INT_MAX, INT_MIN

SUPPORTED = [
    ("zero", 0),
    ("small int", 3),
    ("negative int", -7),
    ("int min", INT_MIN),
    ("int max", INT_MAX),
    ("2**60", 2**60),
    ("2**53+1", 2**53 + 1),
    ("float", 3.0),
    ("float 0.1", 0.1),
    ("float tiny", 5e-324),
    ("float inf", math.inf),
    ("float -0.0", -0.0),
    ("true", True),
    ("false", False),
    ("none", None),
    ("str", "héllo ✓ 🎉"),
    ("empty str", ""),
    ("bytes", b"\x00\x01\xff"),
    ("empty bytes", b""),
    ("bytes that look like an int tag", b"\x01" + b"\x00" * 8),
    ("nested", {"a": [1, 2.5, {"b": None, "c": [b"x", True]}], "d": {}}),
    ("empty list", []),
]

UNSUPPORTED = [
    ("int 2**63", 2**63, IntOutOfRange),
    ("int 2**64", 2**64, IntOutOfRange),
    ("int -2**63-1", -(2**63) - 1, IntOutOfRange),
    ("set", {1, 2}, UnsupportedValue),
    ("tuple", (1, 2), UnsupportedValue),
    ("object", object(), UnsupportedValue),
    ("int key", {1: "a"}, UnsupportedValue),
    ("deep bad", {"a": [1, {"b": {3}}]}, UnsupportedValue),
    ("deep big int", {"a": [1, {"b": 2**70}]}, IntOutOfRange),
    # No UTF-8 form: pycrdt panicked (a BaseException) on these instead of refusing them.
    ("lone surrogate", "\ud800x", UnsupportedValue),
    ("half an emoji", "ok \ud83d", UnsupportedValue),
    ("lone surrogate dict key", {"\udc00": 1}, UnsupportedValue),
    ("deep lone surrogate", {"a": [1, {"b": "\udfff"}]}, UnsupportedValue),
]


def _same(a: object, b: object) -> bool:
    """Equal with types, recursively (so 3 != 3.0 and True != 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)  # type: ignore[attr-defined]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))  # type: ignore[arg-type]
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)  # type: ignore[arg-type]
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)  # type: ignore[arg-type]
    return a == b


@pytest.mark.parametrize("label,value", SUPPORTED, ids=[s[0] for s in SUPPORTED])
async def test_value_round_trips_locally_remotely_and_after_reopen(tmp_path, label, value):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("types")
        shard["v"] = value
        assert _same(shard.snapshot()["v"], value)
        await shard.flush()
        update = shard.doc.get_update()
    # a fresh replica that only receives the update reads the same value
    async with Agent("b", data_dir=tmp_path / "b") as other:
        replica = await other.shard("types")
        assert replica.apply_remote(update, "a") is not None
        assert _same(replica.snapshot()["v"], value)
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        assert _same((await agent.shard("types")).snapshot()["v"], value)


@pytest.mark.parametrize("label,value,error", UNSUPPORTED, ids=[s[0] for s in UNSUPPORTED])
async def test_unsupported_value_raises_and_writes_nothing(tmp_path, label, value, error):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("types")
        shard["keep"] = 1
        before = shard.doc.get_update()
        before_stats = await _flushed_stats(shard)
        with pytest.raises(error):
            shard["v"] = value
        with pytest.raises(error):
            shard.update({"ok": 1, "bad": value})
        with pytest.raises(error):
            shard["list"] = [1, value]
        assert shard.doc.get_update() == before
        assert shard.snapshot() == {"keep": 1}
        assert await _flushed_stats(shard) == before_stats


async def _flushed_stats(shard):
    await shard.flush()
    s = shard.stats()
    return s.total_updates


def test_unsupported_errors_are_crdtsync_type_and_value_errors():
    assert issubclass(UnsupportedValue, TypeError)
    assert issubclass(IntOutOfRange, ValueError)


async def test_pycrdt_types_are_kept_live(tmp_path):
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("notes")
        shard["notes"] = pycrdt.Text("hi")
        text = shard["notes"]
        assert isinstance(text, pycrdt.Text)
        text += " there"
        assert shard.snapshot() == {"notes": "hi there"}
        await shard.flush()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("notes")
        assert isinstance(shard["notes"], pycrdt.Text)
        assert str(shard["notes"]) == "hi there"


async def test_a_map_key_without_utf8_form_is_refused_and_nothing_written(tmp_path):
    """A lone surrogate in a key, top level (the shard's fast path for leaves) or in a nested
    map view, is refused with UnsupportedValue before pycrdt sees it; a whole emoji is fine."""
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("types")
        shard["inner"] = {}
        before = shard.doc.get_update()
        for target in (shard, shard["inner"]):
            with pytest.raises(UnsupportedValue):
                target["\ud800"] = 1
            with pytest.raises(UnsupportedValue):
                target["k\udbff"] = {"x": 1}
        assert shard.doc.get_update() == before
        shard["\U0001f600"] = "\U0001f600"
        assert shard["\U0001f600"] == "\U0001f600"


async def test_a_lone_surrogate_in_a_text_edit_is_refused_and_nothing_written(tmp_path):
    """``shard.text(key)`` is pycrdt's own ``Text`` (live, for streaming), so its edits are not
    ours to check: a lone surrogate (half an emoji cut by a UTF-16 index) is refused by pycrdt
    with ``UnicodeEncodeError`` (a ``ValueError``; for values and keys we raise
    ``UnsupportedValue``, a ``TypeError``, instead). This pins what the README promises: the error is raised, nothing reaches the document or the disk, and
    the shard keeps working and reopens with only the good edits."""
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("notes")
        answer = shard.text("answer")
        answer += "ok "
        before = shard.doc.get_update()
        for bad in ("\ud83d", "x\ude00y"):
            with pytest.raises(ValueError) as caught:
                answer += bad
            assert isinstance(caught.value, UnicodeEncodeError)
            with pytest.raises(ValueError):
                answer.insert(1, bad)
        assert shard.doc.get_update() == before
        answer += "\U0001f600"
        await shard.flush()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("notes")
        assert str(shard.text("answer")) == "ok \U0001f600"
