"""GossipCore driven directly: joining a mesh of many shards (issue #16), the cut rounds that
continue at once and the guards that keep them from looping, stalling or fetching twice."""

from __future__ import annotations

from corepair import *  # noqa: F403
from crdtsync.transports._sim_replicas import MemoryReplicas

from crdtsync.gossip import antientropy

# ruff: noqa: F405 (names from corepair)

Frame = tuple[str, str, Message]


class _NeverEqual(MemoryReplicas):
    """Replicas whose digest of the shards in ``never`` is salted: they never agree with any
    peer's, whatever the Diffs bring (a shard whose repair never converges)."""

    def __init__(self, never: set[str]) -> None:
        super().__init__(random.Random("ids/b"))
        self.never = never

    def digest(self, shard: str) -> bytes:
        real = super().digest(shard)
        return bytes(b ^ 0xFF for b in real) if shard in self.never else real


def _pump(
    cores: dict[str, GossipCore],
    queue: deque[Frame],
    now: float,
    *,
    until: Callable[[Frame], bool] = lambda f: False,
    limit: int = 2_000,
) -> list[Frame]:
    """Deliver frames at ``now`` (outboxes first) until none is left, or until the next one
    satisfies ``until`` (left at the head of ``queue``). Fails beyond ``limit`` frames: a
    continuation that never stops would otherwise loop here forever."""
    log: list[Frame] = []
    for name, core in cores.items():
        queue.extend((name, dst, m) for dst, m in core.data_to_send())
    while queue and not until(queue[0]):
        src, dst, msg = queue.popleft()
        log.append((src, dst, msg))
        assert len(log) <= limit, "rounds run back to back without end"
        cores[dst].receive(src, rt(msg), now)
        queue.extend((dst, d, m) for d, m in cores[dst].data_to_send())
    return log


def _summaries(log: list[Frame], src: str) -> int:
    return sum(isinstance(m, Summary) and s == src for s, _, m in log)


def test_continuation_stops_on_shards_whose_digests_never_agree() -> None:
    # The stuck-shard guard: a cut round continues at once only while it acts on other shards
    # than the last ones. Five shards differ forever (b's digests of them are salted), two
    # per round: each round acts on the same two. The continuation stops after _STUCK such
    # rounds in a row (the periodic rounds take over) instead of running back to back forever.
    cfg = replace(CLASSIC, max_sync_shards=2)  # (small shards: the early ask would take them)
    shards = {f"s{i}" for i in range(5)}
    a = make("a", config=cfg)
    b = GossipCore("b", _NeverEqual(shards), rng=random.Random(0), config=cfg, address="mem://b")
    for s in sorted(shards):
        reps(b).apply(s, put(a, s, "k", s), "a")
    connect(a, b)
    log = _pump({"a": a, "b": b}, deque(), 0.0)
    rounds = _summaries(log, "a")
    assert rounds == antientropy._STUCK + 1  # the on-connect round and _STUCK continuations
    requests = [m for s, _, m in log if s == "a" and isinstance(m, SyncRequest)]
    assert len(requests) == rounds
    assert all([sh for sh, _ in r.state_vectors] == ["s0", "s1"] for r in requests)
    # Nothing is left running: the next round is the periodic one.
    assert _pump({"a": a, "b": b}, deque(), 1.0) == []
    a.tick(CFG.anti_entropy_interval)
    assert _summaries(_pump({"a": a, "b": b}, deque(), CFG.anti_entropy_interval), "a") >= 1


def test_stuck_guard_resets_when_the_rounds_move_on() -> None:
    # Rounds acting on new shards each time are no loop: 450 shards in rounds of 100 all come
    # (the guard counts only rounds acting on exactly the same shards).
    cfg = replace(CFG, max_sync_shards=100)
    a, b = make("a", config=cfg), make("b", config=cfg)
    shards = [f"s{i:04d}" for i in range(450)]
    for s in shards:
        put(a, s, "k", s)
    connect(a, b)
    log = _pump({"a": a, "b": b}, deque(), 0.0)
    assert sorted(reps(b).shard_names()) == shards
    assert _summaries(log, "a") == 5


