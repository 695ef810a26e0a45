"""The pure gossip core, driven directly: no network, no clock, exact expected messages.

Cores talk through :func:`deliver`, which passes each outbox through the real codec, like
h11's ConnectionPair. Times are chosen so that window boundaries are exact binary fractions.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

import pycrdt
import pytest

from crdtsync import updates, wire
from crdtsync.errors import CloseCode, InvalidShardName, ProtocolError, UsageError
from crdtsync.gossip import DEAD, EMPTY_STATE_VECTOR, SUSPECT, GossipConfig, GossipCore
from crdtsync.messages import (
    PROTOCOL_VERSION,
    Ack,
    Close,
    Diff,
    Digests,
    Hello,
    Message,
    PeerEntry,
    PeerList,
    Push,
    ShardState,
    Summary,
    SyncRequest,
)
from crdtsync.transports.memory import MemoryReplicas

W = 0.25  # batching window used in these tests
CFG = GossipConfig(push_interval=W, anti_entropy_interval=8.0, anti_entropy_jitter=0.0, peer_exchange_interval=1000.0)


def make(name: str, shards: Iterable[str] = (), config: GossipConfig = CFG, seeds: Iterable[str] = ()) -> GossipCore:
    replicas = MemoryReplicas(random.Random(f"ids/{name}"), shards)
    return GossipCore(name, replicas, rng=random.Random(0), config=config, address=f"mem://{name}", seeds=seeds)


def rt(msg: Message) -> Message:
    """Through the codec and back."""
    return wire.decode(wire.encode(msg))


def reps(core: GossipCore) -> MemoryReplicas:
    r = core.replicas
    assert isinstance(r, MemoryReplicas)
    return r


def put(core: GossipCore, shard: str, key: str, value: object) -> bytes:
    delta = reps(core).change(shard, lambda d: d.get("m", type=pycrdt.Map).__setitem__(key, value))
    assert delta is not None
    return delta


def content(core: GossipCore, shard: str) -> dict[str, object]:
    return reps(core).doc(shard).get("m", type=pycrdt.Map).to_py() or {}


def connect(a: GossipCore, b: GossipCore, now: float = 0.0) -> None:
    assert a.connection_made(rt(b.hello()), now) == b.name
    assert b.connection_made(rt(a.hello()), now) == a.name


def deliver(cores: dict[str, GossipCore], now: float, *, drop: set[type] = frozenset()) -> list[tuple[str, str, Message]]:  # type: ignore[assignment]
    """Pass every outbox to its recipient until all are empty; return the (src, dst, msg) log."""
    log: list[tuple[str, str, Message]] = []
    queue: deque[tuple[str, str, Message]] = deque()
    for name, core in cores.items():
        queue.extend((name, dst, m) for dst, m in core.data_to_send())
    while queue:
        src, dst, msg = queue.popleft()
        log.append((src, dst, msg))
        if type(msg) in drop or dst not in cores:
            continue
        cores[dst].receive(src, rt(msg), now)
        queue.extend((dst, d, m) for d, m in cores[dst].data_to_send())
    return log


def settle(cores: dict[str, GossipCore], now: float) -> list[tuple[str, str, Message]]:
    """Run every core's timers at ``now`` and deliver everything."""
    for core in cores.values():
        core.tick(now)
    return deliver(cores, now)


def kinds(log: list[tuple[str, str, Message]]) -> list[tuple[str, str, str]]:
    return [(s, d, type(m).__name__) for s, d, m in log]


# -- handshake ------------------------------------------------------------------------------------


def test_hello_describes_this_agent() -> None:
    a = make("a", ["s2", "s1"])
    assert a.hello() == Hello(PROTOCOL_VERSION, "default", "a", "mem://a", ("s1", "s2"), 0)


