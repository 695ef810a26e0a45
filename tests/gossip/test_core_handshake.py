"""GossipCore driven directly: the handshake and the replacement of connections (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

# -- handshake ------------------------------------------------------------------------------------


def test_hello_describes_this_agent() -> None:
    a = make("a", ["s2", "s1"])
    run = random.Random(0).getrandbits(63)  # drawn from the core's rng: replays with the seed
    # No shards: the Hello's size does not grow with their number (issue #11).
    assert a.hello() == Hello(PROTOCOL_VERSION, "default", "a", "mem://a", (), 0, run)


def test_hello_size_does_not_grow_with_the_shard_count() -> None:
    few, many = make("a", ["s1"]), make("a", [f"shard-{i:06d}" for i in range(5000)])
    assert len(wire.encode(few.hello())) == len(wire.encode(many.hello()))


def test_equal_roots_teach_each_side_what_the_other_holds() -> None:
    a, b = make("a", ["s1", "s2"]), make("b", ["s1", "s2"])
    for shard in ("s1", "s2"):
        reps(b).docs[shard] = reps(a).docs[shard]  # the same content on both
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    assert b._conns["a"].interest == {"s1", "s2"}


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
        a.connection_made(
            Hello(PROTOCOL_VERSION, "default", "a", "mem://a-alias"), 0.0, outbound=True
        )
    a.dial_failed("mem://a-alias", 0.0)
    a.tick(100.0)
    assert a.dials() == []


def test_receive_from_unknown_peer_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        make("a").receive("ghost", Summary(bytes(16), 0), 0.0)


# -- who speaks when: the core's Handshake, with no driver -------------------------------------


def test_the_dialer_speaks_first_and_the_acceptor_only_after_validating_its_hello() -> None:
    a, b = make("a", ["s"]), make("b", ["s"])
    dialer, acceptor = Handshake(a, outbound=True), Handshake(b, outbound=False)
    assert acceptor.data_to_send() == []  # the acceptor says nothing as the connection opens
    first = dialer.data_to_send()
    assert first == [a.hello()] and dialer.data_to_send() == []  # handed out once
    assert acceptor.receive(rt(first[0]), 0.0) == "a" and acceptor.peer == "a"
    assert acceptor.data_to_send() == [b.hello()]  # now, ahead of what b's core queued
    assert dialer.receive(rt(b.hello()), 0.0) == "b"
    assert dialer.data_to_send() == []  # the dialer spoke already
    assert a.connected() == ("b",) and b.connected() == ("a",)
    with pytest.raises(UsageError):  # later frames go to core.receive
        acceptor.receive(rt(a.hello()), 0.1)


@pytest.mark.parametrize(
    "first",
    [
        Hello(PROTOCOL_VERSION + 1, "default", "x", None),
        Hello(PROTOCOL_VERSION, "other-mesh", "x", None),
        Hello(PROTOCOL_VERSION, "default", "b", "mem://b-alias"),  # ourselves
        Summary(bytes(16), 0),  # not a Hello
    ],
)
def test_an_acceptor_gives_a_refused_stranger_zero_frames(first: Message) -> None:
    b = make("b", ["s"])
    acceptor = Handshake(b, outbound=False)
    with pytest.raises(ProtocolError):
        acceptor.receive(rt(first), 0.0)
    assert acceptor.data_to_send() == [] and b.data_to_send() == []
    assert acceptor.peer is None and not acceptor.duplicate and b.connected() == ()


def test_a_refused_concurrent_dial_gets_the_acceptors_hello_before_its_close() -> None:
    a, b = make("a"), make("b", run=1)
    assert a.connection_made(rt(b.hello()), 0.2, outbound=True) == "b"  # a dialled b: kept
    second = Handshake(a, outbound=False)  # b's concurrent dial of a
    with pytest.raises(ProtocolError) as info:
        second.receive(rt(b.hello()), 0.3)
    assert info.value.code == CloseCode.DUPLICATE_NAME
    assert second.duplicate and second.peer is None
    assert second.data_to_send() == [a.hello()]  # a valid agent of our mesh learns who we are


class _CutGate:
    """Just enough of a security gate for a handshake: it marks what it cut."""

    def outgoing(self, identity: object, msg: Message) -> Message | None:
        return replace(msg, address=f"cut-for-{identity}") if isinstance(msg, Hello) else msg

    def learn(self, identity: object) -> None:
        pass

    def certificates(self) -> tuple[bytes, ...]:
        return ()


def test_with_credentials_a_handshake_needs_an_authenticated_peer() -> None:
    a, b = make("a"), make("b")
    b.secure(_CutGate())  # type: ignore[arg-type]
    assert b.secured and not a.secured
    with pytest.raises(UsageError):  # a driver must authenticate before the handshake
        Handshake(b, outbound=False)
    acceptor = Handshake(b, outbound=False, identity="a")
    assert acceptor.data_to_send() == []
    dialer = Handshake(a, outbound=True)
    assert acceptor.receive(rt(dialer.data_to_send()[0]), 0.0) == "a"
    (hello,) = acceptor.data_to_send()
    assert isinstance(hello, Hello) and hello.address == "cut-for-a"  # the gate's cut
