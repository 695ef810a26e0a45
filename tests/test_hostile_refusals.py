"""Issue #11: a refused update gets a clear refusal, not a cut link; a peer that keeps sending
refused updates is closed. Real websockets on 127.0.0.1.

Row "a 16 MB push of 2.7 M items / 14 MB delete set": one update over the work limits (here a
delete set one range over ``max_delete_ranges``) is dropped and counted
(``quota.update-limits``), nothing of it is stored, and the honest traffic on the same link
goes on. Over :class:`~crdtsync.quotas.RefusalLimit` (16, then one a second, per name) the
link is closed with ``INVALID_UPDATE`` and counted (``quota.refused-updates``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import hostile as h
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Agent
from crdtsync.errors import CloseCode
from crdtsync.gossip import GossipConfig
from crdtsync.messages import PROTOCOL_VERSION, Hello, Push
from crdtsync.yjs.limits import DEFAULT_LIMITS


async def test_one_refused_update_keeps_the_link_a_stream_of_them_closes_it(
    tmp_path: Path,
) -> None:
    max_ranges = DEFAULT_LIMITS.max_delete_ranges
    assert max_ranges is not None
    too_big = h.big_delete_set(max_ranges + 1)  # 2 MB: one deleted range over the limit
    lan = GossipConfig.lan()
    async with Agent("victim", data_dir=tmp_path / "v", listen="ws://127.0.0.1:0", gossip=lan) as v:
        assert v.address is not None
        doc = await v.shard("doc")
        doc["k"] = "v"
        async with connect(v.address, proxy=None, max_size=None) as ws:
            raw = h.RawPeer(ws)
            await raw.send(Hello(PROTOCOL_VERSION, "default", "mallory", None, (), 0, 7))
            await h.until(lambda: any(p.name == "mallory" for p in v.peers), "mallory connected")
            await raw.send(Push("doc", (too_big,), seq=1))
            await raw.send(Push("doc", (h.honest_update("after", "ok"),), seq=2))
            await h.until(
                lambda: doc.snapshot().get("after") == "ok" or raw.closed.is_set(),
                "the next update applied",
            )
            assert not raw.closed.is_set(), raw.code  # the link stayed up
            assert v.counters["quota.update-limits"] == 1
            assert doc.snapshot() == {"k": "v", "after": "ok"}  # nothing of the refused one
            # A peer that keeps sending them is cut off, with the documented code.
            for i in range(40):
                try:
                    await raw.send(Push("doc", (too_big,), seq=3 + i))
                except ConnectionClosed:
                    break
            await asyncio.wait_for(raw.closed.wait(), 10)
            assert raw.code == CloseCode.INVALID_UPDATE
            assert v.counters["quota.refused-updates"] == 1
            assert 16 <= v.counters["quota.update-limits"] <= 18
        await doc.flush()
        assert doc.snapshot() == {"k": "v", "after": "ok"}
        async with Agent("honest", data_dir=tmp_path / "h", peers=[v.address], gossip=lan) as hon:
            mine = await hon.shard("doc")
            await h.until(lambda: mine.snapshot() == {"k": "v", "after": "ok"}, "honest synced")


async def test_every_refused_shape_of_the_table_is_dropped_counted_and_not_stored(
    tmp_path: Path,
) -> None:
    """Rows 1-5 and 8 of issue #11's table over real websockets, as the Proof asks: each shape
    pushed into an existing shard and into a new one is refused (dropped, the link stays up),
    counted (``quota.update-limits``), nothing of it is stored (no new shard either), and an
    honest peer syncs the shard afterwards."""
    limits = DEFAULT_LIMITS
    assert limits.max_fan is not None and limits.max_structs is not None
    shapes = {
        "fan": h.same_origin_fan(limits.max_fan + 1),  # row 1: quadratic integration
        "chain": h.many_items(20_000),  # row 2: quadratic memory
        "xml": h.nested_xml(2_000),  # row 3: segfaulting reads
        "maps": h.nested_maps(1_000),  # row 4: RecursionError on read
        "format": h.format_in_map(),  # row 5: KeyError on read
        "structs": h.many_unmerged(limits.max_structs + 1),  # row 8: seconds of CPU
    }
    lan = GossipConfig.lan()
    async with Agent("victim", data_dir=tmp_path / "v", listen="ws://127.0.0.1:0", gossip=lan) as v:
        assert v.address is not None
        doc = await v.shard("doc")
        doc["k"] = "v"
        before = set(v.shard_names())
        async with connect(v.address, proxy=None, max_size=None) as ws:
            raw = h.RawPeer(ws)
            await raw.send(Hello(PROTOCOL_VERSION, "default", "mallory", None, (), 0, 7))
            await h.until(lambda: any(p.name == "mallory" for p in v.peers), "mallory connected")
            seq = 0
            for i, (name, update) in enumerate(shapes.items()):
                for shard in ("doc", f"new-{name}"):
                    seq += 1
                    await raw.send(Push(shard, (update,), seq=seq))
                seq += 1
                await raw.send(Push("doc", (h.honest_update(f"after-{name}", "ok"),), seq=seq))
                await h.until(
                    lambda n=name: doc.snapshot().get(f"after-{n}") == "ok" or raw.closed.is_set(),
                    f"the update after {name} applied",
                )
                assert not raw.closed.is_set(), (name, raw.code)  # the link stayed up
                assert v.counters["quota.update-limits"] == 2 * (i + 1), name
        await doc.flush()
        expected = {"k": "v", **{f"after-{n}": "ok" for n in shapes}}
        assert doc.snapshot() == expected  # nothing of a refused shape
        assert set(v.shard_names()) == before  # and no shard was created for one
        async with Agent("honest", data_dir=tmp_path / "h", peers=[v.address], gossip=lan) as hon:
            mine = await hon.shard("doc")
            await h.until(lambda: mine.snapshot() == expected, "honest synced")
