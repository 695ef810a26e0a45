"""GossipCore driven directly: broadcast links (a medium that fans out, such as an MQTT broker)."""

from __future__ import annotations

from corepair import *  # noqa: F403

from crdtsync.gossip.acks import WANT_ACK
from crdtsync.messages import RelayedAck

# ruff: noqa: F405 (names from corepair)


def _star(n: int) -> tuple[GossipCore, list[GossipCore]]:
    """``a`` with broadcast links to ``n`` peers (each with a broadcast link back)."""
    a = make("a")
    peers = [make(f"p{i}") for i in range(n)]
    for p in peers:
        connect(a, p)
        a.broadcast_link(p.name)
        p.broadcast_link("a")
    settle({"a": a, **{p.name: p for p in peers}}, 0.25)
    return a, peers


def test_a_write_is_one_broadcast_whatever_the_number_of_links() -> None:
    a, peers = _star(5)
    delta = put(a, "s", "k", 1)
    a.local_update("s", delta, 5.1)  # idle this window: out at once, once
    assert a.data_to_send() == []
    (push,) = a.broadcasts_to_send()
    assert push == Push("s", (delta,), None, 1)
    for p in peers:
        assert p.receive_broadcast("a", rt(push), 5.2)
        assert content(p, "s") == {"k": 1.0}
        assert p.broadcasts_to_send() == []  # what came by broadcast is not broadcast again
    # a second write in the same window waits for the boundary, then goes as one batch
    d2, d3 = put(a, "s", "x", 2), put(a, "s", "y", 3)
    a.local_update("s", d2, 5.15)
    a.local_update("s", d3, 5.16)
    assert a.broadcasts_to_send() == []
    a.tick(5.25)
    assert a.broadcasts_to_send() == [Push("s", (d2, d3), None, 2)]
    assert [m for _, m in a.data_to_send() if isinstance(m, Push)] == []


def test_without_broadcast_links_nothing_is_broadcast() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    a.local_update("s", put(a, "s", "k", 1), 5.1)
    a.tick(5.25)
    assert a.broadcasts_to_send() == []
    assert [type(m).__name__ for _, m in a.data_to_send()] == ["Push"]
    assert a.effects().broadcasts == []


def test_a_broadcast_needs_no_link_and_a_gap_asks_for_a_repair() -> None:
    a, peers = _star(1)
    p = peers[0]
    stranger = make("z")  # no link with p
    d1, d2, d3 = put(stranger, "s", "a", 1), put(stranger, "s", "b", 2), put(stranger, "s", "c", 3)
    assert p.receive_broadcast("z", rt(Push("s", (d1,), None, 1)), 6.0)
    assert content(p, "s") == {"a": 1.0}
    p.data_to_send()
    # seq 3 after 1: seq 2 was lost; p asks a peer holding the shard (a) for what it lacks
    assert p.receive_broadcast("z", rt(Push("s", (d3,), None, 3)), 6.1)
    assert [(to, type(m).__name__) for to, m in p.data_to_send()] == [("a", "SyncRequest")]
    assert p.receive_broadcast("z", rt(Push("s", (d2,), None, 4)), 6.2)  # no second ask
    assert [m for _, m in p.data_to_send() if isinstance(m, SyncRequest)] == []


def test_a_broadcast_carries_deltas_only_and_an_ack_needs_no_link() -> None:
    a, peers = _star(1)
    p = peers[0]
    good = put(a, "s", "k", 1)
    with pytest.raises(ProtocolError):  # an ack riding on a broadcast: refused, not applied
        p.receive_broadcast("a", Push("s", (good,), (b"\x00", b"\x00"), 1), 6.0)
    with pytest.raises(ProtocolError):
        p.receive_broadcast("a", Push("s", (b"\x01\x02junk", good), None, 1), 6.0)
    with pytest.raises(ProtocolError):
        p.receive_broadcast("a", PeerList(()), 6.0)
    with pytest.raises(ProtocolError) as refused:  # one invalid update: refused when applied
        p.receive_broadcast("a", Push("s", (b"\x01\x02junk",), None, 1), 6.0)
    assert refused.value.code == CloseCode.INVALID_UPDATE
    assert "invalid update for 's'" in str(refused.value)
    assert content(p, "s") == {}
    state = ShardState("s", b"\x00", b"\x00")
    assert not p.receive_broadcast("z", Ack((state,), ()), 6.0)  # a stranger's: unused
    p.discovered("z", "mem://z", 6.0)  # present on the medium: believed without a link
    assert p.receive_broadcast("z", Ack((state,), ()), 6.1)
    assert p.replicated("s", b"\x00", b"\x00") == ("z",)
    with pytest.raises(ProtocolError):  # passing on others' acks is not a broadcast's job
        p.receive_broadcast("z", Ack((), (RelayedAck("a", state, 0),)), 6.2)