def test_stalled_continuation_hands_over_to_the_periodic_round() -> None:
    # A continuation whose Diffs never come (its SyncRequest is lost) waits; it must not keep
    # the periodic round away for more than an interval, or the join would stall for good.
    cfg = replace(CFG, max_sync_shards=10)
    a, b = make("a", config=cfg), make("b", config=cfg)
    for i in range(30):
        put(b, f"s{i:02d}", "k", i)
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0, drop={SyncRequest})
    assert _summaries(log, "a") == 1
    assert list(reps(a).shard_names()) == []  # its Diffs never came
    a.tick(cfg.anti_entropy_interval)
    log = deliver({"a": a, "b": b}, cfg.anti_entropy_interval)
    assert _summaries(log, "a") >= 1  # the periodic round
    # The join went on (its continuations then wait for b's Digests, paced: b's round got
    # no Diffs from a, see transfer.py; the next shards come a tenth of an interval on).
    assert len(list(reps(a).shard_names())) >= 10


def test_no_periodic_round_on_top_of_a_live_continuation() -> None:
    # a continues a cut round with b when its periodic timer fires: a second Summary would
    # bring Digests written before a's Diffs in flight arrive, and a would send them again.
    cfg = replace(CFG, max_sync_shards=10)
    a, b = make("a", config=cfg), make("b", config=cfg)
    for i in range(40):
        put(a, f"s{i:02d}", "k", i)
    connect(a, b)
    late = cfg.anti_entropy_interval - 0.25  # the on-connect round's frames arrive late
    seen = {"n": 0}

    def second_summary(f: Frame) -> bool:
        if f[0] == "a" and isinstance(f[2], Summary):
            seen["n"] += 1
        return seen["n"] == 2

    queue = deque()
    _pump({"a": a, "b": b}, queue, late, until=second_summary)
    assert queue and isinstance(queue[0][2], Summary)  # a's continuation is under way
    a.tick(cfg.anti_entropy_interval)
    assert not any(isinstance(m, Summary) for _, m in a.data_to_send())
    # The continuation then completes the join, each shard sent once.
    log = _pump({"a": a, "b": b}, queue, cfg.anti_entropy_interval)
    assert sorted(reps(b).shard_names()) == [f"s{i:02d}" for i in range(40)]
    sent = [d.shard for _, _, m in log if isinstance(m, DiffBatch) for d in m.diffs]
    assert len(sent) == len(set(sent))


def test_joiner_starts_no_round_while_whole_shards_come() -> None:
    # b (the larger name: a continues) receives a's cut round's whole shards long after a's
    # Summary. A round of b's own now would ask for the very shards a is sending.
    cfg = replace(CFG, max_sync_shards=10)
    a, b = make("a", config=cfg), make("b", config=cfg)
    for i in range(40):
        put(a, f"s{i:02d}", "k", i)
    connect(a, b)
    queue: deque[Frame] = deque()
    _pump({"a": a, "b": b}, queue, 0.0, until=lambda f: isinstance(f[2], DiffBatch))
    late = cfg.anti_entropy_interval - 0.25
    _pump({"a": a, "b": b}, queue, late, until=lambda f: isinstance(f[2], Summary))
    assert reps(b).shard_names()  # whole shards came at ``late``
    b.tick(cfg.anti_entropy_interval)
    assert not any(isinstance(m, Summary) for _, m in b.data_to_send())


