"""Acks and anti-entropy between agents that share only an MQTT broker (no websocket at all).

Acks travel as broadcasts (``<prefix>/<mesh>/acks/<agent>``) and only while an agent waits in
``replicated()``: so ``replicated(peers=k)`` counts agents the writer holds no link with (a
tree beyond ``full_mesh_max``). Anti-entropy runs over the logical links on the agents' inbox
topics, so a write whose broadcast the broker never delivered is repaired by it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mqttbroker import MOSQUITTO, Mosquitto

from crdtsync import Agent
from crdtsync.messages import Message, Push

pytest.importorskip("aiomqtt")


@pytest.fixture
def broker(tmp_path: Path) -> Mosquitto:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def agent(tmp_path: Path, broker: Mosquitto, name: str) -> Agent:
    return Agent(name, data_dir=tmp_path / name, broker=broker.url, mesh="acks", seed=len(name))


async def test_replicated_counts_agents_the_writer_holds_no_link_with(
    tmp_path: Path, broker: Mosquitto
) -> None:
    agents = [agent(tmp_path, broker, f"n{i:02d}") for i in range(11)]  # > full_mesh_max: tree
    for a in agents:
        await a.start()
    try:
        shards = [await a.shard("s") for a in agents]
        await eventually(
            lambda: all(len(a.core.members()) >= 10 for a in agents), 30, "presence of all"
        )
        # the writer: an agent the tree does not link to everyone
        i = min(range(len(agents)), key=lambda j: len(agents[j].core.connected()))
        w, sw = agents[i], shards[i]
        sw["k"] = 1
        await eventually(lambda: all(s.get("k") == 1 for s in shards), 30, "the write everywhere")
        before = sum(a.counters.get("broadcast_acks", 0) for a in agents)
        linked = set(w.core.connected())
        await sw.replicated(peers=10, timeout=30)
        unlinked = {a.name for a in agents} - linked - {w.name}
        assert unlinked, "a tree: the writer is not linked to everyone (else this proves less)"
        # the acks came by broadcast, one per agent and ask, not along links
        after = sum(a.counters.get("broadcast_acks", 0) for a in agents)
        assert after - before >= 10
        assert sum(a.counters.get("sent_Ack", 0) for a in agents) == 0
        # Nobody waits now: an ask is honoured for the next WANTED_COMMITS commits (a write
        # may land after a commit's capture), then further writes are not acked at all.
        for rnd in range(2):
            quiet = sum(a.counters.get("broadcast_acks", 0) for a in agents)
            for k in range(4):
                sw[f"r{rnd}-{k}"] = k
                await eventually(
                    lambda rnd=rnd, k=k: all(s.get(f"r{rnd}-{k}") == k for s in shards),
                    30,
                    "more writes",
                )
                # its own commit on every agent (a received update may wait up to the
                # stretched bound of agents sharing a loop: flush, not a sleep)
                await asyncio.gather(*(s.flush() for s in shards))
        assert sum(a.counters.get("broadcast_acks", 0) for a in agents) == quiet
    finally:
        for a in agents:
            await a.close()


async def test_anti_entropy_repairs_a_write_whose_broadcast_was_lost(
    tmp_path: Path, broker: Mosquitto
) -> None:
    a, b = agent(tmp_path, broker, "a"), agent(tmp_path, broker, "b")
    await a.start()
    await b.start()
    try:
        sa, sb = await a.shard("log"), await b.shard("log")
        sa["first"] = 1
        await eventually(lambda: sb.get("first") == 1, 15, "the first write")
        transport = a._transport
        assert transport is not None and type(transport).__name__ == "MqttTransport"
        publish = transport._broadcast  # type: ignore[attr-defined]
        lost: list[Message] = []

        def lose_one_push(msg: Message) -> None:
            if isinstance(msg, Push) and not lost:
                lost.append(msg)  # as if the broker dropped it: never published
                return
            publish(msg)

        transport._broadcast = lose_one_push  # type: ignore[attr-defined]
        received = b.counters.get("received", 0)
        sa["missed"] = 2  # no write follows: no sequence gap shows it, only anti-entropy
        await eventually(lambda: bool(lost), 5, "the lost broadcast")
        assert sb.get("missed") is None
        await eventually(lambda: sb.get("missed") == 2, 30, "the anti-entropy repair")
        assert b.counters.get("received", 0) > received  # it came on b's inbox topic (a link)
        assert sb.digest() == sa.digest()
    finally:
        await a.close()
        await b.close()


async def test_agents_on_one_loop_share_its_commit_pacing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Agents on a broker alone take their event loop's CommitPacing: each commits what it
    received within received_durability_interval (0.2 s by default) x the agents running
    there (issue 14's stretch); one given its own pacing, or one with websocket peers, is
    paced apart."""
    from crdtsync.durability import CommitPacing

    own = CommitPacing()
    a, b = agent(tmp_path, broker, "a"), agent(tmp_path, broker, "b")
    c = Agent("c", data_dir=tmp_path / "c", broker=broker.url, mesh="acks", commit_pacing=own)
    for x in (a, b, c):
        await x.start()
    try:
        shared = CommitPacing.of_loop()
        assert shared.running == 2 and own.running == 1
        for x in (a, b):
            assert x._committer is not None
            assert x._committer.remote_interval == pytest.approx(2 * 0.2)
        assert c._committer is not None and c._committer.remote_interval == 0.2
        await b.close()
        assert shared.running == 1
        assert a._committer is not None and a._committer.remote_interval == 0.2
    finally:
        for x in (a, b, c):
            await x.close()
