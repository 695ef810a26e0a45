"""How each C extension of the validator is built from its sources, and when a build is
refused as stale (h-csplit for the C scan, h-fans for the table of places).

``crdtsync.yjs._cscan`` (the struct scan) and ``crdtsync.yjs._fans`` (the table of places) are
each one extension compiled from several C files sharing private headers
(``crdtsync/yjs/_cscan*.c``/``.h``, ``_fans*.c``/``.h``: split by concern, each a few hundred
lines). ``setup.py`` compiles in one hash of all of an extension's files (``SOURCE_SHA256``)
and ``crdtsync/yjs/_native.py`` recomputes it from the files beside the module: a build left
from an older version of ANY of them is not used (the pure or mypyc build does the work, or
the validator counts places in a dict). Checked here, for each extension: setup.py and
_native name the same files, hash them the same way, and build the extension from exactly
them; every source of its prefix in the package is one of them (a new file left out of the
hash would not make a build stale); an edit to any one of them makes a build stale; each
stays under the size rule; and without the module (not built, or failing to load) nothing
uses it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdtsync.yjs import _native

YJS = Path(_native.__file__).parent
SETUP = YJS.parent.parent / "setup.py"
#: The project's size rule for a module (a few hundred lines, at most about 450).
MAX_LINES = 450


@dataclass(frozen=True)
class Ext:
    """One extension: its module, its source list in _native and setup.py, its builder."""

    module: str  # the attribute of crdtsync.yjs, e.g. "_cscan"
    sources: tuple[str, ...]  # _native's list
    setup_list: str  # setup.py's name for the same list
    macro: str  # the hash's define
    loaded: Callable[[], object | None]  # _native's getter: None when not built or stale

    @property
    def paths(self) -> list[Path]:
        return [YJS / name for name in self.sources]


EXTS = {
    "cscan": Ext(
        "_cscan",
        _native._CSCAN_SOURCES,
        "CSCAN_SOURCES",
        "CSCAN_SOURCE_SHA256",
        _native.native_scan,
    ),
    "fans": Ext(
        "_fans", _native._FANS_SOURCES, "FANS_SOURCES", "FANS_SOURCE_SHA256", _native.native_places
    ),
}
EACH_SOURCE = [(key, name) for key, ext in EXTS.items() for name in ext.sources]


def setup_namespace(ext: Ext) -> dict[str, Any]:
    """setup.py's source list, _digest and builder of ``ext``, run without running setup()."""
    if not SETUP.is_file():
        pytest.skip("no setup.py beside the package (an installed copy, not a checkout)")
    tree = ast.parse(SETUP.read_text())
    keep: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == ext.setup_list for t in node.targets
        ):
            keep.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name in ("_digest", ext.module):
            keep.append(node)
    assert len(keep) == 3, f"setup.py no longer has {ext.setup_list}, _digest and {ext.module}"
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


@pytest.mark.parametrize("key", sorted(EXTS))
def test_setup_and_native_name_the_same_sources(key: str) -> None:
    ext = EXTS[key]
    assert tuple(setup_namespace(ext)[ext.setup_list]) == ext.sources
    assert all(path.is_file() for path in ext.paths)


@pytest.mark.parametrize("key", sorted(EXTS))
def test_every_source_beside_them_is_hashed(key: str) -> None:
    """A C file or header added to the extension must be in the list (and so in the hash)."""
    ext = EXTS[key]
    present = {
        p.name for p in YJS.iterdir() if p.name.startswith(ext.module) and p.suffix in (".c", ".h")
    }
    assert present == set(ext.sources)


@pytest.mark.parametrize("key", sorted(EXTS))
def test_setup_builds_the_extension_from_them_with_natives_hash(key: str) -> None:
    ext = EXTS[key]
    ns = setup_namespace(ext)
    built = ns[ext.module]()
    assert built.name == f"crdtsync.yjs.{ext.module}"
    root = SETUP.parent
    assert [root / s for s in built.sources] == [p for p in ext.paths if p.suffix == ".c"]
    assert [root / s for s in built.depends] == [p for p in ext.paths if p.suffix == ".h"]
    macro = dict(built.define_macros)[ext.macro]
    assert macro == f'"{_native._digest(ext.paths)}"' == f'"{ns["_digest"](ext.paths)}"'
    one = [ext.paths[0]]  # one file: its plain SHA-256, as for each module of the mypyc group
    assert (
        ns["_digest"](one)
        == _native._digest(one)
        == hashlib.sha256(one[0].read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("key", sorted(EXTS))
def test_the_built_module_was_hashed_from_all_of_them(key: str) -> None:
    ext = EXTS[key]
    if ext.loaded() is None:
        pytest.skip(f"{ext.module} is not built here")
    module = importlib.import_module(f"crdtsync.yjs.{ext.module}")
    assert module.SOURCE_SHA256 == _native._digest(ext.paths)


@pytest.mark.parametrize(("key", "name"), EACH_SOURCE)
def test_an_edit_to_any_source_makes_a_build_stale(tmp_path: Path, key: str, name: str) -> None:
    ext = EXTS[key]
    copies = []
    for path in ext.paths:
        copies.append(tmp_path / path.name)
        shutil.copy(path, copies[-1])
    built = SimpleNamespace(__file__=f"/x/{ext.module}.so", SOURCE_SHA256=_native._digest(copies))
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


@pytest.mark.parametrize(("key", "name"), EACH_SOURCE)
def test_each_source_stays_under_the_size_rule(key: str, name: str) -> None:
    lines = (YJS / name).read_text().count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concern (see its header)"


@pytest.mark.parametrize("key", sorted(EXTS))
def test_without_the_module_nothing_uses_it(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not built (or failing to load): the getter is None, and parse then runs the mypyc or
    pure build alone, or counts places in a dict (test_cscan, test_fans and test_scan_builds
    compare both ways)."""
    import crdtsync.yjs

    ext = EXTS[key]
    if ext.loaded() is None:
        pytest.skip(f"{ext.module} is not built here")
    monkeypatch.delattr(crdtsync.yjs, ext.module, raising=False)
    monkeypatch.setitem(sys.modules, f"crdtsync.yjs.{ext.module}", None)  # import -> ImportError
    assert ext.loaded() is None
