"""Acks at the group commit with ``ack_delay`` 0 (``GossipConfig.lan()``; issue 17/18, h-recv6).

An owed ack that is to wait for no Push goes alone from ``durable()`` itself, carrying every
shard of that commit, when no Push to that peer is queued; one queued rides on that Push at
the flush, as before; the ``ack_interval`` cap on standalone Acks holds; the WAN default
(``ack_delay`` > 0) waits for the flush and the delay as before (test_core_acks.py, and the
golden traces)."""

from __future__ import annotations

from dataclasses import replace

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

NOW = replace(CFG, ack_delay=0.0, ack_interval=0.05)


def _pair() -> tuple[GossipCore, GossipCore]:
    a, b = make("a", config=NOW), make("b", config=NOW)
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    for core in (a, b):  # past the timers of the handshake: the next is anti-entropy's
        core.tick(0.5)
    deliver({"a": a, "b": b}, 0.5)
    assert b.next_deadline() == 8.0
    return a, b


def test_lan_acks_at_the_commit() -> None:
    assert GossipConfig.lan().ack_delay == 0.0


def test_an_owed_ack_goes_at_the_commit_with_every_shard() -> None:
    a, b = _pair()
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 1.0)
    b.receive("a", Push("t", (put(a, "t", "k", 1),)), 1.0)
    assert sorted(reps(b).commit()) == ["s", "t"]
    b.data_to_send()
    b.durable(["s", "t"], 1.2)
    out = b.data_to_send()  # no tick: from durable() itself
    states = tuple(ShardState(s, *reps(b).durable_state(s)) for s in ("s", "t"))
    assert out == [("a", Ack(states))]
    assert b.next_deadline() == 8.0  # no tick for it: the next timer is anti-entropy's
    a.receive("b", rt(out[0][1]), 1.21)
    assert [p.acked for p in a.peers()] == [states]


def test_an_owed_ack_rides_on_a_queued_push() -> None:
    a, b = _pair()
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 1.0)
    reps(b).commit()
    b.data_to_send()
    own = put(b, "s", "kb", 2)
    b.local_update("s", own, 1.1)
    queued = b.data_to_send()  # (an idle link: the first write may go at once)
    own2 = put(b, "s", "kb2", 3)
    b.local_update("s", own2, 1.1005)  # queued for the window
    b.durable(["s"], 1.101)
    assert b.data_to_send() == []  # not alone: it rides on the Push at the flush
    b.tick(b.next_deadline())
    out = b.data_to_send()
    assert len(out) == 1 and isinstance(out[0][1], Push) and out[0][1].durable is not None, (
        queued,
        out,
    )


def test_the_ack_interval_still_caps_standalone_acks() -> None:
    a, b = _pair()
    b.receive("a", Push("s", (put(a, "s", "k", 1),)), 1.0)
    reps(b).commit()
    b.durable(["s"], 1.0)
    assert [type(m) for _, m in b.data_to_send()] == [Ack]
    b.receive("a", Push("s", (put(a, "s", "k", 2),)), 1.01)
    reps(b).commit()
    b.durable(["s"], 1.02)  # within ack_interval of the last one: waits for its timer
    assert b.data_to_send() == []
    assert b.next_deadline() == 1.0 + NOW.ack_interval
    b.tick(1.0 + NOW.ack_interval)
    assert [type(m) for _, m in b.data_to_send()] == [Ack]
