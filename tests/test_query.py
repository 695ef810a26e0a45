"""Scatter/gather reads: the pure query table with exact messages, the CRDT join of answers,
the wire format of the new messages, and reads over the simulated network (from an agent that
holds nothing, from diverged holders, of a shard nobody holds, with holders that do not
answer, from the cache, by prefix)."""

from __future__ import annotations

import random

import pycrdt
import pytest
from shardsim import ShardNet

from crdtsync import updates, wire
from crdtsync.errors import CloseCode, ProtocolError, ReplicationTimeout, ShardNotFound, UsageError
from crdtsync.messages import Holdings, Offer, ReadReply, ReadRequest
from crdtsync.query import NOT_FOUND, OK, TIMEOUT, QueryTable
from crdtsync.readcache import EMPTY_STATE_VECTOR, ReadCache, snapshot_of

E = EMPTY_STATE_VECTOR


# ------------------------------------------------------------------------------------------------
# the query table


def test_read_asks_quorum_targets_connected_first_and_ends_at_the_quorum() -> None:
    t = QueryTable(hedge_delay=0.25)
    qid = t.read(
        "s",
        ["h1", "h2", "h3"],
        quorum=1,
        state_vector=E,
        now=0.0,
        timeout=2.0,
        connected=["h2", "h3"],
    )
    assert t.sends(["h2", "h3"]) == [("h2", ReadRequest(qid, (("s", E),)))]
    assert t.sends(["h2", "h3"]) == []  # each request handed out once
    assert t.result(qid) is None
    assert t.receive("h2", ReadReply(qid, (("s", b"u2"),)), now=0.1)
    out = t.result(qid)
    assert out is not None and out.status == OK and out.answers == {"s": (("h2", b"u2"),)}
    assert out.missing == ("h1", "h3") and out.at == 0.1
    assert t.result(qid) is None  # taken
    assert not t.receive("h3", ReadReply(qid, (("s", b"late"),)), now=0.2)  # late: ignored
    assert t.active() == 0 and t.next_deadline() is None


def test_not_held_asks_the_next_target_and_nobody_holding_it_is_not_found() -> None:
    t = QueryTable()
    qid = t.read(
        "s", ["h1", "h2"], quorum=1, state_vector=E, now=0.0, timeout=2.0, connected=["h1", "h2"]
    )
    assert [p for p, _ in t.sends(["h1", "h2"])] == ["h1"]
    t.receive("h1", ReadReply(qid, (("s", None),)), now=0.1)
    assert [p for p, _ in t.sends(["h1", "h2"])] == ["h2"]
    t.receive("h2", ReadReply(qid, (("s", None),)), now=0.2)
    out = t.result(qid)
    assert out is not None and out.status == NOT_FOUND and out.answered == ("h1", "h2")
    # no targets at all: not found at once
    qid = t.read("s", [], quorum=1, state_vector=E, now=0.0, timeout=2.0)
    assert t.result(qid).status == NOT_FOUND  # type: ignore[union-attr]


def test_slow_holder_is_hedged_and_a_quorum_waits_for_that_many() -> None:
    t = QueryTable(hedge_delay=0.25)
    qid = t.read(
        "s",
        ["h1", "h2", "h3"],
        quorum=2,
        state_vector=b"\x01\x05\x03",
        now=0.0,
        timeout=2.0,
        connected=["h1", "h2", "h3"],
    )
    assert [p for p, _ in t.sends(["h1", "h2", "h3"])] == ["h1", "h2"]
    t.receive("h1", ReadReply(qid, (("s", b"a"),)), now=0.05)
    assert t.next_deadline() == 0.25
    t.tick(0.25)  # h2 is slow: ask h3 too
    assert [p for p, _ in t.sends(["h1", "h2", "h3"])] == ["h3"]
    t.receive("h3", ReadReply(qid, (("s", b"c"),)), now=0.3)
    out = t.result(qid)
    assert out is not None and out.status == OK and out.answers["s"] == (("h1", b"a"), ("h3", b"c"))


