"""Reports of death are bounded per reporter: a member cannot make another agent refute (and
flood the mesh with refutations) as often as it sends a PeerList, nor push it to an
incarnation nobody accepts. Membership on its own, then the core (its counter)."""

from __future__ import annotations

from corepair import *  # noqa: F403

from crdtsync.gossip.membership import (
    DEATH_REPORT_BURST,
    DEATH_REPORT_RATE,
    MAX_INCARNATION,
    Membership,
)

# ruff: noqa: F405 (names from corepair)


class Harness:
    def __init__(self, connected: set[str]) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.links = connected
        self.m = Membership(
            "me",
            "mem://me",
            GossipConfig(suspect_timeout=5.0, forget_timeout=100.0),
            send=lambda p, msg: self.sent.append((p, msg)),
            schedule_flush=lambda now: None,
            connected=self.links.__contains__,
            has_links=lambda: bool(self.links),
        )


def test_one_reporter_makes_us_refute_at_most_its_budget() -> None:
    h = Harness({"liar", "honest"})
    for _ in range(100):  # each report at our current incarnation: each would make us refute
        h.m.merge(PeerEntry("me", None, h.m.incarnation, False), "liar", now=1.0)
    assert h.m.incarnation == DEATH_REPORT_BURST
    assert h.m.limited == 100 - DEATH_REPORT_BURST
    # another reporter is not held back by the liar's budget
    h.m.merge(PeerEntry("me", None, h.m.incarnation, False), "honest", now=1.0)
    assert h.m.incarnation == DEATH_REPORT_BURST + 1
    # the liar's budget refills at DEATH_REPORT_RATE a second
    h.m.merge(PeerEntry("me", None, h.m.incarnation, False), "liar", now=1.0)
    assert h.m.incarnation == DEATH_REPORT_BURST + 1
    h.m.merge(
        PeerEntry("me", None, h.m.incarnation, False), "liar", now=1.0 + 1 / DEATH_REPORT_RATE
    )
    assert h.m.incarnation == DEATH_REPORT_BURST + 2


def test_reports_passed_on_to_a_connected_peer_are_bounded_too() -> None:
    h = Harness({"liar", "c"})
    h.m.hello("c", "mem://c", 0, now=0.0)
    for i in range(50):  # ever higher incarnations: each would be passed on to c
        h.m.merge(PeerEntry("c", None, i + 1, False), "liar", now=1.0)
    assert len([p for p, _ in h.sent if p == "c"]) == DEATH_REPORT_BURST
    assert h.m.limited == 50 - DEATH_REPORT_BURST


def test_honest_reports_about_members_we_do_not_talk_to_are_not_counted() -> None:
    h = Harness({"b"})
    for i in range(40):  # a partition: b declares 40 agents dead we only know of through it
        h.m.merge(PeerEntry(f"n{i:02}", f"mem://n{i:02}", 0, True), "b", now=0.0)
        h.m.merge(PeerEntry(f"n{i:02}", None, 0, False), "b", now=1.0)
    assert h.m.limited == 0
    assert all(h.m[f"n{i:02}"].status == "dead" for i in range(40))


def test_a_healed_partition_passes_every_report_on() -> None:
    # b's side declared 40 agents dead that we are connected to, at the incarnation we know:
    # each is passed on to its subject (which bounds its own refutations per reporter: us).
    h = Harness({"b"} | {f"n{i:02}" for i in range(40)})
    for i in range(40):
        h.m.hello(f"n{i:02}", f"mem://n{i:02}", 3, now=0.0)
    for i in range(40):
        h.m.merge(PeerEntry(f"n{i:02}", None, 3, False), "b", now=1.0)
    assert h.m.limited == 0
    assert sorted(p for p, _ in h.sent) == [f"n{i:02}" for i in range(40)]


def test_a_death_at_the_last_incarnation_is_refused() -> None:
    # Refuting it would take us to MAX_INCARNATION, which every agent refuses (in a PeerList
    # and in a Hello): we would stay dead for the mesh, and could not connect again.
    h = Harness({"liar"})
    h.m.merge(PeerEntry("me", None, MAX_INCARNATION - 1, False), "liar", now=1.0)
    assert h.m.incarnation == 0 and h.m.refused == 1
    h.m.merge(PeerEntry("me", None, MAX_INCARNATION - 2, False), "liar", now=1.0)
    assert h.m.incarnation == MAX_INCARNATION - 1  # still below the limit: accepted everywhere


def test_the_core_counts_the_reports_it_ignored() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    for i in range(40):
        a.receive("b", PeerList((PeerEntry("a", None, a.incarnation, False),)), 1.0 + i * 0.001)
    assert a.incarnation == DEATH_REPORT_BURST
    assert a.security_counters["limited_death_reports"] == 40 - DEATH_REPORT_BURST
