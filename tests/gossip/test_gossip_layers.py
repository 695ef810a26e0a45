"""The gossip package stays a pure, self-contained layer (issue 9, "no circles, enforced").

An AST scan of every module of ``crdtsync/gossip/``: it imports nothing that does I/O or keeps
time (asyncio, time, pycrdt, lmdb, msgpack, websockets), never the layers above it
(``crdtsync.sharding`` and the rest: they plug in through ``gossip.policy``), takes randomness
only from the generator it is given (no ``random.random()`` and the like), and reaches the Yjs
byte layer only through ``gossip/_yjs.py``, and there only its pycrdt-free half
(``crdtsync.yjs.parse`` and ``crdtsync.yjs.state``; ``crdtsync.updates`` pulls in pycrdt).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GOSSIP = Path(__file__).resolve().parents[2] / "crdtsync" / "gossip"
FORBIDDEN = {"asyncio", "time", "pycrdt", "lmdb", "msgpack", "websockets"}
#: What gossip modules may import from the rest of crdtsync (lower layers only).
#: (``quotas``: the pure, clock-free quota policies of issue #11, same layer as the core.)
ALLOWED_CRDTSYNC = {"errors", "messages", "names", "quotas", "replica", "yjs"}
#: The pycrdt-free modules of the Yjs byte layer (only ``_yjs.py`` may import them).
PURE_YJS = {"crdtsync.yjs.parse", "crdtsync.yjs.state"}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in ``path``, relative ones resolved."""
    out = []
    package = ["crdtsync", "gossip"]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.append((module, node.lineno))
            if node.module is None:  # from . import x
                out += [(f"{module}.{a.name}", node.lineno) for a in node.names]
    return out


def check(path: Path) -> list[str]:
    """The layering violations of one module, as readable strings."""
    errors = []
    for module, line in _imports(path):
        top = module.split(".")[0]
        if top in FORBIDDEN:
            errors.append(f"{path.name}:{line} imports {module}")
        parts = module.split(".")
        if parts[0] == "crdtsync" and len(parts) > 1 and parts[1] != "gossip":
            if parts[1] not in ALLOWED_CRDTSYNC:
                errors.append(f"{path.name}:{line} imports {module} (an upper layer)")
            if parts[1] == "yjs" and path.name != "_yjs.py":
                errors.append(f"{path.name}:{line} imports {module} (only _yjs.py may)")
            elif parts[1] == "yjs" and module not in PURE_YJS:
                errors.append(f"{path.name}:{line} imports {module} (not pycrdt-free)")
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "Random"
        ):
            errors.append(f"{path.name}:{node.lineno} uses module-level random.{node.attr}")
    return errors


@pytest.mark.parametrize("path", sorted(GOSSIP.glob("*.py")), ids=lambda p: p.name)
def test_gossip_module_imports_only_lower_layers(path: Path) -> None:
    assert check(path) == []


def test_the_check_catches_a_planted_upward_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import time\nfrom ..sharding import Sharding\nfrom ..yjs.parse import validate_update\n"
        "import random\nx = random.random()\n"
    )
    assert check(planted) == [
        "planted.py:1 imports time",
        "planted.py:2 imports crdtsync.sharding (an upper layer)",
        "planted.py:3 imports crdtsync.yjs.parse (only _yjs.py may)",
        "planted.py:5 uses module-level random.random",
    ]


def test_sharding_sees_the_core_only_through_the_policy_interfaces() -> None:
    # The layer above plugs in (gossip/policy.py); it never reaches into the core's modules.
    path = GOSSIP.parent / "sharding.py"
    tree = ast.parse(path.read_text())
    reached = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and "gossip" in node.module:
            reached.add(node.module)
    assert reached <= {"gossip.policy"}, reached
