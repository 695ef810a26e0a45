"""The struct section's scan in C (``crdtsync/yjs/_cscan.c``) against its reference.

The C scan only accepts: for a struct section it accepts it must return exactly what
``scan_structs`` of ``crdtsync/yjs/_scan.py`` returns, and for anything else None, after which
``parse`` runs the reference (which raises with its own offset and message). So the rule
checked here, on the raw scan, is:

- the reference raises (Malformed or OverLimit)  ->  the C scan returns None;
- the reference accepts  ->  the C scan returns the same tuple, or None only where the update
  holds JSON content (Embed, Format: left to the reference's json parser) -- counted by
  wrapping the pure build's ``_json``.

The reference is the pure-Python build (the mypyc build is compared with it in
``test_scan_builds.py``). Inputs: what pycrdt writes for random edits, then bit flips, byte
insertions and deletions, truncations and splices of it (hypothesis); the hand-made samples
and hostile shapes; random bytes; tight random limits so that every OverLimit path is taken.
Places are counted the three ways the C scan knows: the native table (through its capsule),
an object with ``add``/``reserve`` methods (called as Python methods), and the dict.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import hostile as h
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_updates import ACCEPTED, OPS, REFUSED, SAMPLES, generate

from crdtsync.yjs import _native, parse
from crdtsync.yjs._malformed import Malformed
from crdtsync.yjs.limits import DEFAULT_LIMITS

CSCAN = _native.native_scan()
PURE = _native.load_pure()
PURE_CONTENT = sys.modules[f"{_native._PURE_PACKAGE}._scan_content"]
NATIVE_PLACES = _native.native_places()

pytestmark = pytest.mark.skipif(CSCAN is None, reason="the C scan is not built here")

#: (max_structs, max_fan, max_depth, max_merge, refuse_format_in_map, refuse_subdocs)
NO_LIMITS = (-1, -1, -1, -1, False, False)
DEFAULTS = (
    -1 if DEFAULT_LIMITS.max_structs is None else DEFAULT_LIMITS.max_structs,
    -1 if DEFAULT_LIMITS.max_fan is None else DEFAULT_LIMITS.max_fan,
    -1 if DEFAULT_LIMITS.max_type_depth is None else DEFAULT_LIMITS.max_type_depth,
    -1 if DEFAULT_LIMITS.max_merge_work is None else DEFAULT_LIMITS.max_merge_work,
    DEFAULT_LIMITS.refuse_format_in_map,
    DEFAULT_LIMITS.refuse_subdocs,
)
TIGHT = st.tuples(
    st.integers(-1, 40),
    st.integers(-1, 4),
    st.integers(-1, 3),
    st.integers(-1, 200),
    st.booleans(),
    st.booleans(),
)


class PyFans:
    """A FanCounter in Python (the C scan calls its methods), counting like the dict."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.counts: dict[bytes, int] = {}

    def add(self, start: int, length: int) -> int:
        key = self.data[start : start + length]
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def reserve(self, more: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.counts)


def _places(fans: Any) -> list[tuple[bytes, int]] | None:
    if fans is None:
        return None
    if isinstance(fans, PyFans):
        return list(fans.counts.items())
    return list(fans.items())


def reference(data: bytes, limits: tuple[Any, ...], fans: Any) -> tuple[Any, ...]:
    """The pure build's outcome, and how many JSON values it parsed."""
    calls = 0
    real = PURE_CONTENT._json

    def counting(*args: Any) -> int:
        nonlocal calls
        calls += 1
        return real(*args)  # type: ignore[no-any-return]

    PURE_CONTENT._json = counting
    try:
        return ("ok", PURE.scan_structs(data, 0, *limits, fans), _places(fans)), calls
    except Malformed as exc:
        return ("refused", type(exc).__name__, exc.pos), calls
    finally:
        PURE_CONTENT._json = real


def check(data: bytes, limits: tuple[Any, ...] = NO_LIMITS) -> None:
    """The rule of the module docstring, for each way of counting places."""
    assert CSCAN is not None
    makers: list[Any] = [lambda d: None, PyFans]
    if NATIVE_PLACES is not None:
        makers.append(NATIVE_PLACES)
    for make in makers:
        want, json_calls = reference(data, limits, make(data))
        fans = make(data)
        got = CSCAN.scan_structs(data, 0, *limits, fans)
        if got is None:
            assert want[0] == "refused" or json_calls, (data.hex(), limits, want)
        else:
            assert want[0] == "ok", (data.hex(), limits, want)
            assert (got, _places(fans)) == want[1:], (data.hex(), limits)


