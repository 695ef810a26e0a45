"""GossipCore driven directly: the early ask (crdtsync/gossip/_early_ask.py). A joiner with a
few small shards sends them whole with its first anti-entropy message and asks for the
holder's, so it holds a shard's state two one-way messages sooner; a big state still crosses
once, against a holder of this release or of the last (no early ask, no holder-side rule)."""

from __future__ import annotations

from corepair import *  # noqa: F403

from crdtsync.gossip._early_ask import EarlyAsks

# ruff: noqa: F405 (names from corepair)

Frame = tuple[str, str, Message]


class _LastRelease(EarlyAsks):
    """A core of the last release, as far as anti-entropy goes: every hook of the early ask is
    inert (it never asks, holds, nor leaves a shard out of its rounds)."""

    def ask(self, conn: Any, now: float) -> None:
        conn.rounds.early.done = True

    def pending(self, conn: Any, shard: str, now: float) -> bool:
        return False

    def hold(self, conn: Any, shard: str, sv: bytes, now: float) -> bool:
        return False

    def answered(self, conn: Any, shard: str) -> bool:
        return False

    def before_diff(self, conn: Any, shard: str, now: float) -> None:
        return None

    def requested(self, conn: Any, shard: str) -> None:
        pass

    def answered_early(self, conn: Any, shard: str) -> bool:
        return False


def _last_release(core: GossipCore) -> GossipCore:
    core._p.ae.early = _LastRelease(core._ctx)  # noqa: SLF001
    return core


def _pair(holder: str, joiner: str, cfg: GossipConfig, keys: int = 60, value: str = "v"):  # type: ignore[no-untyped-def]
    h, j = make(holder, config=cfg), make(joiner, config=cfg)
    for i in range(keys):
        put(h, "s", f"k{i:03d}", value)
    put(j, "s", "marker", 1)  # a joiner's own first write (the value-format marker)
    return h, j


def _waves(h: GossipCore, j: GossipCore) -> tuple[int, list[list[Frame]]]:
    """Connect (the Hellos complete), then deliver wave by wave: every frame of a wave is
    delivered, what the receivers send is the next wave. Returns the waves until the joiner
    holds all of the holder's keys, and every wave until nothing more is sent."""
    cores = {h.name: h, j.name: j}
    connect(min(cores.values(), key=lambda c: c.name), max(cores.values(), key=lambda c: c.name))
    wave: list[Frame] = [(n, d, m) for n, c in cores.items() for d, m in c.data_to_send()]
    waves: list[list[Frame]] = []
    held_at = 0
    while wave:
        waves.append(wave)
        nxt: list[Frame] = []
        for src, dst, msg in wave:
            cores[dst].receive(src, rt(msg), 0.0)
            nxt.extend((dst, d, m) for d, m in cores[dst].data_to_send())
        if not held_at and set(content(h, "s")) <= set(content(j, "s")):
            held_at = len(waves)
        wave = nxt
        assert len(waves) < 50
    assert content(h, "s") == content(j, "s")  # converged both ways
    return held_at, waves


def _ae(wave: list[Frame]) -> list[tuple[str, str]]:
    return sorted((s, type(m).__name__) for s, _, m in wave if not isinstance(m, (PeerList, Ack)))


def test_a_joiner_holds_the_state_two_one_way_messages_sooner() -> None:
    counts = {}
    for who, (holder, joiner) in {"holder first": ("a", "b"), "joiner first": ("b", "a")}.items():
        for name, cfg in (("classic", CLASSIC), ("early", CFG)):
            h, j = _pair(holder, joiner, cfg)
            counts[who, name], _ = _waves(h, j)
    assert counts == {
        ("holder first", "classic"): 5,  # Summary, Digests, SyncRequest, Diff, Diff
        ("holder first", "early"): 3,  # Summary; Diff + SyncRequest + Digests; Diff
        ("joiner first", "classic"): 4,  # Summary, Digests, SyncRequest, Diff
        ("joiner first", "early"): 2,  # Diff + SyncRequest + Summary; Diff
    }