def test_connection_made_sends_table_and_one_side_starts_anti_entropy() -> None:
    a, b = make("a", ["s"]), make("b", ["s"])
    connect(a, b)
    table = (PeerEntry("a", "mem://a", 0, True), PeerEntry("b", "mem://b", 0, True))
    out_a = a.data_to_send()
    assert out_a[0] == ("b", PeerList(table, full=True))
    assert out_a[1][0] == "b" and isinstance(out_a[1][1], Summary) and out_a[1][1].shards == 1
    assert len(out_a) == 2
    assert b.data_to_send() == [("a", PeerList(table, full=True))]  # "b" > "a": b waits
    assert a.connected() == ("b",) and b.connected() == ("a",)


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        (Hello(PROTOCOL_VERSION + 1, "default", "b", None), CloseCode.PROTOCOL_VERSION),
        (Hello(PROTOCOL_VERSION, "other", "b", None), CloseCode.WRONG_MESH),
        (Hello(PROTOCOL_VERSION, "default", "a", "mem://a2"), CloseCode.DUPLICATE_NAME),
        (Summary(bytes(16), 0), CloseCode.BAD_HANDSHAKE),
    ],
)
def test_bad_handshakes(hello: Message, code: CloseCode) -> None:
    a = make("a")
    with pytest.raises(ProtocolError) as info:
        a.connection_made(hello, 0.0)
    assert info.value.code == code
    assert a.connected() == () and a.data_to_send() == []


def test_newest_connection_replaces_and_second_hello_is_refused() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    a.data_to_send()
    a.pause_writing("b")
    assert a.connection_made(rt(b.hello()), 1.0) == "b"  # b restarted and reconnected
    (status,) = a.peers()
    assert status.state == "connected" and status.queued_bytes == 0
    a.local_update("s", put(a, "s", "k", 1), 1.1)  # the new connection is writable
    a.tick(1.25)
    assert [type(m) for _, m in a.data_to_send()] == [PeerList, Summary, Push]
    with pytest.raises(ProtocolError) as info:
        a.receive("b", b.hello(), 1.0)
    assert info.value.code == CloseCode.BAD_HANDSHAKE
    assert a.connected() == ("b",)


def test_connecting_to_ourselves_is_remembered() -> None:
    a = make("a", seeds=["mem://a-alias"])
    assert a.dials() == ["mem://a-alias"]
    with pytest.raises(ProtocolError):
        a.connection_made(Hello(PROTOCOL_VERSION, "default", "a", "mem://a-alias"), 0.0)
    a.dial_failed("mem://a-alias", 0.0)
    a.tick(100.0)
    assert a.dials() == []


def test_receive_from_unknown_peer_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        make("a").receive("ghost", Summary(bytes(16), 0), 0.0)


# -- push and batching ----------------------------------------------------------------------------


def test_local_update_is_pushed_at_the_next_window_boundary() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    delta = put(a, "s", "k", 1)
    a.local_update("s", delta, 5.1)
    assert a.data_to_send() == []
    assert a.next_deadline() == 5.25  # aligned to multiples of the window
    a.tick(5.2)
    assert a.data_to_send() == []
    a.tick(5.25)
    assert a.data_to_send() == [("b", Push("s", (delta,), None, 1))]
    b.receive("a", rt(Push("s", (delta,), None, 1)), 5.35)
    assert content(b, "s") == {"k": 1.0}


