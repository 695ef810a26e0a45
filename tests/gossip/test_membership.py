"""Membership (SWIM) on its own: the transition table and the incarnation rules."""

from __future__ import annotations

from crdtsync.gossip import GossipConfig
from crdtsync.gossip.membership import (
    ALIVE,
    DEAD,
    SUSPECT,
    TRANSITIONS,
    Event,
    Membership,
    PeerState,
    next_state,
)
from crdtsync.messages import Message, PeerEntry, PeerList

CFG = GossipConfig(suspect_timeout=5.0, forget_timeout=100.0)


class Harness:
    def __init__(self, connected: set[str] | None = None) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.flushes: list[float] = []
        self.links = connected if connected is not None else set()
        self.m = Membership(
            "me",
            "mem://me",
            CFG,
            send=lambda p, msg: self.sent.append((p, msg)),
            schedule_flush=self.flushes.append,
            connected=self.links.__contains__,
            has_links=lambda: bool(self.links),
        )


def test_values_are_the_strings_reported_before() -> None:
    assert [s.value for s in PeerState] == ["connected", "alive", "suspect", "dead"]
    assert PeerState.DEAD == "dead"


def test_table_is_the_only_rule_and_unlisted_pairs_keep_the_state() -> None:
    assert next_state(ALIVE, Event.LOST) == SUSPECT
    assert next_state(SUSPECT, Event.LOST) == SUSPECT  # not listed: unchanged
    assert next_state(DEAD, Event.LOST) == DEAD
    assert next_state(SUSPECT, Event.SILENT) == DEAD
    assert next_state(ALIVE, Event.SILENT) == ALIVE  # only suspects are declared dead
    assert next_state(DEAD, Event.CONNECTED) == ALIVE
    stored = {s for (s, _), new in TRANSITIONS.items()} | set(TRANSITIONS.values())
    assert PeerState.CONNECTED not in stored  # derived from the links, never stored


def test_suspect_then_dead_then_forgotten() -> None:
    h = Harness({"b"})
    h.m.hello("b", "mem://b", 0, now=0.0)
    assert h.m["b"].status == ALIVE
    h.links.discard("b")
    h.m.lost("b", closing=False, now=1.0)
    assert h.m["b"].status == SUSPECT
    assert list(h.m.deadlines()) == [1.0 + CFG.suspect_timeout]
    assert h.m.tick(5.9) == [] and h.m["b"].status == SUSPECT
    assert h.m.tick(6.0) == [] and h.m["b"].status == DEAD
    assert [e.alive for e in h.m.changes_for("x")] == [False]  # a death is flooded
    assert h.m.tick(106.0) == ["b"]
    assert "b" not in h.m


def test_a_clean_close_is_not_a_suspicion() -> None:
    h = Harness({"b"})
    h.m.hello("b", "mem://b", 0, now=0.0)
    h.m.lost("b", closing=True, now=1.0)
    assert h.m["b"].status == ALIVE


def test_higher_incarnation_wins_and_dead_wins_at_equal_incarnation() -> None:
    h = Harness()
    h.m.merge(PeerEntry("c", "mem://c", 3, True), "b", now=0.0)
    h.m.merge(PeerEntry("c", "mem://c", 2, False), "b", now=1.0)  # older: ignored
    assert h.m["c"].status == ALIVE
    h.m.merge(PeerEntry("c", "mem://c", 3, False), "b", now=2.0)  # equal: dead wins
    assert h.m["c"].status == DEAD
    h.m.merge(PeerEntry("c", "mem://c", 4, True), "b", now=3.0)  # it refuted
    assert h.m["c"].status == ALIVE and h.m["c"].incarnation == 4


def test_told_we_are_dead_we_refute_with_a_higher_incarnation() -> None:
    h = Harness({"b"})
    h.m.merge(PeerEntry("me", "mem://me", 0, False), "b", now=1.0)
    assert h.m.incarnation == 1
    assert h.m.changes_for("b") == [PeerEntry("me", "mem://me", 1, True)]
    assert h.flushes == [1.0]


def test_a_dead_report_about_a_connected_peer_goes_to_it_instead() -> None:
    h = Harness({"b", "c"})
    h.m.hello("c", "mem://c", 0, now=0.0)
    h.m.clear_changes()
    report = PeerEntry("c", "mem://c", 0, False)
    h.m.merge(report, "b", now=1.0)
    assert h.m["c"].status == ALIVE
    assert h.sent == [("c", PeerList((report,)))]


def test_version_grows_with_every_change_of_the_live_set() -> None:
    h = Harness()
    v0 = h.m.version
    h.m.merge(PeerEntry("c", "mem://c", 0, True), "b", now=0.0)
    v1 = h.m.version
    assert v1 > v0
    h.m.unreachable("mem://c", now=1.0)  # suspect: still live, the overlay does not change
    assert h.m["c"].status == SUSPECT and h.m.version == v1
    assert h.m.live() == ("c",)
