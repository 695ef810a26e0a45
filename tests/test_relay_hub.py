"""The hub term of the rotating relay under loss (``GossipConfig.hub_term``, issue 17).

On by default since h-glom5 (``hub_term`` 20; ``hub_term`` 1 is the one-window rotation,
whose own tests pin it). On, while the network loses frames, one relay keeps its turn for ``hub_term`` windows, repeats what it
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
from crdtsync.gossip._relay_hub import HUB_OFF_GRID_RUN, HUB_REPEATS

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
    assert GossipConfig().hub_term == TERM  # the default (h-glom5)
    assert GossipConfig.lan().hub_term == TERM  # (no rotating relay on the LAN settings)
    with pytest.raises(UsageError):
        GossipConfig(hub_term=0)


def test_with_hub_term_1_the_lossy_windows_and_turns_are_the_rotation() -> None:
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
    lone Ack frames carrying a writer's own durable state stay rare while every agent
    writes. Glomers (gossip_sim's scenario), 4 s at 20 % loss, h-glom5's code: 9 such Acks
    for 400 writes; 75 when a rider does not count as sent (h-glom4's code: 18, and 116
    Acks of any kind). Counted: Acks with the sender's own states, not a hub's lone
    broadcast of the acks it relays (``Ack.relayed`` only): an intermediate h-glom5 version
    sent three of those in this run's drain, after the writes and the hub's repeats were
    over (72 frames that rode on its last repeats before), another mechanism."""
    import importlib.util
    from pathlib import Path

    from crdtsync.messages import Ack

    spec = importlib.util.spec_from_file_location(
        "gossip_sim", Path(__file__).resolve().parents[1] / "benchmarks" / "gossip_sim.py"
    )
    assert spec is not None and spec.loader is not None
    gossip_sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gossip_sim)  # not on sys.path: benchmarks/ shadows tests' modules

    counted = {"on": False, "own": 0}

    class Counting(Network):
        def _transmit(self, conn, src, msg):  # type: ignore[no-untyped-def]
            if counted["on"] and isinstance(msg, Ack) and msg.states:
                counted["own"] += 1
            return super()._transmit(conn, src, msg)

        def reset_stats(self) -> None:  # at the first write
            super().reset_stats()
            counted["on"] = True

    sim = gossip_sim.simulate(
        agents=25,
        latency=0.1,
        rate=100.0,
        duration=4.0,
        loss=0.2,
        seed=1,
        config=replace(GossipConfig(), hub_term=TERM),
        network=Counting,
    )
    writes = len(sim.written_at)
    assert writes == 400 and all(t is not None for t in sim.done_at)
    assert counted["own"] <= 0.1 * writes, counted


def test_a_broadcast_off_our_windows_is_no_round_trip_sample() -> None:
    """In the switch to the hub term, a relay that has not switched yet broadcasts at the end
    of its own windows, and its travel time read on the hub's windows is anywhere within a
    window: it is kept out of the link's delay and round trip (Karn's rule's spirit), unless
    HUB_OFF_GRID_RUN in a row disagree (then the delay changed). h-glom5: one such read of
    0.06 s on a 100 ms link left a smoothed round trip of 0.176 s (0.2 s round trip)."""
    net, names = _mesh(12)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    ctx.loss_seen_at = net.now
    now = net.now
    assert relay.hub(now)
    k = ctx.window_index(now) + 1
    hub = relay.relay_of(k - 1)
    while hub is None or hub == names[0]:
        k += TERM
        hub = relay.relay_of(k - 1)
    conn = core._conns[hub]
    w = ctx.window(now)
    conn.repair.one_way, conn.repair.srtt, conn.repair.rttvar = 0.1, 0.2, 0.0
    start = k * w  # the boundary hub's broadcast of window k - 1 left at
    # On our grid: a broadcast that left at the boundary k - 1 (the hop is longer than the
    # window) arrives 0.1 s later; a sample, resolved to that boundary.
    ctx.now = start - w + 0.1
    relay._time_broadcast(conn, ctx.now)
    assert conn.repair.srtt == pytest.approx(0.2) and conn.repair.one_way == pytest.approx(0.1)
    # Off our grid (left 40 ms after a boundary of ours): no sample, until a run of them.
    for i in range(HUB_OFF_GRID_RUN - 1):
        ctx.now = start + (i + 1) * w + 0.06 - w  # travel 0.06 s on our grid
        relay._time_broadcast(conn, ctx.now)
        assert conn.repair.srtt == pytest.approx(0.2) and conn.repair.one_way == pytest.approx(0.1)
    ctx.now += w
    relay._time_broadcast(conn, ctx.now)  # the run's last: the delay changed, taken
    assert conn.repair.one_way < 0.1 and conn.repair.srtt < 0.2