def test_query_table_timeout_names_the_holders_that_did_not_answer() -> None:
    t = QueryTable(hedge_delay=10.0)
    qid = t.read(
        "s",
        ["h1", "h2", "h3"],
        quorum=3,
        state_vector=E,
        now=0.0,
        timeout=1.0,
        connected=["h1", "h2"],
    )
    assert [p for p, _ in t.sends(["h1", "h2"])] == ["h1", "h2"]
    assert t.targets_waiting() == {"h3"}  # asked, not connected: the driver dials it
    t.receive("h1", ReadReply(qid, (("s", b"a"),)), now=0.1)
    t.tick(1.0)
    out = t.result(qid)
    assert out is not None and out.status == TIMEOUT and out.missing == ("h2", "h3")
    assert t.targets_waiting() == frozenset()


def test_a_scan_past_its_hedge_time_leaves_no_deadline_in_the_past() -> None:
    # A scan does not hedge (it asks every target at once), but its hedge time used to stay
    # due: next_deadline() stayed in the past after tick(), and the simulator ticked at the
    # same virtual instant forever (seen once the handshake took one round trip more).
    t = QueryTable(hedge_delay=0.25)
    qid = t.scan("p/", ["h1", "h2"], state_vectors={}, now=0.0, timeout=5.0)
    t.tick(0.3)
    assert t.next_deadline() == 5.0
    assert t.result(qid) is None


def test_quorum_that_can_no_longer_be_reached_ends_early() -> None:
    t = QueryTable()
    qid = t.read(
        "s", ["h1", "h2"], quorum=2, state_vector=E, now=0.0, timeout=5.0, connected=["h1", "h2"]
    )
    t.sends(["h1", "h2"])
    t.receive("h1", ReadReply(qid, (("s", b"a"),)), now=0.1)
    t.receive("h2", ReadReply(qid, (("s", None),)), now=0.1)
    out = t.result(qid)
    assert out is not None and out.status == TIMEOUT and out.missing == ("h2",)


def test_lost_connection_asks_another_and_requests_again_on_reconnect() -> None:
    t = QueryTable()
    t.read(
        "s", ["h1", "h2"], quorum=1, state_vector=E, now=0.0, timeout=5.0, connected=["h1", "h2"]
    )
    assert [p for p, _ in t.sends(["h1", "h2"])] == ["h1"]
    t.connection_lost("h1")
    assert [p for p, _ in t.sends(["h2"])] == ["h2"]
    assert [p for p, _ in t.sends(["h1"])] == ["h1"]


def test_scan_asks_everyone_and_ends_when_each_sent_its_last_frame() -> None:
    t = QueryTable()
    qid = t.scan(
        "sensors/", ["h1", "h2"], state_vectors={"sensors/a": b"\x01\x05\x03"}, now=0.0, timeout=2.0
    )
    sent = t.sends(["h1", "h2"])
    assert sent == [
        (p, ReadRequest(qid, (("sensors/a", b"\x01\x05\x03"),), "sensors/")) for p in ("h1", "h2")
    ]
    t.receive("h1", ReadReply(qid, (("sensors/a", b"1"),), last=False), now=0.1)
    t.receive("h1", ReadReply(qid, (("other", b"x"), ("sensors/b", b"2")), last=True), now=0.1)
    assert t.result(qid) is None
    t.receive("h2", ReadReply(qid, (("sensors/a", None),), last=True), now=0.2)
    out = t.result(qid)
    assert out is not None and out.status == OK
    assert out.answers == {
        "sensors/a": (("h1", b"1"),),
        "sensors/b": (("h1", b"2"),),
    }  # "other": ignored


def test_bad_arguments() -> None:
    t = QueryTable()
    with pytest.raises(UsageError):
        t.read("s", ["a"], quorum=0, state_vector=E, now=0.0, timeout=1.0)
    with pytest.raises(UsageError):
        t.scan("", ["a"], state_vectors={}, now=0.0, timeout=0.0)


# ------------------------------------------------------------------------------------------------
# the join


def _doc(client: int, **items: object) -> pycrdt.Doc:
    d = pycrdt.Doc(client_id=client)
    m = d.get("root", type=pycrdt.Map)
    for k, v in items.items():
        m[k] = v
    return d


