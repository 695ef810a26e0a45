"""Optional compiled speedups; all metadata is in pyproject.toml.

``crdtsync/yjs/_scan.py`` and ``crdtsync/yjs/_scan_content.py`` (the inner loops of the strict
Yjs update validator) are compiled with mypyc as one group when possible, and
``crdtsync/yjs/_fans.c`` (the validator's fan bookkeeping in a native hash table, with
``_fans_table.c``, ``_fans_mapping.c`` and their header ``_fans.h``) and
``crdtsync/yjs/_cscan.c`` (the struct section scanned in C, with ``_cscan_values.c``,
``_cscan_places.c``, ``_cscan_spans.c`` and their headers ``_cscan.h``, ``_cscan_inline.h``;
it only accepts, the mypyc or pure build decides everything else) are compiled when a C
compiler is there. The build never fails because of them:
without mypyc, without a C compiler or Python headers, or with ``CRDTSYNC_PURE_PYTHON=1`` set,
no extension is built and the same source runs as pure Python, counting places in a dict (see
``crdtsync/yjs/_native.py``).

Each compiled module is built from a copy of its source with one line added,
``SOURCE_SHA256 = "<hash of that source>"`` (the C modules: a macro; the hash of ``_fans``
and of ``_cscan`` covers all of its sources and headers), so that a compiled module left over
from an older version of any of them is detected at import and the group not used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
YJS = ROOT / "crdtsync" / "yjs"
#: The modules mypyc compiles, as one group (their calls to each other stay native calls);
#: the same names as ``crdtsync.yjs._native.GROUP``.
SCAN = [YJS / "_scan.py", YJS / "_scan_content.py"]
#: The native table's sources and its private header, in the order they are hashed: the same
#: names as ``crdtsync.yjs._native._FANS_SOURCES`` (``tests/yjs/test_native_build.py`` checks it).
FANS_SOURCES = ("_fans.c", "_fans.h", "_fans_table.c", "_fans_mapping.c")
#: The C scan's sources and its private header, in the order they are hashed: the same names
#: as ``crdtsync.yjs._native._CSCAN_SOURCES`` (``tests/yjs/test_native_build.py`` checks it).
CSCAN_SOURCES = (
    "_cscan.c",
    "_cscan.h",
    "_cscan_inline.h",
    "_cscan_values.c",
    "_cscan_places.c",
    "_cscan_spans.c",
)
STAGE = ROOT / "build" / "mypyc-src"


class OptionalBuildExt(build_ext):
    """build_ext that reports a failed compile and goes on without the extension."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means: pure Python
            print(
                f"crdtsync: compiled validator not built ({exc}); using pure Python",
                file=sys.stderr,
            )

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"crdtsync: {ext.name} not built ({exc}); using pure Python", file=sys.stderr)


def _stage() -> list[Path]:
    """Copy what mypyc compiles into build/, each source's hash appended to its copy."""
    shutil.rmtree(STAGE, ignore_errors=True)
    yjs = STAGE / "crdtsync" / "yjs"
    yjs.mkdir(parents=True)
    (STAGE / "crdtsync" / "__init__.py").write_text("")
    (yjs / "__init__.py").write_text("")
    shutil.copy(YJS / "_malformed.py", yjs / "_malformed.py")
    staged = []
    for path in SCAN:
        source = path.read_bytes()
        digest = hashlib.sha256(source).hexdigest()
        copy = yjs / path.name
        copy.write_bytes(source + f'\nSOURCE_SHA256: Final = "{digest}"\n'.encode())
        staged.append(copy)
    return staged


def _fans() -> Extension:
    """The native table of places, one extension from several sources (split by concern,
    sharing the private header ``_fans.h``); the hash of all of them is compiled in (as for
    ``_scan`` and ``_cscan``), so that an edit to any one makes a build stale."""
    paths = [YJS / name for name in FANS_SOURCES]
    return Extension(
        "crdtsync.yjs._fans",
        [str(path.relative_to(ROOT)) for path in paths if path.suffix == ".c"],
        depends=[str(path.relative_to(ROOT)) for path in paths if path.suffix == ".h"],
        define_macros=[("FANS_SOURCE_SHA256", f'"{_digest(paths)}"')],
        extra_compile_args=["-O2"] if os.name == "posix" else [],
        optional=True,
    )


def _digest(paths: list[Path]) -> str:
    """One file's SHA-256; for several, the SHA-256 of their ``sha256sum`` listing (a line
    ``<hex>  <name>`` each, in order), so that an edit to any one of them changes it. The
    same function as ``crdtsync.yjs._native._digest`` (the module compares with it)."""
    if len(paths) == 1:
        return hashlib.sha256(paths[0].read_bytes()).hexdigest()
    listing = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in paths)
    return hashlib.sha256(listing.encode()).hexdigest()


def _cscan() -> Extension:
    """The struct section's scan in C, one extension from several sources (split by concern,
    sharing the private headers ``_cscan.h`` and ``_cscan_inline.h``); the hash of all of
    them is compiled in (as for ``_fans``), so that an edit to any one makes a build stale."""
    paths = [YJS / name for name in CSCAN_SOURCES]
    return Extension(
        "crdtsync.yjs._cscan",
        [str(path.relative_to(ROOT)) for path in paths if path.suffix == ".c"],
        depends=[str(path.relative_to(ROOT)) for path in paths if path.suffix == ".h"],
        define_macros=[("CSCAN_SOURCE_SHA256", f'"{_digest(paths)}"')],
        extra_compile_args=["-O2"] if os.name == "posix" else [],
        optional=True,
    )


def _extensions() -> list:  # type: ignore[type-arg]
    if os.environ.get("CRDTSYNC_PURE_PYTHON", "") not in ("", "0"):
        return []
    return [*_mypyc_extensions(), _fans(), _cscan()]


def _mypyc_extensions() -> list:  # type: ignore[type-arg]
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("crdtsync: mypyc not available; using the pure-Python validator", file=sys.stderr)
        return []
    cwd = os.getcwd()
    try:
        staged = _stage()
        os.chdir(STAGE)  # module names come from the staged tree, not the real package
        # One group, named after its first module: its shared library is then
        # crdtsync/yjs/_scan__mypyc (in the package, as for one module), not a top-level module
        # named by a hash that an editable install would not find.
        extensions = mypycify(
            [str(path.relative_to(STAGE)) for path in staged],
            opt_level="3",
            group_name="crdtsync.yjs._scan",
        )
    except BaseException as exc:  # noqa: BLE001 - mypyc failing must not fail the install
        print(f"crdtsync: mypyc failed ({exc!r}); using the pure-Python validator", file=sys.stderr)
        return []
    finally:
        os.chdir(cwd)
    for ext in extensions:
        ext.optional = True
        ext.sources = [s if os.path.isabs(s) else str(STAGE / s) for s in ext.sources]
        ext.include_dirs = [d if os.path.isabs(d) else str(STAGE / d) for d in ext.include_dirs]
    return extensions


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
