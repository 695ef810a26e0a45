"""agent.metrics() and /metrics, fed by real work: real LMDB stores, real websockets on
127.0.0.1, a real mosquitto. Every figure is read from both views, which must agree.

The figures: commit latency and group-commit size (the group committer's observer), updates and
bytes committed per shard and writes/s, compaction runs and store size, anti-entropy repairs
(counters of the sans-I/O core), close codes by reason (the websocket and MQTT drivers'
observer), replication lag per peer and shard in updates and seconds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mqttbroker import MOSQUITTO, Mosquitto
from websockets.asyncio.client import connect

from crdtsync import Agent
from crdtsync.http import HttpOptions
from crdtsync.metrics import RATE_WINDOW, metrics_for


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def scrape(agent: Agent) -> str:
    assert agent.http_url is not None
    async with httpx.AsyncClient(base_url=agent.http_url, timeout=10) as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return r.text


def value(text: str, metric: str, **labels: str) -> float | None:
    """The sample ``metric{labels}`` in a Prometheus exposition (labels in any order)."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if m is None or m.group(1) != metric:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return None


def http() -> HttpOptions:
    return HttpOptions("127.0.0.1:0")


async def test_commits_writes_and_bytes_per_shard(tmp_path: Path) -> None:
    before = time.monotonic()
    async with Agent("a", data_dir=tmp_path / "a", http=http()) as agent:
        board, other = await agent.shard("board"), await agent.shard("other")
        await board.flush()
        for i in range(5):
            board[f"k{i}"] = i  # 5 transactions: 5 updates
        other["x"] = "y"
        await board.flush()  # one group commit with both shards
        figures = agent.metrics()
        stats = agent.shard_stats("board")
        assert stats is not None
        shard = figures["shards"]["board"]
        # 5 writes + the value-format marker a new shard records (crdtsync.values.MARKER)
        assert shard["writes"] == 6 == stats.total_updates and shard["updates"] == 6
        assert shard["written_bytes"] == stats.log_bytes > 0  # every byte appended, counted
        assert shard["bytes"] == stats.log_bytes + stats.snapshot_bytes and shard["keys"] == 5
        assert figures["shards"]["other"]["writes"] == 2
        commits = figures["commits"]
        assert commits["count"] >= 2 and commits["seconds_sum"] > 0
        assert commits["updates_sum"] == 8 and commits["shards_sum"] >= commits["count"] + 1
        assert commits["bytes_sum"] == stats.log_bytes + figures["shards"]["other"]["written_bytes"]
        # writes/s: consecutive windows of RATE_WINDOW seconds from `before` on hold every write
        after = time.monotonic()
        sink = metrics_for(agent)
        window = int(RATE_WINDOW)
        total, end = 0.0, int(before) + window
        while end - window <= int(after):
            total += sink.writes_per_second("board", now=end) * RATE_WINDOW
            end += window
        assert round(total) == 6
        assert sink.writes_per_second("board", now=after + 2 * RATE_WINDOW + 1) == 0.0

        text = await scrape(agent)
        assert value(text, "crdtsync_shard_writes_total", shard="board") == 6
        assert value(text, "crdtsync_shard_written_bytes_total", shard="board") == stats.log_bytes
        assert value(text, "crdtsync_shard_updates_total", shard="board") == 6
        assert value(text, "crdtsync_commit_seconds_count") == commits["count"]
        assert value(text, "crdtsync_group_commit_updates_sum") == 8
        # at least one commit held 2 shards: fewer commits in the le=1 bucket than in all
        one = value(text, "crdtsync_group_commit_shards_bucket", le="1.0")
        assert one is not None and one < commits["count"]


