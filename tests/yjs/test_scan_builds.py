"""The two builds of the validator's inner loops give the same answers on the same bytes.

``crdtsync/yjs/_scan.py`` runs either compiled (mypyc, built by ``setup.py`` when a C compiler
is there) or as plain Python (the fallback, or with ``CRDTSYNC_PURE_PYTHON=1``); see
``crdtsync/yjs/_native.py``. The rest of the suite runs the validator's tests on the build in
use (the compiled one wherever it could be built, and always in CI: see
``test_ci_runs_the_compiled_build``). This module runs the same kinds of input (what pycrdt
writes, truncations, every bit flip of the samples, random bytes, the hand-made and hostile
shapes of ``test_updates``/``test_hostile_updates``) through ``parse_update`` on *both* builds
and requires identical results: the same :class:`UpdateInfo` fields or the same error class
and message (byte offset included), under no limits and under the default limits.

The fan bookkeeping has two ways too: a dict (in ``_scan.py``) or the native table of
``crdtsync/yjs/_fans.c`` (``_native.PLACES``, built when a C compiler is there; used for
updates of ``parse.NATIVE_PLACES_MIN`` bytes or more). Every input here runs on every build
with both ways, the native table forced for any size, and the places (in order) and their
most are compared as well.

The struct section's scan in C (``crdtsync/yjs/_cscan.c``, ``_native.CSCAN``) is a third
dimension: it accepts what it can and hands the rest to the build of ``_scan`` in use, so every
input also runs with it in front of the compiled build (both ways of counting), and the
outcome, refusals and their messages included, must be the same as without it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import hostile as h
import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_updates import ACCEPTED, OPS, REFUSED, SAMPLES, generate

from crdtsync.errors import InvalidUpdate
from crdtsync.yjs import _native, parse, state
from crdtsync.yjs.limits import DEFAULT_LIMITS, UpdateLimits

COMPILED = _native.compiled_module()
PURE = _native.load_pure()
NATIVE_PLACES = _native.native_places()
LIMITS: tuple[UpdateLimits | None, ...] = (None, DEFAULT_LIMITS)
CSCAN = _native.native_scan()
#: (build of _scan, the native table or None for the dict, the C scan or None): every way
#: this checkout can run.
WAYS: list[tuple[ModuleType, type | None, ModuleType | None]] = [
    *(
        (module, places, None)
        for module in (COMPILED, PURE)
        if module is not None
        for places in dict.fromkeys((NATIVE_PLACES, None))  # (None once, if not built)
    ),
    *(
        (COMPILED or PURE, places, CSCAN)
        for places in dict.fromkeys((NATIVE_PLACES, None))
        if CSCAN is not None
    ),
]

needs_compiled = pytest.mark.skipif(
    COMPILED is None, reason="the compiled validator is not built here (pure Python only)"
)
needs_two_ways = pytest.mark.skipif(
    len(WAYS) < 2,
    reason="neither the compiled validator nor the native table is built here (pure Python only)",
)


@contextmanager
def build(
    module: ModuleType, places: type | None = None, cscan: ModuleType | None = None
) -> Iterator[None]:
    """parse_update and the delete-set reader run on ``module`` inside the block, counting
    places in ``places`` (the native table, for any size) or in a dict (None), with the C
    scan ``cscan`` in front of it (or none)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parse, "scan", module)
        mp.setattr(parse, "CSCAN", cscan)
        mp.setattr(state, "scan", module)
        mp.setattr(parse, "PLACES", places)
        mp.setattr(parse, "NATIVE_PLACES_MIN", 0)
        yield


def outcome(update: bytes, limits: UpdateLimits | None) -> tuple[Any, ...]:
    """Everything parse_update says about ``update``: the info's fields, or the refusal."""
    try:
        info = parse.parse_update(update, limits=limits)
    except InvalidUpdate as exc:
        return ("refused", type(exc).__name__, str(exc))
    return (
        "accepted",
        info.size,
        info.n_structs,
        info.work,
        info.ends,
        info.delete_set,
        info._spans,
        info._gaps,
        info._refs,
        list(info.places.items()),
        info.places_most,
    )


