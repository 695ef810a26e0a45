"""Issue #11, Proof: "the fuzzers gain generators for these shapes".

Hypothesis strategies that build the issue's hostile shapes at random sizes and parameters
(raw lib0 v1 bytes, since pycrdt cannot write most of them; msgpack frames for the wire), and
the properties every generated input must have:

* the validator (``validate_update``) either accepts it with ``UpdateInfo.work`` within the
  documented linear bound (``WORK_PER_BYTE * size + max_merge_work``) or refuses it with
  ``InvalidUpdate`` (``UpdateOverLimit`` exactly when a limit is what it breaks, where the
  generator knows); never another exception, and never the catch-all "could not be validated"
  (an internal error dressed as a refusal); the compiled and pure-Python builds agree;
* what is accepted applies to pycrdt and reads back (``to_plain``) in a child process capped
  at 512 MiB (``hostile.run_limited``): no crash, no abort, no hang, no exception;
* over a sequence of individually accepted updates, :class:`PlaceHistory` refuses before a
  place holds more than its cap, and the conflict-scan steps it prices stay under cap^2/2 per
  place (the quadratic growth is bounded by a constant), checked against the items the
  generator placed, both on the history alone and through a real ``ShardRegistry`` with the
  updates grouped into multi-update Pushes (``apply_batch``);
* ``wire.decode`` on hostile msgpack frames (huge empty maps and arrays, deep nesting, pushes
  of many updates, lying length headers) raises only ``ProtocolError`` with a close code (the
  expected one where the generator knows it), or returns a message that re-encodes to itself.

Sizes are small in the default derandomized profile (tests/conftest.py) and ten times larger
under ``CRDTSYNC_SOAK=1``. What the generators found is in tests/README.md (issue #11).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import hostile as h
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import wire
from crdtsync.errors import CloseCode, InvalidUpdate, ProtocolError, UpdateOverLimit
from crdtsync.yjs import _native, parse, state
from crdtsync.yjs.limits import DEFAULT_LIMITS, PlaceHistory, UpdateLimits
from crdtsync.yjs.parse import WORK_PER_BYTE, validate_update

SOAK = bool(os.environ.get("CRDTSYNC_SOAK"))
SCALE = 10 if SOAK else 1
COMPILED = _native.compiled_module()
PURE = _native.load_pure()

u, s = h.uint, h.string
ROOT = b"\x01" + s("root")
ANY_ONE = b"\x01\x7d\x00"
ANCHOR = h.root_array()  # item (1, 0) in the root type: what origins below point at


def sizes(hi: int, *edges: int) -> st.SearchStrategy[int]:
    """1..``hi``, with the largest sizes and each limit's edge (``edges``: e +- 1) drawn
    often: hypothesis alone prefers small numbers, and the hostile part is the big end."""
    near = sorted({x for e in edges for x in (e - 1, e, e + 1) if 1 <= x <= hi} | {hi})
    return st.integers(1, hi) | st.sampled_from(near) | st.integers(max(1, hi // 2), hi)


# -- lib0 builders ---------------------------------------------------------------------------


def _update(sections: dict[int, list[bytes]], ds: bytes = b"\x00") -> bytes:
    """``{client: [struct, ...]}`` (each client's structs from clock 0) as an update."""
    body = b"".join(u(len(x)) + u(c) + b"\x00" + b"".join(x) for c, x in sections.items())
    return u(len(sections)) + body + ds


# content kind -> (content bytes, clocks it spans)
CONTENTS = {8: (ANY_ONE, 1), 4: (s("a"), 1), 1: (b"\x02", 2), 3: (b"\x01z", 1)}

# Where an item is placed: (info bits, placement bytes). Origins point at the anchor (1, 0)
# or at client 2's first item, so items of client 2 placed there are "local" (the shapes the
# validator skipped before it counted items).
PLACES: list[tuple[int, bytes]] = [
    (0x80, u(1) + b"\x00"),  # right of the anchor
    (0x40, u(1) + b"\x00"),  # left of the anchor
    (0xC0, u(1) + b"\x00" + u(1) + b"\x00"),  # both
    (0x80, u(2) + b"\x00"),  # right of client 2's first item
    (0x20, ROOT + s("k")),  # value of key "k" of the root map
]


@st.composite
def fans(draw: st.DrawFn, max_items: int = 300 * SCALE) -> tuple[bytes, int]:
    """Items of several clients at a few places: same-origin fans, one client's pile of items
    at one origin, typing mixed in. Returns (update, most items at one place not continuing
    their client's previous clock: what ``max_fan`` bounds)."""
    n_clients = draw(st.integers(1, 40))
    clients = draw(st.lists(st.integers(3, 2**20), min_size=n_clients, max_size=n_clients))
    clients = sorted(set(clients))
    places = draw(st.lists(st.integers(0, len(PLACES) - 1), min_size=1, max_size=3, unique=True))
    kind = draw(st.sampled_from([8, 4, 1, 3]))
    total = draw(sizes(max_items, 256))
    per = max(1, total // len(clients))
    typing = draw(st.integers(0, 3))  # every k-th item continues the previous: typing
    counts: dict[bytes, int] = {}
    sections: dict[int, list[bytes]] = {}
    for c in clients:
        structs: list[bytes] = []
        clock = 0
        for k in range(per):
            body, length = CONTENTS[kind]
            if typing and k % (typing + 1) and clock:
                structs.append(bytes([0x80 | kind]) + u(c) + u(clock - 1) + body)
            else:
                bits, where = PLACES[places[k % len(places)]]
                if bits == 0x20 and kind in (1, 3):  # keep map values one clock long
                    body, length = CONTENTS[8]
                    structs.append(bytes([0x20 | 8]) + where + body)
                    counts[where] = counts.get(where, 0) + 1
                    clock += length
                    continue
                structs.append(bytes([bits | kind]) + where + body)
                counts[where] = counts.get(where, 0) + 1
            clock += length
        sections[c] = structs
    sections = {2: [b"\x08" + ROOT + ANY_ONE], **sections}  # origins at (2, 0) need it
    return _update(sections), max(counts.values(), default=0)


@st.composite
def runs(draw: st.DrawFn) -> tuple[bytes, bool]:
    """One client's chained items that Yrs merges (Any or String), broken every few items by
    another right origin, or one-value items chained by right origin; returns (update, whether
    it points at the anchor item (1, 0))."""
    n = draw(sizes(3000 * SCALE, 2047))  # 2,047 Any items: the longest run max_merge_work allows
    shape = draw(st.sampled_from(["items", "chars", "chain", "broken"]))
    if shape == "items":
        return h.many_items(n), False
    if shape == "chars":
        return h.many_chars(n), False
    if shape == "chain":
        return h.one_value_chain(n), True
    every = draw(st.integers(2, 500))
    structs = [b"\x08" + ROOT + ANY_ONE]
    for k in range(1, n):
        right = b"" if k % every else u(1) + b"\x00"
        info = 0x80 | (0x40 if right else 0)
        structs.append(bytes([info | 8]) + u(2) + u(k - 1) + right + ANY_ONE)
    return _update({2: structs}), True


@st.composite
def nested_types(draw: st.DrawFn) -> tuple[bytes, int]:
    """Shared types in shared types, ``depth`` deep: a map's child under a key, an array's or
    XML element's child in its list; returns (update, depth)."""
    depth = draw(sizes(100 * SCALE, 64))
    refs = draw(st.lists(st.sampled_from([0, 1, 3, 4]), min_size=1, max_size=4))
    structs: list[bytes] = []
    parent_ref = 1  # the root, read as a map: its children go under a key
    for k in range(depth):
        ref = refs[k % len(refs)]
        tref = bytes([ref]) + (s("p") if ref == 3 else b"")
        key = s("k") if parent_ref == 1 else b""
        info = 0x07 | (0x20 if key else 0)
        parent = ROOT if k == 0 else b"\x00" + u(1) + u(k - 1)
        structs.append(bytes([info]) + parent + key + tref)
        parent_ref = ref
    return _update({1: structs}), depth


def _nested_any(depth: int, leaf: bytes, kinds: list[int]) -> bytes:
    out = leaf
    for k in range(depth):
        out = (b"\x75\x01" + out) if kinds[k % len(kinds)] else (b"\x76\x01" + s("a") + out)
    return out


@st.composite
def nested_values(draw: st.DrawFn) -> tuple[bytes, int]:
    """Any values (arrays/objects) or JSON (Embed, Format) nested ``depth`` deep, as a map
    value or in the root array; returns (update, depth)."""
    depth = draw(sizes(150 * SCALE, parse.MAX_NESTING))
    how = draw(st.sampled_from(["any", "embed", "format"]))
    in_map = how != "format" and draw(st.booleans())  # Format in a map: odd_values' business
    where = (0x20, ROOT + s("v")) if in_map else (0, ROOT)
    if how == "any":
        kinds = draw(st.lists(st.integers(0, 1), min_size=1, max_size=3))
        body = b"\x01" + _nested_any(depth, b"\x7e", kinds)
        return _update({1: [bytes([where[0] | 8]) + where[1] + body]}), depth
    text = "[" * depth + "1" + "]" * depth
    if how == "embed":
        return _update({1: [bytes([where[0] | 5]) + where[1] + s(text)]}), depth
    return _update({1: [bytes([where[0] | 6]) + where[1] + s("bold") + s(text)]}), depth


@st.composite
def odd_values(draw: st.DrawFn) -> tuple[bytes, str]:
    """A Format item or a subdocument, as a map value or in a list; returns (update, kind)."""
    kind = draw(st.sampled_from(["format", "subdoc"]))
    in_map = draw(st.booleans())
    key = draw(st.text(min_size=1, max_size=8))
    where = (0x20, ROOT + s(key)) if in_map else (0, ROOT)
    if kind == "format":
        body = s(draw(st.sampled_from(["bold", "href", ""]))) + s("true")
        return _update(
            {1: [bytes([where[0] | 6]) + where[1] + body]}
        ), "format-in-map" if in_map else kind
    n = draw(st.integers(0, 3))
    opts = b"\x76" + u(n) + b"".join(s(f"o{i}") + b"\x78" for i in range(n))
    body = s(draw(st.text(max_size=12))) + opts
    return _update({1: [bytes([where[0] | 9]) + where[1] + body]}), kind


@st.composite
def delete_sets(draw: st.DrawFn) -> tuple[bytes, int, bool]:
    """No structs and a delete set of many clients and ranges (sorted or not, long or
    short); returns (update, ranges, sorted and non-overlapping)."""
    n_clients = draw(st.integers(1, 8))
    per = draw(sizes(3000 * SCALE // n_clients))
    step = draw(st.integers(1, 1000))
    length = draw(st.integers(1, step))
    shuffle = draw(st.booleans())
    body = b""
    for c in range(n_clients):
        clocks = [k * step for k in range(per)]
        if shuffle and per > 1:
            clocks[0], clocks[-1] = clocks[-1], clocks[0]
        body += u(c + 1) + u(per) + b"".join(u(x) + u(length) for x in clocks)
    ok = (not shuffle or per == 1) and (per - 1) * step + length < 2**31 - 1
    return b"\x00" + u(n_clients) + body, n_clients * per, ok


def mutated(shapes: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A shape with a few bytes overwritten and maybe truncated."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(shapes))
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data[: draw(st.integers(1, len(data)))])

    return build()


#: Limits scaled down so that refusals of every kind happen at fuzzing sizes; ``max_fan``
#: stays <= 256 so that the stated per-byte bound still holds.
small_limits = st.builds(
    UpdateLimits,
    max_structs=st.integers(1, 5000),
    max_delete_ranges=st.integers(1, 5000),
    max_fan=st.integers(1, 256),
    max_merge_work=st.integers(0, 1 << 20),
    max_type_depth=st.integers(1, 64),
    refuse_subdocs=st.booleans(),
    refuse_format_in_map=st.just(True),
)
any_limits = st.just(DEFAULT_LIMITS) | small_limits

any_shape: st.SearchStrategy[bytes] = st.one_of(
    fans().map(lambda x: x[0]),
    runs().map(lambda x: x[0]),
    nested_types().map(lambda x: x[0]),
    nested_values().map(lambda x: x[0]),
    odd_values().map(lambda x: x[0]),
    delete_sets().map(lambda x: x[0]),
)

# -- the validator ---------------------------------------------------------------------------


def check(update: bytes, limits: UpdateLimits) -> parse.UpdateInfo | InvalidUpdate:
    """The validator's verdict, with the properties every verdict must have."""
    try:
        info = validate_update(update, limits=limits)
    except InvalidUpdate as exc:
        assert "could not be validated" not in str(exc), exc  # an internal error, not a refusal
        return exc
    bound = WORK_PER_BYTE * len(update) + (limits.max_merge_work or 0)
    assert info.work <= bound, (len(update), info.work, bound)
    if limits.max_fan is not None and info.places:
        assert max(info.places.values()) <= limits.max_fan
    if limits.max_structs is not None:
        assert info.n_structs <= limits.max_structs
    return info


def both_builds(update: bytes, limits: UpdateLimits) -> None:
    """The compiled and pure-Python scanners say the same (when both are there)."""
    if COMPILED is None:
        return
    seen = []
    for module in (COMPILED, PURE):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(parse, "scan", module)
            mp.setattr(state, "scan", module)
            try:
                i = parse.parse_update(update, limits=limits)
                seen.append((i.n_structs, i.work, i.ends, i.delete_set, i.places))
            except InvalidUpdate as exc:
                seen.append((type(exc).__name__, str(exc)))
    assert seen[0] == seen[1]


@given(fans(), any_limits)
def test_fans_are_refused_exactly_when_a_place_holds_too_many_items(
    shape: tuple[bytes, int], limits: UpdateLimits
) -> None:
    update, most = shape
    verdict = check(update, limits)
    assert limits.max_fan is not None
    if most > limits.max_fan:
        assert isinstance(verdict, UpdateOverLimit), (most, verdict)
    elif isinstance(verdict, InvalidUpdate):  # another limit (structs, merges), never malformed
        assert isinstance(verdict, UpdateOverLimit), verdict
        assert "same place" not in str(verdict), (most, verdict)
    both_builds(update, limits)


@given(nested_types(), any_limits)
def test_nested_types_are_refused_past_the_depth_limit(
    shape: tuple[bytes, int], limits: UpdateLimits
) -> None:
    update, depth = shape
    verdict = check(update, limits)
    assert limits.max_type_depth is not None
    too_deep = depth > limits.max_type_depth
    too_many = limits.max_structs is not None and depth > limits.max_structs
    if too_deep or too_many:
        assert isinstance(verdict, UpdateOverLimit), (depth, verdict)
    else:
        assert not isinstance(verdict, InvalidUpdate), verdict


@given(nested_values())
def test_nested_values_are_refused_past_max_nesting(shape: tuple[bytes, int]) -> None:
    update, depth = shape
    verdict = check(update, DEFAULT_LIMITS)
    if depth > parse.MAX_NESTING:
        assert isinstance(verdict, InvalidUpdate), verdict
        assert not isinstance(verdict, UpdateOverLimit), verdict  # malformed, as Yrs would fail
        assert "nest" in str(verdict), verdict
    else:
        assert not isinstance(verdict, InvalidUpdate), verdict


@given(odd_values(), any_limits)
def test_format_in_map_and_subdocs_follow_the_switches(
    shape: tuple[bytes, str], limits: UpdateLimits
) -> None:
    update, kind = shape
    verdict = check(update, limits)
    refused = kind == "format-in-map" or (kind == "subdoc" and limits.refuse_subdocs)
    assert isinstance(verdict, UpdateOverLimit) == refused, (kind, verdict)
    if not refused:
        assert not isinstance(verdict, InvalidUpdate), verdict


@given(delete_sets(), any_limits)
def test_delete_sets_are_refused_past_the_range_cap(
    shape: tuple[bytes, int, bool], limits: UpdateLimits
) -> None:
    update, ranges, ok = shape
    verdict = check(update, limits)
    assert limits.max_delete_ranges is not None
    if ok and ranges > limits.max_delete_ranges:
        assert isinstance(verdict, UpdateOverLimit), verdict
    elif ok:
        assert not isinstance(verdict, InvalidUpdate), verdict
    else:
        assert isinstance(verdict, InvalidUpdate), verdict
    both_builds(update, limits)


@given(runs(), any_limits)
def test_merge_runs_and_chains_stay_within_the_bound(
    shape: tuple[bytes, bool], limits: UpdateLimits
) -> None:
    update = shape[0]
    verdict = check(update, limits)
    if isinstance(verdict, InvalidUpdate):  # a limit (structs, merges), never malformed
        assert isinstance(verdict, UpdateOverLimit), verdict
    both_builds(update, limits)


@settings(max_examples=100 if not SOAK else 4000)
@given(mutated(any_shape), any_limits)
def test_mutated_shapes_are_accepted_within_the_bound_or_refused(
    update: bytes, limits: UpdateLimits
) -> None:
    check(update, limits)
    both_builds(update, limits)


# -- accepted shapes apply and read back in a capped child -----------------------------------


def _apply_and_read(updates: list[tuple[bool, bytes]]) -> list[str]:
    """Apply each update (after the anchor where it needs it) to a fresh doc the way crdtsync
    does, then read every root kind back; what each read gave, by type name."""
    import pycrdt

    from crdtsync.values import to_plain
    from crdtsync.yjs.doc import apply_validated

    out = []
    for anchored, update in updates:
        for root in (pycrdt.Map, pycrdt.Array, pycrdt.XmlFragment, pycrdt.Text):
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            if anchored:
                apply_validated(doc, ANCHOR)
            apply_validated(doc, update)
            out.append(type(to_plain(doc.get("root", type=root))).__name__)
    return out


#: (needs the anchor item (1, 0), update): the shapes of client 1 must not meet the anchor
#: (the same IDs with other content), those pointing at it need it.
anchored_shape: st.SearchStrategy[tuple[bool, bytes]] = st.one_of(
    fans().map(lambda x: (True, x[0])),
    runs().map(lambda x: (x[1], x[0])),
    nested_types().map(lambda x: (False, x[0])),
    nested_values().map(lambda x: (False, x[0])),
    odd_values().map(lambda x: (False, x[0])),
    delete_sets().map(lambda x: (False, x[0])),
)


@settings(max_examples=10 if not SOAK else 300)
@given(st.lists(anchored_shape, min_size=1, max_size=3))
def test_accepted_shapes_apply_and_read_in_a_capped_child(
    shapes: list[tuple[bool, bytes]],
) -> None:
    accepted = [x for x in shapes if not isinstance(check(x[1], DEFAULT_LIMITS), InvalidUpdate)]
    if not accepted:
        return
    status, result = h.run_limited(_apply_and_read, accepted, mem_mib=512, timeout=120)
    assert status == "ok", (status, result, [len(x) for _, x in accepted])


# -- sequences: the fan built over time ------------------------------------------------------


@st.composite
def fan_sequences(draw: st.DrawFn) -> list[tuple[bytes, bytes, int]]:
    """Updates each within ``max_fan``, each of fresh clients (ids ascending, as the worst
    case wants), placing items at one of a few places: together they build a fan. Returns
    (update, its place, the items it puts there): the truth the history is checked against."""
    n = draw(sizes(60 * SCALE))
    out = []
    next_client = 3
    for _ in range(n):
        clients = draw(st.integers(1, 8))
        per = max(1, draw(st.integers(1, 40)) // clients)  # one client's pile when clients == 1
        bits, where = PLACES[draw(st.sampled_from([0, 1, 4]))]
        item = bytes([bits | 8]) + where + ANY_ONE
        sections = {c: [item] * per for c in range(next_client, next_client + clients)}
        next_client += clients
        out.append((_update(sections), where, clients * per))
    return out


@settings(max_examples=50 if not SOAK else 300)  # soak: 600-update sequences, 300 s timeout
@given(fan_sequences())
def test_a_fan_built_over_time_is_refused_before_the_cap(
    sequence: list[tuple[bytes, bytes, int]],
) -> None:
    # Fed through validate_update and the place history as the registry does. Checked
    # against the items the generator put at each place, not against what the validator
    # counted: at most the cap at a place, and the conflict scans they cost Yrs (each item
    # scans those placed before it) stay under cap^2/2 per place: the quadratic growth has a
    # constant ceiling.
    cap = DEFAULT_LIMITS.max_fan
    assert cap is not None
    history = PlaceHistory(cap, max_places=512)
    items: dict[bytes, int] = {}
    scans = 0
    for update, where, n in sequence:
        info = check(update, DEFAULT_LIMITS)
        if isinstance(info, InvalidUpdate):
            assert n > cap, (n, info)  # only an update over the cap on its own
            continue
        try:
            history.cost(info.places)
        except ValueError:
            assert items.get(where, 0) + n > cap  # refused only when it would pass the cap
            continue
        history.record(info.places)
        scans += items.get(where, 0) * n + n * (n - 1) // 2
        items[where] = items.get(where, 0) + n
    assert all(n <= cap for n in items.values()), items
    assert scans <= len(items) * cap * cap // 2, (scans, items)


@settings(max_examples=25 if not SOAK else 150)
@given(fan_sequences(), st.lists(st.integers(1, 6), min_size=1, max_size=20))
def test_the_registry_holds_the_cap_over_pushes_and_batches(
    sequence: list[tuple[bytes, bytes, int]], cuts: list[int]
) -> None:
    # The same through a real ShardRegistry (LMDB store), the updates grouped into batches
    # as a Push of several updates is applied (apply_batch, one transaction) or one by one.
    # Found: apply_batch priced each update against the history without the batch's earlier
    # ones, so k updates within the cap each put k x cap items at one place.
    import tempfile
    from pathlib import Path

    from crdtsync._registry import ShardRegistry
    from crdtsync.store import Store

    cap = DEFAULT_LIMITS.max_fan
    assert cap is not None
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), sync=False)
        reg = ShardRegistry("v", store, notify=lambda: None, on_delta=None, host=None)
        try:
            reg.apply("doc", ANCHOR, "evil")
            reg.apply("doc", _update({2: [b"\x08" + ROOT + ANY_ONE]}), "evil")
            items: dict[bytes, int] = {}
            i = 0
            for cut in cuts * (len(sequence) // max(1, sum(cuts)) + 1):
                group = sequence[i : i + cut]
                i += cut
                if not group:
                    break
                before = reg.state_vector("doc")
                try:
                    infos = [validate_update(x) for x, _, _ in group]
                    if len(group) == 1:
                        reg.apply("doc", group[0][0], "evil", infos[0])
                    else:
                        reg.apply_batch("doc", [x for x, _, _ in group], "evil", infos)
                except UpdateOverLimit:
                    assert reg.state_vector("doc") == before  # nothing of it applied
                    continue
                for _, where, n in group:
                    items[where] = items.get(where, 0) + n
            assert all(n <= cap for n in items.values()), items
        finally:
            reg.close()
            store.close()


def test_a_flood_of_fresh_places_does_not_reset_a_pile() -> None:
    # Piles of 200 items at one place, each followed by one update of 600 fresh map keys
    # (one item each). Found by the sequence generator: with one LRU of 512 places, the keys
    # pushed the pile's place out, every pile was priced as if the place were empty, and the
    # place grew without bound (1,000 items after five rounds, each new item scanning all of
    # them in Yrs). One-item places now have a tier of their own: refused at max_fan items.
    bits, where = PLACES[0]
    history = PlaceHistory(DEFAULT_LIMITS.max_fan, max_places=512)
    client, placed = 3, 0
    for round_ in range(5):
        pile = check(_update({client: [bytes([bits | 8]) + where + ANY_ONE] * 200}), DEFAULT_LIMITS)
        assert not isinstance(pile, InvalidUpdate)
        try:
            history.cost(pile.places)
        except ValueError:
            break
        history.record(pile.places)
        placed += 200
        keys = [b"\x28" + ROOT + s(f"f{round_}-{j}") + ANY_ONE for j in range(600)]
        flood = check(_update({client + 1: keys}), DEFAULT_LIMITS)
        assert not isinstance(flood, InvalidUpdate)
        history.cost(flood.places)
        history.record(flood.places)
        client += 2
    assert placed <= (DEFAULT_LIMITS.max_fan or 0), placed


def test_one_clients_pile_then_another_is_priced_as_items() -> None:
    # Found by the fan generator: 4,000 items of one client at one origin, then 4,000 of a
    # higher client at the same origin (24 KB each) cost Yrs 1.15 s (quadratic: each item of
    # the second scans all of the first); both were accepted, and counted as a fan of 1.
    pile = {2: [b"\x88" + u(1) + b"\x00" + ANY_ONE] * 4000}
    assert isinstance(check(_update(pile), DEFAULT_LIMITS), UpdateOverLimit)
    small = {2: [b"\x88" + u(1) + b"\x00" + ANY_ONE] * 200}
    info = check(_update(small), DEFAULT_LIMITS)
    assert not isinstance(info, InvalidUpdate)
    assert info.places == {u(1) + b"\x00": 200}
    history = PlaceHistory(DEFAULT_LIMITS.max_fan)
    history.record(info.places)
    more = check(_update({3: [b"\x88" + u(1) + b"\x00" + ANY_ONE] * 100}), DEFAULT_LIMITS)
    assert not isinstance(more, InvalidUpdate)
    with pytest.raises(ValueError, match="items at one place"):
        history.cost(more.places)
    # A pile of one client's items left of its own item, then another client's: the same.
    own = {2: [b"\x08" + ROOT + ANY_ONE] + [b"\x48" + u(2) + b"\x00" + ANY_ONE] * 300}
    assert isinstance(check(_update(own), DEFAULT_LIMITS), UpdateOverLimit)
    # Typing (each item continuing the last) is not counted: it places nothing twice.
    typed = check(h.many_unmerged(5000), DEFAULT_LIMITS)
    assert not isinstance(typed, InvalidUpdate) and max(typed.places.values()) == 1


# -- the wire decoder ------------------------------------------------------------------------


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


@st.composite
def hostile_frames(draw: st.DrawFn) -> tuple[str, int, int]:
    """The spec (shape, n, m) of a hostile msgpack frame; :func:`frame_of` builds it. Drawn
    as a spec, not as bytes: a multi-MB argument costs hypothesis a multi-MB repr."""
    shape = draw(st.sampled_from(["maps", "arrays", "nested", "push", "liar", "in-envelope"]))
    budget = wire.MAX_FRAME_ITEMS
    if shape == "maps":  # n empty maps (the 16 MiB frame, smaller)
        return shape, draw(sizes(200_000 * SCALE, budget)), 0
    if shape == "arrays":  # n arrays of m empty arrays, around the item budget
        m = draw(st.integers(0, 64))
        per = 2 * m + 2  # the m empties, the array of them, its slot in the outer array
        return shape, draw(sizes(2 * budget // per, (budget - 1) // per)), m
    if shape == "nested":
        return shape, draw(sizes(100_000 * SCALE)), 0
    if shape == "push":  # a Push carrying n tiny updates
        return shape, draw(sizes(200_000 * SCALE)), draw(st.integers(0, 255))
    if shape == "liar":  # a header claiming far more than the frame holds
        return shape, 2**32 - 1, draw(st.sampled_from([0xDD, 0xDF, 0xC6, 0xDB]))
    return shape, draw(sizes(1000)), draw(st.integers(0, 12))  # a map inside an envelope


def frame_of(shape: str, n: int, m: int) -> tuple[bytes, CloseCode | None]:
    """The frame of a :func:`hostile_frames` spec and the close code it must get (None: any
    code, or a message)."""
    budget = wire.MAX_FRAME_ITEMS
    if shape == "maps":
        code = CloseCode.OVERSIZE if n > budget else CloseCode.MALFORMED_FRAME
        return _array_header(n) + b"\x80" * n, code
    if shape == "arrays":  # [[...], ...]: no envelope
        inner = _array_header(m) + b"\x90" * m
        code = CloseCode.OVERSIZE if n * (2 * m + 2) + 1 > budget else CloseCode.MALFORMED_FRAME
        return _array_header(n) + inner * n, code
    if shape == "nested":
        return b"\x91" * n + b"\xc0", CloseCode.MALFORMED_FRAME
    if shape == "push":
        return msgpack.packb([1, "doc", [bytes([m])] * n], use_bin_type=True), None
    if shape == "liar":
        code = CloseCode.OVERSIZE if m == 0xDD else CloseCode.MALFORMED_FRAME
        return b"\x92\x01" + bytes([m]) + n.to_bytes(4, "big"), code
    return msgpack.packb([m, {"a": [None] * n}]), CloseCode.MALFORMED_FRAME


def _decode(frame: bytes) -> tuple[str, int]:
    try:
        msg = wire.decode(frame, max_size=32 << 20)
    except ProtocolError as exc:
        assert isinstance(exc.code, CloseCode)
        return "refused", int(exc.code)
    assert wire.decode(wire.encode(msg), max_size=32 << 20) == msg
    return "accepted", 0


@settings(max_examples=40 if not SOAK else 300)
@given(hostile_frames())
def test_hostile_frames_get_a_close_code(spec: tuple[str, int, int]) -> None:
    frame, code = frame_of(*spec)
    run: Callable[..., tuple[str, Any]] = (
        h.run_limited if SOAK else lambda f, *a, **k: ("ok", f(*a))
    )
    status, result = run(_decode, frame, mem_mib=512, timeout=60)
    assert status == "ok", (status, result)
    if code is not None:
        assert result == ("refused", int(code)), (result, code)
