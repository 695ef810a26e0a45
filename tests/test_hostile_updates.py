"""Issue #11: inputs that passed the validator and hurt whoever integrated or read them.

Each test builds one row of the issue's table (generators in ``tests/hostile.py``) and shows
what stops it now: the validator refuses it (``InvalidUpdate``, nothing applied or stored), or
a read of it that used to crash is total. Whatever could blow up runs in a child process with
an address-space cap and a timeout (:func:`hostile.run_limited`), so a regression shows as a
failed test, not a dead run. Costs stated in comments were measured on the 2-core test machine.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import hostile as h
import pycrdt
import pytest

from crdtsync import wire
from crdtsync._registry import ShardRegistry
from crdtsync._render import MAX_READ_DEPTH, Unreadable
from crdtsync.errors import CloseCode, InvalidUpdate, ProtocolError
from crdtsync.store import Store
from crdtsync.values import to_plain
from crdtsync.yjs.doc import apply_validated
from crdtsync.yjs.limits import DEFAULT_LIMITS, UpdateLimits
from crdtsync.yjs.parse import WORK_PER_BYTE, parse_update, validate_update


def _apply_timed(updates: list[bytes]) -> float:
    doc = pycrdt.Doc()
    t = time.perf_counter()
    for u in updates:
        doc.apply_update(u)
    return time.perf_counter() - t


def _poisoned_snapshot(update: bytes, root: str) -> object:
    """What a replica whose store already holds ``update`` (stored before the limits) shows."""
    doc = pycrdt.Doc()
    apply_validated(doc, update)
    kind = {"map": pycrdt.Map, "xml": pycrdt.XmlFragment}[root]
    value = to_plain(doc.get("root", type=kind))
    return value if root == "map" else len(value)


# -- row 1: two pushes Yrs integrates in quadratic time -----------------------------------------


def test_same_place_fan_was_quadratic_and_is_refused() -> None:
    # The shape, measured before the limit: each of n clients inserts one item right of the
    # same anchor; a second such fan of higher clients scans the whole first one per item.
    # 2 x 2,000 items: 0.5 s; 2 x 8,000 (160 KB): 7.7 s. Doubling n quadruples the time.
    small, big = 500, 2000
    t_small = h.run_limited(
        _apply_timed,
        [h.root_array(), h.same_origin_fan(small), h.same_origin_fan(small, first=small + 2)],
        timeout=60,
    )
    t_big = h.run_limited(
        _apply_timed,
        [h.root_array(), h.same_origin_fan(big), h.same_origin_fan(big, first=big + 2)],
        timeout=60,
    )
    assert t_small[0] == t_big[0] == "ok"
    assert t_big[1] > 4 * t_small[1]  # super-linear: 4x the items, well over 4x the time
    for fan in (h.same_origin_fan(2000), h.same_origin_fan(2000, first=2002)):
        with pytest.raises(InvalidUpdate, match="items insert at the same place"):
            validate_update(fan)
    # At the limit it passes, and costs what linear work costs.
    n = DEFAULT_LIMITS.max_fan
    assert n is not None
    validate_update(h.same_origin_fan(n))
    with pytest.raises(InvalidUpdate):
        validate_update(h.same_origin_fan(n + 1))
    # Trusted local paths (compaction, load) apply no limits.
    parse_update(h.same_origin_fan(2000))


def _fan_sequence(data: str, work: dict[str, float] | None, n: int) -> dict[str, object]:
    """One peer pushes ``n`` fans of 32 clients at one place of one shard (each within
    ``max_fan``, together quadratic) into a real registry; which were applied, the counters,
    and whether an honest update of another shard still applies."""
    from crdtsync.gossip import GossipCore
    from crdtsync.gossip.guard import QuotaSet
    from crdtsync.messages import PROTOCOL_VERSION, Hello, Push
    from crdtsync.quotas import WorkBudget

    store = Store(Path(data), sync=False)
    reg = ShardRegistry("v", store, notify=lambda: None, on_delta=None, host=None)
    quotas = QuotaSet(work=WorkBudget(**work)) if work else QuotaSet()
    core = GossipCore("v", reg, rng=random.Random(0), quotas=quotas)
    try:
        for peer in ("evil", "honest"):
            core.connection_made(
                Hello(PROTOCOL_VERSION, "default", peer, None, (), 0, 1), 0.0, outbound=False
            )
        core.receive("evil", Push("doc", (h.root_array(),), seq=1), 0.0)
        decisions = []
        closed = None
        for k in range(n):
            fan = h.same_origin_fan(32, first=2 + 32 * k)
            before = reg.state_vector("doc")
            try:
                core.receive("evil", Push("doc", (fan,), seq=k + 2), k * 0.01)
            except ProtocolError as exc:
                closed = int(exc.code)
                break
            decisions.append(reg.state_vector("doc") != before)
        honest = pycrdt.Doc()
        honest.get("root", type=pycrdt.Map)["ok"] = True
        core.receive("honest", Push("notes", (honest.get_update(),), seq=1), n * 0.01)
        return {
            "decisions": decisions,
            "counters": dict(core.quota_counters),
            "closed": closed,
            "honest": reg.open("notes").snapshot(),
        }
    finally:
        reg.close()
        store.close()


def test_a_sequence_of_fans_is_charged_in_deterministic_work_units(tmp_path: Path) -> None:
    # Each push is 32 clients at one place (well within max_fan), but each scans all earlier
    # ones: 250 such pushes (80 KB) cost 10.7 s, the last 0.18 s, growing. The validator
    # cannot see that (it depends on the document); the registry prices each apply against
    # the shard's place history (PlaceHistory) and the core charges those units to the
    # sender and the shard (WorkBudget). Work units, not a measured time: the same input
    # gets the same decisions, run after run.
    work = {"per_peer_rate": 1000.0, "per_peer_burst": 10_000.0}
    runs = [_fan_sequence(str(tmp_path / f"s{i}"), work, 100) for i in range(2)]
    assert runs[0]["decisions"] == runs[1]["decisions"]  # deterministic
    assert runs[0]["counters"] == runs[1]["counters"]
    decisions = runs[0]["decisions"]
    assert isinstance(decisions, list)
    counters = runs[0]["counters"]
    assert isinstance(counters, dict)
    assert counters["quota.work-per-peer"] >= 10
    assert 1 <= sum(decisions) < 8  # some applied, the rest refused: nothing of them stored
    assert runs[0]["closed"] is None  # a budget refusal defers; it does not close
    assert runs[0]["honest"] == {"ok": True}


def test_a_fan_built_by_many_small_updates_is_bounded_in_a_capped_child(tmp_path: Path) -> None:
    # With the work budget out of the way, the place history still caps what one place may
    # hold over successive updates (max_fan = 256 items: 8 fans of 32), so the last apply's
    # conflict scan is bounded (and the shard's state, passed on as one diff, stays within
    # max_fan); beyond it each fan is refused as over the limits (counted), and a peer
    # that keeps sending them is closed (RefusalLimit). In a child capped at 512 MiB.
    huge = {"per_peer_rate": 1e12, "per_peer_burst": 1e12, "per_shard_rate": 1e12}
    huge["per_shard_burst"] = 1e12
    status, result = h.run_limited(
        _fan_sequence, str(tmp_path / "s"), huge, 200, mem_mib=512, timeout=120
    )
    assert status == "ok", (status, result)
    assert sum(result["decisions"]) == 256 // 32  # then refused, not applied
    assert result["counters"]["quota.update-limits"] >= 1
    assert result["closed"] == CloseCode.INVALID_UPDATE  # it kept sending them
    assert result["honest"] == {"ok": True}


# -- row 2: chained one-value items ---------------------------------------------------------------


def test_chained_one_value_items_were_quadratic_in_memory_and_are_refused() -> None:
    # Measured before the limit: 5,000 items (35 KB) took 582 MiB; 10,000 took 2.3 GiB.
    status, _ = h.run_limited(_apply_timed, [h.many_items(20_000)], mem_mib=768, timeout=60)
    assert status == "died"  # Rust aborts: "memory allocation of ... bytes failed"
    with pytest.raises(InvalidUpdate, match="merges cost more"):
        validate_update(h.many_chars(20_000))
    with pytest.raises(InvalidUpdate, match="merges cost more"):
        validate_update(h.many_items(20_000))
    # The longest run accepted applies in a small address space.
    work = DEFAULT_LIMITS.max_merge_work
    assert work is not None
    longest = int(((8 * work / 32 + 1) ** 0.5 - 1) / 2)  # 32 (2 + 3 + ... + r) <= work
    while 32 * (longest * (longest + 1) // 2 - 1) > work:
        longest -= 1
    validate_update(h.many_items(longest))
    with pytest.raises(InvalidUpdate):
        validate_update(h.many_items(longest + 1))
    status, seconds = h.run_limited(_apply_timed, [h.many_items(longest)], mem_mib=384)
    assert status == "ok" and seconds < 2.0, (status, seconds)


# -- row 8: many items, many deleted ranges ------------------------------------------------------


def test_struct_and_delete_range_caps() -> None:
    max_structs = DEFAULT_LIMITS.max_structs
    max_ranges = DEFAULT_LIMITS.max_delete_ranges
    assert max_structs is not None and max_ranges is not None
    items, ranges = h.many_unmerged(max_structs + 1), h.big_delete_set(max_ranges + 1)
    t = time.perf_counter()
    with pytest.raises(InvalidUpdate, match="structs"):
        validate_update(items)
    with pytest.raises(InvalidUpdate, match="deleted ranges"):
        validate_update(ranges)
    assert time.perf_counter() - t < 1.0  # refused from the counts, before the loops
    # One-value items chained by right origin (each in front of the last) stay linear.
    ok = h.run_limited(
        _apply_timed, [h.root_array(), h.one_value_chain(100_000)], mem_mib=1024, timeout=60
    )
    assert ok[0] == "ok" and ok[1] < 5.0


def test_the_largest_accepted_update_is_bounded_in_a_capped_child() -> None:
    max_structs = DEFAULT_LIMITS.max_structs
    assert max_structs is not None
    # Runs Yrs merges are capped (test above), so the largest accepted update is one whose
    # items never merge: one-character items each with its own right origin.
    update = h.many_unmerged(max_structs)
    t = time.process_time()
    validate_update(update)
    parse_seconds = time.process_time() - t
    result = h.run_limited(_apply_timed, [update], mem_mib=1024, timeout=60)
    assert result[0] == "ok", result  # fits in 1 GiB, finishes
    assert result[1] < 10.0 and parse_seconds < 10.0, (result, parse_seconds)


# -- rows 3 and 4: nesting -----------------------------------------------------------------------


def test_deep_xml_is_refused_and_stored_poison_reads_without_crashing() -> None:
    update = h.nested_xml(100_000)  # 883 KB; str() of it segfaulted pycrdt (measured: -11)
    with pytest.raises(InvalidUpdate, match="nested deeper"):
        validate_update(update)
    validate_update(h.nested_xml(DEFAULT_LIMITS.max_type_depth or 64))
    status, length = h.run_limited(_poisoned_snapshot, update, "xml", mem_mib=1024, timeout=60)
    assert status == "ok", (status, length)
    assert length > MAX_READ_DEPTH * 3


def test_deep_maps_are_refused_and_stored_poison_reads_to_the_cap() -> None:
    update = h.nested_maps(1000)  # 7.9 KB; to_plain raised RecursionError on it
    with pytest.raises(InvalidUpdate, match="nested deeper"):
        validate_update(update)
    status, value = h.run_limited(_poisoned_snapshot, update, "map", timeout=60)
    assert status == "ok", (status, value)
    depth = 0
    while isinstance(value, dict):
        value = value["k"]
        depth += 1
    assert isinstance(value, Unreadable) and "deeper than" in value
    assert depth == MAX_READ_DEPTH + 1


# -- rows 5 and 6: what snapshot() cannot show --------------------------------------------------


def test_format_as_map_value_is_refused_and_reads_as_unreadable() -> None:
    update = h.format_in_map()
    with pytest.raises(InvalidUpdate, match="Format"):
        validate_update(update)
    value = _poisoned_snapshot(update, "map")
    assert isinstance(value, dict) and isinstance(value["f"], Unreadable)


def test_subdocument_reads_as_its_guid() -> None:
    update = h.subdoc_in_map()
    validate_update(update)  # accepted: pycrdt writes them (see UpdateLimits.refuse_subdocs)
    value = _poisoned_snapshot(update, "map")
    assert isinstance(value, dict) and value["d"] == {"$subdoc": "guid-1"}


# -- row 7: msgpack frames -----------------------------------------------------------------------


def _array32(n: int, item: bytes) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big") + item * n


@pytest.mark.parametrize(
    ("name", "frame", "code"),
    [
        # One array header past MAX_FRAME_ITEMS: OVERSIZE before any map is read (a frame
        # of fewer maps is refused at the first map: "one empty map").
        ("16 MiB of empty maps", _array32(16_000_000, b"\x80"), CloseCode.OVERSIZE),
        ("one empty map", b"\x92\x01\x80", CloseCode.MALFORMED_FRAME),
        ("4000 x 4000 empty arrays", _array32(4000, _array32(4000, b"\x90")), CloseCode.OVERSIZE),
        ("a million [nil]", _array32(1_000_000, b"\x91\xc0"), CloseCode.OVERSIZE),
        ("deep nesting", b"\x91" * 100_000 + b"\xc0", CloseCode.MALFORMED_FRAME),
    ],
)
def test_msgpack_frames_are_bounded(name: str, frame: bytes, code: CloseCode) -> None:
    def decode() -> tuple[str, float]:
        t = time.process_time()
        try:
            wire.decode(frame, max_size=32 << 20)
        except ProtocolError as exc:
            return exc.code.name, time.process_time() - t
        return "accepted", 0.0

    # 256 MiB address space holds the interpreter, the frame and the budget's worst case;
    # before the limits the empty-maps frame needed 1.3 GiB.
    status, result = h.run_limited(decode, mem_mib=512, timeout=60)
    assert status == "ok", (name, status, result)
    assert result[0] == code.name, name
    assert result[1] < 1.0, name


# -- the real apply path: refused, nothing stored, the shard keeps working ----------------------


def test_registry_refuses_hostile_updates_and_stores_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", sync=False)
    reg = ShardRegistry("me", store, notify=lambda: None, on_delta=None, host=None)
    try:
        for bad in (
            h.nested_maps(1000),
            h.format_in_map(),
            h.same_origin_fan((DEFAULT_LIMITS.max_fan or 32) + 1),
            h.many_items((DEFAULT_LIMITS.max_structs or 0) + 1),
        ):
            with pytest.raises(InvalidUpdate):
                reg.apply("s1", bad, "peer")
            with pytest.raises(InvalidUpdate):
                reg.apply(f"new-{len(bad)}", bad, "peer")
        # A refused update creates no shard, not even an open empty one.
        assert reg.names() == [] and store.shard_names() == []
        assert reg.open("s1").snapshot() == {}
        assert store.load("s1") is None or not store.load("s1").log  # type: ignore[union-attr]
        # The honest update after them applies.
        doc = pycrdt.Doc()
        doc.get("root", type=pycrdt.Map)["x"] = "y"
        assert reg.apply("s1", doc.get_update(), "peer") is not None
        assert reg.open("s1").snapshot() == {"x": "y"}
    finally:
        reg.close()
        store.close()


# -- accepted updates cost at most linear work ---------------------------------------------------


def _random_shape(rng: random.Random) -> tuple[bool, bytes]:
    """(needs the anchor item (1, 0) first, one update of a random hostile shape and size,
    maybe over a limit)."""
    shape = rng.choice(["fan", "items", "chars", "maps", "xml", "chain", "unmerged", "ds"])
    n = rng.choice([1, 10, 100, 300, 2000, 3000, 12_000, 60_000])
    return shape in ("fan", "chain"), {
        "fan": lambda: h.same_origin_fan(min(n, 5000)),
        "items": lambda: h.many_items(n),
        "chars": lambda: h.many_chars(n),
        "maps": lambda: h.nested_maps(min(n, 2000)),
        "xml": lambda: h.nested_xml(min(n, 2000)),
        "chain": lambda: h.one_value_chain(n),
        "unmerged": lambda: h.many_unmerged(n),
        "ds": lambda: h.big_delete_set(n),
    }[shape]()


def _costs(updates: list[tuple[bool, bytes]]) -> list[tuple[int, float, int]]:
    """(bytes, seconds, peak RSS growth in KiB) of applying each update to a fresh doc."""
    import resource

    out = []
    for anchor, u in updates:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        doc = pycrdt.Doc()
        if anchor:
            doc.apply_update(h.root_array())
        t = time.process_time()
        doc.apply_update(u)
        seconds = time.process_time() - t
        out.append((len(u), seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before))
        del doc
    return out


def test_accepted_updates_cost_at_most_linear_work() -> None:
    # The stated bound, counted in integration steps (UpdateInfo.work: structs, deleted
    # ranges, YATA conflict-scan steps, bytes copied by merges), not in wall time: an accepted
    # update costs at most WORK_PER_BYTE (65) steps per byte plus max_merge_work (the capped
    # quadratic part). Memory: at most 200 bytes per byte of update plus 128 MiB. Before the
    # limits the same generator produced 582 MiB for 35 KB (items) and seconds for 20 KB
    # (fan); the refused ones are over the bound.
    rng = random.Random(11)
    accepted, refused = [], 0
    merge = DEFAULT_LIMITS.max_merge_work or 0
    for _ in range(60):
        anchor, u = _random_shape(rng)
        try:
            info = validate_update(u)
        except InvalidUpdate:
            refused += 1
            unbounded = parse_update(u)  # what it would have cost: counted without limits
            assert unbounded.n_structs > 0 or unbounded.delete_set
            continue
        assert info.work <= WORK_PER_BYTE * len(u) + merge, (len(u), info.work)
        accepted.append((anchor, u))
    assert len(accepted) >= 10 and refused >= 5
    status, costs = h.run_limited(_costs, accepted, mem_mib=1024, timeout=120)
    assert status == "ok", (status, costs)
    for size, _seconds, rss_kib in costs:
        assert rss_kib * 1024 <= 200 * size + (128 << 20), (size, rss_kib)


def test_work_count_sees_the_quadratic_shapes() -> None:
    # The count is what the limits bound: a fan of n clients at one place costs n(n+1)/2 - 1
    # steps beyond its structs, a mergeable run its copied bytes; both grow faster than the
    # size, which is why they are capped.
    no_merge = UpdateLimits(max_fan=10**9, max_merge_work=10**12)
    small = parse_update(h.same_origin_fan(500), limits=no_merge)
    big = parse_update(h.same_origin_fan(2000), limits=no_merge)
    assert big.work > 12 * small.work  # 4x the items, ~16x the steps
    assert big.work > WORK_PER_BYTE * big.size  # over the linear bound: refused by max_fan
    run = parse_update(h.many_items(4000), limits=no_merge)
    assert run.work > WORK_PER_BYTE * run.size
    typed = validate_update(h.many_unmerged(10_000))  # honest shapes stay far below
    assert typed.work <= 2 * typed.n_structs


# -- existing poison is survivable ----------------------------------------------------------------


def _store_before_the_limits(data_dir: Path, shards: dict[str, list[bytes]]) -> None:
    """Write ``shards`` as a release before the limits would have: raw, unchecked appends."""
    store = Store(data_dir, sync=False)
    try:
        for name, entries in shards.items():
            for u in entries:
                store.append(name, u)
        store.commit()
    finally:
        store.close()


async def test_a_store_holding_poison_opens_quarantines_it_and_serves_the_rest(
    tmp_path: Path,
) -> None:
    from crdtsync import Agent
    from crdtsync.errors import ShardQuarantined

    honest = pycrdt.Doc()
    honest.get("root", type=pycrdt.Map)["x"] = "y"
    # Poison as a release before the limits stored it: a mergeable run whose load costs
    # quadratic memory (4,000 items: ~400 MiB), and two same-place fans (quadratic time).
    _store_before_the_limits(
        tmp_path / "a",
        {
            "runs": [h.many_items(4000)],
            "fans": [h.root_array(), h.same_origin_fan(2000), h.same_origin_fan(2000, first=2002)],
            "notes": [honest.get_update()],
        },
    )
    async with Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0") as a:
        assert sorted(a.quarantined) == ["fans", "runs"]
        assert "merges cost more" in a.quarantined["runs"]
        assert "items insert at the same place" in a.quarantined["fans"]
        assert a.counters["shards_quarantined"] == 2
        with pytest.raises(ShardQuarantined) as info:
            await a.shard("runs")
        assert info.value.shard == "runs" and "log entry 0" in info.value.reason
        assert (await a.shard("notes")).snapshot() == {"x": "y"}
        assert sorted(a.metrics()["shards_quarantined"]) == ["fans", "runs"]
        # An honest peer syncs the rest and never hears of the quarantined shards.
        async with Agent("b", data_dir=tmp_path / "b", peers=[a.address]) as b:
            notes = await b.shard("notes")
            for _ in range(500):
                if notes.snapshot() == {"x": "y"}:
                    break
                await asyncio.sleep(0.02)
            assert notes.snapshot() == {"x": "y"}
            assert "runs" not in b.shard_names() and "fans" not in b.shard_names()
    # The quarantine is recorded: the next open knows it without parsing anything again.
    async with Agent("a", data_dir=tmp_path / "a") as a:
        assert sorted(a.quarantined) == ["fans", "runs"]
