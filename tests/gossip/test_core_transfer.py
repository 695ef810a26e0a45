"""GossipCore driven directly: frames bigger than max_frame, replies, LAN settings (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

# -- frames bigger than max_frame, replies, LAN -----------------------------------------------------

SMALL = GossipConfig(
    push_interval=W, max_frame=4096, anti_entropy_interval=1000.0, peer_exchange_interval=1000.0
)


def test_a_shard_bigger_than_a_frame_travels_in_chunks() -> None:
    a, b = make("a", config=SMALL), make("b", config=SMALL)
    blob = random.Random(3).randbytes(30_000).hex()  # 60 kB: fifteen frames' worth
    put(a, "big", "blob", blob)
    connect(a, b)
    log = deliver({"a": a, "b": b}, 0.0)
    assert all(len(wire.encode(m)) <= SMALL.max_frame for _, _, m in log)
    chunks = [m for _, _, m in log if isinstance(m, DiffChunk)]
    assert len(chunks) > 15 and {c.total for c in chunks} == {len(chunks)}
    assert content(b, "big") == {"blob": blob}
    assert reps(a).digest("big") == reps(b).digest("big")

    # A single delta bigger than a frame (one huge write) goes in chunks too, not as a Push.
    delta = put(a, "big", "more", blob)
    a.local_update("big", delta, 1.0)
    a.tick(1.25)
    out = a.data_to_send()
    assert out and all(
        isinstance(m, DiffChunk) and len(wire.encode(m)) <= SMALL.max_frame for _, m in out
    )
    for _, m in out:
        b.receive("a", rt(m), 1.3)
    assert content(b, "big") == {"blob": blob, "more": blob}


def test_chunks_lost_or_too_many_are_handled() -> None:
    a, b = make("a", config=SMALL), make("b", config=replace(SMALL, max_diff_bytes=20_000))
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    put(a, "big", "blob", random.Random(4).randbytes(6_000).hex())
    a.receive("b", SyncRequest((("big", EMPTY_STATE_VECTOR),)), 1.0)
    pieces = [m for _, m in a.data_to_send() if isinstance(m, DiffChunk)]
    assert len(pieces) > 3
    for m in pieces[:1] + pieces[2:]:  # the second piece was lost: nothing is applied
        b.receive("a", m, 1.1)
    assert "big" not in reps(b).docs
    for m in pieces:  # the round (or repair) that asks again
        b.receive("a", m, 1.2)
    assert reps(b).digest("big") == reps(a).digest("big")
    put(a, "big", "blob2", random.Random(5).randbytes(12_000).hex())
    a.receive("b", SyncRequest((("big", EMPTY_STATE_VECTOR),)), 2.0)
    with pytest.raises(ProtocolError) as info:
        for _, msg in a.data_to_send():
            b.receive("a", msg, 2.1)
    assert info.value.code == CloseCode.OVERSIZE


def test_replies_wait_while_paused_and_coalesce() -> None:
    a, b = make("a"), make("b")
    put(a, "s", "k", "v" * 100)
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    a.pause_writing("b")
    for i in range(50):  # a peer that asks and never reads
        a.receive("b", SyncRequest((("s", EMPTY_STATE_VECTOR),)), 1.0 + i / 1000)
        a.receive("b", Summary(bytes(16), 1), 1.0 + i / 1000)
    assert a.data_to_send() == []
    a.resume_writing("b", 2.0)
    a.tick(a.next_deadline())  # type: ignore[arg-type]
    assert [type(m) for _, m in a.data_to_send()] == [Digests, Diff]  # one of each

    # Not paused: at most reply_budget bytes a window; the rest in the next ones.
    cfg = replace(CFG, reply_budget=300)
    a, b = make("a", config=cfg), make("b")
    connect(a, b)
    settle({"a": a, "b": b}, 0.25)
    for i in range(6):
        put(a, f"s{i}", "k", "v" * 200)
    a.receive("b", SyncRequest(tuple((f"s{i}", EMPTY_STATE_VECTOR) for i in range(6))), 1.0)
    first = _diffs(a.data_to_send())
    assert 1 <= len(first) < 6
    a.tick(1.25)
    second = _diffs(a.data_to_send())
    assert first and second and len(first) + len(second) <= 6


def _diffs(out: list[tuple[str, Message]]) -> list[Diff]:
    """The Diffs sent, alone or several to a DiffBatch."""
    found: list[Diff] = []
    for _, m in out:
        if isinstance(m, Diff):
            found.append(m)
        elif isinstance(m, DiffBatch):
            found.extend(m.diffs)
    return found


def test_lan_settings_send_at_once_when_idle_and_batch_what_follows() -> None:
    lan = GossipConfig.lan()
    assert lan.relay_max == 0 and not lan.align_windows and lan.push_interval <= 0.005
    a, b = make("a", config=lan), make("b", config=lan)
    connect(a, b)
    settle({"a": a, "b": b}, 0.5)
    d1, d2, d3 = (put(a, "s", f"k{i}", i) for i in range(3))
    a.local_update("s", d1, 1.0)
    first = a.data_to_send()
    assert first == [("b", Push("s", (d1,), None, 1))]  # an idle link: at once
    a.local_update("s", d2, 1.0005)
    a.local_update("s", d3, 1.001)
    assert a.data_to_send() == []
    # A stream of local writes: held to the end of the window of the last hand-over, then
    # merged into one update (gossip/coalesce.py; more in test_core_coalesce.py).
    assert a.next_deadline() == pytest.approx(1.0 + lan.push_interval)
    a.tick(a.next_deadline())  # type: ignore[arg-type]
    sent = a.data_to_send()
    assert [(p, m.seq, len(m.updates)) for p, m in sent] == [("b", 2, 1)]  # type: ignore[attr-defined]
    b.receive("a", rt(first[0][1]), 1.01)
    b.receive("a", rt(sent[0][1]), 1.01)
    assert content(b, "s") == {"k0": 0.0, "k1": 1.0, "k2": 2.0}
    assert a.mode() == FULL and make("x", config=replace(lan, full_mesh_max=1)).mode() == FULL
