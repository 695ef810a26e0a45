"""Permission patterns and the Guard's decision for each gossip message type."""

from __future__ import annotations

import pytest

from crdtsync.errors import CloseCode, UsageError
from crdtsync.messages import (
    Ack,
    Close,
    Diff,
    DiffChunk,
    Digests,
    Hello,
    Holdings,
    Offer,
    PeerEntry,
    PeerList,
    Push,
    ReadReply,
    ReadRequest,
    RelayedAck,
    ShardState,
    Summary,
    SyncRequest,
)
from crdtsync.security.acl import Decision, Guard, PeerIdentity, Permissions, compile_pattern

CASES = [
    ("board", "board", True),
    ("board", "board2", False),
    ("board", "x/board", False),
    ("tasks/*", "tasks/a", True),
    ("tasks/*", "tasks/b-2", True),
    ("tasks/*", "tasks", False),
    ("tasks/*", "tasks/a/b", False),
    ("tasks/*", "tasksx/a", False),
    ("*", "board", True),
    ("*", "tasks/a", False),
    ("*.log", "x.log", True),
    ("*.log", "a/x.log", False),
    ("t?", "t1", True),
    ("t?", "t12", False),
    ("tasks/**", "tasks/a", True),
    ("tasks/**", "tasks/a/b/c", True),
    ("tasks/**", "tasks", False),
    ("**/inbox", "inbox", True),
    ("**/inbox", "a/b/inbox", True),
    ("**/inbox", "a/inbox2", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/x/y/c", False),
    ("**", "anything/at/all", True),
    ("a.b", "axb", False),  # '.' is literal, not a regex wildcard
]


@pytest.mark.parametrize(("pattern", "shard", "expected"), CASES)
def test_pattern_semantics(pattern: str, shard: str, expected: bool) -> None:
    assert (compile_pattern(pattern).fullmatch(shard) is not None) is expected


@pytest.mark.parametrize("bad", ["", "a//b", "/a", "a/", "a**", "x/**y", "a[b]", "a b", "é"])
def test_invalid_patterns_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        Permissions(read=(bad,))


def test_permissions_write_implies_read_and_parse() -> None:
    p = Permissions.parse(read=["tasks/*,docs/**"], write=["tasks/mine"])
    assert p.read == ("tasks/*", "docs/**") and p.write == ("tasks/mine",)
    assert p.may_read("tasks/x") and not p.may_write("tasks/x")
    assert p.may_write("tasks/mine") and p.may_read("tasks/mine")
    assert not p.may_read("secrets/k")
    assert Permissions.from_json(p.to_json()) == p
    assert not Permissions().may_read("board")
    assert Permissions.full().may_write("a/b/c")
    with pytest.raises(UsageError):
        Permissions(read="tasks/*")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Permissions.from_json({"read": "x"})


READER = PeerIdentity("r", Permissions(read=("tasks/*",)))
WRITER = PeerIdentity("w", Permissions(write=("tasks/*",)))
U = b"\x00\x00"


def _state(shard: str) -> ShardState:
    return ShardState(shard, b"\x00", b"\x00")


@pytest.mark.parametrize(
    "msg",
    [
        Push("tasks/a", (U,)),
        Push("tasks/a", (U,), relay=True, forward=True),  # relayed writes are writes of the relay
        Diff("tasks/a", U),  # carries structs and the whole delete set
        Diff("tasks/a", U, state_vector=b"\x00"),
        DiffChunk("tasks/a", 1, 0, 2, b"x"),
    ],
)
def test_write_carrying_messages_need_write(msg: object) -> None:
    guard = Guard()
    denied = guard.check(READER, msg)  # type: ignore[arg-type]
    assert denied.decision is Decision.DENY and denied.message is None
    assert denied.code is CloseCode.FORBIDDEN and "may not write" in denied.reason
    assert guard.check(WRITER, msg).decision is Decision.ALLOW  # type: ignore[arg-type]
    outsider = replace_shard(msg, "secrets/k")
    assert guard.check(WRITER, outsider).decision is Decision.DENY


def replace_shard(msg: object, shard: str) -> object:
    from dataclasses import replace

    return replace(msg, shard=shard)  # type: ignore[type-var]


def test_requests_are_cut_to_readable_shards() -> None:
    guard = Guard()
    req = SyncRequest((("secrets/k", b"\x00"), ("tasks/a", b"\x00")))
    v = guard.check(READER, req)
    assert v.decision is Decision.RESTRICT and v.message == SyncRequest((("tasks/a", b"\x00"),))
    assert guard.check(READER, SyncRequest((("secrets/k", b"\x00"),))).decision is Decision.DENY
    # the 5-byte "read everything" request: a prefix scan is answered only with readable shards
    scan = ReadRequest(1, (), prefix="")
    assert guard.check(READER, scan).decision is Decision.ALLOW
    assert guard.check(READER, ReadRequest(2, (("secrets/k", b"\x00"),))).decision is Decision.DENY
    mixed = guard.check(READER, ReadRequest(3, (("secrets/k", b"\x00"), ("tasks/a", b"\x00"))))
    assert mixed.decision is Decision.RESTRICT
    assert mixed.message == ReadRequest(3, (("tasks/a", b"\x00"),))


def test_claims_of_holding_count_only_for_readable_shards() -> None:
    guard = Guard()
    v = guard.check(READER, Holdings(3, ("secrets/k", "tasks/a")))
    assert v.decision is Decision.RESTRICT and v.message == Holdings(3, ("tasks/a",))
    assert guard.check(READER, Holdings(4, ("secrets/k",))).message == Holdings(4, ())
    assert guard.check(READER, Offer(("secrets/k",))).decision is Decision.DENY
    ack = Ack((_state("secrets/k"), _state("tasks/a")), relayed=(RelayedAck("x", _state("z")),))
    cut = guard.check(READER, ack)
    assert cut.decision is Decision.RESTRICT and cut.message == Ack(
        (_state("tasks/a"),), ack.relayed
    )
    reply = guard.check(READER, ReadReply(1, (("secrets/k", U), ("tasks/a", None))))
    assert reply.message == ReadReply(1, (("tasks/a", None),))


@pytest.mark.parametrize(
    "msg",
    [
        Hello(1, "m", "r", None, ("secrets/k",)),
        Summary(b"\x00" * 8, 3),
        Digests((("secrets/k", b"d"),)),
        PeerList((PeerEntry("a", None, 1),)),
        Close(CloseCode.NORMAL),
    ],
)
def test_messages_without_shard_data_are_allowed(msg: object) -> None:
    nobody = PeerIdentity("n", Permissions())
    assert Guard().check(nobody, msg).decision is Decision.ALLOW  # type: ignore[arg-type]


def test_outgoing_never_names_an_unreadable_shard() -> None:
    guard = Guard()
    assert guard.may_send(READER, "tasks/a") and not guard.may_send(READER, "secrets/k")
    assert guard.outgoing(READER, Push("secrets/k", (U,))) is None
    push = Push("tasks/a", (U,), relayed=(RelayedAck("x", _state("secrets/k")),))
    assert guard.outgoing(READER, push) == Push("tasks/a", (U,))
    assert guard.outgoing(READER, Diff("secrets/k", U)) is None
    hello = guard.outgoing(READER, Hello(1, "m", "me", None, ("secrets/k", "tasks/a")))
    assert isinstance(hello, Hello) and hello.shards == ("tasks/a",)
    digests = guard.outgoing(READER, Digests((("secrets/k", b"d"), ("tasks/a", b"e"))))
    assert digests == Digests((("tasks/a", b"e"),))
    assert guard.outgoing(READER, Holdings(1, ("secrets/k",))) == Holdings(1, ())
    assert guard.outgoing(READER, Offer(("secrets/k",))) is None
    assert guard.outgoing(READER, Ack((_state("secrets/k"),))) is None
    assert guard.outgoing(READER, ReadReply(1, (("secrets/k", U),))) == ReadReply(1, ())
    assert guard.outgoing(READER, SyncRequest((("secrets/k", b"\x00"),))) is None
