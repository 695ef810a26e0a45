"""The coalescing window's merge of a shard's local writes (``_RegistryReplicas.merge``), by
its size (issue 17, h-burst9).

A window of fewer than ``SQUASH_AT`` writes is merged by ``pycrdt.merge_updates``: the squash
reads the document's whole state (its cost grows with the document, where a paced writer's
windows hold 2-3 writes). A larger one is still squashed (a run of text characters as one
struct). Either way the merged update holds exactly the writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pycrdt
import pytest

from crdtsync import _registry_replicas as RR
from crdtsync import updates
from crdtsync._registry import ShardRegistry
from crdtsync.store import Store


def _registry(tmp_path: Path, made: list[bytes]) -> ShardRegistry:
    return ShardRegistry(
        "w",
        Store(tmp_path / "w"),
        notify=lambda: None,
        on_delta=lambda shard, delta, origin: made.append(delta) if origin is None else None,
        host=None,
    )


def _same_content(base: bytes, merged: bytes, deltas: list[bytes]) -> None:
    """``merged`` and ``deltas``, each applied after ``base``, make the same document."""
    one: pycrdt.Doc[Any] = pycrdt.Doc()
    each: pycrdt.Doc[Any] = pycrdt.Doc()
    one.apply_update(base)
    each.apply_update(base)
    one.apply_update(merged)
    for delta in deltas:
        each.apply_update(delta)
    assert one.get_state() == each.get_state() != pycrdt.Doc().get_state()
    assert one.get("root", type=pycrdt.Map).to_py() == each.get("root", type=pycrdt.Map).to_py()


def test_a_small_window_is_merged_without_reading_the_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[bytes] = []
    reg = _registry(tmp_path, made)
    try:
        shard = reg.open("s")
        for i in range(200):  # a document with content, as a paced writer's is
            shard[f"old{i}"] = i
        base = shard.doc.get_update()
        made.clear()
        shard["old3"] = "over"  # an overwrite: a delta that deletes
        for i in range(RR.SQUASH_AT - 2):
            shard[f"k{i}"] = i
        assert len(made) == RR.SQUASH_AT - 1

        def no_squash(*args: Any, **kwargs: Any) -> bytes | None:
            raise AssertionError("a small window was squashed")

        monkeypatch.setattr(RR, "squash_own", no_squash)
        merged = reg.merge("s", made)
        assert merged == updates.merge_updates(made)
        _same_content(base, merged, made)
    finally:
        reg.close()


def test_a_large_window_is_still_squashed(tmp_path: Path) -> None:
    made: list[bytes] = []
    reg = _registry(tmp_path, made)
    try:
        shard = reg.open("s")
        text = shard.doc.get("t", type=pycrdt.Text)
        made.clear()
        for _ in range(RR.SQUASH_AT):
            text += "a"  # one character per write: one run of items
        assert len(made) == RR.SQUASH_AT
        merged = reg.merge("s", made)
        assert merged is not None
        assert len(merged) < len(updates.merge_updates(made))  # one struct, not 16
        one: pycrdt.Doc[Any] = pycrdt.Doc()
        one.apply_update(merged)
        assert str(one.get("t", type=pycrdt.Text)) == "a" * RR.SQUASH_AT
    finally:
        reg.close()
