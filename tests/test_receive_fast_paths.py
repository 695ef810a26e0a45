"""The receive path's shortcuts for a lone received Push (issue 17/18, branch h-recv3) give
exactly what the general code gives: the same message or the same refusal (close code and
text), the same quota decisions and bucket levels."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import _wire_decoders as dec
from crdtsync import wire
from crdtsync._quota_buckets import WorkBudget
from crdtsync.errors import ProtocolError
from crdtsync.messages import Push

UPDATE = b"\x01\x01\x05\x00\x27\x01\x01m\x02k1\x01\x77\x0312\x00"

#: A paced writer's Push, as the fields after the tag: the shape the fast path takes.
PACED: tuple[Any, ...] = ("bench", (UPDATE,), None, 17, (), False, None, False, None, ("w",))

#: Values of every kind msgpack hands the decoders (use_list=False), right and wrong.
ODD: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63,
    1.5,
    "",
    "w",
    "bench",
    "a b",
    "x" * 300,
    b"",
    b"\x00",
    UPDATE,
    (),
    (UPDATE,),
    (UPDATE, UPDATE),
    ("w",),
    (None,),
    ("w", "v"),
    ("bad name",),
    (b"x",),
    ((),),
    (1,),
    (("w", "s", b"\x01", b"\x00", 1),),
]


def _outcome(fn: Any, fields: tuple[Any, ...]) -> Any:
    try:
        msg = fn(fields)
    except ProtocolError as exc:
        return ("refused", exc.code, str(exc))
    assert isinstance(msg, Push)
    return ("push", msg, msg.authors)  # (authors are not compared by ==)


def test_the_paced_push_takes_the_fast_path_and_equals_the_general_decode() -> None:
    assert _outcome(dec._push, PACED) == _outcome(dec._push_fields, PACED)
    frame = wire.encode(Push(shard="bench", updates=(UPDATE,), seq=17, authors=("w",)))
    msg = wire.decode(frame)
    assert msg == Push(shard="bench", updates=(UPDATE,), seq=17) and msg.authors == ("w",)


@given(
    st.lists(st.tuples(st.integers(0, 9), st.sampled_from(ODD)), min_size=0, max_size=3),
    st.sampled_from([8, 9, 10, 11]),
)
@settings(max_examples=600, deadline=None)
def test_any_change_of_the_paced_fields_gives_what_the_general_decode_gives(
    changes: list[tuple[int, Any]], arity: int
) -> None:
    fields = list(PACED) + [None]
    for i, v in changes:
        fields[i] = v
    f = tuple(fields[:arity])
    assert _outcome(dec._push, f) == _outcome(dec._push_fields, f)


# -- quotas: the charge of an admitted update reuses the buckets short() refilled -----------


class _PlainWork(WorkBudget):
    """WorkBudget as it was: every call looks its buckets up and refills them."""

    def short(self, peer: str, shard: str, now: float) -> str | None:
        if self._peers.refill(peer, now).level <= 0.0:
            return "work-per-peer"
        if self._shards.refill(shard, now).level <= 0.0:
            return "work-per-shard"
        return None

    def charge(self, peer: str, shard: str, work: int, now: float) -> None:
        self._peers.refill(peer, now).level -= work
        self._shards.refill(shard, now).level -= work


def _state(w: WorkBudget) -> Any:
    return [
        [(k, b.level, b.stamp) for k, b in table._by_key.items()] for table in (w._peers, w._shards)
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["short", "charge"]),
            st.sampled_from(["p", "q", "r"]),
            st.sampled_from(["s", "t"]),
            st.sampled_from([0.0, 0.0, 0.001, 0.5]),  # time step before the call
            st.integers(0, 3_000_000),
        ),
        max_size=40,
    )
)
@settings(max_examples=300, deadline=None)
def test_work_budget_decides_and_debits_as_before(calls: list[Any]) -> None:
    new, old = WorkBudget(max_keys_tracked=2), _PlainWork(max_keys_tracked=2)
    now = 0.0
    for op, peer, shard, step, work in calls:
        now += step
        if op == "short":
            assert new.short(peer, shard, now) == old.short(peer, shard, now)
        else:
            new.charge(peer, shard, work, now)
            old.charge(peer, shard, work, now)
        assert _state(new) == _state(old)