def _acks_of(core: GossipCore, now: float) -> tuple[list[Ack], list[tuple[str, Ack]]]:
    core.tick(now)
    broadcast = [m for m in core.broadcasts_to_send() if isinstance(m, Ack)]
    direct = [(to, m) for to, m in core.data_to_send() if isinstance(m, Ack)]
    return broadcast, direct


def _unlinked(names: tuple[str, ...]) -> dict[str, GossipCore]:
    """Cores that know each other by presence only, each with a broadcast link to a spare
    core (so that the medium is in use), none with a link to another of ``names``."""
    cores = {n: make(n) for n in names}
    for n, c in cores.items():
        spare = make(f"x{n}")
        connect(c, spare)
        c.broadcast_link(spare.name)
        for m in names:
            if m != n:
                c.discovered(m, f"mem://{m}", 1.0)
    return cores


def test_broadcast_writes_are_not_acked_unless_asked() -> None:
    cores = _unlinked(("a", "b", "c"))
    a = cores["a"]
    a.local_update("s", put(a, "s", "k", 1), 5.1)
    (push,) = a.broadcasts_to_send()
    for name in ("b", "c"):
        p = cores[name]
        p.receive_broadcast("a", rt(push), 5.1)
        p.durable(reps(p).commit(), 5.12)
        assert _acks_of(p, 6.0) == ([], [])  # nobody waits: no ack, not even per link
    a, peers = _star(4)  # linked to the writer this time: still nothing
    a.local_update("s", put(a, "s", "k", 1), 5.1)
    (push,) = a.broadcasts_to_send()
    for p in peers:
        p.receive_broadcast("a", rt(push), 5.1)
        p.durable(reps(p).commit(), 5.12)
        assert _acks_of(p, 6.0) == ([], [])


def test_a_broadcast_want_ack_gets_one_broadcast_ack_from_each_agent_without_links() -> None:
    cores = _unlinked(("a", "b", "c"))
    a = cores["a"]
    a.local_update("s", put(a, "s", "k", 1), 5.1)
    (push,) = a.broadcasts_to_send()
    for name in ("b", "c"):
        cores[name].receive_broadcast("a", rt(push), 5.1)
        cores[name].durable(reps(cores[name]).commit(), 5.12)
    a.want_acks("s", 5.2)  # a waits in replicated(): one broadcast asks everyone
    a.tick(5.3)
    (ask,) = [m for m in a.broadcasts_to_send() if isinstance(m, Push)]
    assert ask.updates == (WANT_ACK,)
    for name in ("b", "c"):
        p = cores[name]
        p.receive_broadcast("a", rt(ask), 5.3)
        broadcast, direct = _acks_of(p, 6.0)
        assert direct == [] and len(broadcast) == 1  # one publish, for every agent
        assert broadcast[0].states[0].shard == "s"
        assert a.receive_broadcast(name, rt(broadcast[0]), 6.0)
        # the next commit of it is acked too (a write may land after the first capture)
        p.local_update("s", put(p, "s", name, 2), 6.1)
        p.durable(reps(p).commit(), 6.2)
        assert len(_acks_of(p, 7.0)[0]) == 1
    reps(a).commit()
    assert set(a.replicated("s", *reps(a).durable_state("s"))) == {"b", "c"}
    # asked again with nothing new (the asker may have missed it): acked again, once
    p = cores["b"]
    p.receive_broadcast("c", rt(Push("s", (WANT_ACK,), None, 1)), 8.0)
    assert len(_acks_of(p, 9.0)[0]) == 1
    assert _acks_of(p, 10.0) == ([], [])