def test_answers_are_merged_by_crdt_join_in_any_order() -> None:
    base = _doc(1, a="base", gone="x")
    left, right = pycrdt.Doc(client_id=2), pycrdt.Doc(client_id=3)
    for d in (left, right):
        d.apply_update(base.get_update())
    left.get("root", type=pycrdt.Map)["l"] = "left"
    del left.get("root", type=pycrdt.Map)["gone"]
    right.get("root", type=pycrdt.Map)["r"] = "right"
    want = {"a": "base", "l": "left", "r": "right"}
    for order in ([left, right], [right, left]):
        cache = ReadCache()
        got = snapshot_of(cache.join("s", [d.get_update() for d in order], now=0.0, quorum=2))
        assert got == want
    # a later read sends the cached state vector and gets only what it lacks
    cache = ReadCache(ttl=1.0)
    cache.join("s", [left.get_update()], now=0.0, quorum=1)
    assert cache.fresh("s", 0.5) == snapshot_of(left) and cache.fresh("s", 0.5, quorum=2) is None
    assert cache.fresh("s", 1.0) is None
    diff = right.get_update(cache.state_vector("s"))
    assert len(diff) < len(right.get_update())
    assert snapshot_of(cache.join("s", [diff], now=2.0, quorum=1)) == want


def test_local_base_starts_a_fresh_join() -> None:
    cache = ReadCache()
    cache.join("s", [_doc(1, old="x").get_update()], now=0.0, quorum=1)
    local = _doc(2, mine="y")
    assert snapshot_of(cache.join("s", [], now=1.0, quorum=1, base=local.get_update())) == {
        "mine": "y"
    }


# ------------------------------------------------------------------------------------------------
# the messages on the wire


