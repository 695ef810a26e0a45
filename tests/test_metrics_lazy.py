"""The default metrics observer makes an agent's sink at its first event, not in ``start()``
(issue 17, h-paper2: ~0.3 ms of a joining agent's critical path), and reports the same."""

from __future__ import annotations

import gc
from typing import Any

import crdtsync.metrics as metrics
from crdtsync import Agent
from crdtsync._compose import _SinkOnFirstEvent


async def test_the_sink_is_made_at_the_first_event_and_counts_it(tmp_path: Any) -> None:
    async with Agent("a", tmp_path / "a") as agent:
        assert isinstance(agent._history._then, _SinkOnFirstEvent)  # type: ignore[attr-defined]
        assert agent not in metrics._SINKS  # start() made none
        shard = await agent.shard("s")
        shard["k"] = 1
        await shard.flush()  # a commit: the first event
        assert agent in metrics._SINKS
        assert metrics.sample(agent)["commits"]["count"] >= 1


async def test_reading_the_metrics_first_makes_the_sink_the_events_then_use(tmp_path: Any) -> None:
    async with Agent("a", tmp_path / "a") as agent:
        before = metrics.sample(agent)  # made here, by the read
        sink = metrics._SINKS[agent]
        shard = await agent.shard("s")
        shard["k"] = 1
        await shard.flush()
        assert metrics._SINKS[agent] is sink  # the observer found the same sink
        assert metrics.sample(agent)["commits"]["count"] > before["commits"]["count"]


async def test_the_observer_does_not_keep_its_agent_alive(tmp_path: Any) -> None:
    agent = Agent("a", tmp_path / "a")
    await agent.start()
    observer = agent._history._then  # type: ignore[attr-defined]
    await agent.close()
    del agent
    gc.collect()
    observer.closed(1000, "us")  # an event after the agent is gone: ignored, no sink made
    assert observer._sink is None
