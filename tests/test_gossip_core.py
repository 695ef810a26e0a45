"""The pure gossip core, driven directly: no network, no clock, exact expected messages.

Cores talk through :func:`deliver`, which passes each outbox through the real codec, like
h11's ConnectionPair. Times are chosen so that window boundaries are exact binary fractions.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import replace

import pycrdt
import pytest

from crdtsync import updates, wire
from crdtsync.errors import CloseCode, InvalidShardName, ProtocolError, UsageError
from crdtsync.gossip import DEAD, EMPTY_STATE_VECTOR, FULL, RELAY, SUSPECT, TREE, GossipConfig, GossipCore
from crdtsync.messages import (
    PROTOCOL_VERSION,
    Ack,
    Close,
    Diff,
    DiffChunk,
    Digests,
    Hello,
    Message,
    PeerEntry,
    PeerList,
    Push,
    RelayedAck,
    ShardState,
    Summary,
    SyncRequest,
)
from crdtsync.transports.memory import MemoryReplicas

W = 0.25  # batching window used in these tests
CFG = GossipConfig(push_interval=W, anti_entropy_interval=8.0, anti_entropy_jitter=0.0, peer_exchange_interval=1000.0)


def make(
    name: str, shards: Iterable[str] = (), config: GossipConfig = CFG, seeds: Iterable[str] = (), *, run: int = 0
) -> GossipCore:
    """A core named ``name``; ``run`` numbers the runs of one agent (restarts)."""
    replicas = MemoryReplicas(random.Random(f"ids/{name}"), shards)
    return GossipCore(name, replicas, rng=random.Random(run), config=config, address=f"mem://{name}", seeds=seeds)


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
    """``a`` dialled ``b``; both handshakes complete at ``now``."""
    assert a.connection_made(rt(b.hello()), now, outbound=True) == b.name
    assert b.connection_made(rt(a.hello()), now, outbound=False) == a.name


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
    run = random.Random(0).getrandbits(63)  # drawn from the core's rng: replays with the seed
    assert a.hello() == Hello(PROTOCOL_VERSION, "default", "a", "mem://a", ("s1", "s2"), 0, run)


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
        a.connection_made(hello, 0.0, outbound=False)
    assert info.value.code == code
    assert a.connected() == () and a.data_to_send() == []


def test_a_restarted_peer_replaces_its_old_connection_and_a_second_hello_is_refused() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    a.data_to_send()
    a.pause_writing("b")
    b = make("b", run=1)  # b restarted (another run) and redials; its old connection lingers
    assert a.connection_made(rt(b.hello()), 1.0, outbound=False) == "b"
    (status,) = a.peers()
    assert status.state == "connected" and status.queued_bytes == 0
    a.local_update("s", put(a, "s", "k", 1), 1.1)  # the new connection is writable
    a.tick(1.25)
    assert [type(m) for _, m in a.data_to_send()] == [PeerList, Summary, Push]
    with pytest.raises(ProtocolError) as info:
        a.receive("b", b.hello(), 1.0)
    assert info.value.code == CloseCode.BAD_HANDSHAKE
    assert a.connected() == ("b",)


def test_simultaneous_dials_keep_the_connection_the_smaller_name_dialled_on_both_sides() -> None:
    # a dials b (c1) while b dials a (c2). As over websockets, each side first completes the
    # connection it dialled (the acceptor's Hello comes first), then the other one.
    a, b = make("a"), make("b", run=1)
    assert a.connection_made(rt(b.hello()), 0.2, outbound=True) == "b"  # c1 at a
    assert b.connection_made(rt(a.hello()), 0.2, outbound=True) == "a"  # c2 at b
    a.data_to_send()
    b.data_to_send()
    with pytest.raises(ProtocolError) as info:  # c2 at a: refused, a keeps c1
        a.connection_made(rt(b.hello()), 0.3, outbound=False)
    assert info.value.code == CloseCode.DUPLICATE_NAME
    assert a.connected() == ("b",) and a.data_to_send() == []
    assert b.connection_made(rt(a.hello()), 0.3, outbound=False) == "a"  # c1 replaces c2 at b
    assert [type(m) for _, m in b.data_to_send()] == [PeerList]  # the on-connect messages again

    # Had b seen a's refusal of c2 first: not a failure, and no redial before c1 arrives.
    a2, b2 = make("a"), make("b", run=1)
    b2.connection_made(rt(a2.hello()), 0.2, outbound=True)
    b2.receive("a", rt(Close(CloseCode.DUPLICATE_NAME, "already connected")), 0.3)
    b2.connection_lost("a", 0.3)
    assert [(p.name, p.state) for p in b2.peers()] == [("a", "alive")]
    assert b2.dials() == []
    assert b2.connection_made(rt(a2.hello()), 0.35, outbound=False) == "a"


def test_a_late_second_connection_from_the_same_run_replaces_the_first() -> None:
    # The peer noticed a broken link before we did, and redialled: our old one is dead.
    a, b = make("a"), make("b", run=1)
    connect(a, b, 0.0)  # dialled by a
    cfg = a.config
    assert a.connection_made(rt(b.hello()), cfg.connect_timeout + 1.0, outbound=False) == "b"


def test_connecting_to_ourselves_is_remembered() -> None:
    a = make("a", seeds=["mem://a-alias"])
    assert a.dials() == ["mem://a-alias"]
    with pytest.raises(ProtocolError):
        a.connection_made(Hello(PROTOCOL_VERSION, "default", "a", "mem://a-alias"), 0.0, outbound=True)
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
    # ...unless asked to (a sender whose view says "tree" or "relay"): then to all but a.
    delta2 = put(a, "s", "k2", 2)
    b.receive("a", Push("s", (delta2,), forward=True), 1.3)
    b.tick(1.5)
    assert b.data_to_send() == [("c", Push("s", (delta2,), None, 1))]

    # Tree mode (full_mesh_max=2): b relays to c, not back to a; a duplicate is not relayed.
    tree = GossipConfig(push_interval=W, full_mesh_max=2, relay_max=0, fanout=1)
    a, b, c = make("a", config=tree), make("b", config=tree), make("c", config=tree)
    connect(a, b)
    connect(b, c)
    settle({"a": a, "b": b, "c": c}, 0.25)
    delta = put(a, "s", "k", 1)
    b.receive("a", Push("s", (delta,)), 1.0)
    b.tick(1.25)
    assert b.data_to_send() == [("c", Push("s", (delta,), None, 1, forward=True))]  # c passes it on too
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
        push_interval=W, full_mesh_max=2, relay_max=0, fanout=1, anti_entropy_interval=8.0, anti_entropy_jitter=0.0,
        prune_grace=1e6,
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
    cfg = GossipConfig(full_mesh_max=8, relay_max=0, fanout=4)
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
    cfg = GossipConfig(full_mesh_max=3, relay_max=0, fanout=1, prune_grace=5.0)
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


# -- rotating relay -------------------------------------------------------------------------------

RCFG = GossipConfig(
    push_interval=W, full_mesh_max=4, anti_entropy_interval=1000.0, anti_entropy_jitter=0.0,
    peer_exchange_interval=1000.0, relay_settle=0.0,
)


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
    assert cores[relay].data_to_send() == [(o, Push("s", (delta,), None, 1, hint=sv)) for o in others]
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
    assert all(m.updates == (d1, d2) and not m.relay for _, m in out)


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
    assert reps(cores[r42]).state_vector("s") == sv or sv == EMPTY_STATE_VECTOR  # pending: nothing new
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
    cores = relay_mesh(6)
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
    cores = relay_mesh(6)
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
    x = next(n for n in sorted(cores) if n not in (relay, relay_at(cores, 10.0), relay_at(cores, 10.5)))
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
    cores = _mesh_views(12, cfg)
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


# -- ack relaying (tree), lags seen in acks, address ----------------------------------------------


def test_acks_are_relayed_within_ack_relay_hops() -> None:
    for hops, expected in ((2, ("b", "c", "d")), (1, ("b", "c"))):
        tree = GossipConfig(push_interval=W, full_mesh_max=2, relay_max=0, fanout=1, prune_grace=1e6, ack_relay_hops=hops)
        a, b, c, d = (make(n, config=tree) for n in "abcd")
        connect(a, b)
        connect(b, c)
        connect(c, d)
        cores = {"a": a, "b": b, "c": c, "d": d}
        deliver(cores, 0.0)
        delta = put(a, "s", "k", 1)
        a.local_update("s", delta, 1.0)
        target = (reps(a).state_vector("s"), updates.delete_set(reps(a).doc("s")))
        t = 1.0
        while t < 6.0:  # windows: pushes flow a -> b -> c -> d, acks and relayed acks back
            for core in cores.values():
                core.tick(t)
            deliver(cores, t)
            for name, core in cores.items():
                if reps(core).dirty:
                    reps(core).commit()
                    core.durable(["s"], t)
            t += W
        assert a.replicated("s", *target) == expected, hops


def test_an_ack_we_do_not_cover_brings_a_repair_after_a_grace() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    delta = put(a, "s", "k", 1)  # never pushed to b (lost)
    reps(a).commit()
    state = ShardState("s", *reps(a).durable_state("s"))
    b.receive("a", rt(Ack((state,))), 1.0)
    assert b.data_to_send() == []  # what it acked may be on its way
    assert b.next_deadline() == 1.0 + CFG.repair_timeout
    b.tick(1.0 + CFG.repair_timeout)
    assert b.data_to_send() == [("a", SyncRequest((("s", EMPTY_STATE_VECTOR),)))]
    # Had the push come in the meantime: no repair.
    a2, b2 = make("a"), make("b")
    connect(a2, b2)
    settle({"a": a2, "b": b2}, 0.25)
    delta = put(a2, "s", "k", 1)
    reps(a2).commit()
    b2.receive("a", rt(Ack((ShardState("s", *reps(a2).durable_state("s")),))), 1.0)
    b2.receive("a", rt(Push("s", (delta,), None, 1)), 1.1)
    b2.tick(1.0 + CFG.repair_timeout)
    assert b2.data_to_send() == []


def test_set_address_once_the_listener_is_bound() -> None:
    replicas = MemoryReplicas(random.Random(1))
    a = GossipCore("a", replicas, rng=random.Random(0), config=CFG, address="ws://127.0.0.1:0", seeds=["ws://127.0.0.1:7001"])
    b = make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    a.set_address("ws://127.0.0.1:7001")
    assert a.address == "ws://127.0.0.1:7001" and a.hello().address == "ws://127.0.0.1:7001"
    a.tick(0.25)
    assert a.data_to_send() == [("b", PeerList((PeerEntry("a", "ws://127.0.0.1:7001", 0, True),)))]
    a.connection_lost("b", 1.0)
    a.tick(1.0)
    assert "ws://127.0.0.1:7001" not in a.dials()  # our own address, even as a seed


# -- frames bigger than max_frame, replies, LAN -----------------------------------------------------

SMALL = GossipConfig(push_interval=W, max_frame=4096, anti_entropy_interval=1000.0, peer_exchange_interval=1000.0)


def test_a_shard_bigger_than_a_frame_travels_in_chunks() -> None:
    a, b = make("a", config=SMALL), make("b", config=SMALL)
    blob = random.Random(3).randbytes(30_000).hex()  # 60 kB: fifteen frames' worth
    put(a, "big", "blob", blob)
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    assert all(len(wire.encode(m)) <= SMALL.max_frame for _, _, m in log)
    chunks = [m for _, _, m in log if isinstance(m, DiffChunk)]
    assert len(chunks) > 15 and {c.total for c in chunks} == {len(chunks)}
    assert content(b, "big") == {"blob": blob}
    assert reps(a).digest("big") == reps(b).digest("big")

    # A single delta bigger than a frame (one huge write) goes in chunks too, not as a Push.
    delta = put(a, "big", "more", blob)
    a.local_update("big", delta, 1.0)
    a.tick(1.25)
    out = a.data_to_send()
    assert out and all(isinstance(m, DiffChunk) and len(wire.encode(m)) <= SMALL.max_frame for _, m in out)
    for _, m in out:
        b.receive("a", rt(m), 1.3)
    assert content(b, "big") == {"blob": blob, "more": blob}


def test_chunks_lost_or_too_many_are_handled() -> None:
    a, b = make("a", config=SMALL), make("b", config=replace(SMALL, max_diff_bytes=20_000))
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    put(a, "big", "blob", random.Random(4).randbytes(6_000).hex())
    a.receive("b", SyncRequest((("big", EMPTY_STATE_VECTOR),)), 1.0)
    pieces = [m for _, m in a.data_to_send() if isinstance(m, DiffChunk)]
    assert len(pieces) > 3
    for m in pieces[:1] + pieces[2:]:  # the second piece was lost: nothing is applied
        b.receive("a", m, 1.1)
    assert "big" not in reps(b).docs
    for m in pieces:  # the round (or repair) that asks again
        b.receive("a", m, 1.2)
    assert reps(b).digest("big") == reps(a).digest("big")
    put(a, "big", "blob2", random.Random(5).randbytes(12_000).hex())
    a.receive("b", SyncRequest((("big", EMPTY_STATE_VECTOR),)), 2.0)
    with pytest.raises(ProtocolError) as info:
        for _, msg in a.data_to_send():
            b.receive("a", msg, 2.1)
    assert info.value.code == CloseCode.OVERSIZE


def test_replies_wait_while_paused_and_coalesce() -> None:
    a, b = make("a"), make("b")
    put(a, "s", "k", "v" * 100)
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    a.pause_writing("b")
    for i in range(50):  # a peer that asks and never reads
        a.receive("b", SyncRequest((("s", EMPTY_STATE_VECTOR),)), 1.0 + i / 1000)
        a.receive("b", Summary(bytes(16), 1), 1.0 + i / 1000)
    assert a.data_to_send() == []
    a.resume_writing("b", 2.0)
    a.tick(a.next_deadline())  # type: ignore[arg-type]
    assert [type(m) for _, m in a.data_to_send()] == [Digests, Diff]  # one of each

    # Not paused: at most reply_budget bytes a window; the rest in the next ones.
    cfg = replace(CFG, reply_budget=300)
    a, b = make("a", config=cfg), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    for i in range(6):
        put(a, f"s{i}", "k", "v" * 200)
    a.receive("b", SyncRequest(tuple((f"s{i}", EMPTY_STATE_VECTOR) for i in range(6))), 1.0)
    first = [m for _, m in a.data_to_send() if isinstance(m, Diff)]
    assert 1 <= len(first) < 6
    a.tick(1.25)
    second = [m for _, m in a.data_to_send() if isinstance(m, Diff)]
    assert first and second and len(first) + len(second) <= 6


def test_lan_settings_send_at_once_when_idle_and_batch_what_follows() -> None:
    lan = GossipConfig.lan()
    assert lan.relay_max == 0 and not lan.align_windows and lan.push_interval <= 0.005
    a, b = make("a", config=lan), make("b", config=lan)
    connect(a, b)
    settle({"a": a, "b": b}, 0.5)
    d1, d2, d3 = (put(a, "s", f"k{i}", i) for i in range(3))
    a.local_update("s", d1, 1.0)
    assert a.data_to_send() == [("b", Push("s", (d1,), None, 1))]  # an idle link: at once
    a.local_update("s", d2, 1.0005)
    a.local_update("s", d3, 1.001)
    assert a.data_to_send() == []
    assert a.next_deadline() == pytest.approx(1.0005 + lan.push_interval)
    a.tick(a.next_deadline())  # type: ignore[arg-type]
    assert a.data_to_send() == [("b", Push("s", (d2, d3), None, 2))]  # batched
    assert a.mode() == FULL and make("x", config=replace(lan, full_mesh_max=1)).mode() == FULL
