"""GossipCore driven directly: acks and replicated() (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

import pytest
from corepair import *  # noqa: F403

from crdtsync.gossip import _ack_records
from crdtsync.gossip.acks import SAME_DELETE_SET, WANT_ACK

# ruff: noqa: F405 (names from corepair)

# -- acks -----------------------------------------------------------------------------------------


@pytest.fixture
def elide_every_delete_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests' delete sets are empty (1 byte), which goes whole on the wire
    (:data:`~crdtsync.gossip._ack_records.ELIDE_DELETE_SET_FROM`); elide from 0 bytes so they
    pin the elision itself."""
    monkeypatch.setattr(_ack_records, "ELIDE_DELETE_SET_FROM", 0)


def test_acks_ride_on_pushes_or_go_alone_and_answer_replicated(
    elide_every_delete_set: None,
) -> None:
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
    assert ds2 == ds  # (no deletion since): the delete set goes as "as in my last ack"
    out = b.data_to_send()
    assert out == [("a", Push("s", (own,), (sv2, SAME_DELETE_SET), 1))]
    a.receive("b", rt(out[0][1]), 2.3)
    assert [p.acked for p in a.peers()] == [(ShardState("s", sv2, ds2),)]


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


def test_standalone_acks_are_rate_limited(elide_every_delete_set: None) -> None:
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
    ((_, last),) = b.data_to_send()
    sv, _ = reps(b).durable_state("s")
    assert last == Ack((ShardState("s", sv, SAME_DELETE_SET),))  # no deletion since the first


def test_full_mesh_acks_go_to_the_writer_and_to_who_asks() -> None:
    # Issue 17: in a full mesh c owes its ack of "s" only to a, which sent it the shard, not
    # to b, which holds it too; b, waiting in replicated() for a's change, asks (want_acks).
    a, b, c = make("a"), make("b"), make("c")
    cores = {"a": a, "b": b, "c": c}
    connect(a, b)
    connect(a, c)
    connect(b, c)
    put(b, "s", "b", 0)  # b and c hold "s" before they meet: each announces it in its Hello
    put(c, "s", "c", 0)
    connect(b, c)
    deliver(cores, 0.0)
    for core in (b, c):  # their on-connect sync is acked (two commits' worth), then quiet
        reps(core).commit()
        core.durable(["s"], 0.5)
        core.durable(["s"], 0.6)
        core.tick(0.9)
    deliver(cores, 0.9)
    delta = put(a, "s", "k", 1)
    for core in (b, c):
        core.receive("a", Push("s", (delta,)), 1.0)
        reps(core).commit()
        core.durable(["s"], 1.0)
    assert "s" in c._conns["b"].interest  # b holds "s" as far as c knows (it announced it)
    c.tick(1.0 + CFG.ack_delay + CFG.ack_interval)
    assert [peer for peer, m in c.data_to_send() if isinstance(m, Ack)] == ["a"]
    target = (reps(b).state_vector("s"), updates.delete_set(reps(b).doc("s")))
    assert b.replicated("s", *target) == ()
    b.want_acks("s", 1.5 + CFG.ack_interval)
    asks = [(peer, m) for peer, m in b.data_to_send() if isinstance(m, Push)]
    assert sorted(peer for peer, _ in asks) == ["a", "c"]
    ask = dict(asks)["c"]
    assert ask.updates == (WANT_ACK,)
    c.receive("b", rt(ask), 1.6 + CFG.ack_interval)
    c.tick(1.6 + 2 * CFG.ack_interval + CFG.ack_delay)
    acks = [m for peer, m in c.data_to_send() if peer == "b" and isinstance(m, Ack)]
    assert len(acks) == 1
    t = 2.0 + 2 * CFG.ack_interval
    b.receive("c", rt(acks[0]), t)
    assert "c" in b.replicated("s", *target)
    # asked again with nothing new: no second ack
    b.want_acks("s", t + 0.1)
    again = dict((p, m) for p, m in b.data_to_send() if isinstance(m, Push))["c"]
    c.receive("b", rt(again), t + 0.2)
    c.tick(t + 10 * CFG.ack_interval)
    assert not [m for peer, m in c.data_to_send() if peer == "b" and isinstance(m, Ack)]


