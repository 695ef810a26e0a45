"""A real `crdtsync agent --http 127.0.0.1:0` process for the HTTP tests that need one."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["agent_process", "tool"]


def tool(name: str) -> str:
    """The console script ``name`` of this venv (else from PATH)."""
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else (shutil.which(name) or name)


@contextlib.contextmanager
def agent_process(
    tmp_path: Path, name: str = "api", *, args: list[str] | None = None
) -> Iterator[str]:
    """Run an agent process serving HTTP on a free loopback port; yield its ``http://`` URL.

    ``args``: the arguments after ``crdtsync`` (default: ``agent --name NAME --data
    TMP/NAME --http 127.0.0.1:0``); the process runs in ``tmp_path``, so a relative
    ``--data`` lands there. On exit it is stopped with SIGTERM and must exit cleanly (code 0).
    """
    log = tmp_path / f"{name}.log"
    if args is None:
        args = ["agent", "--name", name, "--data", str(tmp_path / name), "--http", "127.0.0.1:0"]
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [tool("crdtsync"), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=tmp_path,
        )
    assert proc.stdout is not None
    try:
        ready = json.loads(proc.stdout.readline() or "{}")
        assert ready.get("event") == "ready", log.read_text()
        yield ready["http"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
