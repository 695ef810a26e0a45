"""A peer waiting for our ack hurries our commit, over every driver (the core's signal).

An ack covers only what is on disk. An agent that received an update commits it within its
group commit's bound (``durability_interval``, stretched for a swarm of agents on a broker);
when a peer waits in ``replicated()`` it asks for our ack (a WANT_ACK Push, on a link or
broadcast) and the agent must commit at once. The core reports the ask
(``GossipCore(on_ack_wanted=...)``); no driver inspects what it carries. Each test below gives
the receiver a 600 s bound, so ``replicated()`` can only return if the signal reached it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pycrdt
import pytest
from crdtsync.transports.memory import Network
from mqttbroker import MOSQUITTO, Mosquitto

from crdtsync import Agent, updates

#: The receiver's group-commit bound: far beyond every timeout here.
NEVER = 600.0


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _writer_waits_for_the_slow_committer(a: Agent, b: Agent) -> None:
    """``a`` writes, ``b`` receives it (uncommitted for NEVER s), ``a`` waits for b's ack."""
    sa, sb = await a.shard("s"), await b.shard("s")
    sa["k"] = 1
    await eventually(lambda: sb.get("k") == 1, 30, "the write at b")
    assert b._store is not None and b._store.pending() > 0, "b committed on its own"
    await sa.replicated(peers=1, timeout=20)  # ReplicationTimeout without the signal
    assert b._store.pending() == 0


async def test_a_websocket_peer_waiting_for_our_ack_hurries_our_commit(tmp_path: Path) -> None:
    a = Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0")
    await a.start()
    b = Agent("b", tmp_path / "b", peers=[a.address], durability_interval=NEVER)
    await b.start()
    try:
        await eventually(lambda: "b" in a.core.connected(), 20, "the link")
        await _writer_waits_for_the_slow_committer(a, b)
    finally:
        await b.close()
        await a.close()


async def test_a_broker_peer_waiting_for_our_ack_hurries_our_commit(tmp_path: Path) -> None:
    pytest.importorskip("aiomqtt")
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        a = Agent("a", tmp_path / "a", broker=broker.url, mesh="hurry")
        await a.start()
        b = Agent("b", tmp_path / "b", broker=broker.url, mesh="hurry", durability_interval=NEVER)
        await b.start()
        try:
            await eventually(lambda: "b" in a.core.members(), 20, "b's presence")
            await _writer_waits_for_the_slow_committer(a, b)
        finally:
            await b.close()
            await a.close()
    finally:
        broker.stop()


def test_the_simulator_hears_the_signal_too() -> None:
    """The memory simulator builds its cores with the same signal (counted per node)."""
    net = Network(seed=7)
    net.add_node("a")
    net.add_node("b", seeds=[net.address("a")])
    net.run_for(2.0)
    for name in ("a", "b"):  # (a asks the links that sent it the shard)
        net.write(name, "s", lambda d, k=name: d.get("m", type=pycrdt.Map).__setitem__(k, 1))
    net.run_until_converged(10)
    assert net.nodes["b"].acks_wanted["s"] == 0
    net.call("a", lambda core: core.want_acks("s", net.now))
    net.run_for(1.0)
    assert net.nodes["b"].acks_wanted["s"] >= 1


async def test_received_updates_wait_their_own_bound_and_replicated_does_not(
    tmp_path: Path,
) -> None:
    """An agent commits what it *received* within ``received_durability_interval`` (0.2 s by
    default, never less than ``durability_interval``; its own writes keep the latter). It acks
    nothing before that commit, and a writer's ``replicated()`` does not wait for it: the
    WANT_ACK it sends at once hurries the receiver's commit."""
    from crdtsync.agent import RECEIVED_DURABILITY_INTERVAL

    assert Agent("x", tmp_path / "x")._received_interval == RECEIVED_DURABILITY_INTERVAL == 0.2
    assert Agent("y", tmp_path / "y", durability_interval=0.5)._received_interval == 0.5
    a = Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0")
    await a.start()
    b = Agent("b", tmp_path / "b", peers=[a.address], received_durability_interval=NEVER)
    await b.start()
    try:
        assert b._committer is not None and b._committer.remote_interval == NEVER
        await eventually(lambda: "b" in a.core.connected(), 20, "the link")
        sa, sb = await a.shard("s"), await b.shard("s")
        await sb.flush()  # (opening a shard may write its format marker here: a local write)
        sa["k"] = 1
        await eventually(lambda: sb.get("k") == 1, 30, "the write at b")
        await asyncio.sleep(0.3)  # longer than b's own (local) bound: still nothing committed
        assert b._store is not None and b._store.pending() > 0
        target = (updates.state_vector(sa.doc), updates.delete_set(sa.doc))
        assert "b" not in a.core.replicated("s", *target), "b acked what is not on disk"
        await sa.replicated(peers=1, timeout=20)  # only the WANT_ACK's hurry can serve this
        assert b._store.pending() == 0
    finally:
        await b.close()
        await a.close()
