"""GossipCore driven directly: membership, dialling and the overlay (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

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
    gaps = [b - a_ for a_, b in zip([0.0, *retries], retries, strict=False)]
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


def test_large_mesh_overlay_is_one_symmetric_tree() -> None:
    cfg = GossipConfig(full_mesh_max=8, relay_max=0, fanout=4)
    cores = mesh_views(40, cfg)
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


def test_a_ring_overlay_moves_only_the_edges_around_a_joiner() -> None:
    """overlay_shape="ring": one symmetric cycle over every agent, and a joiner changes only
    the edges that touch it (plus the one it splits); a tree moves most of them."""
    from crdtsync.gossip.overlay import Ranks, tree_neighbours

    def edges(names: list[str], cfg: GossipConfig) -> set[frozenset[str]]:
        rank = Ranks("m")
        return {
            frozenset((me, nb))
            for me in names
            for nb in tree_neighbours(me, [n for n in names if n != me], cfg, rank)
        }

    ring = GossipConfig(full_mesh_max=8, relay_max=0, overlay_shape="ring")
    tree = GossipConfig(full_mesh_max=8, relay_max=0)
    names = [f"a{i}" for i in range(128)]
    before = edges(names, ring)
    assert len(before) == 128  # a cycle: n undirected edges, every agent of degree 2
    cores = mesh_views(40, ring)
    directed = {(a, b) for a, core in cores.items() for b in core.neighbours()}
    assert all((b, a) in directed for a, b in directed)  # symmetric through the core too
    assert all(len(core.neighbours()) == 2 for core in cores.values())
    moved_ring = moved_tree = 0
    for joiner in ("j1", "j2", "j3", "j4"):
        after = edges([*names, joiner], ring)
        changed = before ^ after
        assert all(joiner in e for e in after - before)  # new edges all touch the joiner
        assert len(before - after) == 1  # the one edge it split
        moved_ring += len(changed)
        t0, t1 = edges(names, tree), edges([*names, joiner], tree)
        moved_tree += len(t0 ^ t1)
    assert moved_ring == 4 * 3
    assert moved_tree > 4 * moved_ring  # what the ring is for (here 76 edges against 12)
    with pytest.raises(UsageError):
        GossipConfig(overlay_shape="star")


def test_unneeded_connections_are_pruned_after_the_grace() -> None:
    cfg = GossipConfig(full_mesh_max=3, relay_max=0, fanout=1, prune_grace=5.0)
    cores = mesh_views(6, cfg)
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
    cores = mesh_views(12, GossipConfig(full_mesh_max=4, push_interval=W))
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
