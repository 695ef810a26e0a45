"""The small leaf types of the gossip package, each on its own: PushQueue,
DiffChunk transfers and their assembly, LinkAcks, take_relayed, and map_exceptions."""

from __future__ import annotations

import pytest

from crdtsync.errors import (
    CloseCode,
    InvalidShardName,
    InvalidUpdate,
    ProtocolError,
    map_exceptions,
)
from crdtsync.gossip.acks import LinkAcks, take_relayed
from crdtsync.gossip.push import PushQueue
from crdtsync.gossip.transfer import LinkReplies, Transfer, chunk_size, receive_piece
from crdtsync.messages import ShardState

# -- PushQueue


def test_push_queue_keeps_order_per_shard_and_counts_bytes() -> None:
    q = PushQueue()
    assert q.add("a", b"12", max_bytes=100, chunk=10) == "queued"
    assert q.add("b", b"3", max_bytes=100, chunk=10) == "queued"
    assert q.add("a", b"45", max_bytes=100, chunk=10) == "queued"
    assert q.queue == {"a": [b"12", b"45"], "b": [b"3"]}
    assert list(q.queue) == [
        "a",
        "b",
    ]  # shards leave in the order they were first queued
    assert q.queued_bytes == 5


def test_push_queue_sets_aside_deltas_too_big_for_a_frame() -> None:
    q = PushQueue()
    assert q.add("a", b"x" * 11, max_bytes=100, chunk=10) == "big"
    assert q.queue == {} and q.queued_bytes == 11
    q.add("a", b"y", max_bytes=100, chunk=10)
    q.drained()
    assert q.queue == {} and q.queued_bytes == 11  # the big one waits for the reply budget
    assert q.pop_big() == ("a", b"x" * 11, None) and q.queued_bytes == 0


def test_push_queue_back_pressure_drops_everything_and_owes_a_resync() -> None:
    q = PushQueue()
    q.add("a", b"x" * 6, max_bytes=10, chunk=100)
    q.add("b", b"y" * 3, max_bytes=10, chunk=100)
    q.relay_shards.add("a")
    assert q.add("a", b"z" * 2, max_bytes=10, chunk=100) == "dropped"
    assert (q.queue, q.queued_bytes, q.relay_shards, q.resync, q.dropped) == (
        {},
        0,
        set(),
        True,
        3,
    )


def test_push_queue_numbers_pushes_per_shard() -> None:
    q = PushQueue()
    assert [q.next_seq("a"), q.next_seq("a"), q.next_seq("b"), q.next_seq("a")] == [
        1,
        2,
        1,
        3,
    ]


# -- transfers


def _pieces(data: bytes, sv: bytes | None, chunk: int) -> list[object]:
    t = Transfer.start(7, "s", data, sv, chunk)
    out = []
    while True:
        msg, last = t.next_piece()
        out.append(msg)
        if last:
            return out


def test_transfer_splits_and_assembly_joins() -> None:
    data = bytes(range(256)) * 3
    pieces = _pieces(data, b"\x01\x02", chunk=100)
    assert len(pieces) == -(-len(data) // 98)  # the state vector rides in the last piece
    assert (
        all(p.state_vector is None for p in pieces[:-1]) and pieces[-1].state_vector == b"\x01\x02"
    )  # type: ignore[attr-defined]
    link = LinkReplies()
    got = [receive_piece(link, p, 1.0, max_diff_bytes=10_000) for p in pieces]  # type: ignore[arg-type]
    assert got[:-1] == [None] * (len(pieces) - 1) and got[-1] == data
    assert link.receiving is None


def test_assembly_abandons_a_transfer_with_a_lost_piece_and_ignores_duplicates() -> None:
    pieces = _pieces(b"a" * 50, None, chunk=10)
    link = LinkReplies()
    receive_piece(link, pieces[0], 0.0, 1000)  # type: ignore[arg-type]
    assert receive_piece(link, pieces[0], 0.0, 1000) is None  # type: ignore[arg-type]
    assert link.receiving is not None and len(link.receiving.parts) == 1  # duplicate ignored
    receive_piece(link, pieces[2], 0.0, 1000)  # type: ignore[arg-type]
    assert link.receiving is None  # piece 1 was lost: the transfer is abandoned
    assert all(receive_piece(link, p, 0.0, 1000) is None for p in pieces[3:])  # type: ignore[arg-type]


def test_assembly_refuses_more_than_max_diff_bytes() -> None:
    pieces = _pieces(b"a" * 50, None, chunk=10)
    link = LinkReplies()
    with pytest.raises(ProtocolError) as info:
        for p in pieces:
            receive_piece(link, p, 0.0, max_diff_bytes=30)  # type: ignore[arg-type]
    assert info.value.code == CloseCode.OVERSIZE


def test_chunk_size_is_at_most_half_a_frame() -> None:
    assert chunk_size(1 << 20, 1000) == 500
    assert chunk_size(100, 1 << 20) == 100
    assert chunk_size(100, 1) == 1


# -- acks


def test_link_acks_owe_once_and_ride_on_a_push() -> None:
    a = LinkAcks()
    st = ShardState("s", b"\x01", b"\x00")
    assert a.owe(st, 1.0) and a.acks_since == 1.0
    assert a.take_pending("s") == st and a.acks_since == float("inf")
    assert not a.owe(st, 2.0)  # already acked with this state


def test_take_relayed_fits_the_budget_but_always_takes_one() -> None:
    news = {(f"a{i}", "s"): (ShardState("s", b"\x01" * 10, b"\x00"), 1) for i in range(3)}
    first = take_relayed(news, budget=1)
    assert [r.agent for r in first] == ["a0"] and len(news) == 2
    rest = take_relayed(news, budget=10_000)
    assert [r.agent for r in rest] == ["a1", "a2"] and news == {}


# -- map_exceptions


def test_map_exceptions_translates_once_and_keeps_the_cause() -> None:
    with pytest.raises(ProtocolError) as info:
        with map_exceptions({InvalidUpdate: CloseCode.INVALID_UPDATE}, "in Push: "):
            raise InvalidUpdate("bad varint")
    assert info.value.code == CloseCode.INVALID_UPDATE
    assert str(info.value) == "in Push: bad varint"
    assert isinstance(info.value.__cause__, InvalidUpdate)


def test_map_exceptions_lets_other_exceptions_through() -> None:
    with pytest.raises(InvalidShardName):
        with map_exceptions({InvalidUpdate: CloseCode.INVALID_UPDATE}):
            raise InvalidShardName("x")