def test_stale_digests_do_not_send_shards_in_flight_again() -> None:
    # a sent b ten shards whole; before they arrive, Digests written earlier (b's own round,
    # or a round on top of the continuation) say b lacks them. a acts on the next ten
    # instead: every shard travels once.
    cfg = replace(CFG, max_sync_shards=10)
    a, b = make("a", config=cfg), make("b", config=cfg)
    names = [f"s{i:02d}" for i in range(40)]
    for s in names:
        put(a, s, "k", s)
    connect(a, b)
    queue: deque[Frame] = deque()
    log = _pump({"a": a, "b": b}, queue, 0.0, until=lambda f: isinstance(f[2], DiffBatch))
    in_flight = {d.shard for _, _, m in queue if isinstance(m, DiffBatch) for d in m.diffs}
    assert in_flight == set(names[:10])
    a.receive("b", Digests(()), 0.5)  # stale: b lacks everything
    out = [("a", dst, m) for dst, m in a.data_to_send()]
    queue.extend(out)  # delivered below
    again = [
        d.shard
        for _, _, m in out
        if isinstance(m, (Diff, DiffBatch))
        for d in (m.diffs if isinstance(m, DiffBatch) else (m,))
    ]
    assert again == names[10:20]
    log += _pump({"a": a, "b": b}, queue, 0.5)
    assert sorted(reps(b).shard_names()) == names
    sent = [
        d.shard
        for src, _, m in log
        if src == "a" and isinstance(m, (Diff, DiffBatch))
        for d in (m.diffs if isinstance(m, DiffBatch) else (m,))
    ]
    assert sorted(sent) == names  # each once
    # An interval later, what b still lacks is sent again (a lost Diff is not lost for good).
    c = make("c", config=cfg)
    put(a, "late", "k", 1)
    connect(a, c, 1.0)
    _pump({"a": a, "c": c}, deque(), 1.0, until=lambda f: isinstance(f[2], DiffBatch))
    later = 1.0 + cfg.anti_entropy_interval + 0.5
    a.receive("c", Digests(()), later)
    resent = [d.shard for _, m in a.data_to_send() if isinstance(m, DiffBatch) for d in m.diffs]
    assert resent == sorted([*names, "late"])[:10]


def test_a_new_connection_sends_again_what_was_in_flight_on_the_old_one() -> None:
    # Frames in flight on a connection that is replaced may be lost (seen: a joiner that
    # dialled twice lost the last DiffBatch of a round with the first connection). The new
    # connection's round sends those shards again at once, not an interval later.
    cfg = replace(CFG, max_sync_shards=10)
    a, b = make("a", config=cfg), make("b", config=cfg)
    names = [f"s{i:02d}" for i in range(20)]
    for s in names:
        put(a, s, "k", s)
    connect(a, b)
    queue: deque[Frame] = deque()
    _pump({"a": a, "b": b}, queue, 0.0, until=lambda f: isinstance(f[2], DiffBatch))
    a.connection_lost("b", 0.5)  # the batch in flight is lost with the connection
    b.connection_lost("a", 0.5)
    a.data_to_send(), b.data_to_send()
    connect(a, b, 0.5)
    _pump({"a": a, "b": b}, deque(), 0.5)
    assert sorted(reps(b).shard_names()) == names  # at 0.5, not an interval later


def test_a_joiner_that_sorts_first_is_not_paced() -> None:
    # a (the smaller name) joins b: a continues the cut rounds by asking (SyncRequest), and
    # b's Digests for each continuation are not paced, although no Diff came from a: b sent
    # a round's worth of Diffs since its last Digests. All 40 shards come at the same instant
    # (paced, only the first round's 10 would: the next a tenth of an interval apart).
    cfg = replace(CFG, max_sync_shards=10)
    a, b = make("a", config=cfg), make("b", config=cfg)
    shards = [f"s{i:02d}" for i in range(40)]
    for s in shards:
        put(b, s, "k", s)
    connect(a, b)
    log = _pump({"a": a, "b": b}, deque(), 0.0)
    assert sorted(reps(a).shard_names()) == shards
    assert _summaries(log, "a") == 4  # the on-connect round and three continuations
    sent = [d.shard for _, _, m in log if isinstance(m, DiffBatch) for d in m.diffs]
    assert sorted(sent) == shards  # each once


def test_summary_flooder_asking_little_still_gets_paced_digests() -> None:
    # Issue #11: a peer sending Summaries back to back gets one Digests per tenth of an
    # interval. Asking for a shard (a SyncRequest the holder answers with a Diff) before each
    # Summary must not buy a Digests each time: only a round's worth of Diffs does (here 30
    # Diffs, more than the 20 pairs send).
    cfg = replace(CFG, max_sync_shards=30)
    b = make("b", config=cfg)
    a = make("a", config=cfg)
    for i in range(30):
        put(b, f"s{i:02d}", "k", i)
    connect(a, b)
    _pump({"a": a, "b": b}, deque(), 0.0)
    assert len(list(reps(a).shard_names())) == 30
    now = 10.0  # well past the pacing gap of the join
    digests = 0
    for _ in range(20):
        b.receive("a", rt(SyncRequest((("s00", EMPTY_STATE_VECTOR),))), now)
        b.receive("a", rt(Summary(b"\x01" * 16, 1)), now)
        digests += sum(isinstance(m, Digests) for _, m in b.data_to_send())
    assert digests == 1
