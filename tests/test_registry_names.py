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