def test_every_ask_for_acks_is_broadcast_even_on_an_idle_medium() -> None:
    cores = _unlinked(("a", "b"))
    a = cores["a"]
    a.local_update("s", put(a, "s", "k", 1), 5.1)
    a.broadcasts_to_send()
    for t in (6.0, 7.0, 8.0):  # replicated() asks again while it waits
        a.want_acks("s", t)
        a.tick(t + 0.01)
        asks = [m for m in a.broadcasts_to_send() if isinstance(m, Push)]
        assert [m.updates for m in asks] == [(WANT_ACK,)], t


def test_presence_feeds_the_membership_view() -> None:
    a = make("a")
    a.discovered("b", "mem://b", 1.0)
    assert "b" in a.members()
    a.departed("b", 2.0)
    assert "b" not in [p.name for p in a.peers() if p.state in ("alive", "connected")]


def test_rounds_over_broadcast_links_wait_while_broadcasts_stream_in() -> None:
    """A round while broadcasts stream in compares states that differ by broadcasts still on
    their way, and its Diffs carry them again (issue 14): over a broadcast link it is
    skipped while broadcasts come and no repair is outstanding, but not forever, and
    periodic rounds come back once the broadcasts stop."""
    a, p = make("a"), make("p")
    connect(a, p)
    a.broadcast_link("p")
    p.broadcast_link("a")
    cores = {"a": a, "p": p}
    settle(cores, 0.25)
    writer = make("z")  # writes by broadcast only (no link with p)
    interval = CFG.anti_entropy_interval
    rounds: list[float] = []

    def step(t: float) -> None:  # every timer at t, then deliver; note p's rounds
        for core in cores.values():
            core.tick(t)
        rounds.extend(t for src, _, m in deliver(cores, t) if src == "p" and isinstance(m, Summary))

    seq, t = 0, 1.0
    while t < interval * 9:  # a broadcast every second, for 9 intervals
        seq += 1
        delta = put(writer, "s", f"k{seq}", seq)
        assert p.receive_broadcast("z", rt(Push("s", (delta,), None, seq)), t)
        step(t)
        t += 1.0
    # without the skip: a round every interval (9); with it, the one a link that never had a
    # round gets, and one forced within anti_entropy_skip_max intervals of it
    assert 1 <= len(rounds) <= 2, rounds
    if len(rounds) == 2:
        assert rounds[1] - rounds[0] >= interval * CFG.anti_entropy_skip_max
    # the broadcasts stop: a periodic round within two intervals
    quiet = len(rounds)
    end = t + 2 * interval
    while t < end:
        step(t)
        t += 1.0
    assert len(rounds) > quiet


def test_a_broadcast_moves_no_dial_timer() -> None:
    """A received broadcast is handled as a Push on a link (the light generation): the
    effects pass after it does not compute the dial candidates over all members again."""
    a, peers = _star(2)
    p = peers[0]
    for i in range(20):  # a membership for the candidates to walk
        p.discovered(f"m{i:02d}", f"mem://m{i:02d}", 5.0)
    p.dials()
    p.next_deadline()
    walked = 0
    real = p._p.dialer.candidates

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal walked
        walked += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    p._p.dialer.candidates = counting  # type: ignore[method-assign]
    writer = make("z")
    for seq in range(1, 51):
        delta = put(writer, "s", f"k{seq}", seq)
        assert p.receive_broadcast("z", rt(Push("s", (delta,), None, seq)), 5.0)
        p.dials()  # what a driver's effects pass asks
        p.next_deadline()
    assert content(p, "s")["k50"] == 50.0
    assert walked == 0


