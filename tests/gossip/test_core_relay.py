"""GossipCore driven directly: the rotating relay (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

# -- rotating relay -------------------------------------------------------------------------------

RCFG = GossipConfig(
    push_interval=W,
    full_mesh_max=4,
    anti_entropy_interval=1000.0,
    anti_entropy_jitter=0.0,
    peer_exchange_interval=1000.0,
    relay_settle=0.0,
)
#: RCFG with the one-window rotation under loss (``hub_term`` 1), for the tests of the
#: rotation's own loss repair (the hub term is the default since h-glom5).
ROTATION_CFG = replace(RCFG, hub_term=1)


def relay_mesh(n: int, cfg: GossipConfig = RCFG) -> dict[str, GossipCore]:
    """``n`` cores, every pair connected (the smaller name dialled), views settled."""
    cores = {f"r{i}": make(f"r{i}", config=cfg, run=i) for i in range(n)}
    names = sorted(cores)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            connect(cores[a], cores[b])
    deliver(cores, 0.0)
    settle(cores, W)  # membership news of the connects
    settle(cores, 2 * W)
    return cores


def relay_at(cores: dict[str, GossipCore], t: float) -> str:
    """The relay of the window holding ``t`` (every core of a relay_mesh agrees)."""
    r = cores["r0"].relay_at(t)
    assert r is not None
    return r


def pushes(out: list[tuple[str, Message]]) -> list[tuple[str, Push]]:
    return [(p, m) for p, m in out if isinstance(m, Push)]


def test_rotating_relay_writer_to_relay_to_everyone() -> None:
    cores = relay_mesh(6)
    assert {c.mode() for c in cores.values()} == {RELAY}
    # Every agent sees the same relay for a window, and all take turns.
    assert len({c.relay_at(10.1) for c in cores.values()}) == 1
    assert {relay_at(cores, 10.0 + k * W) for k in range(6)} == set(cores)
    relay = relay_at(cores, 10.25)  # relays window [10.25, 10.5)
    before = relay_at(cores, 10.0)
    w = next(n for n in sorted(cores) if n not in (relay, before))
    others = sorted(set(cores) - {w, relay})
    delta = put(cores[w], "s", "k", 1)
    cores[w].local_update("s", delta, 10.1)
    assert cores[w].data_to_send() == []
    cores[w].tick(10.25)  # the boundary: one message, to the coming window's relay
    assert cores[w].data_to_send() == [(relay, Push("s", (delta,), None, 1, relay=True))]
    cores[relay].receive(w, rt(Push("s", (delta,), None, 1, relay=True)), 10.35)
    cores[relay].tick(10.4)
    assert cores[relay].data_to_send() == []  # it waits for the end of its window...
    cores[relay].tick(10.5)  # ...then one message to every other agent, with its state vector
    sv = reps(cores[relay]).state_vector("s")
    assert cores[relay].data_to_send() == [
        (o, Push("s", (delta,), None, 1, hint=sv)) for o in others
    ]
    for o in others:
        cores[o].receive(relay, rt(Push("s", (delta,), None, 1, hint=sv)), 10.6)
        assert content(cores[o], "s") == {"k": 1.0}
        assert cores[o].data_to_send() == []  # nothing passed on, nothing missed


def test_the_relay_sends_its_own_writes_with_its_broadcast() -> None:
    cores = relay_mesh(6)
    relay = relay_at(cores, 10.25)
    r = cores[relay]
    d1 = put(r, "s", "a", 1)
    r.local_update("s", d1, 10.1)  # the window before its own: held for its broadcast
    r.tick(10.25)
    assert r.data_to_send() == []
    d2 = put(r, "s", "b", 2)
    r.local_update("s", d2, 10.3)
    r.tick(10.5)
    out = pushes(r.data_to_send())
    assert sorted(p for p, _ in out) == sorted(set(cores) - {relay})
    # Its own writes merged into one update (h-fans; before, (d1, d2)), equal in effect.
    assert all(len(m.updates) == 1 and not m.relay for _, m in out)
    other, push = out[0]
    cores[other].receive(relay, rt(push), 10.6)
    assert content(cores[other], "s") == {"a": 1.0, "b": 2.0}


def test_a_writer_merges_its_own_writes_and_never_others_held_with_them() -> None:
    # Under loss a writer's batch also holds others' updates (repeats of broadcasts it got,
    # _relay_loss.py): only its own writes of the window are merged (h-fans). A first
    # version merged the whole batch: Glomers seed 1 at 20 % loss, 4.51 messages per write
    # against 3.83.
    cores = relay_mesh(6)
    relay = relay_at(cores, 10.25)
    w, other = [n for n in sorted(cores) if n not in (relay, relay_at(cores, 10.0))][:2]
    theirs = put(cores[other], "s", "x", 9)
    cores[w].receive(other, rt(Push("s", (theirs,))), 10.05)
    cores[w].data_to_send()
    cores[w]._p.relay.own.setdefault("s", []).append(theirs)  # as on_broadcast holds it
    d1, d2 = put(cores[w], "s", "a", 1), put(cores[w], "s", "b", 2)
    cores[w].local_update("s", d1, 10.1)
    cores[w].local_update("s", d2, 10.11)
    cores[w].tick(10.25)
    ((to, push),) = pushes(cores[w].data_to_send())
    assert to == relay and push.relay
    assert len(push.updates) == 2 and push.updates[0] == theirs  # ours: one, after theirs
    doc: pycrdt.Doc = pycrdt.Doc()
    doc.apply_update(push.updates[1])
    assert doc.get("m", type=pycrdt.Map).to_py() == {"a": 1.0, "b": 2.0}


def test_a_relay_passes_on_a_batch_it_cannot_integrate_yet() -> None:
    # A writer's next batch can reach the next relay before the previous relay's broadcast
    # of its previous batch (Yjs then keeps it pending): it is passed on all the same.
    cores = relay_mesh(6)
    r41, r42 = relay_at(cores, 10.25), relay_at(cores, 10.5)
    w = next(n for n in sorted(cores) if n not in (r41, r42, relay_at(cores, 10.0)))
    d1 = put(cores[w], "s", "k1", 1)
    d2 = put(cores[w], "s", "k2", 2)  # same client, next clock: needs d1
    sv = reps(cores[r42]).state_vector("s") if "s" in reps(cores[r42]).docs else EMPTY_STATE_VECTOR
    cores[r42].receive(w, rt(Push("s", (d2,), None, 1, relay=True)), 10.6)
    assert (
        reps(cores[r42]).state_vector("s") == sv or sv == EMPTY_STATE_VECTOR
    )  # pending: nothing new
    cores[r42].tick(10.75)
    out = pushes(cores[r42].data_to_send())
    assert sorted(p for p, _ in out) == sorted(set(cores) - {w, r42})
    assert all(m.updates == (d2,) for _, m in out)
    cores[r42].receive(w, rt(Push("s", (d1,), None, 2, relay=True)), 10.8)
    assert content(cores[r42], "s") == {"k1": 1.0, "k2": 2.0}


def test_a_missed_broadcast_shows_in_the_next_hint_and_is_repaired() -> None:
    cores = relay_mesh(6)
    r41, r42 = relay_at(cores, 10.25), relay_at(cores, 10.5)
    x = next(n for n in sorted(cores) if n not in (r41, r42))
    d1 = put(cores[r41], "s", "k1", 1)
    for n in (r42,):  # r41's broadcast reached r42, not x
        cores[n].receive(r41, rt(Push("s", (d1,))), 10.6)
    d2 = put(cores[r42], "s", "k2", 2)
    cores[r42].local_update("s", d2, 10.6)
    cores[r42].tick(10.75)
    (msg,) = [m for p, m in pushes(cores[r42].data_to_send()) if p == x]
    assert msg.hint == reps(cores[r42]).state_vector("s")
    cores[x].receive(r42, rt(msg), 10.85)
    assert content(cores[x], "s") == {"k2": 2.0}
    (repair,) = cores[x].data_to_send()  # what it lacks, from the agent that has it
    assert repair == (r42, SyncRequest((("s", reps(cores[x]).state_vector("s")),)))
    cores[r42].receive(x, rt(repair[1]), 10.9)
    ((_, diff),) = cores[r42].data_to_send()
    cores[x].receive(r42, rt(diff), 11.0)
    assert content(cores[x], "s") == {"k1": 1.0, "k2": 2.0}
    assert cores[x].data_to_send() == []  # a repair needs no step-5 reply


def test_a_batch_lost_on_the_way_to_the_relay_is_pushed_again() -> None:
    # The one-window rotation (hub_term 1): the retry goes to the coming window's relay. Under
    # the hub term (the default since h-glom5) the retry itself is a loss noticed, the turns
    # become hub_term windows long, and in this 6-agent mesh the writer is then the hub of
    # the moment and broadcasts its batch itself: tests/test_relay_hub.py covers that mode.
    cores = relay_mesh(6, ROTATION_CFG)
    busy = {relay_at(cores, 10.0 + k * W) for k in range(5)}  # relays of the next windows
    w = next(n for n in sorted(cores) if n not in busy)
    delta = put(cores[w], "s", "k", 1)
    cores[w].local_update("s", delta, 10.1)
    cores[w].tick(10.25)
    assert len(pushes(cores[w].data_to_send())) == 1  # lost
    sent: list[tuple[float, str, Push]] = []
    while not sent:  # no broadcast shows it: again, to the relay of the coming window
        t = cores[w].next_deadline()
        assert t is not None and t < 11.5
        cores[w].tick(t)
        sent += [(t, p, m) for p, m in pushes(cores[w].data_to_send())]
    ((at, to, again),) = sent
    assert again.updates == (delta,) and again.relay
    assert at >= 10.25 + cores[w].config.relay_retry and to == cores[w].relay_at(at)

    # A broadcast whose hint covers the batch confirms it: no retry.
    cores = relay_mesh(6, ROTATION_CFG)
    delta = put(cores[w], "s", "k", 1)
    cores[w].local_update("s", delta, 10.1)
    cores[w].tick(10.25)
    ((relay, push),) = pushes(cores[w].data_to_send())
    cores[relay].receive(w, rt(push), 10.3)
    other = put(cores[relay], "s", "other", 2)
    cores[relay].local_update("s", other, 10.3)
    cores[relay].tick(10.5)
    (back,) = [m for p, m in pushes(cores[relay].data_to_send()) if p == w]
    cores[w].receive(relay, rt(back), 10.6)
    cores[w].tick(11.0)
    assert pushes(cores[w].data_to_send()) == []


def test_acks_travel_through_the_relays_to_everyone() -> None:
    cores = relay_mesh(6)
    relay = relay_at(cores, 10.25)
    x = next(
        n for n in sorted(cores) if n not in (relay, relay_at(cores, 10.0), relay_at(cores, 10.5))
    )
    reps(cores[x]).change("s", lambda d: d.get("m", type=pycrdt.Map).__setitem__("k", 1))
    reps(cores[x]).commit()
    cores[x].durable(["s"], 10.1)
    state = ShardState("s", *reps(cores[x]).durable_state("s"))
    cores[x].tick(10.25)
    assert cores[x].data_to_send() == []  # waits ack_delay for a batch to ride on
    cores[x].tick(10.1 + cores[x].config.ack_delay)
    assert cores[x].data_to_send() == []  # none came: alone, at the next boundary...
    cores[x].tick(10.5)  # ...to the relay of the coming window
    assert cores[x].data_to_send() == [(cores[x].relay_at(10.5), Ack((state,), forward=True))]
    r = cores[x].relay_at(10.5)
    assert r is not None
    cores[r].receive(x, rt(Ack((state,), forward=True)), 10.6)
    assert cores[r].replicated("s", state.state_vector, state.delete_set) == (x,)
    cores[r].tick(10.75)  # the end of its window: passed on to everyone else
    out = cores[r].data_to_send()
    assert sorted(p for p, _ in out) == sorted(set(cores) - {x, r})
    assert all(m == Ack((), (RelayedAck(x, state, 1),)) for _, m in out)
    for p, m in out:
        cores[p].receive(r, rt(m), 10.85)
        assert cores[p].replicated("s", state.state_vector, state.delete_set) == (x,)


def test_relay_only_connections_wait_for_the_view_to_settle() -> None:
    cfg = GossipConfig(full_mesh_max=4, fanout=2, relay_settle=2.0)
    cores = mesh_views(12, cfg)
    early: dict[str, list[str]] = {}
    for name, core in cores.items():
        assert core.mode() == RELAY and core.neighbours() == frozenset(set(cores) - {name})
        core.tick(1.5)
        early[name] = core.dials()
    # the tree's edges (and only those) first: at most fanout+1 per agent...
    assert any(early.values()) and all(len(d) <= cfg.fanout + 1 for d in early.values())
    later = 0
    for core in cores.values():
        core.tick(2.0)  # ...the others once the view has not changed for relay_settle
        later += len(core.dials())
    assert later > sum(len(d) for d in early.values())