def test_deltas_of_one_window_are_batched_per_peer_and_shard() -> None:
    a, b, c = make("a"), make("b"), make("c")
    connect(a, b)
    connect(a, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    d1, d2, d3 = put(a, "s", "x", 1), put(a, "s", "y", 2), put(a, "t", "z", 3)
    for shard, d in (("s", d1), ("s", d2), ("t", d3)):
        a.local_update(shard, d, 5.0)
    a.tick(5.25)
    assert a.data_to_send() == [
        ("b", Push("s", (d1, d2), None, 1)),
        ("b", Push("t", (d3,), None, 1)),
        ("c", Push("s", (d1, d2), None, 1)),
        ("c", Push("t", (d3,), None, 1)),
    ]


def test_batches_are_split_at_max_batch_bytes() -> None:
    a, b = make("a", config=GossipConfig(push_interval=W, max_batch_bytes=60)), make("b")
    connect(a, b)
    a.data_to_send()
    deltas = [put(a, "s", f"k{i}", "v" * 20) for i in range(4)]
    for d in deltas:
        a.local_update("s", d, 1.0)
    a.tick(1.25)
    pushes = [m for _, m in a.data_to_send()]
    assert all(isinstance(m, Push) for m in pushes) and len(pushes) > 1
    assert [u for m in pushes for u in m.updates] == deltas  # type: ignore[union-attr]
    assert all(sum(map(len, m.updates)) <= 60 or len(m.updates) == 1 for m in pushes)  # type: ignore[union-attr]


def test_full_mesh_does_not_forward_and_tree_forwards_except_to_source() -> None:
    # Full mesh (3 agents <= full_mesh_max): b applies a's delta and forwards nothing.
    a, b, c = make("a"), make("b"), make("c")
    connect(a, b)
    connect(b, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    delta = put(a, "s", "k", 1)
    b.receive("a", Push("s", (delta,)), 1.0)
    b.tick(1.25)
    assert [m for _, m in b.data_to_send() if isinstance(m, Push)] == []

    # Tree mode (full_mesh_max=2): b relays to c, not back to a; a duplicate is not relayed.
    tree = GossipConfig(push_interval=W, full_mesh_max=2, fanout=1)
    a, b, c = make("a", config=tree), make("b", config=tree), make("c", config=tree)
    connect(a, b)
    connect(b, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    delta = put(a, "s", "k", 1)
    b.receive("a", Push("s", (delta,)), 1.0)
    b.tick(1.25)
    assert b.data_to_send() == [("c", Push("s", (delta,), None, 1))]
    b.receive("a", Push("s", (delta,)), 1.3)  # duplicate: apply() says nothing new
    b.tick(1.5)
    assert b.data_to_send() == []


# -- anti-entropy ---------------------------------------------------------------------------------


def test_idle_round_is_one_message_with_1000_shards() -> None:
    shards = [f"shard-{i:04d}" for i in range(1000)]
    a, b = make("a"), make("b")
    for s in shards:  # identical content on both sides
        d = put(a, s, "k", s)
        reps(b).doc(s)
        reps(b).apply(s, d, "a")
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    assert kinds(log) == [("a", "b", "PeerList"), ("a", "b", "Summary"), ("b", "a", "PeerList")]
    for t in (8.0, 16.0, 24.0):  # each periodic round: a single Summary, no reply
        a.tick(t)
        b.tick(t)
        log = deliver({"a": a, "b": b}, t)
        assert sorted(kinds(log)) == [("a", "b", "Summary"), ("b", "a", "Summary")]


def test_round_repairs_both_directions_with_exact_messages() -> None:
    a, b = make("a"), make("b")
    put(a, "s", "from_a", 1)
    put(b, "s", "from_b", 2)
    put(b, "only_b", "k", 3)
    put(a, "only_a", "k", 4)
    ra, rb = reps(a), reps(b)
    sv_a = ra.state_vector("s")
    expected_b_to_a = [
        Diff("only_b", rb.diff("only_b", EMPTY_STATE_VECTOR), rb.state_vector("only_b")),
        Diff("s", rb.diff("s", sv_a), rb.state_vector("s")),
    ]
    sv_b = rb.state_vector("s")
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    assert kinds(log) == [
        ("a", "b", "PeerList"),
        ("a", "b", "Summary"),
        ("b", "a", "PeerList"),
        ("b", "a", "Digests"),  # roots differ
        ("a", "b", "Diff"),  # only_a: b lacks it entirely, sent at once
        ("a", "b", "SyncRequest"),  # only_b (a has nothing) and s (digests differ)
        ("b", "a", "Diff"),  # only_b, with b's state vector
        ("b", "a", "Diff"),  # s, with b's state vector
        ("a", "b", "Diff"),  # s: a has what b lacks; not only_b: digests now equal
    ]
    assert log[3][2] == Digests((("only_b", rb.digest("only_b")), ("s", log[3][2].digests[1][1])))  # type: ignore[union-attr]
    assert log[4][2] == Diff("only_a", ra.diff("only_a", EMPTY_STATE_VECTOR))
    assert log[5][2] == SyncRequest((("only_b", EMPTY_STATE_VECTOR), ("s", sv_a)))
    assert [m for _, _, m in log[6:8]] == expected_b_to_a
    assert log[8][2] == Diff("s", ra.diff("s", sv_b))
    for shard in ("s", "only_a", "only_b"):
        assert ra.digest(shard) == rb.digest(shard)
    assert content(b, "s") == {"from_a": 1.0, "from_b": 2.0}


def test_lost_delete_is_repaired_although_state_vectors_are_equal() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 0.5)
    # a deletes the key; the delta is lost on the way to b
    delete = reps(a).change("s", lambda doc: doc.get("m", type=pycrdt.Map).pop("k"))
    assert delete is not None
    a.local_update("s", delete, 1.0)
    a.tick(1.25)
    assert [type(m) for _, m in a.data_to_send()] == [Push]  # dropped
    assert reps(a).state_vector("s") == reps(b).state_vector("s")
    assert reps(a).digest("s") != reps(b).digest("s")
    a.tick(8.0)  # periodic round from a
    log = deliver({"a": a, "b": b}, 8.0)
    assert [k for _, _, k in kinds(log)] == ["Summary", "Digests", "SyncRequest", "Diff", "Diff"]
    assert content(b, "s") == {}
    assert reps(a).digest("s") == reps(b).digest("s")


def test_round_from_the_side_missing_the_delete() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 0.5)
    reps(a).change("s", lambda doc: doc.get("m", type=pycrdt.Map).pop("k"))  # never pushed
    b.tick(8.0)  # b (which lacks the delete) starts the round
    log = deliver({"a": a, "b": b}, 8.0)
    assert [k for _, _, k in kinds(log)] == ["Summary", "Digests", "SyncRequest", "Diff"]
    assert content(b, "s") == {}


def test_busy_tree_links_skip_periodic_rounds_but_not_forever() -> None:
    tree = GossipConfig(
        push_interval=W, full_mesh_max=2, fanout=1, anti_entropy_interval=8.0, anti_entropy_jitter=0.0, prune_grace=1e6
    )
    a, b, c = make("a", config=tree), make("b", config=tree), make("c", config=tree)
    connect(a, b)
    connect(b, c)
    cores = {"a": a, "b": b, "c": c}
    settle(cores, 0.25)

    rounds: list[float] = []

    def step(t: float) -> None:  # run every timer at t, deliver, note a's rounds
        for core in cores.values():
            core.tick(t)
        rounds.extend(t for src, _, m in deliver(cores, t) if src == "a" and isinstance(m, Summary))

    t = 1.0
    while t < 8.0 * 8:  # pushes both ways on a-b every 4 s
        a.local_update("s", put(a, "s", f"a{t}", t), t)
        b.local_update("s", put(b, "s", f"b{t}", t), t)
        step(t)
        step(t + W)
        t += 4.0
    # a-b carried pushes both ways all along: rounds were skipped, but one was forced within
    # anti_entropy_skip_max intervals of the on-connect round
    assert rounds and rounds[0] > 8.0 * 2 and rounds[0] <= 8.0 * (tree.anti_entropy_skip_max + 1)
    # an idle link gets its periodic round
    t = rounds[-1] + 40.0
    a.tick(t)
    assert Summary in [type(m) for _, m in a.data_to_send()]


def test_sync_shards_per_round_are_bounded() -> None:
    cfg = GossipConfig(push_interval=W, max_sync_shards=3, anti_entropy_jitter=0.0)
    a, b = make("a", config=cfg), make("b", config=cfg)
    for i in range(5):
        put(b, f"s{i}", "k", i)
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    request = next(m for _, _, m in log if isinstance(m, SyncRequest))
    assert [s for s, _ in request.state_vectors] == ["s0", "s1", "s2"]
    a.tick(100.0)
    deliver({"a": a, "b": b}, 100.0)
    assert sorted(reps(a).docs) == [f"s{i}" for i in range(5)]


# -- acks -----------------------------------------------------------------------------------------


def test_acks_ride_on_pushes_or_go_alone_and_answer_replicated() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    delta = put(a, "s", "k", 1)
    target = (reps(a).state_vector("s"), updates.delete_set(reps(a).doc("s")))
    assert a.replicated("s", *target) == ()
    b.receive("a", Push("s", (delta,)), 1.0)
    assert reps(b).commit() == ["s"]
    b.durable(["s"], 1.01)
    b.tick(1.25)
    assert b.data_to_send() == []  # the ack waits ack_delay for a Push to ride on...
    assert b.next_deadline() == 1.01 + CFG.ack_delay
    b.tick(1.01 + CFG.ack_delay)  # ...none came: a standalone Ack
    sv, ds = reps(b).durable_state("s")
    out = b.data_to_send()
    assert out == [("a", Ack((ShardState("s", sv, ds),)))]
    a.receive("b", rt(out[0][1]), 1.3)
    assert a.replicated("s", *target) == ("b",)
    assert [p.acked for p in a.peers()] == [(ShardState("s", sv, ds),)]

    # next time b also has a delta for a: the ack rides on the Push
    delta2 = put(a, "s", "k2", 2)
    b.receive("a", Push("s", (delta2,)), 2.0)
    reps(b).commit()
    b.durable(["s"], 2.01)
    own = put(b, "s", "kb", 3)
    b.local_update("s", own, 2.02)
    b.tick(2.25)
    sv2, ds2 = reps(b).durable_state("s")
    assert b.data_to_send() == [("a", Push("s", (own,), (sv2, ds2), 1))]


def test_owed_ack_rides_on_a_push_within_the_ack_delay() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 1.0)
    reps(b).commit()
    b.durable(["s"], 1.0)
    b.tick(1.1)
    own = put(b, "s", "kb", 2)
    b.local_update("s", own, 1.1)  # before the ack is due alone (1.25)
    b.tick(1.25)
    assert b.data_to_send() == [("a", Push("s", (own,), reps(b).durable_state("s"), 1))]
    b.tick(5.0)
    assert not any(isinstance(m, Ack) for _, m in b.data_to_send())


