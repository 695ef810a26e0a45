"""Backoff and dial candidates on their own."""

from __future__ import annotations

import random

from crdtsync.gossip.dialer import Backoff


def test_backoff_doubles_up_to_the_cap_with_jitter_down_to_half() -> None:
    b = Backoff(0.5, 4.0, random.Random(1))
    delays = []
    for _ in range(6):
        b.failed("x", 0.0)
        at = b.ready_at("x")
        assert at is not None
        delays.append(at)
    nominal = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(n / 2 <= d < n for d, n in zip(delays, nominal, strict=True)), delays
    assert b.failures("x") == 6
    b.clear("x")
    assert b.ready_at("x") is None and b.failures("x") == 0


def test_lost_keeps_a_running_backoff_but_draws_its_jitter_anyway() -> None:
    rng = random.Random(2)
    b = Backoff(1.0, 8.0, rng)
    b.failed("x", 0.0)
    b.failed("x", 0.0)
    before = b.ready_at("x")
    state = rng.getstate()
    b.lost("x", 10.0)
    assert b.ready_at("x") == before  # not reset
    assert rng.getstate() != state  # one draw, as the core always made (traces depend on it)


def test_start_only_once() -> None:
    b = Backoff(1.0, 8.0, random.Random(3))
    b.start("x", 0.0)
    first = b.ready_at("x")
    b.start("x", 5.0)
    assert b.ready_at("x") == first and b.failures("x") == 1


def test_a_dial_handed_out_before_the_first_clock_reading_times_out_from_the_next() -> None:
    # A driver asks for dials() before any call that carries the time (an agent dialling its
    # seeds at start): that dial's timeout starts at the next reading of the clock, instead of
    # having run out at the first tick (the seed was declared unreachable and dialled again
    # while the first connection was being accepted: issue #16's joiner dialled twice).
    from crdtsync.transports._sim_replicas import MemoryReplicas

    from crdtsync.gossip import GossipConfig, GossipCore

    cfg = GossipConfig()
    core = GossipCore(
        "b",
        MemoryReplicas(random.Random(1)),
        rng=random.Random(1),
        config=cfg,
        seeds=["ws://127.0.0.1:7001"],
    )
    assert core.dials() == ["ws://127.0.0.1:7001"]
    core.tick(100.0)
    assert core.dials() == []  # still under way, not failed
    assert core.next_deadline() is not None
    core.tick(100.0 + cfg.connect_timeout / 2)
    assert core.dials() == []
    core.tick(100.0 + cfg.connect_timeout)  # no answer within connect_timeout: failed
    assert core._p.dialer.backoff.failures("ws://127.0.0.1:7001") == 1