def test_ci_builds_the_c_scan() -> None:
    """CI (``.ci/run``: a C compiler and the headers) must build and use it, with the native
    table's capsule (places counted without a Python call)."""
    if not os.environ.get("CI") or _native.FORCED_PURE:
        pytest.skip("only in CI, without CRDTSYNC_PURE_PYTHON")
    assert _native.CSCAN is not None and parse.CSCAN is _native.CSCAN
    assert _native.CSCAN.FANS_NATIVE == 1


def test_built_and_current() -> None:
    assert CSCAN is not None
    assert CSCAN.SOURCE_SHA256 and not CSCAN.__file__.endswith(".c")
    if not _native.FORCED_PURE:
        assert parse.CSCAN is CSCAN
    if NATIVE_PLACES is not None:
        assert CSCAN.FANS_NATIVE == 1


def test_crdtsync_pure_python_turns_it_off() -> None:
    code = "from crdtsync.yjs import _native, parse; print(_native.CSCAN, parse.CSCAN)"
    env = {**os.environ, "CRDTSYNC_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "None"]


def test_a_stale_build_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CSCAN is not None
    monkeypatch.setattr(CSCAN, "SOURCE_SHA256", "0" * 64)
    with pytest.warns(RuntimeWarning, match="another version of _cscan.c"):
        assert _native.native_scan() is None


def test_it_takes_bytes_only() -> None:
    assert CSCAN is not None
    with pytest.raises(TypeError):
        CSCAN.scan_structs(bytearray(SAMPLES[1]), 0, *NO_LIMITS, None)
    with pytest.raises(TypeError):
        CSCAN.scan_structs(SAMPLES[1], 0, *NO_LIMITS)


def test_limits_past_64_bits_and_bad_positions_are_left_to_the_reference() -> None:
    assert CSCAN is not None
    update = SAMPLES[1]
    assert CSCAN.scan_structs(update, 0, *NO_LIMITS, None) is not None
    assert CSCAN.scan_structs(update, 0, 1 << 70, -1, -1, -1, False, False, None) is None
    assert CSCAN.scan_structs(update, -1, *NO_LIMITS, None) is None
    assert CSCAN.scan_structs(update, len(update) + 1, *NO_LIMITS, None) is None


def test_it_accepts_the_bulk_of_a_real_state() -> None:
    """A map and a text of pycrdt's are answered in C (not handed back), with the same
    result as the reference, under the default limits."""
    gen = generate(
        [
            ("map_set", 1, 0, "v" * 70, "", {}, False),
            ("text_insert", 0, 0, None, "héllo 😀", {}, False),
            ("text_insert", 3, 0, None, "abc", {}, True),
        ]
    )
    update = gen.doc.get_update()
    assert CSCAN is not None
    assert CSCAN.scan_structs(update, 0, *DEFAULTS, None) is not None
    check(update, DEFAULTS)


def test_samples_truncations_and_every_bit_flip() -> None:
    for update in SAMPLES:
        for limits in (NO_LIMITS, DEFAULTS):
            check(update, limits)
        for cut in range(len(update)):
            check(update[:cut])
        for i in range(len(update)):
            for bit in range(8):
                check(update[:i] + bytes([update[i] ^ (1 << bit)]) + update[i + 1 :])


@pytest.mark.parametrize("update", [*ACCEPTED.values(), *(u for u, _ in REFUSED.values())])
def test_hand_made(update: bytes) -> None:
    for limits in (NO_LIMITS, DEFAULTS):
        check(update, limits)


@pytest.mark.parametrize(
    "update",
    h.hostile_shapes(),
    ids=lambda u: f"{len(u)}B",
)
def test_hostile_shapes(update: bytes) -> None:
    for limits in (NO_LIMITS, DEFAULTS):
        check(update, limits)


@settings(max_examples=150, deadline=None)
@given(
    OPS,
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=4),
    TIGHT,
)
def test_what_pycrdt_writes_flipped_and_under_tight_limits(
    ops: list[tuple[Any, ...]], flips: list[tuple[int, int]], limits: tuple[Any, ...]
) -> None:
    gen = generate(ops)
    for update in gen.all_updates():
        check(update, NO_LIMITS)
        check(update, limits)
    update = bytearray(gen.doc.get_update())
    for pos, bit in flips:
        update[pos % len(update)] ^= 1 << bit
    check(bytes(update), DEFAULTS)
    check(bytes(update), limits)


