"""An authenticated but hostile peer naming shards it never sent (issue 17, h-wire's scan).

Every frame here is valid on the wire: the scan of every message type and field
(``benchmarks/history/hostile-and-misc.md``, fifteenth pass) found what one such frame made the
receiving core do, not what the codec let through. Each test fails on ``d855df6``.
"""

from __future__ import annotations

# ruff: noqa: F405 (names from corepair)
from collections.abc import Callable

from corepair import *  # noqa: F403

from crdtsync.errors import CloseCode, ProtocolError
from crdtsync.gossip._ack_records import MAX_UNHELD_ACKS
from crdtsync.gossip.membership import HEARSAY_CAP, Membership, PeerState
from crdtsync.gossip.repair import MAX_UNHELD_REPAIRS
from crdtsync.messages import Holdings
from crdtsync.quotas import ShardQuota
from crdtsync.sharding import MAX_HOLDINGS, Sharding, ShardingConfig

SV1 = b"\x01\x01\x01"  # client 1 at clock 1: more than an empty shard holds
NAMES = [f"x{i:04d}" for i in range(1000)]


def _victim() -> tuple[GossipCore, GossipCore]:
    """``a`` holds "s"; ``m`` (the hostile peer) dialled it and both settled."""
    a, m = make("a"), make("m")
    put(a, "s", "k", 1)
    connect(m, a)
    settle({"a": a, "m": m}, 0.25)
    return a, m


def _asked(a: GossipCore, until: float) -> list[str]:
    """The shards ``a`` sends SyncRequests for while its timers run to ``until``."""
    asked = []
    t = 1.0
    while t <= until:
        a.tick(t)
        asked += [
            s
            for _, msg in a.data_to_send()
            if isinstance(msg, SyncRequest)
            for s, _ in msg.state_vectors
        ]
        t += 0.05
    return asked


def test_acks_of_shards_never_held_ask_a_bounded_number_of_repairs() -> None:
    # Before: 1,000 names acked -> 1,000 repairs asked after repair_timeout, and again every
    # repair_timeout while the link lasted (100,000 names: 19 MB of SyncRequests in 5 s).
    a, _ = _victim()
    a.receive("m", rt(Ack(tuple(ShardState(n, SV1, b"\x00") for n in NAMES))), 1.0)
    asked = _asked(a, 1.0 + 10 * CFG.repair_timeout)
    assert 0 < len(set(asked)) <= MAX_UNHELD_REPAIRS
    assert len(asked) <= MAX_UNHELD_REPAIRS * 11  # (each retried at most once a timeout)
    # A further Ack of fresh names asks nothing more while those are under way.
    a.receive("m", rt(Ack(tuple(ShardState(f"y{n}", SV1, b"\x00") for n in NAMES))), 5.0)
    assert not {s for s in _asked(a, 6.0) if s.startswith("y")}


def test_names_of_shards_not_held_do_not_grow_a_links_interest() -> None:
    # Before: each name of a Digests, SyncRequest or Ack joined the link's interest set, for
    # as long as the link lasted (100,000 a frame, any number of frames).
    a, _ = _victim()
    digest = reps(a).digest("s")
    a.receive("m", rt(Digests(tuple(sorted([("s", digest)] + [(n, b"\x01") for n in NAMES])))), 1.0)
    a.receive("m", rt(SyncRequest(tuple((n, EMPTY_STATE_VECTOR) for n in NAMES))), 1.1)
    a.receive("m", rt(Ack(tuple(ShardState(f"z{n}", SV1, b"\x00") for n in NAMES))), 1.2)
    assert a._conns["m"].interest <= {"s"}
    a.data_to_send()


def test_deaths_of_agents_nobody_knows_do_not_grow_the_member_table() -> None:
    a, _ = _victim()
    members = a._p.members._members  # (peers() leaves the dead out; the table keeps them)
    before = len(members)
    entries = tuple(PeerEntry(f"d{i:05d}", None, 1, False) for i in range(1000))
    a.receive("m", rt(PeerList(entries)), 1.0)
    assert len(members) <= before + 10


def test_acks_of_shards_never_held_are_not_kept_without_bound() -> None:
    a, _ = _victim()
    for j in range(3):
        a.receive("m", rt(Ack(tuple(ShardState(f"{j}{n}", SV1, b"\x00") for n in NAMES))), 1.0 + j)
    acked = next(p for p in a.peers() if p.name == "m").acked
    assert len(acked) == MAX_UNHELD_ACKS  # (3,000 names acked: the first ones kept)
    assert a._p.acks.unheld_dropped == 3000 - MAX_UNHELD_ACKS
    assert a.security_counters["unheld_acks_dropped"] == 3000 - MAX_UNHELD_ACKS
    # An ack of a shard we hold is still kept past the bound; others are pruned once held.
    a.receive("m", rt(Ack((ShardState("s", SV1, b"\x00"),))), 5.0)
    assert "s" in {st.shard for st in next(p for p in a.peers() if p.name == "m").acked}


