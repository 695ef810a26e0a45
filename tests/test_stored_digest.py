"""The digest a shard stores with its commits (read by the registry to answer a peer's
Summary without opening the shard, issue 11) is never stale: after every group commit it is
either the shard's digest as committed or empty (not known), and a clean close stores it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdtsync import Agent
from crdtsync.shard import DIGEST_META


def _committed(agent: Agent, name: str) -> bytes:
    stored = agent._store.load(name)  # type: ignore[union-attr]
    assert stored is not None
    return stored.meta.get(DIGEST_META, b"")


def test_the_stored_digest_is_current_or_cleared_after_each_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Agent("a", data_dir=tmp_path) as a:
            s = await a.shard("s")
            s["k"] = 1
            await s.flush()
            assert _committed(a, "s") in (b"", s.digest())
        async with Agent("a", data_dir=tmp_path) as a:
            # A clean close stored it; the registry answers from it without opening the shard.
            assert "s" not in a._registry  # type: ignore[operator]
            stored = _committed(a, "s")
            assert stored and a._registry.digest("s") == stored  # type: ignore[union-attr]
            assert "s" not in a._registry  # type: ignore[operator]
            s = await a.shard("s")
            assert s.digest() == stored
            s["k"] = 2  # a change: the committed digest must not stay the old one
            await s.flush()
            assert _committed(a, "s") in (b"", s.digest())
            assert _committed(a, "s") != stored
            del s["k"]  # a delete-only change leaves the state vector as it was
            s.digest()  # known at the next commit: stored with it
            await s.flush()
            assert _committed(a, "s") == s.digest()

    asyncio.run(scenario())
