"""``crdtsync.transports`` never mixes two checkouts (the editable-install trap).

``pyproject.toml`` maps the top-level ``transports/`` folder onto ``crdtsync.transports``. An
editable install does that with a meta-path finder that maps the name to *its* checkout. Run
from a second checkout, ``crdtsync`` then comes from that checkout (``sys.path`` wins) and,
without a guard, ``crdtsync.transports`` from the installed one. These tests rebuild that
situation in a subprocess: a copy of the tree first on ``sys.path``, plus a finder that maps
``crdtsync.transports`` to this tree, exactly like setuptools' ``_EditableFinder``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    from importlib.machinery import PathFinder

    other, installed = sys.argv[1], sys.argv[2]

    class EditableFinder:  # what setuptools' editable install registers (appended, as there)
        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            if fullname == "crdtsync.transports":
                return importlib.util.spec_from_file_location(
                    fullname, installed + "/transports/__init__.py",
                    submodule_search_locations=[installed + "/transports"])
            return None

    sys.meta_path.append(EditableFinder)
    sys.path.insert(0, other)
    try:
        import crdtsync.transports.memory as memory
        import crdtsync
        print(json.dumps({"crdtsync": crdtsync.__file__, "memory": memory.__file__}))
    except ImportError as exc:
        print(json.dumps({"error": str(exc)}))
    """
)


def _other_checkout(tmp_path: Path, *, with_transports: bool = True) -> Path:
    other = tmp_path / "other-checkout"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "crdtsync", other / "crdtsync", ignore=ignore)
    if with_transports:
        shutil.copytree(ROOT / "transports", other / "transports", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", other / "pyproject.toml")
    return other


def _run(other: Path) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(other), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=other,
        check=True,
    )
    result: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_second_checkout_gets_its_own_transports(tmp_path: Path) -> None:
    other = _other_checkout(tmp_path)
    got = _run(other)
    assert Path(got["crdtsync"]).resolve() == (other / "crdtsync" / "__init__.py").resolve()
    assert Path(got["memory"]).resolve() == (other / "transports" / "memory.py").resolve()


def test_transports_of_another_tree_refuse_to_load(tmp_path: Path) -> None:
    # A copy of the package alone: nothing to bind, so the finder hands out this tree's
    # transports/, whose __init__ notices the foreign crdtsync and fails naming both paths.
    other = _other_checkout(tmp_path, with_transports=False)
    got = _run(other)
    assert "error" in got, got
    assert str((ROOT / "transports").resolve()) in got["error"]
    assert str((other / "crdtsync").resolve()) in got["error"]
    assert "two checkouts are mixed" in got["error"]


def test_every_package_of_the_tree_is_listed_for_wheels() -> None:
    """An editable install finds any subpackage; a wheel ships only those listed in
    ``[tool.setuptools] packages``. A new ``crdtsync/x/`` missing there breaks installs."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {"crdtsync.transports"}
    for init in (ROOT / "crdtsync").rglob("__init__.py"):
        if "__pycache__" not in init.parts:
            rel = init.parent.relative_to(ROOT)
            found.add(".".join(rel.parts))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
