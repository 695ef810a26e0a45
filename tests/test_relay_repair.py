"""Loss repair in the rotating relay that does not wait for the next broadcast (issue 17).

Under loss an agent that stops receiving relay broadcasts for ``SILENT_WINDOWS`` windows asks
the last window's relay for what it lacks at once (a per-link timeout), instead of waiting
for a later broadcast's hint to show the gap: with every inbound frame lost it has no other
way to know, so before this change it sent no request at all while cut off.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pycrdt
import pytest
from crdtsync.transports.memory import Network

from crdtsync.gossip import RELAY, GossipConfig
from crdtsync.gossip._context import LOSSY_WINDOW
from crdtsync.gossip.overlay import TREE, window_index
from crdtsync.gossip.relay import SILENT_WINDOWS, _first_client
from crdtsync.gossip.repair import LinkRepair
from crdtsync.messages import SyncRequest

#: ``GossipConfig.hub_term`` = 1 (the one-window rotation under loss). The hub term is the
#: default since h-glom5; the tests that pass it check the rotation's own lossy windows,
#: turns or repair timing (``LOSSY_WINDOW``, the next window's relay), which only the
#: rotation has. The hub term's are in tests/test_relay_hub.py.
ROTATION = 1


def _mesh(seed: int, *, hub_term: int | None = None) -> tuple[Network, list[str]]:
    config = GossipConfig()  # WAN defaults: 0.13 s windows
    if hub_term is not None:
        config = replace(config, hub_term=hub_term)
    net = Network(seed, latency=0.1, config=config)
    names = [f"n{i:02d}" for i in range(10)]
    rng = random.Random(seed)
    net.add_node(names[0])
    for i, name in enumerate(names[1:], 1):
        net.add_node(name, seeds=[net.address(names[rng.randrange(i)])])
    net.run_until(15.0)
    assert {n.core.mode() for n in net.nodes.values() if n.core} == {RELAY}  # type: ignore[union-attr]
    return net, names


def _writes(net: Network, names: list[str], start: float, seconds: float, skip: str) -> None:
    writers = [n for n in names if n != skip]
    for i in range(int(seconds * 50)):
        name = writers[i % len(writers)]
        net.at(
            start + i * 0.02,
            lambda name=name, i=i: net.write(
                name, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(f"k{i}", i)
            ),
        )


def test_a_silent_relay_stream_is_asked_for_at_once() -> None:
    # The rotation's silence timer on its lossy windows (LOSSY_WINDOW, asserted below); the
    # hub term's silence asked again: test_relay_hub.py.
    net, names = _mesh(3, hub_term=ROTATION)
    x = names[5]
    w = net.nodes[x].core.config.push_interval  # type: ignore[union-attr]
    _writes(net, names, net.now, 6.0, x)
    # First a real loss that x notices (one window of broadcasts to it lost): from then on the
    # mesh is lossy for x, which turns its loss repair on.
    net.run_for(1.0)
    for a in names:
        if a != x:
            net.set_link(a, x, both=False, loss=1.0)
    net.run_for(w)
    for a in names:
        if a != x:
            net.set_link(a, x, both=False, loss=0.0)
    net.run_for(1.5)  # its repair is over; nothing is outstanding
    for _ in range(40):  # (a lack a hint showed may be asked for once more: let it end)
        if not any(c.repair.repairs for c in net.nodes[x].core._conns.values()):  # type: ignore[union-attr]
            break
        net.run_for(0.05)
    assert not any(c.repair.repairs for c in net.nodes[x].core._conns.values())  # type: ignore[union-attr]
    # Now x hears nothing at all (its own frames still go out) for a while, writes going on.
    net.trace = []
    cut_at = net.now
    for a in names:
        if a != x:
            net.set_link(a, x, both=False, loss=1.0)
    net.run_for(1.0)
    asked = [t for t, src, _dst, kind, _n in net.trace if src == x and kind == "SyncRequest"]
    assert asked, "a silent broadcast stream was not asked for"
    lossy_w = net.nodes[x].core._ctx.window(net.now)  # type: ignore[union-attr]
    assert lossy_w == pytest.approx(w * LOSSY_WINDOW)  # under loss the windows are shorter
    assert min(asked) >= cut_at + (SILENT_WINDOWS - 1) * lossy_w  # not before the silence was long
    for a in names:
        if a != x:
            net.set_link(a, x, both=False, loss=0.0)
    net.run_until_converged(30)


def test_a_repair_reply_times_the_round_trip_only_of_a_first_ask() -> None:
    """A Diff answering a repair asked once is a round-trip sample; one asked again is not
    (it may answer the first ask), and the estimate follows the samples as TCP's does."""
    link = LinkRepair()
    link.repairs["s"], link.tries["s"] = 10.0, 1
    link.answered("s", 10.2)
    assert link.srtt == pytest.approx(0.2) and link.rttvar == 0.0
    assert "s" not in link.repairs and "s" not in link.tries
    link.repairs["s"], link.tries["s"] = 11.0, 2  # asked again: its reply is not timed
    link.answered("s", 11.05)
    assert link.srtt == pytest.approx(0.2) and "s" not in link.repairs
    link.repairs["s"], link.tries["s"] = 12.0, 1
    link.answered("s", 12.6)
    assert link.srtt == pytest.approx(0.875 * 0.2 + 0.125 * 0.6)
    assert link.rttvar == pytest.approx(0.25 * 0.4)