def same_on_both(update: bytes) -> None:
    """The same outcome on every build, with the dict and with the native table."""
    for limits in LIMITS:
        outcomes = []
        for module, places, cscan in WAYS:
            with build(module, places, cscan):
                outcomes.append(outcome(update, limits))
        for other in outcomes[1:]:
            assert other == outcomes[0], (update.hex(), limits)


def test_the_builds_are_what_they_say() -> None:
    assert PURE.__file__.endswith("_scan.py")
    assert not hasattr(PURE, "SOURCE_SHA256")  # only the compiled copy carries it
    # The pure build's other module of the group is pure too (not the compiled one).
    assert hasattr(PURE.read_uint, "__code__") and hasattr(PURE.content, "__code__")
    assert sys.modules[PURE.read_uint.__module__].__file__.endswith("_scan_content.py")
    if COMPILED is not None:
        assert not COMPILED.__file__.endswith(".py")
        assert COMPILED.SOURCE_SHA256
        # The whole group is compiled, each module carrying its own source's hash.
        assert not hasattr(COMPILED.read_uint, "__code__")
        for name in _native.GROUP:
            module = sys.modules[f"crdtsync.yjs.{name}"]
            assert not module.__file__.endswith(".py")
            source = Path(_native.__file__).with_name(f"{name}.py").read_bytes()
            assert module.SOURCE_SHA256 == hashlib.sha256(source).hexdigest()
    if COMPILED is not None and not _native.FORCED_PURE:
        assert _native.scan is COMPILED and _native.COMPILED
    else:
        # The pure build: load_pure()'s copy when forced, else (nothing compiled) the source
        # imported under its own name, crdtsync.yjs._scan.
        assert _native.scan is (PURE if _native.FORCED_PURE else sys.modules["crdtsync.yjs._scan"])
        assert _native.scan.__file__.endswith("_scan.py") and not _native.COMPILED
    assert parse.scan is state.scan is _native.scan


def test_ci_runs_the_compiled_build() -> None:
    """CI (``.ci/run`` installs a C compiler and the Python headers) must not fall back
    silently: there the rest of the suite is meant to test the compiled validator."""
    if not os.environ.get("CI") or _native.FORCED_PURE:
        pytest.skip("only in CI, without CRDTSYNC_PURE_PYTHON")
    assert _native.COMPILED, "CI built no compiled validator: see the `pip install -e .` output"