async def test_compaction_runs_and_store_size(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a", http=http()) as agent:
        board = await agent.shard("board")
        for i in range(50):
            board[f"k{i}"] = "x" * 100
        await board.flush()
        log = agent.shard_stats("board")
        assert log is not None and log.log_count == 51
        after = await board.compact()
        assert after.log_count == 0 and after.snapshot_bytes > 0
        await board.compact()  # an empty log: nothing to fold, not a run
        figures = agent.metrics()
        assert figures["shards"]["board"]["compactions"] == 1
        assert figures["shards"]["board"]["bytes"] == after.snapshot_bytes
        assert figures["shards"]["board"]["last_compaction"] == after.last_compaction
        size = agent.store_size()
        assert size.file_bytes > 0 and size.map_bytes >= 64 << 20
        assert figures["store"] == {"file_bytes": size.file_bytes, "map_bytes": size.map_bytes}
        text = await scrape(agent)
        assert value(text, "crdtsync_compactions_total", shard="board") == 1
        assert value(text, "crdtsync_compaction_seconds_count") == 1
        assert value(text, "crdtsync_shard_bytes", shard="board") == after.snapshot_bytes
        assert value(text, "crdtsync_shard_log_updates", shard="board") == 0
        assert value(text, "crdtsync_store_map_bytes") == size.map_bytes
        assert (value(text, "crdtsync_store_file_bytes") or 0) > 0


async def test_anti_entropy_repairs_of_a_shard_that_differs(tmp_path: Path) -> None:
    # a and b both write "board" apart; when b joins, a's on-connect round finds the digests
    # differing and asks b for a repair (the core counts it; the metrics read the counter).
    async with Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http()) as a:
        board_a = await a.shard("board")
        board_a["from_a"] = 1
        async with Agent("b", data_dir=tmp_path / "b") as b0:
            (await b0.shard("board"))["from_b"] = 2
        assert a.repairs == {}
        async with Agent("b", data_dir=tmp_path / "b", peers=[a.address or ""]) as b:
            board_b = await b.shard("board")
            await eventually(lambda: len(board_a) == 2 and len(board_b) == 2, "convergence")
            await eventually(lambda: a.repairs.get(("b", "board"), 0) >= 1, "a repair counted")
            n = a.repairs[("b", "board")]
            assert a.metrics()["peers"]["b"]["repairs"] == {"board": n}
            text = await scrape(a)
            assert value(text, "crdtsync_anti_entropy_repairs_total", peer="b", shard="board") == n
            assert a.core is not None and a.core.repairs_asked == a.repairs


async def test_close_codes_by_reason_over_websockets(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http()) as a:
        assert a.address is not None
        # a client that speaks no crdtsync: a text frame is a malformed frame (4004), closed by us
        async with connect(a.address) as raw:
            await raw.send("hello?")
            await raw.wait_closed()
            assert raw.close_code == 4004
        await eventually(lambda: "4004 malformed_frame us" in a.metrics()["closes"], "4004")
        # b listens: a departed agent without an address is not listed as a peer (#16).
        b = Agent("b", data_dir=tmp_path / "b", listen="ws://127.0.0.1:0", peers=[a.address])
        await b.start()
        await eventually(lambda: a.metrics()["connections"] == 1, "b connected")
        await b.close()  # b says goodbye: 1001 going away
        await eventually(lambda: a.metrics()["connections"] == 0, "b gone")
        closes = a.metrics()["closes"]
        going_away = {k: v for k, v in closes.items() if k.startswith("1001 going_away ")}
        assert sum(going_away.values()) == 1, closes  # (whichever side's close frame came first)
        assert closes["4004 malformed_frame us"] == 1
        b_closes = metrics_for(b).closes.collect()[0].samples
        assert any(s.labels["code"] == "1001" and s.value == 1 for s in b_closes)
        text = await scrape(a)
        assert (
            value(
                text,
                "crdtsync_connection_closes_total",
                code="4004",
                reason="malformed_frame",
                by="us",
            )
            == 1
        )


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
async def test_close_codes_over_mqtt(tmp_path: Path) -> None:
    pytest.importorskip("aiomqtt")
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        kw: dict[str, Any] = {"broker": broker.url, "mesh": "m"}
        async with Agent("a", data_dir=tmp_path / "a", http=http(), **kw) as a:
            b = Agent("b", data_dir=tmp_path / "b", **kw)
            await b.start()
            await eventually(lambda: a.metrics()["connections"] == 1, "b connected")
            await b.close()  # a Close(going away) and a CLOSE frame with 1001
            await eventually(lambda: a.metrics()["connections"] == 0, "b gone")
            closes = a.metrics()["closes"]
            assert closes.get("1001 going_away peer") == 1, closes
            text = await scrape(a)
            assert (
                value(
                    text,
                    "crdtsync_connection_closes_total",
                    code="1001",
                    reason="going_away",
                    by="peer",
                )
                == 1
            )
            b_closes = {
                tuple(s.labels.values()): s.value
                for s in metrics_for(b).closes.collect()[0].samples
                if s.name.endswith("_total")
            }
            # (a link both sides dialled at once may also have been closed as a duplicate, 4010)
            assert b_closes[("1001", "going_away", "us")] == 1.0, b_closes
    finally:
        broker.stop()