def test_paced_digests_for_a_summary_flooder_do_not_hold_acks_back() -> None:
    """Issue #11: a peer sending Summaries back to back is owed Digests that are paced; each
    window flush asked for the next one, and acks waited for a window without a flush to come:
    an honest writer's replicated() then waited 5-60 s (benchmarks/hostile.py). The acks a flush
    leaves go out after it even when the flush asked for another."""
    a, b, f = make("a"), make("b"), make("f")
    connect(a, b)
    connect(f, b)
    deliver({"a": a, "b": b, "f": f}, 0.0)
    put(b, "other", "x", 1)  # b holds a shard, so f's empty root differs from b's
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 1.0)
    reps(b).commit()
    b.durable(["s"], 1.0)
    acked_at = None
    t = 1.0
    while t < 10.0 and acked_at is None:
        b.receive("f", Summary(bytes(16), 0), t)  # the flood: one Summary a tick
        b.tick(t)
        for dst, msg in b.data_to_send():
            if dst == "a" and (isinstance(msg, Ack) or getattr(msg, "durable", None)):
                acked_at = t
        t += W / 2
    assert acked_at is not None and acked_at <= 1.0 + CFG.ack_delay + W, acked_at


def test_a_summary_flooder_drives_one_flush_per_digests_gap_not_one_per_window() -> None:
    """Issue #11: a peer owed paced Digests asked for a window flush at every flush until they
    were due, and each of its Summaries asked again: a flooder made its victim flush every
    window (every 2 ms on a LAN). Now it gets one flush per Digests gap (its Digests still
    come, paced), whatever it sends."""
    cfg = replace(CFG, anti_entropy_interval=40.0)  # Digests gap 4 s = 16 windows
    a, b, f = make("a", config=cfg), make("b", config=cfg), make("f", config=cfg)
    connect(a, b)
    connect(f, b)
    deliver({"a": a, "b": b, "f": f}, 0.0)
    put(b, "other", "x", 1)  # b holds a shard, so f's empty root differs from b's
    flushes: list[float] = []
    window = b._p.window
    real_flush = window.flush

    def counting_flush(now: float) -> None:
        flushes.append(now)
        real_flush(now)

    window.flush = counting_flush  # type: ignore[method-assign]
    digests: list[float] = []
    t, end = 1.0, 21.0
    while t < end:
        b.receive("f", Summary(bytes(16), 0), t)  # the flood: two Summaries a window
        nxt = t + W / 2
        while (at := b.next_deadline()) is not None and at < nxt:  # a driver: every timer
            b.tick(at)
            digests += [at for dst, m in b.data_to_send() if dst == "f" and isinstance(m, Digests)]
        digests += [t for dst, m in b.data_to_send() if dst == "f" and isinstance(m, Digests)]
        t = nxt
    gap = cfg.anti_entropy_interval / 10
    assert len(digests) >= (end - 1.0) / gap - 1  # the flooder is still answered, paced
    assert all(y - x >= gap for x, y in zip(digests, digests[1:], strict=False))
    assert len(flushes) <= len(digests) + 1, (len(flushes), len(digests))  # not 80 windows


def test_an_unchanged_delete_set_with_nothing_to_refer_to_is_ignored() -> None:
    # "As in my last ack" with no earlier ack on this link (lost, or a peer that lies): the
    # ack is not believed, nothing is closed, and the next whole one counts.
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    put(a, "s", "k", 1)
    sv, ds = reps(a).state_vector("s"), updates.delete_set(reps(a).doc("s"))
    a.receive("b", rt(Ack((ShardState("s", sv, SAME_DELETE_SET),))), 1.0)
    assert a.replicated("s", sv, ds) == ()
    a.receive("b", rt(Ack((ShardState("s", sv, ds),))), 1.1)
    assert a.replicated("s", sv, ds) == ("b",)
    a.receive("b", rt(Ack((ShardState("s", sv, SAME_DELETE_SET),))), 1.2)
    assert [p.acked for p in a.peers()] == [(ShardState("s", sv, ds),)]


def test_a_small_delete_set_always_goes_whole_so_a_lost_ack_blinds_nothing() -> None:
    # h-hello's trace: at 10 % loss a leaf's first ack (its only whole delete set among 17)
    # was lost, every later one said "as in my last ack", and its parent, with nothing to
    # refer to, recorded none of them. A small delete set (here the empty one, 1 byte) now
    # goes whole every time, so each ack stands on its own; a big one is still elided.
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    sent = []
    for i, t in enumerate((1.0, 2.0, 3.0)):
        b.receive("a", Push("s", (put(a, "s", f"k{i}", i),)), t)
        reps(b).commit()
        b.durable(["s"], t)
        b.tick(t + 0.9)
        sent += [st for _, m in b.data_to_send() if isinstance(m, Ack) for st in m.states]
    assert len(sent) == 3
    assert all(st.delete_set == b"\x00" for st in sent)  # whole (empty), never elided
    # The receiver that lost the first two still records the third.
    a.receive("b", rt(Ack((sent[-1],))), 4.0)
    sv, ds = reps(b).durable_state("s")
    assert a.replicated("s", sv, ds) == ("b",)
    big = bytes(64)
    link = _ack_records.LinkAcks()
    assert link.wire_delete_set("s", big) == big
    assert link.wire_delete_set("s", big) == SAME_DELETE_SET
