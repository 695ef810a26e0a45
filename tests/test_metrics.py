"""agent.metrics() and the Prometheus exposition: sampled figures and the event-fed hooks."""

from __future__ import annotations

from pathlib import Path

from crdtsync import Agent
from crdtsync.metrics import metrics_for, render_prometheus


async def test_sampled_figures_without_http(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        board = await agent.shard("board")
        for i in range(5):
            board[f"k{i}"] = i
        await board.flush()
        figures = agent.metrics()
        assert figures["agent"] == "a" and figures["connections"] == 0 and figures["peers"] == {}
        shard = figures["shards"]["board"]
        # 5 writes + the value-format marker a new shard records (crdtsync.values.MARKER)
        assert shard["updates"] == 6 and shard["keys"] == 5 and shard["bytes"] > 0
        assert shard["holders"] == ["a"] and shard["log_updates"] == 6
        assert figures["store"]["file_bytes"] > 0 and figures["store"]["map_bytes"] >= 64 << 20
        assert figures["wired"] == []  # no hook called yet: event-fed figures are honest zeros
        text, ctype = render_prometheus(agent)
        assert ctype.startswith("text/plain")
        assert b'crdtsync_shard_updates_total{shard="board"} 6.0' in text
        assert b"crdtsync_open_connections 0.0" in text


async def test_hooks_feed_both_views_and_agents_do_not_mix(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a") as a, Agent("b", data_dir=tmp_path / "b") as b:
        sink = metrics_for(a)
        assert metrics_for(a) is sink and metrics_for(b) is not sink
        sink.commit(0.003, shards=2, nbytes=1000)
        sink.written("board", 120)
        sink.repair("b", "board")
        sink.closed(4006)
        sink.closed(1001)
        sink.compacted("board", 0.01)
        figures = a.metrics()
        assert figures["commits"] == {"count": 1, "seconds_sum": 0.003}
        assert figures["written_bytes"] == {"board": 120.0}
        assert figures["anti_entropy_repairs"] == {"b/board": 1.0}
        assert figures["closes"] == {"4006 invalid_update": 1.0, "1001 going_away": 1.0}
        assert figures["compactions"] == {"board": 1.0}
        assert figures["wired"] == ["closed", "commit", "compacted", "repair", "written"]
        text = render_prometheus(a)[0].decode()
        assert 'crdtsync_connection_closes_total{code="4006",reason="invalid_update"} 1.0' in text
        assert 'crdtsync_commit_seconds_bucket{le="0.005"} 1.0' in text
        assert "crdtsync_group_commit_shards_sum 2.0" in text
        assert b.metrics()["commits"]["count"] == 0
        assert "crdtsync_connection_closes_total{" not in render_prometheus(b)[0].decode()


async def test_lag_seconds_counts_from_first_seen_behind(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a") as agent:
        sink = metrics_for(agent)
        assert sink.lag_seconds("b", "board", behind=True, now=100.0) == 0.0
        assert sink.lag_seconds("b", "board", behind=True, now=102.5) == 2.5
        assert sink.lag_seconds("b", "board", behind=False, now=103.0) == 0.0
        assert sink.lag_seconds("b", "board", behind=True, now=104.0) == 0.0  # a new episode