def test_under_loss_repairs_follow_the_measured_round_trip_and_relays_get_two_copies() -> None:
    """At 20 % loss (100 ms links, so a 0.2 s round trip): repairs answered on a link set its
    retry timeout below repair_timeout (0.35 s), without loss the timeout stays; a relay's
    broadcast goes twice to the next window's relay, and only once to everyone else."""
    # The rotation: its LOSSY_WINDOW and the second copy to the next window's relay. The
    # same round-trip bounds under the hub term (the default): test_relay_hub.py.
    net, names = _mesh(4, hub_term=ROTATION)
    core = net.nodes[names[0]].core
    assert core is not None
    repairs = core._p.repairs
    conn = next(iter(core._conns.values()))
    assert repairs.timeout(conn, net.now) == core.config.repair_timeout  # no loss seen yet
    for a in names:
        for b in names:
            if a != b:
                net.set_link(a, b, both=False, loss=0.2)
    net.trace = []
    _writes(net, names, net.now, 4.0, "")
    net.run_for(4.0)
    timed = [
        (n, c)
        for n in names
        for c in net.nodes[n].core._conns.values()  # type: ignore[union-attr]
        if c.repair.srtt
    ]
    assert timed, "no repair reply was timed at 20 % loss"
    for _, c in timed:
        assert 0.2 - 1e-9 <= c.repair.srtt < 0.35  # type: ignore[operator]
    owner, c = timed[0]
    assert net.nodes[owner].core._ctx.lossy(net.now)  # type: ignore[union-attr]
    timeout = net.nodes[owner].core._p.repairs.timeout(c, net.now)  # type: ignore[union-attr]
    assert timeout == pytest.approx(1.25 * c.repair.srtt + 4 * c.repair.rttvar)  # type: ignore[operator]
    assert timeout < core.config.repair_timeout
    # The frames of one instant from one sender to one receiver: twice means a second copy.
    pushes: dict[tuple[float, str, str], int] = {}
    for t, src, dst, kind, _n in net.trace:
        if kind == "Push":
            pushes[(round(t, 6), src, dst)] = pushes.get((round(t, 6), src, dst), 0) + 1
    doubled = [k for k, n in pushes.items() if n == 2]
    assert doubled, "no relay broadcast went twice to the next relay"
    w = core._ctx.window(net.now)  # under loss: push_interval * LOSSY_WINDOW
    assert w == pytest.approx(core.config.push_interval * LOSSY_WINDOW)
    for t, src, dst in doubled:
        k = round(t / w)
        relay = net.nodes[src].core._p.relay  # type: ignore[union-attr]
        assert relay.relay_of(k - 1) == src and relay.relay_of(k) == dst
    for a in names:
        for b in names:
            if a != b:
                net.set_link(a, b, both=False, loss=0.0)
    net.run_until_converged(30)


