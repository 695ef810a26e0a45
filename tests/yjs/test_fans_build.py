"""How the native table of places is built from its sources, and when a build is refused as
stale (h-fans; the same rules as ``test_cscan_build.py`` for the C scan).

``crdtsync.yjs._fans`` is one extension compiled from three C files sharing a private header
(``crdtsync/yjs/_fans*.c``, ``_fans.h``: split by concern, each a few hundred lines).
``setup.py`` compiles in one hash of all of them (``SOURCE_SHA256``) and
``crdtsync/yjs/_native.py`` recomputes it from the files beside the module: a build left from
an older version of ANY of them is not used (the validator then counts places in a dict).
Checked here: setup.py and _native name the same files, hash them the same way, and build the
extension from exactly them; every ``_fans*`` source in the package is one of them (a new file
left out of the hash would not make a build stale); an edit to any one of them makes a build
stale; each stays under the size rule; and without the module nothing uses it.
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
SOURCES = [YJS / name for name in _native._FANS_SOURCES]
#: The project's size rule for a module (a few hundred lines, at most about 450).
MAX_LINES = 450


def setup_namespace() -> dict[str, Any]:
    """setup.py's FANS_SOURCES, _digest and _fans, run without running setup()."""
    if not SETUP.is_file():
        pytest.skip("no setup.py beside the package (an installed copy, not a checkout)")
    tree = ast.parse(SETUP.read_text())
    keep: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "FANS_SOURCES" for t in node.targets
        ):
            keep.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name in ("_digest", "_fans"):
            keep.append(node)
    assert len(keep) == 3, "setup.py no longer has FANS_SOURCES, _digest and _fans"
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
    assert tuple(setup_namespace()["FANS_SOURCES"]) == _native._FANS_SOURCES
    assert all(path.is_file() for path in SOURCES)


def test_every_fans_source_beside_them_is_hashed() -> None:
    """A C file or header added to the extension must be in the list (and so in the hash)."""
    present = {
        p.name for p in YJS.iterdir() if p.name.startswith("_fans") and p.suffix in (".c", ".h")
    }
    assert present == set(_native._FANS_SOURCES)


def test_setup_builds_the_extension_from_them_with_natives_hash() -> None:
    ns = setup_namespace()
    ext = ns["_fans"]()
    assert ext.name == "crdtsync.yjs._fans"
    root = SETUP.parent
    assert [root / s for s in ext.sources] == [p for p in SOURCES if p.suffix == ".c"]
    assert [root / s for s in ext.depends] == [p for p in SOURCES if p.suffix == ".h"]
    macro = dict(ext.define_macros)["FANS_SOURCE_SHA256"]
    assert macro == f'"{_native._digest(SOURCES)}"' == f'"{ns["_digest"](SOURCES)}"'


def test_the_built_module_was_hashed_from_all_of_them() -> None:
    if _native.native_places() is None:
        pytest.skip("the native table is not built here")
    from crdtsync.yjs import _fans

    assert _fans.SOURCE_SHA256 == _native._digest(SOURCES)


@pytest.mark.parametrize("name", _native._FANS_SOURCES)
def test_an_edit_to_any_source_makes_a_build_stale(tmp_path: Path, name: str) -> None:
    copies = []
    for path in SOURCES:
        copies.append(tmp_path / path.name)
        shutil.copy(path, copies[-1])
    built = SimpleNamespace(__file__="/x/_fans.so", SOURCE_SHA256=_native._digest(copies))
    assert _native._current(built, copies)  # type: ignore[arg-type]
    edited = tmp_path / name
    edited.write_bytes(edited.read_bytes() + b"\n")
    with pytest.warns(RuntimeWarning, match=f"another version of .*{name}"):
        assert not _native._current(built, copies)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", _native._FANS_SOURCES)
def test_each_source_stays_under_the_size_rule(name: str) -> None:
    lines = (YJS / name).read_text().count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concern (see _fans.h)"


def test_without_the_module_nothing_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not built (or failing to load): native_places() is None, and parse then counts the
    places in a dict (test_fans and test_scan_builds compare both ways)."""
    import crdtsync.yjs

    if _native.native_places() is None:
        pytest.skip("the native table is not built here")
    monkeypatch.delattr(crdtsync.yjs, "_fans", raising=False)
    monkeypatch.setitem(sys.modules, "crdtsync.yjs._fans", None)  # import -> ImportError
    assert _native.native_places() is None
