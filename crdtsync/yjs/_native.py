"""Which build of the validator's inner loops (:mod:`crdtsync.yjs._scan`) this process uses.

``setup.py`` compiles ``crdtsync/yjs/_scan.py`` and ``_scan_content.py`` (:data:`GROUP`) with
mypyc as one group when it can (a C compiler and the Python headers are there); each extension
module then sits next to its source under the same name and Python imports it in preference to
the ``.py``. When the build was not possible, the same name imports the pure-Python source:
that is the fallback, and it is never removed.

``CRDTSYNC_PURE_PYTHON=1`` in the environment forces the pure-Python build even where the
compiled one exists (to compare them, or to rule the compiled one out). A compiled module that
was built from another version of the source (an edited checkout not rebuilt) is not used
either: the build records each source's SHA-256 in its module (``SOURCE_SHA256``), and this
module compares them with the files beside them, falling back to the sources with a warning
if any of them differs.

:func:`load_pure` loads the pure-Python build under another module name, so that tests can run
both builds side by side in one process (``tests/yjs/test_scan_builds.py``).

The fan bookkeeping's native table (``crdtsync/yjs/_fans.c`` and the other files of
:data:`_FANS_SOURCES`, made a Mapping by ``_places``, :data:`PLACES`) is chosen the same way:
built by ``setup.py`` when a C compiler is there, not used with ``CRDTSYNC_PURE_PYTHON=1`` or
when built from another version of any of its sources; without
it the validator counts places in a dict (both ways are tested against each other in
``tests/yjs/test_scan_builds.py``).

The struct section's scan in C (``crdtsync/yjs/_cscan.c`` and the other files of
:data:`_CSCAN_SOURCES`, :data:`CSCAN`) is chosen the same way again: built by ``setup.py`` when
a C compiler is there, not used with ``CRDTSYNC_PURE_PYTHON=1`` or when built from another
version of any of its sources. It only accepts:
on anything it does not accept it returns None and :mod:`crdtsync.yjs.parse` runs
:data:`scan` (``tests/yjs/test_cscan.py`` compares them).

Pure Python, no pycrdt, never compiled.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from . import _malformed

__all__ = [
    "COMPILED",
    "CSCAN",
    "FORCED_PURE",
    "GROUP",
    "PLACES",
    "compiled_module",
    "load_pure",
    "native_places",
    "native_scan",
    "scan",
]

_DIR = Path(__file__).parent
#: The modules ``setup.py`` compiles with mypyc as one group, dependencies first: ``_scan``
#: (the struct section, the delete set; what :data:`scan` is) imports ``_scan_content``.
GROUP: tuple[str, ...] = ("_scan_content", "_scan")
_SOURCE = _DIR / "_scan.py"
#: The native table's sources and its private header, in the order ``setup.py`` hashes them
#: (its ``FANS_SOURCES``): a build is stale when any of them changed (:func:`_digest`).
_FANS_SOURCES: tuple[str, ...] = ("_fans.c", "_fans.h", "_fans_table.c", "_fans_mapping.c")
#: The C scan's sources and its private header, in the order ``setup.py`` hashes them (its
#: ``CSCAN_SOURCES``): a build is stale when any of them changed (:func:`_digest`).
_CSCAN_SOURCES: tuple[str, ...] = (
    "_cscan.c",
    "_cscan.h",
    "_cscan_inline.h",
    "_cscan_values.c",
    "_cscan_places.c",
    "_cscan_spans.c",
)
#: The pure-Python build is loaded as this package's modules (one per module of GROUP), so
#: that its relative imports find each other and never the compiled group.
_PURE_PACKAGE = "crdtsync.yjs._pure"
_PURE_NAME = f"{_PURE_PACKAGE}._scan"

#: ``CRDTSYNC_PURE_PYTHON`` was set (to anything but "", "0"): the compiled build is not used.
FORCED_PURE = os.environ.get("CRDTSYNC_PURE_PYTHON", "") not in ("", "0")


def _load_source(name: str) -> ModuleType:
    """Execute ``<name>.py`` as the module ``_PURE_PACKAGE.<name>``."""
    full = f"{_PURE_PACKAGE}.{name}"
    path = _DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(full, path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the package
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


def load_pure() -> ModuleType:
    """The pure-Python build of ``_scan`` (and of the rest of :data:`GROUP`, which it
    imports), loaded from the sources once per process."""
    module = sys.modules.get(_PURE_NAME)
    if module is not None:
        return module
    package = ModuleType(_PURE_PACKAGE)
    package.__path__ = []  # found by nothing: every module of it is put in sys.modules here
    sys.modules.setdefault(_PURE_PACKAGE, package)
    # One Malformed for both builds (it is never compiled): the pure modules import this one.
    sys.modules[f"{_PURE_PACKAGE}._malformed"] = _malformed
    loaded = [_load_source(name) for name in GROUP]
    return loaded[-1]


def _is_compiled(module: ModuleType) -> bool:
    return not str(getattr(module, "__file__", "")).endswith(".py")


def _digest(paths: Sequence[Path]) -> str:
    """What ``setup.py`` compiles into a module built from ``paths`` (its ``_digest``): one
    file's SHA-256; for several, the SHA-256 of their ``sha256sum`` listing (a line
    ``<hex>  <name>`` each, in order), so that an edit to any one of them changes it."""
    if len(paths) == 1:
        return hashlib.sha256(paths[0].read_bytes()).hexdigest()
    listing = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in paths)
    return hashlib.sha256(listing.encode()).hexdigest()


def _current(module: ModuleType, source_path: Path | Sequence[Path] = _SOURCE) -> bool:
    """Whether a compiled ``module`` was built from the source(s) beside it (``_scan.py``;
    for ``_cscan``, every file of :data:`_CSCAN_SOURCES`; for ``_fans``, of
    :data:`_FANS_SOURCES`)."""
    built_from = getattr(module, "SOURCE_SHA256", None)
    paths = [source_path] if isinstance(source_path, Path) else list(source_path)
    try:
        digest = _digest(paths)
    except OSError:  # an install without sources: nothing to compare with
        return True
    if built_from == digest:
        return True
    names = ", ".join(path.name for path in paths)
    warnings.warn(
        f"{module.__file__} was compiled from another version of {names}; using the "
        "pure-Python validator (rebuild with `pip install -e .` to use the compiled one)",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


def _usable(group: dict[str, ModuleType]) -> bool:
    """Whether the compiled ``group`` (name -> module, as imported) may be used: every module
    of it compiled, each from the source beside it. Half a build or one stale module (an
    edited checkout not rebuilt) and none of it is used."""
    if not all(_is_compiled(module) for module in group.values()):
        warnings.warn(
            "only part of the validator is compiled; using the pure-Python one "
            "(rebuild with `pip install -e .`)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return all(_current(module, _DIR / f"{name}.py") for name, module in group.items())


def _default() -> dict[str, ModuleType] | None:
    """What ``import crdtsync.yjs._scan`` and the rest of :data:`GROUP` give (the compiled
    modules if there are), or None if a compiled module is there but cannot be loaded (a
    half-finished build)."""
    try:
        return {name: importlib.import_module(f"{__package__}.{name}") for name in GROUP}
    except ImportError as exc:
        warnings.warn(
            f"the compiled validator cannot be loaded ({exc}); using the pure-Python one",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def compiled_module() -> ModuleType | None:
    """The compiled build of ``_scan`` if it is installed and current, else None."""
    group = _default()
    if group is not None and any(map(_is_compiled, group.values())) and _usable(group):
        return group["_scan"]
    return None


def _select() -> ModuleType:
    if FORCED_PURE:
        return load_pure()
    group = _default()
    if group is None:
        return load_pure()
    if not any(map(_is_compiled, group.values())):
        return group["_scan"]  # the sources themselves: the fallback
    return group["_scan"] if _usable(group) else load_pure()


#: The build in use: the compiled module, or the pure-Python one.
scan: ModuleType = _select()
#: Whether :data:`scan` is the mypyc-compiled build.
COMPILED: bool = _is_compiled(scan)


def native_places() -> type | None:
    """The native table of places as a Mapping (``crdtsync.yjs._places.Places``, over the C
    ``crdtsync.yjs._fans.Places``) if the C module is built and current, else None (whatever
    ``CRDTSYNC_PURE_PYTHON`` says: tests compare both ways)."""
    try:
        from . import _fans
    except ImportError:
        return None
    if not _current(_fans, [_DIR / name for name in _FANS_SOURCES]):
        return None
    from . import _places

    places: type = _places.Places
    return places


#: The native table the validator counts places in (:func:`native_places`), or None: not
#: built, not current, or ``CRDTSYNC_PURE_PYTHON`` set; the validator then counts in a dict.
PLACES: type | None = None if FORCED_PURE else native_places()


def native_scan() -> ModuleType | None:
    """The struct section's scan in C (``crdtsync.yjs._cscan``) if it is built and current,
    else None (whatever ``CRDTSYNC_PURE_PYTHON`` says: tests compare it with the others)."""
    try:
        from . import _cscan
    except ImportError:
        return None
    if not _current(_cscan, [_DIR / name for name in _CSCAN_SOURCES]):
        return None
    return _cscan


#: The C scan :mod:`crdtsync.yjs.parse` tries first (:func:`native_scan`), or None: not built,
#: not current, or ``CRDTSYNC_PURE_PYTHON`` set; :data:`scan` then does it all.
CSCAN: ModuleType | None = None if FORCED_PURE else native_scan()