def test_standalone_acks_are_rate_limited() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    for i, t in enumerate((1.0, 1.3, 1.6)):
        b.receive("a", Push("s", (put(a, "s", f"k{i}", i),)), t)
        reps(b).commit()
        b.durable(["s"], t)
        b.tick(t + W)  # the first ack is due then (owed at 1.0, ack_delay 0.25)
    acks = [m for _, m in b.data_to_send() if isinstance(m, Ack)]
    assert len(acks) == 1  # at 1.25; the others wait for ack_interval
    assert b.next_deadline() == 1.25 + CFG.ack_interval
    b.tick(b.next_deadline())  # type: ignore[arg-type]
    (_, last), = b.data_to_send()
    assert last == Ack((ShardState("s", *reps(b).durable_state("s")),))


# -- lost pushes --------------------------------------------------------------------------------


def test_gap_in_push_sequence_asks_for_a_repair_until_it_comes() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    pushes = []
    for i, t in enumerate((1.0, 1.25, 1.5)):
        a.local_update("s", put(a, "s", f"k{i}", i), t)
        a.tick(t + W)
        (_, push), = a.data_to_send()
        pushes.append(push)
    assert [p.seq for p in pushes] == [1, 2, 3]
    b.receive("a", rt(pushes[0]), 1.35)
    b.receive("a", rt(pushes[2]), 1.85)  # pushes[1] was lost: k2 waits for k1 (clock order)
    assert reps(b).state_vector("s") != reps(a).state_vector("s")
    assert b.data_to_send() == [("a", SyncRequest((("s", reps(b).state_vector("s")),)))]
    assert b.next_deadline() == 1.85 + CFG.repair_timeout
    b.tick(1.85 + CFG.repair_timeout)  # the request (or its Diff) was lost too: ask again
    (_, again), = b.data_to_send()
    assert isinstance(again, SyncRequest)
    a.receive("b", rt(again), 2.4)
    (_, diff), = a.data_to_send()
    b.receive("a", rt(diff), 2.5)
    assert content(b, "s") == {"k0": 0.0, "k1": 1.0, "k2": 2.0}
    b.tick(3.0)
    assert not any(isinstance(m, SyncRequest) for _, m in b.data_to_send())
    b.receive("a", rt(pushes[1]), 3.1)  # late (reordered) or duplicated: no repair asked
    b.receive("a", rt(pushes[2]), 3.1)
    assert b.data_to_send() == []