@settings(max_examples=150, deadline=None)
@given(OPS, OPS, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_truncated_spliced_and_edited(
    ops1: list[tuple[Any, ...]], ops2: list[tuple[Any, ...]], a: int, b: int, c: int
) -> None:
    one = generate(ops1).doc.get_update()
    two = generate(ops2, client_id=2).doc.get_update()
    i, j = a % (len(one) + 1), b % (len(two) + 1)
    check(one[:i])  # truncated
    check(one[:i] + two[j:])  # spliced
    check(one[:i] + bytes([c % 256]) + one[i:])  # a byte inserted
    check(one[:i] + one[i + 1 :])  # a byte deleted
    check(one[:i] + one[i:][::-1][: c % 8] + one[i:])  # a few bytes repeated, reversed


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"", *SAMPLES[1:]]), st.binary(min_size=1, max_size=200))
def test_random_bytes(head: bytes, noise: bytes) -> None:
    check(head[:4] + noise)
    check(head[:4] + noise, DEFAULTS)


ANY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=20)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(ANY_VALUES, st.integers(0, 10**6))
def test_any_values_and_their_mutations(value: Any, at: int) -> None:
    """Any content of every tag, objects under and over the pairwise check of keys (16),
    then a byte of it changed: the same as the reference."""
    import pycrdt

    doc = pycrdt.Doc()
    doc.get("m", type=pycrdt.Map)["k"] = value
    update = doc.get_update()
    assert CSCAN is not None
    assert CSCAN.scan_structs(update, 0, *DEFAULTS, None) is not None
    check(update, DEFAULTS)
    i = at % len(update)
    for byte in (0x00, 0x76, 0x77, 0x80, 0xFF, update[i] ^ 0x01):
        check(update[:i] + bytes([byte]) + update[i + 1 :])


def test_any_object_repeating_a_key_beyond_the_pairwise_check() -> None:
    """An object of 17 and of 40 entries repeating its first key at the end (and a repeat
    among 3): refused by the reference, so handed back."""

    def any_object(keys: list[bytes]) -> bytes:
        body = bytes([118, len(keys)])
        for key in keys:
            body += bytes([len(key)]) + key + bytes([126])  # key: null
        return body

    for n in (3, 16, 17, 40):
        keys = [b"k%d" % i for i in range(n - 1)] + [b"k0"]
        unique = [b"k%d" % i for i in range(n)]
        for body, repeated in ((any_object(keys), True), (any_object(unique), False)):
            # one client (1), one struct, client 1 clock 0: an Any item (0x28) in root "m" key "k"
            update = bytes([1, 1, 1, 0, 0x28, 1, 1]) + b"m" + bytes([1]) + b"k" + bytes([1])
            update += body
            want, _ = reference(update, NO_LIMITS, None)
            assert want[0] == ("refused" if repeated else "ok"), (n, want)
            check(update)


def test_parse_update_answers_the_same_with_and_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through parse_update: the same refusals (class and message with its offset) and the
    same accepted fields, with the C scan in front and without it."""
    from crdtsync.errors import InvalidUpdate

    def outcome(update: bytes) -> Any:
        try:
            info = parse.parse_update(update, limits=DEFAULT_LIMITS)
        except InvalidUpdate as exc:
            return (type(exc).__name__, str(exc))
        return (
            info.n_structs,
            info.work,
            info.ends,
            info._spans,
            info._gaps,
            info._refs,
            list(info.places.items()),
            info.places_most,
        )

    updates = [*SAMPLES, *ACCEPTED.values(), *(u for u, _ in REFUSED.values())]
    updates += [u[:-3] for u in SAMPLES if len(u) > 3]
    for update in updates:
        monkeypatch.setattr(parse, "CSCAN", CSCAN)
        with_c = outcome(update)
        monkeypatch.setattr(parse, "CSCAN", None)
        assert outcome(update) == with_c, update.hex()


def test_every_limit_at_its_boundary() -> None:
    """Each work limit set just under, at and over what a hostile shape needs: the C scan
    hands back exactly where the reference refuses (an off-by-one there fails this)."""
    shapes = {
        "max_fan": (1, [h.same_origin_fan(n) for n in (2, 3, 7)]),
        "max_depth": (2, [h.nested_maps(n) for n in (1, 4)] + [h.nested_xml(3)]),
        "max_merge": (3, [h.one_value_chain(n) for n in (3, 40)] + [h.many_chars(30)]),
        "max_structs": (0, [h.many_unmerged(n) for n in (3, 20)]),
    }
    for name, (at, updates) in shapes.items():
        for update in updates:
            # around what the whole update needs too (work less structs: its fan and merge work)
            found = PURE.scan_structs(update, 0, -1, 2**40, -1, 2**40, False, False, None)
            need = found[5] - found[0]
            for value in [*range(-1, 80), *range(need - 3, need + 4)]:
                limits = list(NO_LIMITS)
                limits[at] = value
                check(update, tuple(limits))
            limits = list(NO_LIMITS)
            limits[at] = 2**62  # far above: accepted in C
            assert CSCAN is not None
            assert CSCAN.scan_structs(update, 0, *limits, None) is not None, name
