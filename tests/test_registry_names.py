"""The shard registry's list of names while thousands of shards arrive (issue #16: joining a
mesh must cost in proportion to the shards, not their square)."""

from __future__ import annotations

from pathlib import Path

import pycrdt
import pytest

from crdtsync._registry import ShardRegistry
from crdtsync.store import Store


def _update(key: str) -> bytes:
    doc: pycrdt.Doc = pycrdt.Doc()
    doc.get("root", type=pycrdt.Map)[key] = 1
    return doc.get_update()


def test_new_shards_join_the_cached_names_without_listing_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "d")
    reg = ShardRegistry("me", store, notify=lambda: None, on_delta=None, host=None)
    for name in ("m", "c"):
        reg.apply(name, _update(name), "peer")
    store.commit()
    assert list(reg.shard_names()) == ["c", "m"]
    assert reg.take_changed() is None  # the first call: everything
    listed = []
    real = store.shard_names
    monkeypatch.setattr(store, "shard_names", lambda: listed.append(1) or real())
    for name in ("z", "a", "k", "b"):  # arrive in any order
        assert not reg.holds(name)
        reg.apply(name, _update(name), "peer")
        assert reg.holds(name)
    assert list(reg.shard_names()) == ["a", "b", "c", "k", "m", "z"]
    assert reg.names() == ["a", "b", "c", "k", "m", "z"]
    assert listed == []  # no LMDB scan per new shard
    # The core's cached root learns the new shards as changed ones, not "everything".
    changed = reg.take_changed()
    assert changed is not None and {"a", "b", "k", "z"} <= changed
    # A dropped shard still invalidates everything (a root entry must go).
    reg.drop("k")
    assert not reg.holds("k") and "k" not in list(reg.shard_names())
    assert reg.take_changed() is None
    reg.close()
    assert not reg.holds("a")
    store.close()


def test_a_received_shard_is_marked_without_a_write_of_ours(tmp_path: Path) -> None:
    # A new shard whose first update comes from a current agent carries the value-format
    # marker already: applying it writes (and gossips back) nothing of ours. Marking first
    # made a joining agent push one redundant update per shard. The state is the same as
    # marking first would give, and an unmarked update (a plain Yjs client's) is marked.
    from crdtsync import values

    src = ShardRegistry("a", Store(tmp_path / "a"), notify=lambda: None, on_delta=None, host=None)
    made = src.open("y")
    made["k"] = 1
    ours: list[str] = []
    reg = ShardRegistry(
        "b",
        Store(tmp_path / "b"),
        notify=lambda: None,
        on_delta=lambda shard, delta, origin: ours.append(shard.name) if origin is None else None,
        host=None,
    )
    reg.apply("y", made.doc.get_update(), "a")
    assert ours == []
    assert reg.open("y").digest() == made.digest()
    plain: pycrdt.Doc = pycrdt.Doc()
    plain.get("root", type=pycrdt.Map)["z"] = 2
    reg.apply("z", plain.get_update(), "a")
    assert ours == ["z"] and values.is_marked(reg.open("z").doc)
    first = reg.open("w")  # opened locally: marked at once, as before
    assert values.is_marked(first.doc)
    again = pycrdt.Doc()
    again.apply_update(first.doc.get_update())
    assert again.get_state() == reg.open("w").doc.get_state()
