"""Mesh keys for the tests of credentials, made as a user makes them: through the real
``crdtsync keys`` command line (in process, with click's runner)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from crdtsync.cli import main

__all__ = ["cli", "make_keys"]


def cli(*args: str) -> str:
    """Run ``crdtsync ARGS``; its output, stripped (a failure is an AssertionError)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def make_keys(d: Path, mesh: str, *names: str) -> Path:
    """``crdtsync keys init-mesh`` into ``d``, then a certificate for each of ``names``."""
    cli("keys", "init-mesh", "--dir", str(d), "--mesh", mesh)
    for name in names:
        cli("keys", "issue", name, "--dir", str(d))
    return d