def test_one_turns_broadcasts_batched_as_handed_one_by_one() -> None:
    """``receive_broadcasts`` (the core's batched path, ``ReplicaSet.apply_many``) on the
    simulator's replicas: the same results, content, digest, repairs and acks as the same
    broadcasts handed to ``receive_broadcast`` one by one; and the batch did go through
    ``apply_many`` (the golden traces never take this path: no broadcast links there)."""
    writers = {n: make(n) for n in ("z1", "z2", "z3")}
    d = {n: [put(w, "s", f"{n}-{i}", i) for i in range(3)] for n, w in writers.items()}
    other = put(writers["z1"], "t", "k", 1)
    items: list[tuple[str, Message]] = [
        ("z1", Push("s", (d["z1"][0],), None, 1, authors=("z1",))),
        ("z2", Push("s", (d["z2"][0], d["z2"][1]), None, 1, authors=("z2", "z2"))),
        ("z3", Push("s", (b"\x07garbage",), None, 1)),  # refused alone
        ("z1", Push("s", (d["z1"][2],), None, 3)),  # seq 2 lost: a repair is asked
        ("z1", Push("t", (other,), None, 1)),  # a second shard, new here
        ("z3", Push("s", (WANT_ACK,), None, 2)),  # z3 waits in replicated()
        ("p0", Push("s", (d["z3"][0],), None, 1)),  # our own name: unused
        ("z2", Ack((ShardState("s", b"\x00", b"\x00"),), ())),  # from a stranger: unused
    ]
    runs = []
    for batched in (True, False):
        a, (p,) = _star(1)
        calls: list[str] = []
        real = reps(p).apply_many

        def spy(shard: str, group: object, real: object = real, calls: list = calls) -> bool:
            calls.append(shard)
            return real(shard, group)  # type: ignore[operator,no-any-return]

        reps(p).apply_many = spy  # type: ignore[method-assign]
        got = (
            p.receive_broadcasts([(s, rt(m)) for s, m in items], 6.0)
            if batched
            else [p._receive_one(s, rt(m), 6.0) for s, m in items]
        )
        p.durable(reps(p).commit(), 6.1)
        p.tick(7.0)
        runs.append(
            (
                [r if isinstance(r, bool) else (type(r), r.code) for r in got],
                content(p, "s"),
                content(p, "t"),
                reps(p).digest("s"),
                p.broadcasts_to_send(),
                reps(p).held("s"),
                # (a repair's state vector may differ: the batch checks the sequence numbers
                # once the turn's updates are in, so its SyncRequest asks for less)
                [(to, type(m).__name__) for to, m in p.data_to_send()],
            )
        )
        assert calls == (["s", "t"] if batched else [])
    assert runs[0] == runs[1]
    results, s_content, t_content, _, broadcasts, held, sent = runs[0]
    assert results[:3] == [True, True, (ProtocolError, CloseCode.INVALID_UPDATE)]
    assert results[6:] == [False, False]
    assert s_content == {"z1-0": 0.0, "z2-0": 0.0, "z2-1": 1.0}
    assert held == 1  # z1-2 waits for z1-1 (lost)
    assert t_content == {"k": 1.0}
    assert sent == [("a", "SyncRequest")] * 2  # repairs: z1's seq 2, z3's seq 1
    assert [type(m).__name__ for m in broadcasts] == ["Ack"]  # one broadcast ack, for z3


def test_a_broadcast_ack_owed_is_next_deadlines_timer() -> None:
    """A broadcast WANT_ACK leaves a fanout ack owed (``acks.fanout.owed``), the one acks
    timer neither a link nor ``owing`` holds: ``next_deadline``, which reads the acks'
    timers off their state when nothing is owed (h-recv4), still computes it (a flush
    scheduled before it may come first)."""
    cores = _unlinked(("a", "b"))
    a, b = cores["a"], cores["b"]
    a.local_update("s", put(a, "s", "k", 1), 5.1)
    (push,) = a.broadcasts_to_send()
    b.receive_broadcast("a", rt(push), 5.1)
    b.durable(reps(b).commit(), 5.12)
    b.tick(5.2)
    b.broadcasts_to_send()
    b.data_to_send()
    before = b.next_deadline()
    b.receive_broadcast("a", rt(Push("s", (WANT_ACK,), None, 2)), 5.3)
    assert b._p.acks.fanout.owed and not b._p.acks.owing
    due = b._p.acks.fanout_due()
    assert before is None or due < before
    assert b.next_deadline() <= due
    assert b._light_deadlines[2] == due  # the acks' timer, as acks.deadlines() gives it