def test_crdtsync_pure_python_forces_the_fallback() -> None:
    """``CRDTSYNC_PURE_PYTHON=1``: the pure-Python scan, and no native table of places."""
    script = (
        "from crdtsync.yjs import _native, parse;"
        " print(_native.COMPILED, parse.scan.__file__, _native.PLACES, parse.PLACES)"
    )
    env = {**os.environ, "CRDTSYNC_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "False" and out[1].endswith("_scan.py")
    assert out[2:] == ["None", "None"]


def test_a_stale_compiled_module_is_not_used() -> None:
    stale = SimpleNamespace(__file__="/x/_scan.cpython-311-x86_64-linux-gnu.so", SOURCE_SHA256="0")
    with pytest.warns(RuntimeWarning, match="another version"):
        assert not _native._current(stale)  # type: ignore[arg-type]


def _compiled_fake(name: str, source_sha256: str | None = None) -> SimpleNamespace:
    """A stand-in for the compiled module ``name`` of the group, built from the current
    source unless ``source_sha256`` says otherwise."""
    if source_sha256 is None:
        source = Path(_native.__file__).with_name(f"{name}.py").read_bytes()
        source_sha256 = hashlib.sha256(source).hexdigest()
    so = f"/x/{name}.cpython-311-x86_64-linux-gnu.so"
    return SimpleNamespace(__file__=so, SOURCE_SHA256=source_sha256)


@pytest.mark.parametrize("stale", _native.GROUP)
def test_one_stale_module_of_the_group_refuses_the_group(stale: str) -> None:
    """The group is used only if every module of it is current: a checkout where one of the
    sources was edited after the build falls back to the pure build entirely."""
    current = {name: _compiled_fake(name) for name in _native.GROUP}
    assert _native._usable(current)  # type: ignore[arg-type]
    group = {**current, stale: _compiled_fake(stale, "0")}
    with pytest.warns(RuntimeWarning, match=f"another version of {stale}.py"):
        assert not _native._usable(group)  # type: ignore[arg-type]


def test_half_a_compiled_group_is_not_used() -> None:
    group: dict[str, Any] = {name: _compiled_fake(name) for name in _native.GROUP}
    group[_native.GROUP[0]] = SimpleNamespace(__file__=f"/x/{_native.GROUP[0]}.py")
    with pytest.warns(RuntimeWarning, match="only part of the validator is compiled"):
        assert not _native._usable(group)


@needs_two_ways
def test_samples_truncations_and_every_bit_flip() -> None:
    for update in SAMPLES:
        same_on_both(update)
        for cut in range(len(update)):
            same_on_both(update[:cut] or b"\x00")
        for i in range(len(update)):
            for bit in range(8):
                same_on_both(update[:i] + bytes([update[i] ^ (1 << bit)]) + update[i + 1 :])


@needs_two_ways
@pytest.mark.parametrize("update", [*ACCEPTED.values(), *(u for u, _ in REFUSED.values())])
def test_hand_made(update: bytes) -> None:
    same_on_both(update)


@needs_two_ways
@pytest.mark.parametrize(
    "update",
    h.hostile_shapes(),
    ids=lambda u: f"{len(u)}B",
)
def test_hostile_shapes(update: bytes) -> None:
    same_on_both(update)


@needs_two_ways
@settings(max_examples=60, deadline=None)
@given(OPS, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=4))
def test_what_pycrdt_writes_and_bit_flips_of_it(
    ops: list[tuple[Any, ...]], flips: list[tuple[int, int]]
) -> None:
    gen = generate(ops)
    for update in gen.all_updates():
        same_on_both(update)
    update = bytearray(gen.doc.get_update())
    for pos, bit in flips:
        update[pos % len(update)] ^= 1 << bit
    same_on_both(bytes(update))


@needs_two_ways
@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b"", *SAMPLES[1:]]), st.binary(min_size=1, max_size=200))
def test_random_bytes(head: bytes, noise: bytes) -> None:
    same_on_both(head[:4] + noise)


@needs_compiled
@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.booleans())
def test_delete_sets(data: bytes, strict: bool) -> None:
    assert COMPILED is not None

    def read(module: ModuleType) -> tuple[Any, ...]:
        try:
            return ("ok", module.read_delete_set(data, 0, strict, 3))
        except Exception as exc:
            return (type(exc).__name__, exc.args)

    assert read(COMPILED) == read(PURE)


def _strings_of(n: int) -> bytes:
    """An update holding a root name, a map key and value, and text content of ``n`` bytes."""
    doc = pycrdt.Doc()
    root = doc.get("r" * n, type=pycrdt.Map)
    root["k" * n] = "v" * n
    doc.get("t", type=pycrdt.Text).insert(0, "x" * n)
    return doc.get_update()


@needs_two_ways
@pytest.mark.parametrize("n", [1, 2, 31, 63, 64, 65, 200])
def test_strings_around_the_in_place_check(n: int) -> None:
    """The compiled build checks strings up to 64 bytes for ASCII in place (a byte loop),
    longer ones and the pure build through a slice: every byte of every kind of string,
    made non-ASCII (valid UTF-8, a lone lead byte, a stray continuation byte, 0xff), gives the
    same answer on both."""
    update = _strings_of(n)
    for letter in b"rkvx":
        at = update.index(bytes([letter]) * n)
        for i in range(n):
            for bad in (b"\xc3\xa9", b"\xc3", b"\x80", b"\xff"):
                if i + len(bad) <= n:
                    j = at + i
                    same_on_both(update[:j] + bad + update[j + len(bad) :])
