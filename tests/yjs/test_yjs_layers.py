"""The pycrdt-free part of crdtsync.yjs imports neither pycrdt nor crdtsync beyond errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crdtsync.yjs

PURE = [
    "_lib0",
    "_content",
    "_causal",
    "_malformed",
    "_native",
    "_scan",
    "_scan_content",
    "_places",
    "limits",
    "parse",
    "state",
]
YJS_DIR = Path(crdtsync.yjs.__file__).parent


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative ones resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "crdtsync.yjs" if node.level == 1 else "crdtsync" if node.level == 2 else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_only_stdlib_errors_and_each_other(module: str) -> None:
    # "crdtsync.yjs" itself: `from . import _scan` (the package __init__ imports nothing)
    allowed_crdtsync = {"crdtsync.errors", "crdtsync.yjs"} | {f"crdtsync.yjs.{m}" for m in PURE}
    for name in _imports(YJS_DIR / f"{module}.py"):
        if name.startswith("crdtsync"):
            assert name in allowed_crdtsync, f"{module} imports {name}"
        else:
            assert name.split(".")[0] not in {"pycrdt", "lmdb", "msgpack", "asyncio"}, name


def test_the_check_sees_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "x.py"
    planted.write_text("import pycrdt\nfrom ..shard import Shard\nfrom .doc import digest\n")
    assert {"pycrdt", "crdtsync.shard", "crdtsync.yjs.doc"} <= _imports(planted)