def test_under_loss_with_the_hub_term_round_trips_stay_at_the_hop() -> None:
    """At 20 % loss with the default hub term (100 ms links, a 0.2 s round trip), every timed
    link's round trip and delay stay at the hop through the switch from the rotation (as
    test_relay_repair's rotation test checks for the rotation). Before h-glom5: 0.176 s and 0.086 s
    on one link (a broadcast off our windows read as a 60 ms hop); now the off-grid reads
    within HUB_OFF_GRID of a window of ours still count (a sender's boundary 2 ms from one
    of ours is indistinguishable from jitter), and move the smoothing by an eighth of that."""
    net, names = _mesh(4, hub_term=GossipConfig().hub_term)
    assert net.nodes[names[0]].core.config.hub_term == TERM  # type: ignore[union-attr]
    for a in names:
        for b in names:
            if a != b:
                net.set_link(a, b, both=False, loss=0.2)
    _writes(net, names, net.now, 4.0)
    net.run_for(4.0)
    timed = [
        c
        for n in names
        for c in net.nodes[n].core._conns.values()
        if c.repair.srtt  # type: ignore[union-attr]
    ]
    assert timed, "no link was timed at 20 % loss"
    assert any(net.nodes[n].core._p.relay.hub(net.now) for n in names)  # type: ignore[union-attr]
    for c in timed:
        assert 0.19 <= c.repair.srtt < 0.35  # type: ignore[operator]
        assert c.repair.one_way is None or 0.095 <= c.repair.one_way <= 0.105
    for a in names:
        for b in names:
            if a != b:
                net.set_link(a, b, both=False, loss=0.0)
    net.run_until_converged(30)


def test_a_new_hub_repeats_what_the_last_hubs_broadcasts_brought_it_held() -> None:
    """A broadcast of another relay that reaches the hub of the moment (the last hub's, sent
    in the last windows of its term) is kept for the hub's repeats: what of it the hub
    already held (its own write, which was no news to it) too, not only the news (which its
    broadcast carries anyway). h-glom5, Glomers seed 1: a writer that became the next hub
    did not repeat its own write, and an agent that lost the last hub's two last broadcasts
    waited 1,678 ms for a repair."""
    net, names = _mesh(13)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    ctx.loss_seen_at = net.now
    now = net.now
    k = ctx.window_index(now)
    while relay.relay_of(k) != names[0]:  # a window of our own hub term
        k += 1
    now = ctx.now = k * ctx.window(now) + 0.01
    assert relay.hub(now) and relay.relay_of(ctx.window_index(now)) == names[0]
    other = next(c for c in core._conns.values() if c.name != names[0])
    held, new = b"held-delta", b"new-delta"
    relay.hub_sent.clear()
    relay.hub_inherit(other, "s", (held, new), [new], now)
    assert list(relay.hub_sent) == [(ctx.window_index(now) - 1, {"s": [held]})]
    relay.hub_inherit(other, "s", (held, new), [new], now)  # kept once
    assert len(relay.hub_sent) == 1
    # Not while someone else is the hub, nor without the hub term.
    relay.hub_sent.clear()
    later = ctx.window_index(now)
    while relay.relay_of(later) == names[0]:
        later += 1
    ctx.now = later * ctx.window(now) + 0.01
    relay.hub_inherit(other, "s", (held,), [], ctx.now)
    assert not relay.hub_sent


def test_a_batch_aimed_at_us_as_the_hub_turns_the_hub_term_on() -> None:
    """Not lossy yet, a writer's batch (``Push.relay``) reaches us at a time we relay no
    window of our own turns but are the hub of the hub term's: its writer noticed a loss,
    so it is noticed here too (``_RelayHub.adopt_hub``, from ``hand_on``). h-glom5, Glomers
    seed 6: the first hub noticed the loss 0.48 s after the first writer, and passed the
    batches aimed at it on once, without repeats (1,580 ms)."""
    net, names = _mesh(14)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    me, w = names[0], ctx.config.push_interval
    assert not ctx.lossy(net.now)
    t = net.now
    from crdtsync.gossip.overlay import window_index

    def ours(t: float) -> bool:
        k = window_index(t, w)
        return me in {relay.relay_of(k + j, hub=False) for j in (-2, -1, 0, 1)}

    def hubs(t: float) -> bool:
        k = window_index(t, w * HUB_WINDOW)
        return me in {relay.relay_of(k + j, hub=True) for j in (-1, 0, 1)}

    while ours(t) or not hubs(t):
        t += 0.01
    mine = t
    t = net.now
    while not ours(t):
        t += 0.01
    theirs = t
    ctx.now = theirs  # a relay of our own turns: a batch for us anyway, no loss
    relay.hand_on(theirs)
    assert not ctx.lossy(theirs)
    ctx.now = mine
    relay.hand_on(mine)
    assert ctx.lossy(mine) and relay.hub(mine)
    # With the one-window rotation (hub_term 1) nothing is adopted this way.
    net1, names1 = _mesh(14, hub_term=1)
    core1 = net1.nodes[names1[0]].core
    assert core1 is not None
    core1._ctx.now = mine
    core1._p.relay.hand_on(mine)
    assert not core1._ctx.lossy(mine)