def test_a_batch_names_its_writer_and_deletes_name_none() -> None:
    """A later relay's hint is compared with our own clock only (Relay._lacks_own): the
    client id is read from the first struct group of our local delta."""
    doc: pycrdt.Doc = pycrdt.Doc()
    m = doc.get("m", type=pycrdt.Map)
    deltas: list[bytes] = []
    doc.observe(lambda e: deltas.append(e.update))
    m["a"] = 1
    m["b"] = "x" * 300  # a longer struct group: the id comes first all the same
    with doc.transaction():
        del m["a"]  # a delete only: no struct group, no client named
    assert [_first_client(d) for d in deltas] == [doc.client_id, doc.client_id, None]
    assert _first_client(b"") is None


def test_windows_are_shorter_only_under_loss_in_the_relay() -> None:
    net, names = _mesh(5, hub_term=ROTATION)  # the rotation's LOSSY_WINDOW (hub term: HUB_WINDOW)
    ctx = net.nodes[names[0]].core._ctx  # type: ignore[union-attr]
    w = ctx.config.push_interval
    assert ctx.window(net.now) == w  # no loss seen: the lossless mesh is as it was
    ctx.loss_seen_at = net.now
    assert ctx.window(net.now) == pytest.approx(w * LOSSY_WINDOW)
    assert ctx.window(net.now + 10.0) == w  # the loss is forgotten after LOSS_MEMORY
    ctx.mode = lambda: TREE
    assert ctx.window(net.now) == w  # other overlays keep their windows


def test_a_broadcast_on_the_lossy_windows_turns_the_loss_repair_on() -> None:
    """Agents notice the first loss at different times and disagree on the windows until all
    did: a broadcast from a relay of the lossy windows' turns that is not a relay of ours
    shows a loss noticed there, and turns ours on (Relay.adopt_loss); one from a relay of our
    own turns does not."""
    # The rotation's lossy turns and LOSSY_WINDOW (the hub term's turns last hub_term windows).
    net, names = _mesh(6, hub_term=ROTATION)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    w = ctx.config.push_interval
    mine = names[0]
    ours_at: tuple[float, str] | None = None  # a relay of our own turns
    theirs_at: tuple[float, str] | None = None  # a relay of the lossy turns only
    now = net.now
    while ours_at is None or theirs_at is None:
        now += 0.01
        ours = {relay.relay_of(window_index(now, w) - j) for j in (0, 1, 2)} - {mine, None}
        lossy = {relay.relay_of(window_index(now, w * LOSSY_WINDOW) - j) for j in (0, 1, 2)}
        if ours and ours_at is None:
            ours_at = (now, sorted(ours)[0])  # type: ignore[type-var]
        only = lossy - ours - {mine, None}
        if only and theirs_at is None:
            theirs_at = (now, sorted(only)[0])  # type: ignore[type-var]
    empty = b"\x00"
    at, name = ours_at  # no sign of a loss
    relay.on_hint(core._conns[name], "s", empty, at)
    assert not ctx.lossy(at)
    at, name = theirs_at
    relay.on_hint(core._conns[name], "s", empty, at)
    assert ctx.lossy(at) and ctx.window(at) == pytest.approx(w * LOSSY_WINDOW)


def test_without_a_loss_noticed_nobody_turns_the_loss_repair_on() -> None:
    net, names = _mesh(7)
    _writes(net, names, net.now, 2.0, "")
    for _ in range(50):
        net.run_for(0.05)
        assert not any(net.nodes[n].core._ctx.lossy(net.now) for n in names)  # type: ignore[union-attr]
    net.run_until_converged(30)


def test_what_came_before_the_first_loss_is_repeated_once_noticed() -> None:
    """Broadcasts before a loss was noticed had no repeats: their news is kept (bytes only)
    and goes once with our next batch when the loss is noticed (Relay._repeat_recent)."""
    net, names = _mesh(8)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    conn = core._conns[names[1]]
    now = net.now
    relay.on_broadcast(conn, "s", (b"old",), now - 10.0)  # long before: dropped
    relay.on_broadcast(conn, "s", (b"a", b"b"), now)
    assert not relay.own and [r[2] for r in relay.recent] == [(b"a", b"b")]
    ctx.loss_seen_at = now + 0.1
    relay.on_broadcast(conn, "s", (b"c",), now + 0.1)
    assert relay.own["s"][:2] == [b"a", b"b"] and not relay.recent
    relay.on_broadcast(conn, "t", (b"d",), now + 0.2)  # once: not again
    assert relay.own["s"][:2] == [b"a", b"b"] and b"a" not in relay.own.get("t", [])


