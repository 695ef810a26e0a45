"""GossipCore driven directly: relayed acks in a tree, lags seen in acks, address changes (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

# -- ack relaying (tree), lags seen in acks, address ----------------------------------------------


def test_acks_are_relayed_within_ack_relay_hops() -> None:
    for hops, expected in ((2, ("b", "c", "d")), (1, ("b", "c"))):
        tree = GossipConfig(
            push_interval=W,
            full_mesh_max=2,
            relay_max=0,
            fanout=1,
            prune_grace=1e6,
            ack_relay_hops=hops,
        )
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
            for core in cores.values():
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
    a = GossipCore(
        "a",
        replicas,
        rng=random.Random(0),
        config=CFG,
        address="ws://127.0.0.1:0",
        seeds=["ws://127.0.0.1:7001"],
    )
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
