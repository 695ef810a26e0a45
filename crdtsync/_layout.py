"""Make ``crdtsync.transports`` come from the same checkout as ``crdtsync``.

The project's layout keeps the drivers in a top-level ``transports/`` folder that
``pyproject.toml`` installs as ``crdtsync.transports`` (``package-dir``). A wheel puts it
inside the package; an editable install instead registers a meta-path finder that maps
``crdtsync.transports`` to one checkout's ``transports/``. Run from a *second* checkout with
that install on the path, ``crdtsync`` comes from the second checkout (``sys.path`` wins) but
``crdtsync.transports`` from the first (the finder fills the gap): two versions of the code,
silently mixed.

:func:`bind_transports` closes the trap: when ``crdtsync`` is imported from a source checkout
(``transports/`` beside the package folder, not inside it), it loads that checkout's
``transports/`` as ``crdtsync.transports`` before any finder is asked. In every other case it
does nothing, and ``transports/__init__.py`` itself refuses to load next to a ``crdtsync`` of
another tree, naming both paths.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["bind_transports", "check_same_tree"]

_NAME = "crdtsync.transports"


def bind_transports(package_dir: Path) -> ModuleType | None:
    """Load ``package_dir/../transports`` as ``crdtsync.transports`` when the package was
    imported from a source checkout; return it (None: not a checkout, left to normal import)."""
    if _NAME in sys.modules:
        return None
    if (package_dir / "transports" / "__init__.py").is_file():
        return None  # installed layout: found inside the package by the normal import
    beside = package_dir.parent / "transports"
    init = beside / "__init__.py"
    if not init.is_file() or not (package_dir.parent / "pyproject.toml").is_file():
        return None
    spec = importlib.util.spec_from_file_location(
        _NAME, init, submodule_search_locations=[str(beside)]
    )
    if spec is None or spec.loader is None:  # pragma: no cover (a file location always loads)
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NAME]
        raise
    return module


def check_same_tree(transports_dir: Path) -> None:
    """Raise ImportError unless ``transports_dir`` belongs to the tree ``crdtsync`` came from.

    Called by ``transports/__init__.py``: accepted are ``<crdtsync>/transports`` (installed)
    and ``<crdtsync>/../transports`` (a checkout).
    """
    package = sys.modules.get("crdtsync")
    package_file = getattr(package, "__file__", None)
    if package_file is None:  # pragma: no cover (crdtsync is always imported first)
        return
    package_dir = Path(package_file).resolve().parent
    here = transports_dir.resolve()
    if here in (package_dir / "transports", package_dir.parent / "transports"):
        return
    raise ImportError(
        f"crdtsync.transports would be loaded from {here} but crdtsync was loaded from "
        f"{package_dir}: two checkouts are mixed (an editable install of another checkout is "
        "on the path). Use this checkout's own virtualenv (pip install -e . here)."
    )