def test_under_loss_a_repair_asked_again_is_asked_of_one_more_peer() -> None:
    """A repair's first retry goes to its peer and to one more holder; a first ask and later
    retries to one peer only. A link with no round trip of its own uses the others'."""
    net, names = _mesh(9)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, repairs = core._ctx, core._p.repairs
    conns = list(core._conns.values())
    conn, timed = conns[0], conns[1]
    now = net.now
    assert repairs.timeout(conn, now) == core.config.repair_timeout  # no loss seen
    ctx.loss_seen_at = now
    timed.repair.srtt, timed.repair.rttvar = 0.2, 0.0
    assert repairs.timeout(conn, now) == pytest.approx(0.25)  # the other link's round trip
    ctx.outbox.clear()
    repairs.ask(conn, "s", now)
    assert [p for p, _ in ctx.outbox] == [conn.name]
    ctx.outbox.clear()
    repairs.retry(now + 0.3)
    asked = [p for p, m in ctx.outbox if isinstance(m, SyncRequest)]
    assert asked[0] == conn.name and len(asked) == 2 and asked[1] != conn.name
    ctx.outbox.clear()
    for c in conns:  # the other peer's repair is over; the first one's is asked a third time
        if c.name == asked[1]:
            repairs.done(c, "s")
    repairs.retry(now + 0.6)
    assert [p for p, m in ctx.outbox if isinstance(m, SyncRequest)] == [conn.name]


def test_under_loss_a_relay_broadcast_times_its_link() -> None:
    """The last window's relay broadcast at that window's end: its travel time, doubled, is a
    round-trip sample of the link (Relay._time_broadcast); another sender's is not, and none
    without a loss seen."""
    net, names = _mesh(10)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    now = net.now
    w = ctx.config.push_interval
    start = window_index(now, w) * w + w  # the next window, lossless
    last = relay.relay_of(window_index(start, w) - 1)
    assert last is not None and last != names[0]
    relay.on_hint(core._conns[last], "s", b"\x00", start + 0.1)
    assert core._conns[last].repair.srtt is None  # no loss seen: nothing timed
    ctx.loss_seen_at = now
    lw = ctx.window(now)
    start = window_index(now, lw) * lw + lw
    k = window_index(start, lw)
    last = relay.relay_of(k - 1)
    other = next(n for n in names[1:] if n not in (last, relay.relay_of(k), relay.relay_of(k - 2)))
    relay.on_hint(core._conns[other], "s", b"\x00", start + 0.1)
    assert core._conns[other].repair.srtt is None
    relay.on_hint(core._conns[last], "s", b"\x00", start + 0.1)  # type: ignore[index]
    assert core._conns[last].repair.srtt == pytest.approx(0.2)  # type: ignore[index]


def test_a_lack_a_hint_showed_stays_until_covered() -> None:
    """A relay's hint showed we lack something; a later relay's hint we cover (it lacks the
    same) must not erase that: the lack stays until our state covers the first hint, and the
    patience timer asks for it (a straggler waited 1.5 s for a later hint in Glomers seed 9)."""
    net, names = _mesh(11)
    core = net.nodes[names[0]].core
    assert core is not None
    ctx, relay = core._ctx, core._p.relay
    now = net.now
    ctx.loss_seen_at = now
    doc: pycrdt.Doc = pycrdt.Doc()
    doc.get("m", type=pycrdt.Map)["k"] = 1
    ahead = doc.get_state()  # a state vector we do not cover (we do not hold "s" at all)
    relay.lacking["s"] = (now, ahead, names[1])
    relay.on_hint(core._conns[names[2]], "s", b"\x00", now + 0.05)  # a relay lacking it too
    assert relay.lacking["s"] == (now, ahead, names[1])
