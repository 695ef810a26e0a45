"""Which build of the validator's inner loops (:mod:`crdtsync.yjs._scan`) this process uses.

``setup.py`` compiles ``crdtsync/yjs/_scan.py`` with mypyc when it can (a C compiler and the
Python headers are there); the extension module then sits next to the source under the same
name and Python imports it in preference to the ``.py``. When the build was not possible, the
same name imports the pure-Python source: that is the fallback, and it is never removed.

``CRDTSYNC_PURE_PYTHON=1`` in the environment forces the pure-Python build even where the
compiled one exists (to compare them, or to rule the compiled one out). A compiled module that
was built from another version of the source (an edited checkout not rebuilt) is not used
either: the build records the source's SHA-256 in the module (``SOURCE_SHA256``), and this
module compares it with the file beside it, falling back to the source with a warning.

:func:`load_pure` loads the pure-Python build under another module name, so that tests can run
both builds side by side in one process (``tests/yjs/test_scan_builds.py``).

The fan bookkeeping's native table (``crdtsync/yjs/_fans.c``, :data:`PLACES`) is chosen the
same way: built by ``setup.py`` when a C compiler is there, not used with
``CRDTSYNC_PURE_PYTHON=1`` or when built from another version of its source; without it the
validator counts places in a dict (both ways are tested against each other in
``tests/yjs/test_scan_builds.py``).

Pure Python, no pycrdt, never compiled.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

__all__ = [
    "COMPILED",
    "FORCED_PURE",
    "PLACES",
    "compiled_module",
    "load_pure",
    "native_places",
    "scan",
]

_SOURCE = Path(__file__).with_name("_scan.py")
_FANS_SOURCE = Path(__file__).with_name("_fans.c")
_PURE_NAME = "crdtsync.yjs._scan_pure"

#: ``CRDTSYNC_PURE_PYTHON`` was set (to anything but "", "0"): the compiled build is not used.
FORCED_PURE = os.environ.get("CRDTSYNC_PURE_PYTHON", "") not in ("", "0")


def load_pure() -> ModuleType:
    """The pure-Python build of ``_scan``, loaded from its source (once per process)."""
    module = sys.modules.get(_PURE_NAME)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(_PURE_NAME, _SOURCE)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the package
        raise ImportError(f"cannot load {_SOURCE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PURE_NAME] = module
    spec.loader.exec_module(module)
    return module


def _is_compiled(module: ModuleType) -> bool:
    return not str(getattr(module, "__file__", "")).endswith(".py")


def _current(module: ModuleType, source_path: Path = _SOURCE) -> bool:
    """Whether a compiled ``module`` was built from the source beside it (``_scan.py``)."""
    built_from = getattr(module, "SOURCE_SHA256", None)
    try:
        source = source_path.read_bytes()
    except OSError:  # an install without sources: nothing to compare with
        return True
    if built_from == hashlib.sha256(source).hexdigest():
        return True
    warnings.warn(
        f"{module.__file__} was compiled from another version of {source_path.name}; using the "
        "pure-Python validator (rebuild with `pip install -e .` to use the compiled one)",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


def _default() -> ModuleType | None:
    """What ``import crdtsync.yjs._scan`` gives (the compiled module if there is one), or None
    if a compiled module is there but cannot be loaded (a half-finished build)."""
    try:
        from . import _scan
    except ImportError as exc:
        warnings.warn(
            f"the compiled validator cannot be loaded ({exc}); using the pure-Python one",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return _scan


def compiled_module() -> ModuleType | None:
    """The compiled build of ``_scan`` if it is installed and current, else None."""
    default = _default()
    if default is not None and _is_compiled(default) and _current(default):
        return default
    return None


def _select() -> ModuleType:
    if FORCED_PURE:
        return load_pure()
    default = _default()
    if default is None:
        return load_pure()
    if not _is_compiled(default):
        return default  # the source itself: the fallback
    return default if _current(default) else load_pure()


#: The build in use: the compiled module, or the pure-Python one.
scan: ModuleType = _select()
#: Whether :data:`scan` is the mypyc-compiled build.
COMPILED: bool = _is_compiled(scan)


def native_places() -> type | None:
    """The native table of places (``crdtsync.yjs._fans.Places``) if it is built and
    current, else None (whatever ``CRDTSYNC_PURE_PYTHON`` says: tests compare both ways)."""
    try:
        from . import _fans
    except ImportError:
        return None
    if not _current(_fans, _FANS_SOURCE):
        return None
    places: type = _fans.Places
    return places


#: The native table the validator counts places in (:func:`native_places`), or None: not
#: built, not current, or ``CRDTSYNC_PURE_PYTHON`` set; the validator then counts in a dict.
PLACES: type | None = None if FORCED_PURE else native_places()