# -- misbehaving peers ----------------------------------------------------------------------------


def test_invalid_update_in_a_batch_applies_nothing() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    good = put(a, "s", "k", 1)
    with pytest.raises(ProtocolError) as info:
        b.receive("a", Push("s", (good, b"\xff\xff\xff")), 1.0)
    assert info.value.code == CloseCode.INVALID_UPDATE
    assert "s" not in reps(b).docs
    with pytest.raises(ProtocolError) as info:
        b.receive("a", Push("s", (b"\x01\x02",)), 1.0)
    assert info.value.code == CloseCode.INVALID_UPDATE
    assert "s" not in reps(b).docs


@pytest.mark.parametrize(
    "msg",
    [
        Push("s", (b"\x00\x00",), (b"\xff", b"\x00")),
        Ack((ShardState("s", b"\x00", b"\x05"),)),
        SyncRequest((("s", b"\x02\x01"),)),
        Diff("s", b"\x00\x00", b"\x07"),
        Diff("s", b"garbage"),
    ],
    ids=["push-ack", "ack", "sync-request", "diff-sv", "diff-update"],
)
def test_malformed_crdt_payloads_are_refused(msg: Message) -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    with pytest.raises(ProtocolError) as info:
        b.receive("a", msg, 1.0)
    assert info.value.code == CloseCode.INVALID_UPDATE
    assert "s" not in reps(b).docs and a.replicated("s", b"\x00", b"\x00") == ()


