"""The C scan accepts every struct section the reference accepts (issue 17, h-csplit).

The C scan (``crdtsync/yjs/_cscan*.c``) only accepts: on what it does not accept it returns
None and ``parse`` runs the reference (``_scan.py``, ``_scan_content.py``). So a rule RELAXED
in the reference and not in the C breaks nothing visible: the C hands the update back, the
reference accepts it, and only the C scan's time is lost, on every such update, silently.
``test_cscan.check`` already fails when the C hands back what the reference accepts, but
only on the inputs it happens to generate; this module makes sure those inputs sit on every
rule's boundary:

- :data:`OVER`: for every way the reference refuses a struct section, an input just over
  that boundary (refused today), and :data:`INSIDE`: inputs just inside the boundaries
  (accepted by both). :func:`accepts` asserts, for each input and each way of counting
  places, that the C returns a result wherever the reference returns one (the one exception:
  an update holding Embed or Format content, JSON the C leaves to the reference). Relax a rule
  in the reference and its ``OVER`` input becomes accepted there while the C still refuses
  it: :func:`test_the_c_scan_accepts_what_the_reference_accepts_on_every_boundary` fails,
  naming it.
- :func:`test_every_refusal_of_the_reference_is_on_a_boundary_here`: every ``raise`` of
  ``Malformed``/``OverLimit`` the struct section can reach in the reference is reached by
  some input here or in ``test_updates.REFUSED`` (a new rule without an input fails it).
- ``test_cscan_near_rules.py``: a hypothesis strategy that builds struct sections field by
  field from values on each side of these boundaries, for the same property.

The converse (the C never accepts what the reference refuses, and returns the same result
when both accept) is ``test_cscan.check``'s other half, run here on every input too.
Planted relaxations this catches: see benchmarks/history/catchup-restart.md (h-csplit).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import hostile as h
import pytest
from test_cscan import CSCAN, DEFAULTS, NATIVE_PLACES, NO_LIMITS, PURE, PyFans, check, reference
from test_updates import (
    ACCEPTED,
    NULL,
    REFUSED,
    any_item,
    root_item,
    upd,
    vi,
    vs,
    vu,
)

from crdtsync.yjs import _native
from crdtsync.yjs._malformed import Malformed

pytestmark = pytest.mark.skipif(CSCAN is None, reason="the C scan is not built here")

MAX_CLOCK = 2**31 - 1
MAX_SAFE = 2**53 - 1
#: A ``(max_structs, max_fan, max_depth, max_merge, refuse_format_in_map, refuse_subdocs)``.
Limits = tuple[Any, ...]


def limit(name: str, value: int | bool) -> Limits:
    """NO_LIMITS with one limit set."""
    names = ["max_structs", "max_fan", "max_depth", "max_merge", "format", "subdocs"]
    out = list(NO_LIMITS)
    out[names.index(name)] = value
    return tuple(out)


def padded(n: int, extra: int) -> bytes:
    """n as a lib0 varuint ``extra`` bytes longer than it needs (not minimal)."""
    out = bytearray(vu(n))
    out[-1] |= 0x80
    out += b"\x80" * (extra - 1) + b"\x00"
    return bytes(out)


def parented(parent: tuple[int, int], content_kind: int, body: bytes) -> bytes:
    """An item with no origins under the parent ID ``parent``."""
    return bytes([content_kind]) + vu(0) + vu(parent[0]) + vu(parent[1]) + body


def with_origin(kind: int, origin: tuple[int, int], body: bytes, right: bool = False) -> bytes:
    info = (0x40 if right else 0x80) | kind
    return bytes([info]) + vu(origin[0]) + vu(origin[1]) + body


SURROGATE = b"\xed\xa0\x80"  # U+D800 as UTF-8: refused (Yrs and Python's strict decoder)
#: The valid neighbours of the surrogates and of the top of Unicode.
EDGES = [b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xc2\x80", b"\x7f"]
ANY_STRING, ANY_BYTES, ANY_INT, ANY_OBJECT, ANY_ARRAY = b"\x77", b"\x74", b"\x7d", b"\x76", b"\x75"


def strings_at(raw: bytes) -> dict[str, bytes]:
    """An update with ``raw`` as each kind of string the struct section holds."""
    return {
        "root name": upd(root_item(4, vs("x"))[:2] + vs(raw) + vs("x")),
        "map key": upd(bytes([0x28]) + vu(1) + vs("m") + vs(raw) + vu(1) + NULL),
        "Any string": upd(any_item(ANY_STRING + vs(raw))),
        "Any object key": upd(any_item(ANY_OBJECT + vu(1) + vs(raw) + NULL)),
        "XmlElement name": upd(root_item(7, b"\x03" + vs(raw))),
        "subdocument guid": upd(root_item(9, vs(raw) + ANY_OBJECT + vu(0))),
        "string content": upd(root_item(4, vs(raw))),
    }


#: What three chained one-value items cost in merge work (the limit's boundary).
MERGE_NEED: int = (
    PURE.scan_structs(h.many_items(3), 0, -1, -1, -1, 2**40, False, False, None)[5] - 3
)

#: name -> (update, limits) just over one boundary: the reference refuses each (today).
OVER: dict[str, tuple[bytes, Limits]] = {
    **{f"surrogate in {k}": (u, NO_LIMITS) for k, u in strings_at(SURROGATE).items()},
    **{f"bad UTF-8 in {k}": (u, NO_LIMITS) for k, u in strings_at(b"a\xff").items()},
    **{f"truncated UTF-8 in {k}": (u, NO_LIMITS) for k, u in strings_at(b"\xf4\x8f").items()},
    **{f"past U+10FFFF in {k}": (u, NO_LIMITS) for k, u in strings_at(b"\xf4\x90\x80\x80").items()},
    "non-minimal first clock": (
        upd(root_item(4, vs("x")))[:3] + padded(0, 1) + root_item(4, vs("x")) + b"\x00",
        NO_LIMITS,
    ),
    "non-minimal string length": (upd(root_item(4, padded(1, 2) + b"x")), NO_LIMITS),
    "non-minimal root name length": (
        upd(b"\x04" + vu(1) + padded(1, 1) + b"a" + vs("x")),
        NO_LIMITS,
    ),
    "non-minimal Any integer": (upd(any_item(ANY_INT + b"\x81\x00")), NO_LIMITS),
    "over-long Any integer": (upd(any_item(ANY_INT + b"\xbf" + b"\xff" * 7 + b"\x01")), NO_LIMITS),
    "Any integer cut short": (upd(any_item(ANY_INT + b"\x80"), ds=b""), NO_LIMITS),
    "Any integer missing": (upd(any_item(ANY_INT), ds=b""), NO_LIMITS),
    "Any integer past 2**53-1": (upd(any_item(ANY_INT + vi(-(2**53)))), NO_LIMITS),
    "Any value missing": (upd(any_item(ANY_OBJECT + vu(1) + vs("k")), ds=b""), NO_LIMITS),
    "Any bytes past the end": (upd(any_item(ANY_BYTES + vu(200) + b"ab"), ds=b""), NO_LIMITS),
    "Any object cannot fit": (upd(any_item(ANY_OBJECT + vu(2**40) + NULL)), NO_LIMITS),
    "Any object nested too deep": (
        upd(any_item((ANY_OBJECT + b"\x01" + vs("k")) * 101 + NULL)),
        NO_LIMITS,
    ),
    "Any content count cannot fit": (upd(root_item(8, vu(1000) + NULL)), NO_LIMITS),
    "Any tag 115": (upd(any_item(b"\x73")), NO_LIMITS),
    "Any tag 128": (upd(any_item(b"\x80")), NO_LIMITS),
    "Any float32 cut short": (upd(any_item(b"\x7c\x00\x00\x00"), ds=b""), NO_LIMITS),
    "binary past the end": (upd(root_item(3, vu(300) + b"ab"), ds=b""), NO_LIMITS),
    "string past the end, long length": (upd(root_item(4, vu(300) + b"ab"), ds=b""), NO_LIMITS),
    "root name past the end": (upd(b"\x04" + vu(1) + vu(9) + b"ab", ds=b""), NO_LIMITS),
    "type ref missing": (upd(root_item(7, b""), ds=b""), NO_LIMITS),
    "type ref 8": (upd(root_item(7, b"\x08")), NO_LIMITS),
    "subdocument options missing": (upd(root_item(9, vs("g")), ds=b""), NO_LIMITS),
    "subdocument options an array": (upd(root_item(9, vs("g") + ANY_ARRAY + vu(0))), NO_LIMITS),
    "struct missing": (vu(1) + vu(2) + vu(7) + vu(0) + root_item(4, vs("x")), NO_LIMITS),
    "clients cannot fit": (vu(5) + vu(1) + vu(7) + vu(0) + root_item(4, vs("x")), NO_LIMITS),
    "number of clients missing": (b"", NO_LIMITS),
    # test_updates' zero-length GC and Skip are refused twice over (no clock spanned either)
    "zero-length GC before an item": (upd(b"\x00\x00", root_item(4, vs("x"))), NO_LIMITS),
    "zero-length Skip before an item": (upd(b"\x0a\x00", root_item(4, vs("x"))), NO_LIMITS),
    "GC length 2**31": (upd(b"\x00" + vu(2**31)), NO_LIMITS),
    "GC passes 2**31-1": (upd(b"\x00" + vu(MAX_CLOCK), clock=1), NO_LIMITS),
    "deleted content passes 2**31-1": (upd(root_item(1, vu(MAX_CLOCK)), clock=1), NO_LIMITS),
    "right origin clock 2**31": (upd(with_origin(4, (3, 2**31), vs("x"), right=True)), NO_LIMITS),
    "origin client 2**53": (upd(with_origin(4, (2**53, 0), vs("x")), client=9), NO_LIMITS),
    "right origin client 2**53": (upd(with_origin(4, (2**53, 0), vs("x"), right=True)), NO_LIMITS),
    "parent clock 2**31": (upd(parented((3, 2**31), 4, vs("x"))), NO_LIMITS),
    "parent client 2**53": (upd(parented((2**53, 0), 4, vs("x"))), NO_LIMITS),
    "parent info 2": (upd(b"\x04" + vu(2) + vs("a") + vs("x")), NO_LIMITS),
    "parent an item of the update, not a type": (
        upd(root_item(4, vs("s")), parented((7, 0), 8, vu(1) + NULL)),
        NO_LIMITS,
    ),
    "parent in a deleted range of the update, past its end": (
        upd(root_item(1, vu(2)), parented((7, 2), 8, vu(1) + NULL)),
        NO_LIMITS,
    ),
    "info 0x20 on a GC": (upd(b"\x20" + vu(1)), NO_LIMITS),
    "content kind 10 (Skip's number) with parentSub": (
        upd(root_item(10, vs("k"), extra_info=0x20)),
        NO_LIMITS,
    ),
    "max_structs: one over": (h.many_unmerged(3), limit("max_structs", 2)),
    "max_fan: one over": (h.same_origin_fan(3), limit("max_fan", 2)),
    "max_fan over in the dict's count": (h.same_origin_fan(2), limit("max_fan", 1)),
    "max_depth: one over": (h.nested_maps(3), limit("max_depth", 2)),
    "max_merge: one over": (h.many_items(3), limit("max_merge", MERGE_NEED - 1)),
    "Format in a map, refused": (h.format_in_map(), limit("format", True)),
    "subdocument, refused": (h.subdoc_in_map(), limit("subdocs", True)),
}

#: Just inside the boundaries above: accepted by both.
INSIDE: dict[str, tuple[bytes, Limits]] = {
    **{f"{e.hex()} in {k}": (u, NO_LIMITS) for e in EDGES for k, u in strings_at(e).items()},
    "8-byte Any integer, 2**53-1": (upd(any_item(ANY_INT + vi(MAX_SAFE))), NO_LIMITS),
    "Any integer -(2**53-1)": (upd(any_item(ANY_INT + vi(-MAX_SAFE))), NO_LIMITS),
    "Any integer -0": (upd(any_item(ANY_INT + b"\x40")), NO_LIMITS),
    "Any object nested 100 deep": (
        upd(any_item((ANY_OBJECT + b"\x01" + vs("k")) * 100 + NULL)),
        NO_LIMITS,
    ),
    "Any bytes to the end": (upd(any_item(ANY_BYTES + vu(2) + b"ab"), ds=b""), NO_LIMITS),
    "GC up to 2**31-1": (upd(b"\x00" + vu(MAX_CLOCK)), NO_LIMITS),
    "deleted content up to 2**31-1": (upd(root_item(1, vu(MAX_CLOCK - 1)), clock=1), NO_LIMITS),
    "right origin clock 2**31-1": (
        upd(with_origin(4, (3, MAX_CLOCK), vs("x"), right=True)),
        NO_LIMITS,
    ),
    "origin client 2**53-1": (upd(with_origin(4, (MAX_SAFE, 0), vs("x")), client=9), NO_LIMITS),
    "parent clock 2**31-1": (upd(parented((3, MAX_CLOCK), 4, vs("x"))), NO_LIMITS),
    "parent client 2**53-1": (upd(parented((MAX_SAFE, 0), 4, vs("x"))), NO_LIMITS),
    "parent a type of the update": (
        upd(root_item(7, b"\x01"), parented((7, 0), 8, vu(1) + NULL)),
        NO_LIMITS,
    ),
    "parent past the update's clocks": (
        upd(root_item(4, vs("s")), parented((7, 2), 8, vu(1) + NULL)),
        NO_LIMITS,
    ),
    "type refs 0, 1, 2, 4, 6": (
        upd(*(root_item(7, bytes([r])) for r in (0, 1, 2, 4, 6))),
        NO_LIMITS,
    ),
    "max_structs: at it": (h.many_unmerged(3), limit("max_structs", 3)),
    "max_fan: at it": (h.same_origin_fan(3), limit("max_fan", 3)),
    "max_depth: at it": (h.nested_maps(3), limit("max_depth", 3)),
    "max_merge: at it": (h.many_items(3), limit("max_merge", MERGE_NEED)),
    "Format in a map, allowed": (h.format_in_map(), limit("format", False)),
    "subdocument, allowed": (h.subdoc_in_map(), limit("subdocs", False)),
}


def ways() -> list[Any]:
    """The ways the C scan counts places: the dict, a Python FanCounter, the native table."""
    makers: list[Any] = [lambda d: None, PyFans]
    if NATIVE_PLACES is not None:
        makers.append(NATIVE_PLACES)
    return makers


def accepts(data: bytes, limits: Limits, name: str = "") -> bool:
    """Fail if the reference accepts ``data`` and the C scan hands it back (None), for any way
    of counting places (unless the update holds JSON content). Returns whether the reference
    accepted it."""
    assert CSCAN is not None
    accepted = False
    for make in ways():
        want, json_calls = reference(data, limits, make(data))
        if want[0] == "ok":
            accepted = True
            got = CSCAN.scan_structs(data, 0, *limits, make(data))
            assert got is not None or json_calls, (
                f"{name!r}: the reference accepts this struct section and the C scan hands it"
                " back (None): a rule relaxed in _scan.py/_scan_content.py and not in"
                f" _cscan*.c? Mirror the change in the C. {data.hex()} {limits}"
            )
    return accepted


def test_the_c_scan_accepts_what_the_reference_accepts_on_every_boundary() -> None:
    """OVER and INSIDE here, and test_updates' hand-made REFUSED and ACCEPTED updates (the
    struct sections of which share many of these boundaries), each under no limits and the
    defaults."""
    corpus = {
        **OVER,
        **INSIDE,
        **{f"REFUSED {k}": (u, NO_LIMITS) for k, (u, _) in REFUSED.items()},
        **{f"REFUSED {k}, default limits": (u, DEFAULTS) for k, (u, _) in REFUSED.items()},
        **{f"ACCEPTED {k}": (u, NO_LIMITS) for k, u in ACCEPTED.items()},
        **{f"ACCEPTED {k}, default limits": (u, DEFAULTS) for k, u in ACCEPTED.items()},
    }
    for name, (data, limits) in corpus.items():
        accepts(data, limits, name)
        check(data, limits)  # the converse: never accepts what the reference refuses


def test_the_boundaries_are_where_this_module_says() -> None:
    """Each OVER input is refused by the reference today and each INSIDE one accepted (by
    both): so the inputs sit on the boundaries. (A rule deliberately relaxed fails this too:
    mirror it in the C, then move its input to INSIDE.)"""
    for name, (data, limits) in OVER.items():
        want, _ = reference(data, limits, None)
        assert want[0] == "refused", (name, "accepted by the reference")
    for name, (data, limits) in INSIDE.items():
        assert accepts(data, limits, name), (name, "refused by the reference")
        _, json_calls = reference(data, limits, None)
        assert CSCAN is not None
        assert json_calls or CSCAN.scan_structs(data, 0, *limits, None) is not None, name


#: The raises of the reference the struct section cannot reach, and why.
UNREACHABLE = {
    ("_scan_content.py", "unknown content kind"): "scan_structs refuses kinds 0, 10, > 10 first",
}
#: Functions of the reference outside the struct section or never called on it by the C's
#: callers: the delete set, and JSON (the C hands every Embed and Format content back).
NOT_STRUCTS = {"read_delete_set", "_json", "_json_depth_ok"}


def _raise_sites() -> dict[tuple[str, int], tuple[str, int, str]]:
    """(file, line) -> the site (file, first line, message) of each ``raise Malformed`` or
    ``raise OverLimit`` statement (every line of it) in the struct section's functions."""
    sites: dict[tuple[str, int], tuple[str, int, str]] = {}
    for path in (Path(_native.__file__).parent / n for n in ("_scan.py", "_scan_content.py")):
        for func in ast.walk(ast.parse(path.read_text())):
            if not isinstance(func, ast.FunctionDef) or func.name in NOT_STRUCTS:
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Raise)
                    and isinstance(node.exc, ast.Call)
                    and isinstance(node.exc.func, ast.Name)
                    and node.exc.func.id in ("Malformed", "OverLimit")
                ):
                    site = (path.name, node.lineno, ast.unparse(node.exc.args[1]))
                    for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                        sites[(path.name, line)] = site
    return sites


def _where_refused(data: bytes, limits: Limits) -> tuple[str, int] | None:
    try:
        PURE.scan_structs(data, 0, *limits, None)
    except Malformed as exc:
        tb = exc.__traceback__
        assert tb is not None
        while tb.tb_next is not None:
            tb = tb.tb_next
        return Path(tb.tb_frame.f_code.co_filename).name, tb.tb_lineno
    return None


def test_every_refusal_of_the_reference_is_on_a_boundary_here() -> None:
    """A raise the struct section can reach in the reference and no input reaches: a rule
    this module cannot see relaxed. Add its OVER (and INSIDE) input."""
    sites = _raise_sites()
    reached = set()
    corpus = [*OVER.values(), *((u, NO_LIMITS) for u, _ in REFUSED.values())]
    for data, limits in corpus:
        where = _where_refused(data, limits)
        if where is not None and where in sites:
            reached.add(sites[where])
    missing = {
        site
        for site in set(sites.values()) - reached
        if not any(site[0] == file and part in site[2] for file, part in UNREACHABLE)
    }
    assert not missing, sorted(missing)
    assert len(reached) > 40  # the sites are found at all (about 50 today)