def test_the_early_round_sends_nothing_more_than_it_needs() -> None:
    # Holder first: the holder leaves out of its round the shard the joiner asked early (its
    # answer carried its state vector, the joiner's Diff brought it everything): no
    # SyncRequest from the holder, no step 5 either way.
    h, j = _pair("a", "b", CFG)
    _, waves = _waves(h, j)
    assert [_ae(w) for w in waves] == [
        [("a", "Summary")],
        [("b", "Diff"), ("b", "Digests"), ("b", "SyncRequest")],
        [("a", "Diff")],
    ]
    # Joiner first: the holder's Digests (the joiner's root was taken before the answer)
    # leave with the answer and find the digests equal: the round ends there.
    h, j = _pair("b", "a", CFG)
    _, waves = _waves(h, j)
    assert [_ae(w) for w in waves if _ae(w)] == [
        [("a", "Diff"), ("a", "Summary"), ("a", "SyncRequest")],
        [("b", "Diff"), ("b", "Digests")],
    ]


def test_big_or_many_shards_are_not_asked_early() -> None:
    # A shard over MAX_EARLY_STATE waits for the round's comparison (5 waves as before), and
    # an agent holding more than early_sync_shards shards asks nothing early.
    h, j = _pair("a", "b", CFG)
    put(j, "s", "big", "x" * 5000)
    assert _waves(h, j)[0] == 5
    cfg = replace(CFG, early_sync_shards=2)
    h, j = _pair("a", "b", cfg)
    for i in range(3):
        put(j, f"t{i}", "k", i)
    assert _waves(h, j)[0] == 5


def test_an_idle_pair_asks_nothing_in_its_periodic_rounds() -> None:
    h, j = _pair("a", "b", CFG)
    _waves(h, j)
    for t in (8.0, 16.0, 24.0):
        log = settle({"a": h, "b": j}, t)
        assert [type(m) for _, _, m in log] in ([Summary], [Summary, Summary], [])


def _chunked(h: GossipCore, j: GossipCore) -> tuple[int, dict[str, str]]:
    """Run a join whose answer is a big state in DiffChunk pieces over several windows
    (reply_budget of one piece); return the bytes of DiffChunk pieces the holder sent."""
    cores = {"a": h, "b": j}
    connect(h, j)
    sent = 0
    t = 0.0
    for _ in range(400):
        log = deliver(cores, t)
        sent += sum(len(m.data) for s, _, m in log if s == h.name and isinstance(m, DiffChunk))
        t += W
        for c in cores.values():
            c.tick(t)
        if not log and t > 4.0:
            break
    assert content(h, "s") == content(j, "s")
    return sent, {}


def _big_pair() -> tuple[GossipCore, GossipCore]:
    cfg = replace(CFG, chunk_bytes=1024, reply_budget=1024)
    return _pair("a", "b", cfg, keys=40, value="y" * 100)


def test_a_chunked_state_is_sent_once_against_a_holder_of_this_release() -> None:
    h, j = _big_pair()
    state = len(reps(h).diff("s", EMPTY_STATE_VECTOR))
    sent, _ = _chunked(h, j)
    assert state <= sent < 1.5 * state, (sent, state)


def test_a_chunked_state_is_sent_once_against_a_holder_of_the_last_release() -> None:
    # The holder asks for the shard in its round anyway (SyncRequest with its state vector),
    # while the early answer is still on its way in pieces. Answered at once, the joiner's
    # state vector would be stale and the holder's step 5 would send the whole state again;
    # the joiner holds that request until its early answer came.
    h, j = _big_pair()
    _last_release(h)
    state = len(reps(h).diff("s", EMPTY_STATE_VECTOR))
    sent, _ = _chunked(h, j)
    assert state <= sent < 1.5 * state, (sent, state)


def test_without_the_hold_the_last_releases_holder_sends_it_twice() -> None:
    # The witness of the test above: the same join with the joiner's hold rule off.
    h, j = _big_pair()
    _last_release(h)
    j._p.ae.early.hold = lambda conn, shard, sv, now: False  # type: ignore[method-assign]  # noqa: SLF001
    state = len(reps(h).diff("s", EMPTY_STATE_VECTOR))
    sent, _ = _chunked(h, j)
    assert sent >= 2 * state, (sent, state)


def test_a_joiner_of_the_last_release_joins_a_holder_of_this_one() -> None:
    # Mixed meshes keep working: the old joiner's round runs as before (5 waves).
    h, j = _pair("a", "b", CFG)
    _last_release(j)
    assert _waves(h, j)[0] == 5
    h, j = _pair("b", "a", CFG)
    _last_release(j)
    assert _waves(h, j)[0] == 4


