"""Compactions of one process run one at a time (issue 17: a compaction storm stalled the
event loop): counted, across the committers of many stores, not timed."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from crdtsync._durability_task import _COMPACTIONS, _Slot
from crdtsync.durability import GroupCommitter
from crdtsync.store import Store

K = 4  # committers compacting at once


class Overlap:
    """A merge that records how many of its calls ran at the same time, at most. Each call
    sleeps (releasing the GIL) so that, ungated, the K worker threads' calls overlap."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, snapshot: bytes | None, log: list[bytes]) -> bytes:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.05)
            doc: Doc[Any] = Doc()
            if snapshot is not None:
                doc.apply_update(snapshot)
            for update in log:
                doc.apply_update(update)
            return doc.get_update()
        finally:
            with self._lock:
                self.now -= 1


def updates(n: int) -> list[bytes]:
    doc: Doc[Any] = Doc()
    m = doc.get("m", type=Map)
    out: list[bytes] = []
    sub = doc.observe(lambda ev: out.append(ev.update))
    for i in range(n):
        m[f"k{i}"] = i
    doc.unobserve(sub)
    return out


async def test_automatic_compactions_of_many_committers_run_one_at_a_time(
    tmp_path: Path,
) -> None:
    ups = updates(5)
    merge = Overlap()
    stores = [Store(tmp_path / f"s{i}", sync=False, compact_min_log_count=5) for i in range(K)]
    committers = [GroupCommitter(s, compact_merge=merge) for s in stores]
    try:
        for s in stores:
            for u in ups[:-1]:
                s.append("doc", u)
            s.commit()
        for c in committers:
            await c.start()
        for s, c in zip(stores, committers, strict=True):  # all reach the threshold at once
            s.append("doc", ups[-1])
            c.hurry()
        for _ in range(500):
            if all(s.stats("doc").log_count == 0 for s in stores):
                break
            await asyncio.sleep(0.01)
        assert [s.stats("doc").log_count for s in stores] == [0] * K
        assert merge.calls == K
        assert merge.most == 1
    finally:
        for c in committers:
            await c.close()
        for s in stores:
            s.close()
    assert _COMPACTIONS.running == 0  # every slot given back (the workers have stopped)


async def test_compact_on_demand_goes_through_the_gate_and_flushes_still_pass(
    tmp_path: Path,
) -> None:
    ups = updates(3)
    merge = Overlap()
    stores = [Store(tmp_path / f"s{i}", sync=False) for i in range(K)]
    committers = [GroupCommitter(s, compact_merge=merge) for s in stores]
    try:
        for c in committers:
            await c.start()
        for s in stores:
            for u in ups:
                s.append("doc", u)
        after = await asyncio.gather(*(c.compact("doc") for c in committers))
        assert [a.log_count for a in after] == [0] * K
        assert merge.calls == K
        assert merge.most == 1
        # A committer waiting for the gate still commits: a flush does not wait for it.
        stores[0].append("doc", ups[0])
        held = _COMPACTIONS.try_enter(object(), lambda: None)
        assert held
        try:
            await asyncio.wait_for(committers[0].flush(), 10)
            assert stores[0].pending() == 0
        finally:
            _COMPACTIONS.leave()
    finally:
        for c in committers:
            await c.close()
        for s in stores:
            s.close()


def test_a_slot_is_given_back_once_by_whoever_ends_it() -> None:
    assert _COMPACTIONS.try_enter(object(), lambda: None)
    given_up = _Slot()  # the caller gave up before the worker started: it gives back
    given_up.give_back(unless_started=True)
    assert _COMPACTIONS.running == 0
    assert not given_up.start()  # ... and the worker then does not compact
    given_up.give_back()
    assert _COMPACTIONS.running == 0
    assert _COMPACTIONS.try_enter(object(), lambda: None)
    ran = _Slot()  # the worker started: only its own give_back counts
    assert ran.start()
    ran.give_back(unless_started=True)
    assert _COMPACTIONS.running == 1
    ran.give_back()
    ran.give_back(unless_started=True)
    assert _COMPACTIONS.running == 0


async def test_close_does_not_wait_for_the_gate(tmp_path: Path) -> None:
    ups = updates(3)
    store = Store(tmp_path / "s", sync=False, compact_min_log_count=3)
    merge = Overlap()
    gc = GroupCommitter(store, compact_merge=merge)
    await gc.start()
    other = object()
    assert _COMPACTIONS.try_enter(other, lambda: None)  # another compaction holds the gate
    try:
        for u in ups:
            store.append("doc", u)
        await gc.flush()  # the shard reaches the threshold: its compaction waits for the gate
        for _ in range(100):
            await asyncio.sleep(0.01)
            if gc in _COMPACTIONS._wakers:
                break
        assert gc in _COMPACTIONS._wakers
        await asyncio.wait_for(gc.close(), 10)
        assert gc not in _COMPACTIONS._wakers
        assert merge.calls == 0  # a compaction still waiting is dropped, as before
        assert store.stats("doc").log_count == 3
    finally:
        _COMPACTIONS.leave()
        store.close()
    assert _COMPACTIONS.running == 0