async def test_replication_lag_in_updates_and_seconds(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http()) as a:
        assert a.address is not None
        board = await a.shard("board")
        board["start"] = 0
        # b listens: a departed agent without an address is not listed as a peer (#16).
        b = Agent("b", data_dir=tmp_path / "b", listen="ws://127.0.0.1:0", peers=[a.address])
        await b.start()
        await b.shard("board")
        await board.replicated(peers=1, timeout=15)
        await eventually(
            lambda: a.metrics()["peers"]["b"]["lag"].get("board") == {"updates": 0, "seconds": 0},
            "b caught up",
        )
        await b.close()
        await eventually(lambda: a.metrics()["connections"] == 0, "b gone")
        for i in range(3):
            board[f"k{i}"] = i  # 3 updates b does not have
        await board.flush()
        await asyncio.sleep(0.05)  # (a lower bound on the lag's age, not a timing assertion)
        lag = a.metrics()["peers"]["b"]["lag"]["board"]
        assert lag["updates"] == 3 and lag["seconds"] >= 0.05
        (first,) = a.replication_lag()
        later = a.replication_lag(now=time.monotonic() + 100)[0]
        assert (first.peer, first.shard, first.updates) == ("b", "board", 3)
        assert later.seconds >= first.seconds + 100 - 0.01  # the age grows with the clock
        text = await scrape(a)
        assert value(text, "crdtsync_replication_lag_updates", peer="b", shard="board") == 3
        seconds = value(text, "crdtsync_replication_lag_seconds", peer="b", shard="board")
        assert seconds is not None and seconds >= lag["seconds"]
        async with httpx.AsyncClient(base_url=a.http_url or "", timeout=10) as c:
            (info,) = (await c.get("/shards")).json()["shards"]
            assert info["lag"] == {"b": 3} and info["lag_seconds"]["b"] >= lag["seconds"]
            as_json = (await c.get("/metrics", params={"format": "json"})).json()
            assert as_json["peers"]["b"]["lag"]["board"]["updates"] == 3
        # b comes back and catches up: no lag left
        async with Agent("b", data_dir=tmp_path / "b", peers=[a.address]) as b2:
            await b2.shard("board")
            await board.replicated(peers=1, timeout=15)
            await eventually(
                lambda: a.metrics()["peers"]["b"]["lag"]["board"] == {"updates": 0, "seconds": 0},
                "b caught up again",
            )


def test_durable_history_measures_lag_from_the_oldest_state_a_peer_lacks() -> None:
    import pycrdt

    from crdtsync._agent_figures import DurableHistory

    history = DurableHistory(limit=8)
    doc: pycrdt.Doc = pycrdt.Doc()
    m = doc.get("m", type=pycrdt.Map)
    empty = doc.get_state()
    states = []
    for i in range(6):  # one update per commit, committed at t = i
        m[f"k{i}"] = i
        history.committed(0.001, {"s": (1, 10)})
        history.durable("s", doc.get_state(), now=float(i))
        states.append(doc.get_state())
    assert history.lag("s", states[2], now=100.0) == (3, 97.0)  # lacks commits 3, 4, 5
    assert history.lag("s", states[5], now=100.0) == (0, 0.0)
    assert history.lag("s", empty, now=100.0) == (6, 100.0)
    assert history.lag("other", empty, now=100.0) == (0, 0.0)  # nothing recorded
    for i in range(6, 40):  # past the limit: old states thin out, the oldest stays
        m[f"k{i}"] = i
        history.committed(0.001, {"s": (1, 10)})
        history.durable("s", doc.get_state(), now=float(i))
    assert len(history._entries["s"]) <= 8
    assert history.lag("s", empty, now=100.0) == (40, 100.0)
    assert history.lag("s", doc.get_state(), now=100.0) == (0, 0.0)
    updates, seconds = history.lag("s", states[2], now=100.0)
    assert 0 < updates <= 37 and 0 < seconds <= 97.0  # a lower bound once thinned


async def test_the_agents_counters_are_exported_as_events(tmp_path: Path) -> None:
    """A refused stranger counts in agent.counters, and so in metrics() and /metrics."""
    from meshkeys import make_keys

    from crdtsync.security.credentials import Credentials

    keys = make_keys(tmp_path / "keys", "m", "a")
    creds = Credentials.from_dir(keys, "a", mode="secret")
    async with Agent(
        "a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http(), credentials=creds
    ) as a:
        assert a.address is not None
        async with connect(a.address, proxy=None) as raw:
            await raw.send(b"\x00")  # no handshake: refused, 4012
            await raw.wait_closed()
        key = "auth_failed.unauthenticated"
        await eventually(lambda: a.counters.get(key) == 1, "the refusal counted")
        assert a.metrics()["events"][key] == 1
        assert value(await scrape(a), "crdtsync_events_total", event=key) == 1
