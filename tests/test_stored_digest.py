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


def test_a_reopened_shard_starts_from_its_stored_digest(tmp_path: Path) -> None:
    """A shard opened from the store takes the digest stored with its entries (issue 17: the
    first Summary after a restart does not walk the delete set), which is its digest; any
    change drops it, and a store whose shard has none computes it."""
    from crdtsync import updates

    async def scenario() -> None:
        async with Agent("a", data_dir=tmp_path) as a:
            s = await a.shard("s")
            text = s.text("t")
            text += "hello world"
            with s.transaction():
                del text[0:6]
            s["k"] = 1
        async with Agent("a", data_dir=tmp_path) as a:
            stored = _committed(a, "s")
            s = await a.shard("s")
            assert stored and s._digest == stored  # taken, not computed
            assert s.digest() == updates.digest(s.doc)
            s["k"] = 2
            assert s._digest is None  # a change drops it
            assert s.digest() == updates.digest(s.doc)
            await s.flush()
        async with Agent("a", data_dir=tmp_path) as a:
            a._store.put_meta("s", DIGEST_META, b"")  # type: ignore[union-attr]
            a._store.commit()  # type: ignore[union-attr]
            s = await a.shard("s")
            assert s._digest is None  # not known: computed when asked
            assert s.digest() == updates.digest(s.doc)

    asyncio.run(scenario())
