"""``crdtsync inspect --peer http://...`` shows the agents' own metrics (agent.metrics(), the
figures of /metrics and the dashboard), not figures of its own: two real agents on 127.0.0.1,
one of them behind."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from crdtsync import Agent
from crdtsync.cli.commands import main
from crdtsync.http import HttpOptions


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def inspect(*args: str) -> str:
    # (in a thread: the command blocks on HTTP that this event loop serves)
    # (wide enough that rich does not wrap the tables' cells)
    runner = CliRunner(env={"COLUMNS": "250"})
    result = await asyncio.to_thread(runner.invoke, main, ["inspect", *args])
    assert result.exit_code == 0, result.output
    return result.output


async def test_inspect_peer_http_shows_the_agents_metrics(tmp_path: Path) -> None:
    http = HttpOptions("127.0.0.1:0")
    async with Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http) as a:
        assert a.address is not None and a.http_url is not None
        board = await a.shard("board")
        board["start"] = 0
        # b listens: a departed agent without an address is not listed as a peer (#16).
        async with Agent(
            "b", data_dir=tmp_path / "b", listen="ws://127.0.0.1:0", peers=[a.address], http=http
        ) as b:
            assert b.http_url is not None
            # b writes too, so that a acks something of b's (a shard received from a peer is
            # not written to on arrival any more: no value-format marker of b's own, #16).
            (await b.shard("board"))["from_b"] = 1
            await board.replicated(peers=1, timeout=15)

            def settled() -> bool:  # each has the other's ack of all it has (acks lag a bit)
                lags = [
                    a.metrics()["peers"]["b"]["lag"].get("board"),
                    b.metrics()["peers"]["a"]["lag"].get("board"),
                ]
                return all(lag is not None and lag["updates"] == 0 for lag in lags)

            await eventually(settled, "both acks in")
            out = json.loads(await inspect("--peer", a.http_url, "--peer", b.http_url, "--json"))
            assert set(out["metrics"]) == {"a", "b"}
            for name, agent in (("a", a), ("b", b)):
                mine = agent.metrics()
                theirs = out["metrics"][name]
                assert theirs["shards"].keys() == mine["shards"].keys() == {"board"}
                for key in ("bytes", "updates", "holders", "writes", "written_bytes"):
                    assert theirs["shards"]["board"][key] == mine["shards"]["board"][key]
                assert theirs["commits"]["count"] == mine["commits"]["count"]
            (row,) = out["shards"]
            assert row["holders"] == ["a", "b"] and row["lagging"] == []
            assert row["stored"] == {
                n: out["metrics"][n]["shards"]["board"]["bytes"] for n in ("a", "b")
            }
        await eventually(lambda: a.metrics()["connections"] == 0, "b gone")
        for i in range(3):
            board[f"k{i}"] = i
        await board.flush()
        out = json.loads(await inspect("--peer", a.http_url, "--json"))
        (row,) = out["shards"]
        (lag,) = row["lagging"]
        assert (lag["behind"], lag["peer"], lag["updates"]) == ("a", "b", 3)
        assert lag == {
            "behind": "a",
            "peer": "b",
            **out["metrics"]["a"]["peers"]["b"]["lag"]["board"],
        }
        (link,) = out["links"]
        assert (link["agent"], link["peer"], link["lag_updates"]) == ("a", "b", 3)
        assert link["queued_bytes"] == link["send_buffer_bytes"] == 0  # b is gone
        await board.compact()
        out = json.loads(await inspect("--peer", a.http_url, "--json"))
        mine = out["metrics"]["a"]
        (row,) = out["agents"]
        commits = mine["commits"]
        assert row["updates_per_commit"] == round(commits["updates_sum"] / commits["count"], 2)
        assert row["compactions"] == mine["shards"]["board"]["compactions"] == 1
        going_away = sum(n for k, n in mine["closes"].items() if k.startswith("1001 "))
        assert going_away >= 1 and row["closes"]["going_away"] == going_away
        text = await inspect("--peer", a.http_url)
        assert "b behind a: 3 updates" in text and "agents (their metrics)" in text
        assert f"going_away: {going_away}" in text and "send buffer" in text


async def test_inspect_peer_http_errors_are_clear(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["inspect", "--peer", "http://127.0.0.1:9"]
    )
    assert result.exit_code != 0 and "cannot read its metrics" in result.output
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["inspect", "--peer", "http://127.0.0.1:9", "--peer", "ws://127.0.0.1:9"],
    )
    assert result.exit_code == 2 and "either http:// peers" in result.output