def test_flooding_peer_is_refused() -> None:
    cfg = GossipConfig(push_interval=W, flood_rate=10.0, flood_burst=5.0)
    a, b = make("a", config=cfg), make("b")
    connect(a, b)
    ping = Summary(bytes(16), 0)
    for _ in range(5):
        a.receive("b", ping, 1.0)
    with pytest.raises(ProtocolError) as info:
        a.receive("b", ping, 1.0)
    assert info.value.code == CloseCode.FLOODING
    a.receive("b", ping, 1.25)  # 0.25 s refills 2.5 tokens
    a.receive("b", ping, 1.25)
    with pytest.raises(ProtocolError):
        a.receive("b", ping, 1.25)


def test_local_update_with_bad_shard_name_is_a_local_error() -> None:
    with pytest.raises(InvalidShardName):
        make("a").local_update("bad name", b"\x00\x00", 0.0)


# -- back-pressure --------------------------------------------------------------------------------


def test_slow_peer_queue_is_dropped_and_replaced_by_anti_entropy() -> None:
    cfg = GossipConfig(push_interval=W, max_queue_bytes=100)
    a, b = make("a", config=cfg), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    a.pause_writing("b")
    for i in range(10):
        a.local_update("s", put(a, "s", f"k{i}", "x" * 20), 1.0 + i / 100)
    a.tick(1.25)
    assert a.data_to_send() == []  # held while paused
    (status,) = a.peers()
    assert status.queued_bytes <= 100 and status.dropped > 0
    a.resume_writing("b", 2.0)
    a.tick(2.0)
    a.tick(2.25)
    out = a.data_to_send()
    assert isinstance(out[-1][1], Summary)  # the resync round
    for _, msg in out:
        b.receive("a", rt(msg), 2.3)
    deliver({"a": a, "b": b}, 2.3)
    assert content(b, "s") == content(a, "s") and len(content(b, "s")) == 10


# -- membership -----------------------------------------------------------------------------------


def test_seeds_are_dialled_with_exponential_backoff_and_jitter() -> None:
    cfg = GossipConfig(backoff_base=1.0, backoff_max=8.0)
    a = make("a", config=cfg, seeds=["mem://s1", "mem://s2"])
    a.tick(0.0)
    assert a.dials() == ["mem://s1", "mem://s2"]
    assert a.dials() == []  # handed out once
    retries = []
    t = 0.0
    for _ in range(6):
        a.dial_failed("mem://s1", t)
        a.dial_failed("mem://s2", t)
        t = a.next_deadline()  # type: ignore[assignment]
        a.tick(t)
        assert a.dials() != []
        retries.append(t)
    gaps = [b - a_ for a_, b in zip([0.0, *retries], retries)]
    # delays double (jittered down to half) up to the cap
    for i, gap in enumerate(gaps):
        cap = min(8.0, 2.0**i)
        assert cap / 2 <= gap <= cap