def test_pieces_of_one_holdings_version_are_bounded() -> None:
    a = GossipCore(
        "a",
        MemoryReplicas(random.Random(1)),
        rng=random.Random(0),
        config=CFG,
        policy=Sharding(ShardingConfig()),
    )
    m = make("m")
    connect(m, a)
    assert MAX_HOLDINGS >= ShardQuota().max_shards  # (an honest peer never holds more)
    # An honest peer's largest Holdings, in pieces, is taken whole.
    names = [f"h{i:06d}" for i in range(MAX_HOLDINGS)]
    for k in range(0, MAX_HOLDINGS, 40000):
        piece = tuple(names[k : k + 40000])
        a.receive("m", rt(Holdings(1, piece, more=k + 40000 < MAX_HOLDINGS)), 1.0)
    assert len(a.policy.peer_holdings()["m"]) == MAX_HOLDINGS
    # Pieces of a version past the bound: the peer is refused, nothing of them kept.
    for j in range(2):
        a.receive("m", rt(Holdings(2, tuple(f"{j}h{i:06d}" for i in range(40000)), more=True)), 2.0)
    with pytest.raises(ProtocolError) as err:
        a.receive("m", rt(Holdings(2, tuple(f"2h{i:06d}" for i in range(40000)), more=True)), 3.0)
    assert err.value.code == CloseCode.OVERSIZE and "MAX_HOLDINGS" in str(err.value)
    assert "m" not in a.policy._holds_parts


def _membership(verify: Callable[[PeerEntry], bool] | None = None) -> Membership:
    m = Membership(
        "me",
        "mem://me",
        GossipConfig(suspect_timeout=5.0, forget_timeout=100.0),
        send=lambda p, msg: None,
        schedule_flush=lambda now: None,
        connected=lambda p: False,
        has_links=lambda: True,
    )
    m.verify = verify
    return m


def test_members_taken_on_unverifiable_word_are_capped_per_reporter_and_in_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    per, total = HEARSAY_CAP
    m = _membership()
    # An honest full PeerList of a 1,000-agent mesh is taken whole.
    for i in range(999):
        m.merge(PeerEntry(f"h{i:04d}", f"mem://h{i}", 0, True), "seed", 1.0)
    assert len(m.names()) == 999 and m.capped == 0
    # One reporter inventing agents: at most `per` of them kept.
    for i in range(per + 500):
        m.merge(PeerEntry(f"f{i:05d}", None, 1, True), "liar", 1.0)
    assert len(m.names()) == 999 + per and m.capped == 500
    capped = [r for r in caplog.records if "reached the cap" in r.getMessage()]
    assert len(capped) == 1 and "liar" in capped[0].getMessage()  # (logged once)
    # Many reporters: at most `total` in all.
    for r in range(total // per + 2):
        for i in range(per):
            m.merge(PeerEntry(f"r{r}-{i:05d}", None, 1, True), f"liar{r}", 2.0)
    assert len(m.names()) == total
    # A member that connects vouches for itself: its place is free again.
    m.hello("h0000", "mem://h0", 0, 3.0)
    m.merge(PeerEntry("late", None, 1, True), "seed", 3.0)
    assert "late" in m
    # Known members are still moved by reports (SWIM's rules are unchanged for them).
    m.merge(PeerEntry("h0001", "mem://h1", 0, False), "seed", 4.0)
    assert m["h0001"].status == PeerState.DEAD


def test_members_verified_by_a_known_key_are_not_capped() -> None:
    # With credentials: an unsigned entry passes verify only when the key is unknown here.
    known = {f"k{i:05d}" for i in range(HEARSAY_CAP[1] + 100)}
    m = _membership(lambda e: e.name not in known or e.signature == b"signed")
    for name in sorted(known):
        m.merge(PeerEntry(name, f"mem://{name}", 1, True, b"signed"), "seed", 1.0)
    assert len(m.names()) == len(known) and m.capped == 0
    for i in range(HEARSAY_CAP[0] + 1):  # unknown keys: capped as without credentials
        m.merge(PeerEntry(f"u{i:05d}", None, 1, True, b"whatever"), "seed", 1.0)
    assert len(m.names()) == len(known) + HEARSAY_CAP[0] and m.capped == 1


def test_death_of_an_unknown_agent_is_not_kept_and_known_deaths_still_count() -> None:
    m = _membership()
    m.merge(PeerEntry("ghost", None, 3, False), "peer", 1.0)
    assert "ghost" not in m and not m.has_changes
    m.merge(PeerEntry("x", "mem://x", 3, True), "peer", 1.0)
    m.clear_changes()
    m.merge(PeerEntry("x", None, 3, False), "peer", 2.0)  # at equal incarnation: dead wins
    assert m["x"].status == PeerState.DEAD and m.has_changes
    m.merge(PeerEntry("x", "mem://x", 3, True), "other", 3.0)  # a stale alive report
    assert m["x"].status == PeerState.DEAD
