"""GossipCore driven directly: misbehaving peers (flood control, invalid data) (moved from tests/test_gossip_core.py)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)

# -- misbehaving peers ----------------------------------------------------------------------------


def test_invalid_update_in_a_batch_applies_nothing() -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    good = put(a, "s", "k", 1)
    with pytest.raises(ProtocolError) as info:
        b.receive("a", Push("s", (good, b"\xff\xff\xff")), 1.0)
    assert info.value.code == CloseCode.INVALID_UPDATE
    assert "s" not in reps(b).docs
    with pytest.raises(ProtocolError) as info:
        b.receive("a", Push("s", (b"\x01\x02",)), 1.0)
    assert info.value.code == CloseCode.INVALID_UPDATE
    assert "s" not in reps(b).docs


@pytest.mark.parametrize(
    "msg",
    [
        Push("s", (b"\x00\x00",), (b"\xff", b"\x00")),
        Ack((ShardState("s", b"\x00", b"\x05"),)),
        SyncRequest((("s", b"\x02\x01"),)),
        Diff("s", b"\x00\x00", b"\x07"),
        Diff("s", b"garbage"),
    ],
    ids=["push-ack", "ack", "sync-request", "diff-sv", "diff-update"],
)
def test_malformed_crdt_payloads_are_refused(msg: Message) -> None:
    a, b = make("a"), make("b")
    connect(a, b)
    deliver({"a": a, "b": b}, 0.0)
    with pytest.raises(ProtocolError) as info:
        b.receive("a", msg, 1.0)
    assert info.value.code == CloseCode.INVALID_UPDATE
    assert "s" not in reps(b).docs and a.replicated("s", b"\x00", b"\x00") == ()


def test_flooding_peer_is_refused() -> None:
    cfg = GossipConfig(push_interval=W, flood_rate=10.0, flood_burst=5.0)
    a, b = make("a", config=cfg), make("b")
    connect(a, b)
    ping = Summary(bytes(16), 0)
    for _ in range(5):
        a.receive("b", ping, 1.0)
    with pytest.raises(ProtocolError) as info:
        a.receive("b", ping, 1.0)
    assert info.value.code == CloseCode.FLOODING
    a.receive("b", ping, 1.25)  # 0.25 s refills 2.5 tokens
    a.receive("b", ping, 1.25)
    with pytest.raises(ProtocolError):
        a.receive("b", ping, 1.25)


def test_local_update_with_bad_shard_name_is_a_local_error() -> None:
    with pytest.raises(InvalidShardName):
        make("a").local_update("bad name", b"\x00\x00", 0.0)