def test_peer_exchange_spreads_members_and_dials_the_smaller_name_first() -> None:
    a, b, c = make("a"), make("b"), make("c")
    connect(a, b)
    connect(b, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    assert [p.name for p in a.peers()] == ["b", "c"]
    assert a.dials() == ["mem://c"]  # full mesh of 3; "a" < "c": a dials
    assert c.dials() == []  # c waits dial_grace for a
    c.tick(0.25 + CFG.dial_grace)
    assert c.dials() == ["mem://a"]


def test_lost_peer_becomes_suspect_then_dead_and_the_news_spreads() -> None:
    a, b, c = make("a"), make("b"), make("c")
    connect(a, b)
    connect(a, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    a.connection_lost("b", 1.0)
    assert [p.state for p in a.peers()] == [SUSPECT, "connected"]
    a.tick(1.0 + CFG.suspect_timeout)
    assert [p.state for p in a.peers()] == [DEAD, "connected"]
    a.tick(6.25)  # the next window boundary
    out = a.data_to_send()
    assert ("c", PeerList((PeerEntry("b", "mem://b", 0, False),))) in out
    # b stays a would-be neighbour: a keeps redialling it, with backoff
    a.dial_failed("mem://b", 6.25)
    a.tick(a.next_deadline())  # type: ignore[arg-type]
    assert a.dials() == ["mem://b"]
    for _, msg in out:
        c.receive("a", rt(msg), 7.0)
    assert [(p.name, p.state) for p in c.peers()] == [("a", "connected"), ("b", DEAD)]
    assert "b" not in c.neighbours()


def test_agent_reported_dead_refutes_with_a_higher_incarnation() -> None:
    a, b, c = make("a"), make("b"), make("c")
    connect(a, b)
    connect(b, c)
    deliver({"a": a, "b": b, "c": c}, 0.0)
    # c wrongly hears that a is dead; b, which is connected to a, passes the report to a
    b.receive("c", PeerList((PeerEntry("a", "mem://a", 0, False),)), 1.0)
    assert b.data_to_send() == [("a", PeerList((PeerEntry("a", "mem://a", 0, False),)))]
    a.receive("b", PeerList((PeerEntry("a", "mem://a", 0, False),)), 1.1)
    assert a.incarnation == 1
    a.tick(1.25)
    assert a.data_to_send() == [("b", PeerList((PeerEntry("a", "mem://a", 1, True),)))]


def test_going_away_leaves_the_overlay_at_once() -> None:
    a, b, c = make("a"), make("b"), make("c")
    connect(a, b)
    connect(a, c)
    deliver({"a": a, "b": b, "c": c}, 0.0)
    a.receive("b", Close(CloseCode.GOING_AWAY, "stopping"), 1.0)
    a.connection_lost("b", 1.0)
    assert [(p.name, p.state) for p in a.peers()] == [("b", DEAD), ("c", "connected")]


def _mesh_views(n: int, cfg: GossipConfig) -> dict[str, GossipCore]:
    cores = {f"n{i:02d}": make(f"n{i:02d}", config=cfg) for i in range(n)}
    table = PeerList(tuple(PeerEntry(name, f"mem://{name}", 0, True) for name in sorted(cores)), full=True)
    hub = cores["n00"]
    for name, core in cores.items():
        if name != "n00":
            connect(hub, core)
            core.receive("n00", table, 0.0)
    for core in cores.values():
        core.data_to_send()
    return cores


def test_large_mesh_overlay_is_one_symmetric_tree() -> None:
    cfg = GossipConfig(full_mesh_max=8, fanout=4)
    cores = _mesh_views(40, cfg)
    edges = {(a, b) for a, core in cores.items() for b in core.neighbours()}
    assert all((b, a) in edges for a, b in edges)  # symmetric
    assert len(edges) == 2 * (len(cores) - 1)  # a tree: n-1 undirected edges
    seen, todo = {"n00"}, ["n00"]
    while todo:
        for nb in cores[todo.pop()].neighbours():
            if nb not in seen:
                seen.add(nb)
                todo.append(nb)
    assert seen == set(cores)  # connected
    assert max(len(c.neighbours()) for c in cores.values()) <= cfg.fanout + 1


def test_unneeded_connections_are_pruned_after_the_grace() -> None:
    cfg = GossipConfig(full_mesh_max=3, fanout=1, prune_grace=5.0)
    cores = _mesh_views(6, cfg)
    hub = cores["n00"]
    extra = [n for n in hub.connected() if n not in hub.neighbours()]
    assert extra
    hub.tick(4.0)
    assert not any(isinstance(m, Close) for _, m in hub.data_to_send())
    hub.tick(5.0)
    closes = [(p, m) for p, m in hub.data_to_send() if isinstance(m, Close)]
    assert sorted(p for p, _ in closes) == sorted(extra)
    assert all(m.code == CloseCode.NORMAL for _, m in closes)
    for name, _ in closes:  # a pruned connection closing is no failure
        hub.connection_lost(name, 5.1)
        assert next(p for p in hub.peers() if p.name == name).state == "alive"


def test_deadlines_always_make_progress() -> None:
    cores = _mesh_views(12, GossipConfig(full_mesh_max=4, push_interval=W))
    for name, core in cores.items():
        core.local_update("s", put(core, "s", name, 1), 0.1)
    t = 0.0
    for _ in range(300):
        for core in cores.values():
            d = core.next_deadline()
            assert d is not None
            core.tick(d)
            core.dials()
            core.data_to_send()
            nd = core.next_deadline()
            assert nd is not None and nd > d or nd == d and core.data_to_send() == []
        t += 0.5
        for core in cores.values():
            core.tick(t)
