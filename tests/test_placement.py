"""Placement: rendezvous holders, the hand-off state machine, and partial replication over the
simulated network (convergence to R holders under churn, no lost shard, no foreign bytes,
acknowledged writes surviving the loss of R-1 holders)."""

from __future__ import annotations

import itertools
import random
from collections import Counter, deque

import pycrdt
import pytest
from crdtsync.transports.memory import MemoryReplicas
from shardsim import ShardNet

from crdtsync import wire
from crdtsync.errors import UsageError
from crdtsync.gossip import GossipConfig, GossipCore
from crdtsync.messages import Holdings, Message, Offer, ReadReply, ReadRequest
from crdtsync.placement import HOLDER, LEAVING, SUBSCRIBER, PlacementState, holders, majority
from crdtsync.readcache import ReadCache, snapshot_of
from crdtsync.sharding import Sharding, ShardingConfig

AGENTS = [f"a{i:02d}" for i in range(10)]


# ------------------------------------------------------------------------------------------------
# rendezvous hashing


def test_holders_are_r_distinct_members_whatever_the_order() -> None:
    for shard in ("board", "sensors/kitchen", "x"):
        h = holders(shard, AGENTS, 3)
        assert len(h) == len(set(h)) == 3 and set(h) <= set(AGENTS)
        assert holders(shard, reversed(AGENTS), 3) == h
        assert holders(shard, AGENTS + AGENTS[:2], 3) == h  # duplicates do not matter
    assert (
        holders("s", ["a", "b"], 3) == holders("s", ["b", "a"], 3)
        and len(holders("s", ["a", "b"], 3)) == 2
    )
    assert holders("s", ["a"], 1) == ("a",)
    assert holders("s", [], 2) == ()
    with pytest.raises(UsageError):
        holders("s", AGENTS, 0)
    # meshes place independently
    assert any(
        holders(f"s{i}", AGENTS, 3, mesh="m1") != holders(f"s{i}", AGENTS, 3, mesh="m2")
        for i in range(20)
    )


def test_a_join_moves_only_what_the_newcomer_takes_and_a_leave_only_what_it_held() -> None:
    shards = [f"s{i}" for i in range(2000)]
    before = {s: set(holders(s, AGENTS, 3)) for s in shards}
    after = {s: set(holders(s, AGENTS + ["new"], 3)) for s in shards}
    moved = [s for s in shards if before[s] != after[s]]
    for s in moved:  # the newcomer replaced exactly one holder; the other two stay
        assert "new" in after[s] and len(before[s] & after[s]) == 2
    assert abs(len(moved) / len(shards) - 3 / 11) < 0.05  # R/N of the shards, not a reshuffle
    gone = {s: set(holders(s, AGENTS[1:], 3)) for s in shards}
    for s in shards:
        if AGENTS[0] not in before[s]:
            assert gone[s] == before[s]
        else:
            assert len(gone[s] & before[s]) == 2


def test_load_is_balanced() -> None:
    load = Counter(a for i in range(3000) for a in holders(f"s{i}", AGENTS, 3))
    mean = 3000 * 3 / len(AGENTS)
    assert all(abs(n - mean) / mean < 0.15 for n in load.values()), load