@pytest.mark.parametrize(
    "msg",
    [
        Holdings(1, ("a", "b")),
        Offer(("a",)),
        ReadRequest(1, (("a", E),)),
        ReadRequest(2, (), ""),
        ReadReply(1, (("a", b"\x00\x00"), ("b", None))),
    ],
)
def test_new_messages_round_trip(msg: object) -> None:
    assert wire.decode(wire.encode(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields, code",
    [
        ([12, 1, [], None], CloseCode.MALFORMED_FRAME),  # neither shards nor prefix
        ([12, 1, [["b", E], ["a", E]], None], CloseCode.MALFORMED_FRAME),  # not sorted
        ([12, 1, [], "a b"], CloseCode.INVALID_SHARD),  # a prefix no name can have
        ([12, -1, [["a", E]], None], CloseCode.MALFORMED_FRAME),
        ([13, 1, [["a", 5]], True], CloseCode.MALFORMED_FRAME),
        ([13, 1, [["a//b", None]], True], CloseCode.INVALID_SHARD),
        ([11, []], CloseCode.MALFORMED_FRAME),  # an empty offer
        ([10, 1, ["b", "a"]], CloseCode.MALFORMED_FRAME),
    ],
)
def test_new_messages_are_validated(fields: list[object], code: CloseCode) -> None:
    import msgpack

    with pytest.raises(ProtocolError) as info:
        wire.decode(msgpack.packb(fields, use_bin_type=True))
    assert info.value.code == code


# ------------------------------------------------------------------------------------------------
# over the simulated network

AGENTS = [f"a{i:02d}" for i in range(9)]


def _mesh(seed: int, r: int = 3, **kw: object) -> ShardNet:
    net = ShardNet(seed, r=r, **kw)  # type: ignore[arg-type]
    net.grow(AGENTS)
    net.run_for(8)
    return net


def _not_holder(net: ShardNet, shard: str) -> str:
    return next(n for n in sorted(net.running()) if n not in net.expected(shard))


def test_read_from_an_agent_that_holds_nothing_is_the_merged_state_of_the_holders() -> None:
    net = _mesh(21)
    rng = random.Random(21)
    shards = [f"s{i}" for i in range(8)]
    for i in range(60):
        s = rng.choice(shards)
        net.put(rng.choice(sorted(net.expected(s))), s, f"k{i % 5}", i)
        if i % 7 == 0:
            net.delete(rng.choice(sorted(net.expected(s))), s, f"k{(i + 1) % 5}")
        net.run_for(0.03)
    net.run_until_quiet(20)
    for s in shards:
        reader = _not_holder(net, s)
        before = set(net.nodes[reader].replicas.docs)
        value, latency = net.read(reader, s)
        assert value == net.join_of(sorted(net.expected(s)), s)
        # one round trip, plus a dial at most: the websocket upgrade and the Hello exchange
        # (the acceptor answers the dialler's Hello only once it arrived), a round trip each
        assert latency <= 2 * 0.05 + 0.2 + 2 * 0.05
        assert set(net.nodes[reader].replicas.docs) == before  # a read creates no replica
    assert not net.meter.foreign


@pytest.mark.parametrize("seed", [31, 32])
def test_read_of_diverged_holders_is_their_join(seed: int) -> None:
    net = _mesh(seed)
    s = "board"
    h = sorted(net.expected(s))
    net.put(h[0], s, "base", 1)
    net.put(h[0], s, "gone", 1)
    net.run_until_quiet(20)
    reader = _not_holder(net, s)
    for a, b in ((h[0], h[1]), (h[1], h[2]), (h[0], h[2])):
        net.set_link(a, b, loss=1.0)  # the holders cannot hear each other; the reader hears all
    net.put(h[0], s, "from0", "x")
    net.put(h[1], s, "from1", "y")
    net.delete(h[2], s, "gone")
    net.put(h[2], s, "base", 3)
    net.run_for(3)
    assert len({str(net.value(n, s)) for n in h}) == 3, "holders should have diverged"
    value, _ = net.read(reader, s, quorum="all")
    assert value == net.join_of(h, s)
    assert value == {"base": 3.0, "from0": "x", "from1": "y"}


def test_read_of_a_shard_nobody_holds_is_shard_not_found() -> None:
    net = _mesh(41)
    with pytest.raises(ShardNotFound):
        net.read("a00", "nobody/has/this")


def test_timeout_names_the_holders_that_did_not_answer() -> None:
    net = _mesh(51)
    s = "board"
    h = sorted(net.expected(s))
    net.put(h[0], s, "k", 1)
    net.run_until_quiet(20)
    reader = _not_holder(net, s)
    for n in h[1:]:
        net.set_link(n, reader, loss=1.0)
    net.caches.clear()
    with pytest.raises(ReplicationTimeout) as info:
        net.read(reader, s, quorum="all", timeout=1.0)
    assert set(info.value.lagging) == set(h[1:])
    # a majority (2 of 3) still fails; one answer is enough for quorum 1
    value, _ = net.read(reader, s)
    assert value == {"k": 1.0}


def test_a_burst_of_reads_asks_once_and_later_reads_fetch_only_the_difference() -> None:
    net = _mesh(61)
    s = "board"
    h = sorted(net.expected(s))
    for i in range(50):
        net.put(h[0], s, f"k{i}", "x" * 50)
    net.run_until_quiet(20)
    reader = _not_holder(net, s)
    cache = net.caches.setdefault(reader, ReadCache(ttl=0.25))
    value, _ = net.read(reader, s)
    first = net.meter.reads[reader]
    asked = net.by_type["ReadRequest"]
    for _ in range(10):  # within the ttl: from the cache, nobody asked
        assert cache.fresh(s, net.now) == value
    assert net.by_type["ReadRequest"] == asked
    net.put(h[0], s, "new", 1)
    net.run_for(1.0)
    assert cache.fresh(s, net.now) is None
    value, _ = net.read(reader, s)
    assert value["new"] == 1.0 and len(value) == 51
    assert net.meter.reads[reader] - first < first / 10  # only the difference came back


def test_scan_by_prefix_reads_every_matching_shard_from_every_agent() -> None:
    net = _mesh(71)
    rng = random.Random(71)
    names = [f"sensors/{i}" for i in range(6)] + ["other"]
    for i, s in enumerate(names):
        net.put(rng.choice(sorted(net.expected(s))), s, "v", i)
    net.run_until_quiet(20)
    reader = "a00"
    qid = net.call(
        reader, lambda c: c.sharding.scan("sensors/", state_vectors={}, now=net.now, timeout=5.0)
    )
    while (out := net.nodes[reader].core.sharding.result(qid)) is None:  # type: ignore[union-attr]
        net.run_for(0.01)
    assert out.status == OK
    assert set(out.answers) == set(names[:-1])
    for s, answers in out.answers.items():
        assert {p for p, _ in answers} == net.expected(s) - {reader}
        doc = pycrdt.Doc()
        for _, u in answers:
            updates.apply_update(doc, u)
        assert snapshot_of(doc) == {"v": float(names.index(s))}