def test_one_link_at_a_time_per_shard() -> None:
    # A joiner connecting to two holders asks each shard early on one link only: two holders
    # of a big state would each send it.
    j = make("c", config=CFG)
    put(j, "s", "marker", 1)
    h1, h2 = make("a", config=CFG), make("b", config=CFG)
    connect(h1, j)
    connect(h2, j)
    for h in (h1, h2):  # their on-connect Summaries (they sort first), each differing
        j.receive(h.name, rt(next(m for _, m in h.data_to_send() if isinstance(m, Summary))), 0)
    to = [d for d, m in j.data_to_send() if isinstance(m, SyncRequest)]
    assert to == ["a"]


def _asking() -> tuple[GossipCore, GossipCore, bytes]:
    """A joiner ``b`` whose early ask of ``s`` to ``a`` is outstanding: ``a``'s on-connect
    Summary reached it, the Diff and SyncRequest it sent are not delivered. Returns the
    holder, the joiner and the holder's answer update of ``s``."""
    h, j = _pair("a", "b", CFG)
    connect(h, j)
    summary = next(m for _, m in h.data_to_send() if isinstance(m, Summary))
    j.receive("a", rt(summary), 0.0)
    out = [type(m) for _, m in j.data_to_send()]
    assert out == [PeerList, Diff, SyncRequest, Digests]
    return h, j, reps(h).diff("s", reps(j).state_vector("s"))


def test_malformed_answers_to_an_early_ask_apply_nothing() -> None:
    for case in ("update", "state vector", "truncated state vector"):
        h, j, update = _asking()
        before = content(j, "s")
        sv = reps(h).state_vector("s")
        msg = {
            "update": Diff("s", b"\x07\xff\x01garbage", sv),
            "state vector": Diff("s", update, b"\xff\xff\xff\xff"),
            "truncated state vector": Diff("s", update, sv[:-1]),
        }[case]
        with pytest.raises(ProtocolError) as info:
            j.receive("a", rt(msg), 0.0)
        assert info.value.code == CloseCode.INVALID_UPDATE, case
        assert content(j, "s") == before, case
        # The ask is still outstanding: the shard stays out of our round until it expires.
        assert j._p.ae.early.asked.keys() == {"s"}, case  # noqa: SLF001


def test_a_malformed_request_while_asking_early_is_refused_and_not_held() -> None:
    h, j, _ = _asking()
    with pytest.raises(ProtocolError) as info:
        j.receive("a", rt(SyncRequest((("s", b"\xff\xff\xff\xff"),))), 0.0)
    assert info.value.code == CloseCode.INVALID_UPDATE
    assert j._p.ae.early.held == {}  # noqa: SLF001


def test_a_request_frame_over_the_limit_is_refused_at_the_codec() -> None:
    _asking()
    frame = wire.encode(SyncRequest((("s", b"\x01" + b"\x00" * 2048),)))
    with pytest.raises(ProtocolError) as info:
        wire.decode(frame, max_size=1024)
    assert info.value.code == CloseCode.OVERSIZE


def test_the_peers_request_is_held_until_the_early_answer_then_answered_fresh() -> None:
    h, j, update = _asking()
    sv_h = reps(h).state_vector("s")
    j.receive("a", rt(SyncRequest((("s", sv_h),))), 0.0)
    assert j._p.ae.early.held.keys() == {("a", "s")}  # noqa: SLF001
    assert not [m for _, m in j.data_to_send() if isinstance(m, Diff)]
    j.receive("a", rt(Diff("s", update, sv_h)), 0.0)  # the early answer
    diffs = [m for _, m in j.data_to_send() if isinstance(m, Diff)]
    assert len(diffs) == 1 and diffs[0].state_vector == reps(j).state_vector("s")
    assert j._p.ae.early.held == {} and j._p.ae.early.asked == {}  # noqa: SLF001


def test_a_held_request_is_answered_after_an_interval_if_the_answer_was_lost() -> None:
    h, j, _ = _asking()
    j.receive("a", rt(SyncRequest((("s", reps(h).state_vector("s")),))), 0.0)
    j.tick(CFG.anti_entropy_interval / 2)
    assert not [m for _, m in j.data_to_send() if isinstance(m, Diff)]
    j.tick(CFG.anti_entropy_interval + W)
    assert [m for _, m in j.data_to_send() if isinstance(m, Diff)]
    assert j._p.ae.early.held == {}  # noqa: SLF001
