"""How the C scan is built from its sources, and when a build is refused as stale (h-csplit).

``crdtsync.yjs._cscan`` is one extension compiled from several C files sharing two private
headers (``crdtsync/yjs/_cscan*.c``, ``_cscan*.h``: split by concern, each a few hundred
lines). ``setup.py`` compiles in one hash of all of them (``SOURCE_SHA256``) and
``crdtsync/yjs/_native.py`` recomputes it from the files beside the module: a build left from
an older version of ANY of them is not used (the pure or mypyc build then does it all). Checked
here: setup.py and _native name the same files, hash them the same way, and build the
extension from exactly them; every ``_cscan*`` source in the package is one of them (a new
file left out of the hash would not make a build stale); an edit to any one of them makes a
build stale; each stays under the size rule; and without the module (not built, or failing to
load) nothing uses it.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdtsync.yjs import _native

YJS = Path(_native.__file__).parent
SETUP = YJS.parent.parent / "setup.py"
SOURCES = [YJS / name for name in _native._CSCAN_SOURCES]
#: The project's size rule for a module (a few hundred lines, at most about 450).
MAX_LINES = 450


def setup_namespace() -> dict[str, Any]:
    """setup.py's CSCAN_SOURCES, _digest and _cscan, run without running setup()."""
    if not SETUP.is_file():
        pytest.skip("no setup.py beside the package (an installed copy, not a checkout)")
    tree = ast.parse(SETUP.read_text())
    keep: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in ("CSCAN_SOURCES",) for t in node.targets
        ):
            keep.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name in ("_digest", "_cscan"):
            keep.append(node)
    assert len(keep) == 3, "setup.py no longer has CSCAN_SOURCES, _digest and _cscan"
    from setuptools import Extension

    ns: dict[str, Any] = {
        "__name__": "setup_part",
        "Extension": Extension,
        "Path": Path,
        "hashlib": hashlib,
        "os": os,
        "ROOT": SETUP.parent,
        "YJS": YJS,
    }
    code = compile(ast.Module(body=keep, type_ignores=[]), str(SETUP), "exec")
    exec(code, ns)  # noqa: S102 - our own setup.py, three definitions of it
    return ns


def test_setup_and_native_name_the_same_sources() -> None:
    assert tuple(setup_namespace()["CSCAN_SOURCES"]) == _native._CSCAN_SOURCES
    assert all(path.is_file() for path in SOURCES)


def test_every_cscan_source_beside_them_is_hashed() -> None:
    """A C file or header added to the extension must be in the list (and so in the hash)."""
    present = {
        p.name for p in YJS.iterdir() if p.name.startswith("_cscan") and p.suffix in (".c", ".h")
    }
    assert present == set(_native._CSCAN_SOURCES)


def test_setup_builds_the_extension_from_them_with_natives_hash() -> None:
    ns = setup_namespace()
    ext = ns["_cscan"]()
    assert ext.name == "crdtsync.yjs._cscan"
    root = SETUP.parent
    assert [root / s for s in ext.sources] == [p for p in SOURCES if p.suffix == ".c"]
    assert [root / s for s in ext.depends] == [p for p in SOURCES if p.suffix == ".h"]
    macro = dict(ext.define_macros)["CSCAN_SOURCE_SHA256"]
    assert macro == f'"{_native._digest(SOURCES)}"' == f'"{ns["_digest"](SOURCES)}"'
    one = [SOURCES[0]]  # one file: its plain SHA-256, as for each module of the mypyc group
    assert (
        ns["_digest"](one)
        == _native._digest(one)
        == hashlib.sha256(one[0].read_bytes()).hexdigest()
    )


def test_the_built_module_was_hashed_from_all_of_them() -> None:
    module = _native.native_scan()
    if module is None:
        pytest.skip("the C scan is not built here")
    assert module.SOURCE_SHA256 == _native._digest(SOURCES)


@pytest.mark.parametrize("name", _native._CSCAN_SOURCES)
def test_an_edit_to_any_source_makes_a_build_stale(tmp_path: Path, name: str) -> None:
    copies = []
    for path in SOURCES:
        copies.append(tmp_path / path.name)
        shutil.copy(path, copies[-1])
    built = SimpleNamespace(__file__="/x/_cscan.so", SOURCE_SHA256=_native._digest(copies))
    assert _native._current(built, copies)  # type: ignore[arg-type]
    edited = tmp_path / name
    edited.write_bytes(edited.read_bytes() + b"\n")
    with pytest.warns(RuntimeWarning, match=f"another version of .*{name}"):
        assert not _native._current(built, copies)  # type: ignore[arg-type]


def test_code_moved_between_two_sources_changes_the_hash(tmp_path: Path) -> None:
    """The hash lists each file's name with its content: the same two contents swapped
    between two files is another version too."""
    a, b = tmp_path / "_cscan_a.c", tmp_path / "_cscan_b.c"
    a.write_text("int x;\n")
    b.write_text("int y;\n")
    before = _native._digest([a, b])
    a.write_text("int y;\n")
    b.write_text("int x;\n")
    assert _native._digest([a, b]) != before


@pytest.mark.parametrize("name", _native._CSCAN_SOURCES)
def test_each_source_stays_under_the_size_rule(name: str) -> None:
    lines = (YJS / name).read_text().count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concern (see _cscan.h)"


def test_without_the_module_nothing_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not built (or failing to load): native_scan() is None, and parse then runs the
    mypyc or pure build alone (test_cscan compares both through parse_update)."""
    import crdtsync.yjs

    if _native.native_scan() is None:
        pytest.skip("the C scan is not built here")
    monkeypatch.delattr(crdtsync.yjs, "_cscan", raising=False)
    monkeypatch.setitem(sys.modules, "crdtsync.yjs._cscan", None)  # import -> ImportError
    assert _native.native_scan() is None