def test_majority() -> None:
    assert [majority(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]


# ------------------------------------------------------------------------------------------------
# the hand-off state machine


def _state(name: str, members: list[str], r: int = 2) -> PlacementState:
    st = PlacementState(name, r, offer_interval=1.0, adopt_timeout=10.0)
    st.set_members(members)
    return st


def _shard_where(name: str, members: list[str], r: int, *, holder: bool) -> str:
    return next(
        s for i in itertools.count() if (name in holders(s := f"s{i}", members, r)) == holder
    )


def test_roles() -> None:
    members = ["a", "b", "c", "d"]
    st = _state("a", members)
    mine = _shard_where("a", members, 2, holder=True)
    other = _shard_where("a", members, 2, holder=False)
    assert st.role(mine) == HOLDER and st.role(other) == LEAVING
    st.subscribed.add(other)
    assert st.role(other) == SUBSCRIBER


def test_holder_offers_to_placement_holders_that_lack_the_shard_rate_limited() -> None:
    members = ["a", "b", "c", "d"]
    st = _state("a", members, r=3)
    s = _shard_where("a", members, 3, holder=True)
    others = [p for p in holders(s, members, 3) if p != "a"]
    plan = st.plan([s], {p: frozenset() for p in members[1:]}, members[1:], lambda _: (), now=0.0)
    assert plan.offers == {p: (s,) for p in sorted(others)}
    assert plan.drops == () and set(others) <= plan.wanted
    # not again within the offer interval; again after it; never to one that announces it
    assert st.plan([s], {}, members[1:], lambda _: (), now=0.5).offers == {}
    holds = {others[0]: frozenset({s})}
    assert st.plan([s], holds, members[1:], lambda _: (), now=1.0).offers == {others[1]: (s,)}
    # no offer to a placement holder that is not connected (it is wanted: dialled instead)
    plan = st.plan([s], {}, [others[0]], lambda _: (), now=5.0)
    assert plan.offers == {others[0]: (s,)} and others[1] in plan.wanted


def test_leaving_shard_is_dropped_only_when_every_placement_holder_acked_it() -> None:
    members = ["a", "b", "c", "d", "e"]
    st = _state("a", members, r=2)
    s = _shard_where("a", members, 2, holder=False)
    h1, h2 = holders(s, members, 2)
    conn = members[1:]
    # nobody announces it yet: offers go out, no drop
    plan = st.plan([s], {}, conn, lambda _: (h1, h2), now=0.0)
    assert plan.offers == {h1: (s,), h2: (s,)} and plan.drops == ()
    holds = {h1: frozenset({s}), h2: frozenset({s})}
    # both announce it, one ack covers our state: keep it
    assert st.plan([s], holds, conn, lambda _: (h1,), now=1.0).drops == ()
    # both acks cover it: drop
    assert st.plan([s], holds, conn, lambda _: (h1, h2, "zz"), now=2.0).drops == (s,)
    # a subscriber never drops, acks or not
    st.subscribed.add(s)
    assert st.plan([s], holds, conn, lambda _: (h1, h2), now=3.0).drops == ()


def test_holder_never_drops_and_keeps_subscribers_connected() -> None:
    members = ["a", "b", "c", "d"]
    st = _state("a", members, r=2)
    s = _shard_where("a", members, 2, holder=True)
    sub = next(p for p in members if p not in holders(s, members, 2))
    plan = st.plan([s], {sub: frozenset({s})}, members[1:], lambda _: members, now=0.0)
    assert plan.drops == () and sub in plan.wanted


def test_offers_are_adopted_only_where_the_view_agrees() -> None:
    members = ["a", "b", "c", "d"]
    st = _state("a", members, r=2)
    mine = _shard_where("a", members, 2, holder=True)
    other = _shard_where("a", members, 2, holder=False)
    assert st.accept_offer(mine, have=False, now=0.0)
    assert not st.accept_offer(mine, have=False, now=0.1)  # already adopting
    assert not st.accept_offer(other, have=False, now=0.0)
    held = next(s for i in itertools.count() if (s := f"h{i}") and "a" in holders(s, members, 2))
    assert not st.accept_offer(held, have=True, now=0.0)  # we have it already
    st.subscribed.add(other)
    assert st.accept_offer(other, have=False, now=0.0)
    # an adoption that gets no data is forgotten after adopt_timeout; one that got data ends
    st.plan([], {}, [], lambda _: (), now=5.0)
    assert set(st.adopting) == {mine, other}
    st.plan([other], {}, [], lambda _: (), now=6.0)
    assert set(st.adopting) == {mine}
    st.plan([other], {}, [], lambda _: (), now=10.5)
    assert st.adopting == {}


def test_view_changes_are_reported_once() -> None:
    st = PlacementState("a", 2)
    assert st.members == ("a",)
    assert st.set_members(["b", "c"])
    assert not st.set_members(["c", "b", "a"])
    assert st.members == ("a", "b", "c")


# ------------------------------------------------------------------------------------------------
# over the simulated network


def _settle(net: ShardNet, shards: list[str], timeout: float = 60.0) -> None:
    """Run until every shard is held by exactly its placement holders among running agents,
    each with a durable copy."""
    end = net.now + timeout
    while True:
        if all(net.holding(s) == net.expected(s) == net.durable_copies(s) for s in shards):
            return
        if net.now >= end:
            bad = {
                s: (sorted(net.holding(s)), sorted(net.expected(s)))
                for s in shards
                if net.holding(s) != net.expected(s)
            }
            raise AssertionError(f"seed {net.seed}: placement did not converge: {bad}")
        net.run_for(0.25)


@pytest.mark.parametrize("seed", [1, 2])
def test_placement_converges_to_r_holders_per_shard(seed: int) -> None:
    net = ShardNet(seed, r=3)
    net.grow(AGENTS)
    net.run_for(8)
    rng = random.Random(seed)
    shards = [f"s{i}" for i in range(30)]
    for i, s in enumerate(shards):  # written anywhere: at a holder or not
        net.put(rng.choice(AGENTS), s, "k", i)
    _settle(net, shards)
    for i, s in enumerate(shards):
        net.run_until_quiet(20)
        assert {net.value(n, s)["k"] for n in net.holding(s)} == {float(i)}
    # non-holders that wrote a shard handed it off and dropped it; every holder has it on disk
    for s in shards:
        assert net.durable_copies(s) == net.expected(s)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_churn_never_loses_a_shard_and_restores_r_copies_after_each_hand_off(seed: int) -> None:
    rng = random.Random(seed)
    net = ShardNet(seed, r=3)
    names = AGENTS[:8]
    net.grow(names)
    net.run_for(8)
    shards = [f"s{i}" for i in range(24)]
    written: dict[str, dict[str, float]] = {s: {} for s in shards}

    def write(i: int) -> None:
        s = shards[i] if i < len(shards) else rng.choice(shards)  # every shard exists
        h = sorted(net.expected(s) & set(net.running()))
        if h:
            net.put(rng.choice(h), s, f"k{i}", i)
            written[s][f"k{i}"] = float(i)

    for i in range(40):
        write(i)
    _settle(net, shards)
    low_water: dict[str, int] = {}

    def sample() -> None:
        for s in shards:
            low_water[s] = min(low_water.get(s, 99), len(net.durable_copies(s)))

    # joins: placement moves shards to the newcomers, and a move never takes copies below R
    for newcomer in ("b00", "b01"):
        net.grow([newcomer], rng)
        for _ in range(60):
            net.run_for(0.25)
            sample()
    _settle(net, shards)
    assert min(low_water.values()) >= 3, f"seed {seed}: a move dropped a copy early: {low_water}"

    # failures: each crash loses at most one copy per shard for as long as a hand-off takes
    i = 100
    for round_ in range(3):
        victim = rng.choice(net.running())
        net.crash(victim)
        for _ in range(3):
            write(i)
            i += 1
        net.run_for(net.config.suspect_timeout + 2)  # declared dead, re-replicated
        _settle(net, shards, timeout=30)
        for s in shards:
            assert len(net.durable_copies(s)) >= 3, f"seed {seed}: {s} below R after round {round_}"
        if round_ == 1:
            net.restart(victim)  # comes back with its old disk: those shards move back
            _settle(net, shards, timeout=30)
    net.run_until_quiet(30)
    for s in shards:
        got = net.join_of(sorted(net.holding(s)), s)
        assert got == written[s], f"seed {seed}: {s} lost writes"
        assert all(net.value(n, s) == got for n in net.holding(s))


def test_zero_bytes_of_foreign_shards_reach_non_holders() -> None:
    net = ShardNet(7, r=3)
    net.grow(AGENTS)
    net.run_for(8)
    rng = random.Random(7)
    shards = [f"s{i}" for i in range(20)]
    for i in range(200):
        s = rng.choice(shards)
        net.put(rng.choice(sorted(net.expected(s))), s, f"k{i % 7}", i)
        net.run_for(0.05)
    net.run_until_quiet(30)
    _settle(net, shards)
    assert net.meter.held and not net.meter.foreign, net.meter.foreign
    for name in AGENTS:  # and no agent ever created a replica of a shard it does not hold
        docs = set(net.nodes[name].replicas.docs)
        assert docs == {s for s in shards if name in net.expected(s)}


def test_a_write_acked_by_r_minus_1_peers_survives_the_loss_of_any_r_minus_1_holders() -> None:
    r = 3
    for lost_count, combo_index in [(2, i) for i in range(3)]:
        net = ShardNet(11 + combo_index, r=r)
        net.grow(AGENTS[:7])
        net.run_for(8)
        s = "board"
        placed = sorted(net.expected(s))
        writer = placed[0]
        net.put(writer, s, "task", "ship it")
        while len(net.replicated(writer, s)) < r - 1:  # replicated(peers=R-1)
            net.run_for(0.01)
        victims = list(itertools.combinations(placed, lost_count))[combo_index]
        for v in victims:  # instantly, losing what was not yet on their disks
            net.crash(v, lose_unflushed=True)
        reader = next(n for n in net.running() if n not in placed)
        value, _ = net.read(reader, s)  # at once: from the survivor
        assert value == {"task": "ship it"}, (victims, value)
        net.run_for(net.config.suspect_timeout + 2)
        _settle(net, [s], timeout=30)  # and re-replicated to R holders
        assert len(net.durable_copies(s)) == r
        reader = next(n for n in net.running() if n not in net.expected(s))
        net.caches.clear()
        value, _ = net.read(reader, s, quorum="all")
        assert value == {"task": "ship it"}, (victims, value)


# ------------------------------------------------------------------------------------------------
# two cores driven directly: the hand-off's messages, in order


def _core(name: str, r: int = 1) -> GossipCore:
    cfg = GossipConfig(push_interval=0.25, anti_entropy_interval=100.0)
    policy = Sharding(ShardingConfig(replication_factor=r))
    return GossipCore(
        name,
        MemoryReplicas(random.Random(name)),
        rng=random.Random(0),
        config=cfg,
        address=f"mem://{name}",
        policy=policy,
    )


def _deliver(cores: dict[str, GossipCore], now: float) -> list[tuple[str, str, Message]]:
    log: list[tuple[str, str, Message]] = []
    queue = deque((n, d, m) for n, c in cores.items() for d, m in c.data_to_send())
    while queue:
        src, dst, msg = queue.popleft()
        log.append((src, dst, msg))
        cores[dst].receive(src, wire.decode(wire.encode(msg)), now)
        queue.extend((dst, d, m) for d, m in cores[dst].data_to_send())
    return log


def _commit(core: GossipCore, now: float) -> None:
    shards = core.replicas.commit()  # type: ignore[attr-defined]
    if shards:
        core.durable(shards, now)


def test_hand_off_messages_in_order_and_drop_after_the_ack() -> None:
    shard = _shard_where("a", ["a", "b"], 1, holder=False)  # placed on b alone
    a, b = _core("a"), _core("b")
    a.replicas.change(shard, lambda d: d.get("root", type=pycrdt.Map).__setitem__("k", "v"))  # type: ignore[attr-defined]
    _commit(a, 0.0)
    assert a.hello().shards == () == b.hello().shards  # holdings go after the handshake
    a.connection_made(wire.decode(wire.encode(b.hello())), 0.0, outbound=True)
    b.connection_made(wire.decode(wire.encode(a.hello())), 0.0, outbound=False)
    cores = {"a": a, "b": b}
    log = []
    for t in (0.0, 0.1, 0.25, 0.5):
        for c in cores.values():
            c.tick(t)
        log += _deliver(cores, t)
        _commit(b, t)
        log += _deliver(cores, t)
    mine = [
        (s, d, type(m).__name__)
        for s, d, m in log
        if type(m).__name__ in ("Holdings", "Offer", "SyncRequest", "Diff", "Ack")
    ]
    # a announces, offers the shard to its placement holder; b adopts (announcing first),
    # fetches it, commits, acks; then a drops its copy and says so
    want = [
        ("a", "b", "Offer"),
        ("b", "a", "Holdings"),
        ("b", "a", "SyncRequest"),
        ("a", "b", "Diff"),
    ]
    it = iter(mine)
    assert all(w in it for w in want), mine
    offer = next(m for s, d, m in log if isinstance(m, Offer))
    assert offer == Offer((shard,))
    holdings = [m for s, d, m in log if isinstance(m, Holdings) and s == "b"]
    assert holdings[-1].shards == (shard,)
    assert snapshot_of(b.replicas.docs[shard]) == {"k": "v"}  # type: ignore[attr-defined]
    assert [s for _, s in a.sharding.drops] == [shard]
    assert shard not in a.replicas.docs  # type: ignore[attr-defined]
    assert [m for s, d, m in log if isinstance(m, Holdings) and s == "a"][-1].shards == ()


def test_a_holder_answers_reads_with_what_the_asker_lacks() -> None:
    a, b = _core("a"), _core("b")
    shard = _shard_where("b", ["a", "b"], 1, holder=True)
    b.replicas.change(shard, lambda d: d.get("root", type=pycrdt.Map).update({"x": 1, "y": 2}))  # type: ignore[attr-defined]
    a.connection_made(wire.decode(wire.encode(b.hello())), 0.0, outbound=True)
    b.connection_made(wire.decode(wire.encode(a.hello())), 0.0, outbound=False)
    cores = {"a": a, "b": b}
    _deliver(cores, 0.0)
    qid = a.sharding.read(shard, quorum=1, state_vector=b"\x00", now=0.0, timeout=1.0)
    log = _deliver(cores, 0.0)
    reqs = [m for s, d, m in log if isinstance(m, ReadRequest)]
    replies = [m for s, d, m in log if isinstance(m, ReadReply)]
    assert reqs == [ReadRequest(qid, ((shard, b"\x00"),))]
    assert len(replies) == 1 and replies[0].id == qid and replies[0].last
    out = a.sharding.result(qid)
    assert out is not None and out.status == "ok"
    cache = ReadCache()
    joined = cache.join(shard, [u for _, u in out.answers[shard]], now=0.0, quorum=1)
    assert snapshot_of(joined) == {
        "x": 1.0,
        "y": 2.0,
    }
    # again with the cached state vector: nothing new, a reply of a few bytes
    qid = a.sharding.read(
        shard, quorum=1, state_vector=cache.state_vector(shard), now=1.0, timeout=1.0
    )
    log = _deliver(cores, 1.0)
    reply = next(m for s, d, m in log if isinstance(m, ReadReply))
    assert len(reply.shards[0][1] or b"") < 5
    # a shard it does not hold: None, and the read ends NOT_FOUND
    qid = a.sharding.read("nope", quorum=1, state_vector=b"\x00", now=2.0, timeout=1.0)
    _deliver(cores, 2.0)
    assert a.sharding.result(qid).status == "not_found"  # type: ignore[union-attr]
    # a non-holder never created a replica by reading
    assert set(a.replicas.docs) == set()  # type: ignore[attr-defined]


def test_holdings_go_in_pieces_that_do_not_grow_with_the_shard_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import crdtsync.sharding as sharding_module

    monkeypatch.setattr(sharding_module, "HOLDINGS_PIECE", 100)
    a, b = _core("a", r=2), _core("b", r=2)
    names = [f"shard-{i:03d}" for i in range(40)]
    for name in names:
        a.replicas.change(name, lambda d: d.get("root", type=pycrdt.Map).__setitem__("k", 1))  # type: ignore[attr-defined]
    a.connection_made(wire.decode(wire.encode(b.hello())), 0.0, outbound=True)
    b.connection_made(wire.decode(wire.encode(a.hello())), 0.0, outbound=False)
    log = _deliver({"a": a, "b": b}, 0.0)
    pieces = [m for s, d, m in log if isinstance(m, Holdings) and s == "a"]
    assert len(pieces) > 5 and all(len(wire.encode(m)) < 200 for m in pieces)
    assert not pieces[-1].more and any(m.more for m in pieces)
    assert sorted(n for m in pieces for n in m.shards if m.version == pieces[-1].version) == names
    assert b.sharding.peer_holdings()["a"] == frozenset(names)


def test_a_read_of_everything_goes_out_through_the_reply_budget() -> None:
    # Issue #11: an 11-byte ReadRequest with an empty prefix made us answer 4 MB at once,
    # outside the reply budget. Now the answer waits for the budget, frame by frame.
    from crdtsync.gossip.guard import QuotaSet
    from crdtsync.quotas import ByteBudget

    replies = ByteBudget(per_peer_rate=1e9, per_peer_burst=1e9, total_rate=2000, total_burst=2000)
    v = GossipCore(
        "v",
        MemoryReplicas(random.Random("v")),
        rng=random.Random(0),
        config=GossipConfig(push_interval=0.25, anti_entropy_interval=100.0, max_batch_bytes=1000),
        address="mem://v",
        policy=Sharding(ShardingConfig()),
        quotas=QuotaSet(replies=replies),
    )
    a = _core("a")
    for i in range(20):
        v.replicas.change(
            f"s{i:02d}", lambda d: d.get("root", type=pycrdt.Map).__setitem__("k", "x" * 500)
        )  # type: ignore[attr-defined]
    v.connection_made(wire.decode(wire.encode(a.hello())), 0.0, outbound=False)
    v.data_to_send()
    v.receive("a", ReadRequest(7, (), ""), 0.0)
    first = [m for _, m in v.data_to_send() if isinstance(m, ReadReply)]
    assert 1 <= len(first) < 5 and not first[-1].last  # the budget ran out: the rest waits
    got = [s for m in first for s, _ in m.shards]
    t = 0.0
    while not (got and first and first[-1].last) and t < 100:
        t += 1.0
        v.tick(t)
        first = [m for _, m in v.data_to_send() if isinstance(m, ReadReply)]
        got += [s for m in first for s, _ in m.shards]
    assert got == [f"s{i:02d}" for i in range(20)]  # all of it, in order, in the end
    assert v.quota_counters["quota.replies.bytes-total"] >= 1
