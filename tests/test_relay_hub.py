"""The hub term of the rotating relay under loss (``GossipConfig.hub_term``, issue 17).

Off by default (``hub_term`` 1: the golden traces pin that nothing changes). On, while the
network loses frames, one relay keeps its turn for ``hub_term`` windows, repeats what it
broadcast, and writers aim their batches at its boundaries; the mesh must still converge,
and turns and windows must be the one-window rotation's again once the loss is forgotten.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pycrdt
import pytest
from crdtsync.transports.memory import Network

from crdtsync.errors import UsageError
from crdtsync.gossip import RELAY, GossipConfig
from crdtsync.gossip._context import HUB_WINDOW, LOSS_MEMORY, LOSSY_WINDOW
from crdtsync.gossip._relay_hub import HUB_REPEATS

TERM = 20


def _mesh(seed: int, *, loss: float = 0.0, hub_term: int = TERM) -> tuple[Network, list[str]]:
    config = replace(GossipConfig(), hub_term=hub_term)
    net = Network(seed, latency=0.1, loss=loss, config=config, detect_delay=2.0)
    names = [f"n{i:02d}" for i in range(10)]
    rng = random.Random(seed)
    net.add_node(names[0])
    for i, name in enumerate(names[1:], 1):
        net.add_node(name, seeds=[net.address(names[rng.randrange(i)])])
    net.run_until(15.0)
    assert {n.core.mode() for n in net.nodes.values() if n.core} == {RELAY}  # type: ignore[union-attr]
    return net, names


def _writes(net: Network, names: list[str], start: float, seconds: float) -> None:
    for i in range(int(seconds * 40)):
        name = names[i % len(names)]
        net.at(
            start + i * 0.025,
            lambda name=name, i=i: net.write(
                name, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i)
            ),
        )


def test_hub_term_must_be_positive() -> None:
    assert GossipConfig().hub_term == 1
    with pytest.raises(UsageError):
        GossipConfig(hub_term=0)


def test_off_by_default_the_lossy_windows_and_turns_are_the_rotation() -> None:
    net, names = _mesh(2, hub_term=1)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    ctx.loss_seen_at = net.now
    w = ctx.config.push_interval
    assert ctx.window(net.now) == pytest.approx(w * LOSSY_WINDOW)
    k = ctx.window_index(net.now)
    turns = [relay.relay_of(k + j) for j in range(len(names))]
    assert len(set(turns)) == len(names)  # one window each
    assert relay.lead(net.now) is None and ctx.flush_lead(net.now) is None


def test_under_loss_one_relay_keeps_the_turn_for_hub_term_windows() -> None:
    net, names = _mesh(3)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    w = ctx.config.push_interval
    now = net.now
    # No loss seen: the one-window rotation, lossless windows.
    assert ctx.window(now) == w and not relay.hub(now)
    k = ctx.window_index(now)
    assert relay.relay_of(k) != relay.relay_of(k + 1)
    # A loss: windows of HUB_WINDOW x push_interval, a turn of TERM windows.
    ctx.loss_seen_at = now
    assert relay.hub(now)
    assert ctx.window(now) == pytest.approx(w * HUB_WINDOW)
    start = (ctx.window_index(now) // TERM + 1) * TERM
    term = {relay.relay_of(start + j) for j in range(TERM)}
    assert len(term) == 1
    assert relay.relay_of(start + TERM) not in term
    # Forgotten after LOSS_MEMORY: the rotation again.
    later = now + LOSS_MEMORY + 1.0
    ctx.now = later
    assert not relay.hub(later) and ctx.window(later) == w


def test_a_lossy_mesh_with_the_hub_term_converges_and_writers_aim_at_the_hub() -> None:
    net, names = _mesh(4, loss=0.2)
    start = net.now
    _writes(net, names, start, 6.0)
    cores = {n: net.nodes[n].core for n in names}
    seen_aimed = 0
    end = start + 6.0
    while net.now < end:
        net.run_for(0.05)
        for core in cores.values():
            assert core is not None
            if core._ctx.aim is not None:  # a flush scheduled ahead of a hub boundary
                seen_aimed += 1
    assert seen_aimed > 0, "no writer ever aimed its batch at the hub's boundary"
    assert any(c._ctx.config.hub_term > 1 and c._p.relay.hub(net.now) for c in cores.values() if c)
    # Every write reaches every agent, with 20 % loss still on every link.
    net.run_until_converged(30)
    maps = {n: net.nodes[n].replicas.docs["s"].get("m", type=pycrdt.Map).to_py() for n in names}
    assert all(len(m) == 240 for m in maps.values())


def test_the_hub_repeats_its_last_broadcasts_in_its_next_ones() -> None:
    net, names = _mesh(5, loss=0.2)
    _writes(net, names, net.now, 3.0)
    net.run_for(2.0)
    hubs = []
    for name in names:
        core = net.nodes[name].core
        assert core is not None
        relay, ctx = core._p.relay, core._ctx
        if relay.hub(net.now) and relay.relay_of(ctx.window_index(net.now) - 1) == name:
            hubs.append((relay, ctx))
    assert len(hubs) == 1, "one hub relays the window that just ended"
    relay, ctx = hubs[0]
    assert relay.hub_sent, "the hub keeps what it broadcast, to repeat it"
    last = ctx.window_index(net.now) - 1
    # Only the last HUB_REPEATS windows' news is kept (and repeated): bytes, no message.
    assert all(last - k <= HUB_REPEATS for k, _ in relay.hub_sent)
    kept = [d for _, news in relay.hub_sent for ds in news.values() for d in ds]
    assert kept and len(kept) == len(set(kept))  # each delta kept once


# h-glom4: what the hub term sends less of, and the paths that cut its tail.


def _hub_core(seed: int) -> tuple[Network, list[str], object]:
    """A relay mesh with the hub term on (a loss noticed now), no writes: one core of it."""
    net, names = _mesh(seed)
    core = net.nodes[names[0]].core
    assert core is not None
    core._ctx.loss_seen_at = net.now
    assert core._p.relay.hub(net.now)
    return net, names, core


def _untimed(core: object) -> None:
    for conn in core._ctx.links.values():  # type: ignore[attr-defined]
        conn.repair.one_way = None
        conn.repair.srtt = None
    core._p.relay.hub_rtt, core._p.relay.hub_rtt_n = float("inf"), 0  # type: ignore[attr-defined]


def test_one_way_falls_back_to_round_trips_and_to_confirmed_batches() -> None:
    from crdtsync.gossip._relay_hub import HUB_RTT_SAMPLES

    net, names, core = _hub_core(6)
    relay, ctx = core._p.relay, core._ctx  # type: ignore[attr-defined]
    _untimed(core)
    hub = ctx.links[names[1]]
    assert relay.one_way(hub) is None and relay.lead(net.now) is None
    # Confirmed batches bound the round trip; the smallest of HUB_RTT_SAMPLES stands in.
    for rtt in [0.38, 0.29, 0.2][:HUB_RTT_SAMPLES]:
        assert relay.one_way(hub) is None, "fewer than HUB_RTT_SAMPLES: not trusted"
        relay.hub_confirmed(net.now - rtt, net.now)
    assert relay.one_way(hub) == pytest.approx(0.1)
    # A repair's round trip comes before it, and a broadcast's timing before both.
    ctx.links[names[2]].repair.srtt = 0.3
    assert relay.one_way(hub) == pytest.approx(0.15)
    hub.repair.one_way = 0.1
    assert relay.one_way(hub) == pytest.approx(0.1)
    assert relay.one_way(ctx.links[names[3]]) == pytest.approx(0.1)  # the timed links' mean


def test_an_untimed_writer_takes_no_early_hub_broadcast_for_a_nack() -> None:
    from crdtsync.gossip.relay import Sent

    net, names, core = _hub_core(7)
    relay, ctx = core._p.relay, core._ctx  # type: ignore[attr-defined]
    hub = ctx.links[names[1]]
    delta = b"\x01\x01\x99\x01\x00"  # not read: only the batch's own clock is compared
    empty = b"\x00"

    def batch() -> Sent:
        return Sent(net.now, "s", b"\x01\x99\x01\x05", [delta], 0, hub.name, (153, 5), None)

    # No delay known: a hub broadcast lacking the batch may have left before it came.
    _untimed(core)
    relay.unconfirmed = [batch()]
    relay.on_hint(hub, "s", empty, net.now)
    assert len(relay.unconfirmed) == 1 and not relay.own.get("s")
    # Timed: the same hint from the hub it went to is a NACK, and it is pushed again.
    hub.repair.one_way = 0.1
    relay.unconfirmed = [batch()]
    relay.on_hint(hub, "s", empty, net.now)
    assert not relay.unconfirmed and relay.own.get("s") == [delta]


def test_a_silence_of_the_hub_is_asked_about_again() -> None:
    from crdtsync.gossip._relay_hub import HUB_SILENT_ASKS

    net, names, core = _hub_core(8)
    relay, ctx = core._p.relay, core._ctx  # type: ignore[attr-defined]
    asked: list[str] = []
    core._p.relay._repairs.ask = lambda conn, shard, now, target=None: asked.append(conn.name)  # type: ignore[attr-defined]
    now = net.now
    # A time when neither of the last two windows was ours (the watch skips our own turn).
    while ctx.name in (
        relay.relay_of(ctx.window_index(now) - 1),
        relay.relay_of(ctx.window_index(now) - 2),
    ):
        now += ctx.window(now)
    ctx.now = now
    ctx.loss_seen_at = now
    silence = relay._silence()
    relay.heard["s"] = now - silence - 0.001
    for i in range(HUB_SILENT_ASKS):
        relay.watch(now)
        assert len(asked) == i + 1
        if i + 1 < HUB_SILENT_ASKS:
            assert relay.heard["s"] == now, "watched again"
            now += silence + 0.001
            ctx.now = now
    assert "s" not in relay.heard and "s" not in relay.silent_asks


def test_acks_ride_on_the_batches_to_the_hub() -> None:
    """Under the hub term a writer's ack rides on its batch to the hub and counts as sent:
    lone Ack frames stay rare while every agent writes. Glomers (gossip_sim's scenario), 4 s
    at 20 % loss: 18 Acks for 400 writes; 116 when a rider did not count as sent."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "gossip_sim", Path(__file__).resolve().parents[1] / "benchmarks" / "gossip_sim.py"
    )
    assert spec is not None and spec.loader is not None
    gossip_sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gossip_sim)  # not on sys.path: benchmarks/ shadows tests' modules

    r = gossip_sim.run_scenario(
        agents=25,
        latency=0.1,
        rate=100.0,
        duration=4.0,
        loss=0.2,
        seed=1,
        config=replace(GossipConfig(), hub_term=TERM),
    )
    assert r["converged_writes"] == r["writes"] == 400
    assert r["messages_by_type"].get("Ack", 0) <= 0.1 * r["writes"], r["messages_by_type"]
