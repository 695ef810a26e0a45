"""A received update that changes a shard by exactly itself is persisted and announced as its
own bytes, without pycrdt's re-encoding of the change (issue 17, branch h-paper): what is
stored, returned, announced and reloaded is the same as on the general path, and every
other update still takes the general path."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from crdtsync import Agent, Change, InvalidUpdate, _shard_remote, updates
from crdtsync.shard import Shard


@pytest.fixture
def own_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many transactions the shards' own observer saw (patched before they are made)."""
    calls: list[int] = []
    inner = Shard._on_transaction

    def counting(self: Shard, event: Any) -> None:
        calls.append(1)
        inner(self, event)

    monkeypatch.setattr(Shard, "_on_transaction", counting)
    return calls


@pytest.fixture
def observer_calls(own_calls: list[int], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``own_calls``, with every size of update qualifying (the tests' updates are small)."""
    monkeypatch.setattr(_shard_remote, "WHOLE_MIN_BYTES", 0)
    return own_calls


def _writer(n: int, prefix: str = "k") -> tuple[pycrdt.Doc[Any], list[bytes]]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    sent: list[bytes] = []
    doc.observe(lambda e: sent.append(e.update))
    for i in range(n):
        root[f"{prefix}{i}"] = i
    return doc, sent


async def test_a_new_update_is_stored_returned_and_announced_as_received(
    tmp_path: Any, observer_calls: list[int]
) -> None:
    src, _ = _writer(50)
    text = src.get("t", type=pycrdt.Text)
    text += "hello world"
    del text[0:6]  # a delete set too, of the update's own items
    state = src.get_update()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        await shard.flush()
        entries = shard.stats().total_updates
        received: list[Change] = []
        shard.on_change(received.append)
        others: list[bytes] = []
        shard.doc.observe(lambda e: others.append(e.update))  # another observer of the doc
        seen = len(observer_calls)
        delta = shard.apply_remote(state, "peer")
        assert len(observer_calls) == seen  # the fast path: our observer was off
        assert delta == state  # the received bytes, forwarded as they came
        assert len(others) == 1  # other observers still see the transaction
        assert len(received) == 1 and received[0].origin == "peer"
        await shard.flush()
        assert shard.stats().total_updates == entries + 1
        assert shard.snapshot() == {f"k{i}": i for i in range(50)}
        assert str(shard.doc.get("t", type=pycrdt.Text)) == "world"
        shard["after"] = 1  # our observer is back: a local write is persisted
        assert len(observer_calls) == seen + 1
        digest = shard.digest()
        await shard.flush()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        assert shard.digest() == digest
        assert shard["after"] == 1 and shard["k49"] == 49
        assert str(shard.doc.get("t", type=pycrdt.Text)) == "world"


async def test_other_updates_take_the_general_path(
    tmp_path: Any, observer_calls: list[int]
) -> None:
    """Structs already held (a re-send, an overlap), a delete-only update, a batch, a shard
    reopened (its observer notes what changed since the open) and an open transaction
    around the apply: pycrdt's delta, through the observer, as before."""
    src, sent = _writer(6)
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        seen = len(observer_calls)
        assert shard.apply_remote(sent[0], "p") == sent[0]  # new: fast path
        assert len(observer_calls) == seen
        assert shard.apply_remote(sent[0], "p") is None  # a duplicate changes nothing
        overlap = pycrdt.merge_updates(sent[0], sent[1])
        delta = shard.apply_remote(overlap, "p")  # k0 held already: general path
        assert len(observer_calls) == seen + 1 and delta is not None and delta != overlap
        root = src.get("root", type=pycrdt.Map)
        before = src.get_state()
        del root["k0"]
        delete_only = src.get_update(before)
        assert updates.validate_update(delete_only).n_structs == 0
        batch = sent[2:4]
        infos = [updates.validate_update(u) for u in batch]
        shard.apply_remote_batch(batch, "p", infos)  # two updates: general path
        assert len(observer_calls) == seen + 2
        with shard.doc.transaction():  # inside an open transaction: general path
            shard.apply_remote(sent[4], "p")
        assert len(observer_calls) == seen + 3
        shard.apply_remote(delete_only, "p")  # no struct: general path
        assert len(observer_calls) == seen + 4
        await shard.flush()
        digest = shard.digest()
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        assert shard.digest() == digest
        seen = len(observer_calls)
        shard.apply_remote(sent[5], "p")  # new, but the shard was reopened: general path
        assert len(observer_calls) == seen + 1
        assert shard.snapshot() == {f"k{i}": i for i in range(1, 6)}


async def test_a_refused_update_on_the_fast_path_changes_nothing(
    tmp_path: Any, observer_calls: list[int]
) -> None:
    """Validation still comes first: bad bytes are refused before anything is applied, and the
    observer is on again after the refusal."""
    src, sent = _writer(3)
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        digest = shard.digest()
        with pytest.raises(InvalidUpdate):
            shard.apply_remote(sent[0][:-3] + b"\xff\xff\xff", "evil")
        assert shard.digest() == digest
        shard["x"] = 1
        assert shard["x"] == 1 and shard.digest() != digest


async def test_a_small_update_takes_the_general_path(tmp_path: Any, own_calls: list[int]) -> None:
    """Below ``WHOLE_MIN_BYTES`` (the live path's one small update per Push) the observer
    persists pycrdt's delta as before; at or above it, the received bytes."""
    src, sent = _writer(1)
    big, _ = _writer(3000, "big")
    state = big.get_update()
    assert len(sent[0]) < _shard_remote.WHOLE_MIN_BYTES <= len(state)
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        shard = await agent.shard("s")
        seen = len(own_calls)
        assert shard.apply_remote(sent[0], "p") is not None
        assert len(own_calls) == seen + 1  # small: through the observer
        assert shard.apply_remote(state, "p") == state
        assert len(own_calls) == seen + 1  # big and new: as received
        assert shard["big2999"] == 2999 and shard["k0"] == 0
