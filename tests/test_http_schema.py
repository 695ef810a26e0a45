"""The OpenAPI document matches the live server: schemathesis against a real agent process.

`crdtsync agent --http 127.0.0.1:0` runs as its own process; schemathesis loads
``/openapi.json`` from it and runs every operation through its coverage (systematic valid and
invalid inputs), fuzzing and stateful phases with every check, plus ``problem_json_on_4xx``
(tests/schemathesis_hooks.py): 0 server errors, every status and body as documented, every 4xx
an RFC 9457 problem. Max examples are small so the run stays around half a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


@pytest.fixture
def agent_url(tmp_path: Path) -> Iterator[str]:
    log = tmp_path / "agent.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [
                _tool("crdtsync"),
                "agent",
                "--name",
                "api",
                "--data",
                str(tmp_path / "data"),
                "--http",
                "127.0.0.1:0",
                "--shard",
                "board",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
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


def test_served_schema_is_openapi_3_1_for_every_route(agent_url: str) -> None:
    schema = httpx.get(f"{agent_url}/openapi.json").json()
    assert schema["openapi"] == "3.1.0"
    ops = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert ops == {
        ("/health", "get"),
        ("/peers", "get"),
        ("/metrics", "get"),
        ("/shards", "get"),
        ("/shards/{name}", "get"),
        ("/shards/{name}", "patch"),
        ("/shards/{name}", "delete"),
        ("/shards/{name}/append", "post"),
        ("/shards/{name}/text", "post"),
        ("/shards/{name}/events", "get"),
    }


def test_schemathesis_against_the_live_agent(agent_url: str, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="schemathesis_hooks",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    result = subprocess.run(
        [
            _tool("st"),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{agent_url}/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            "5",
            "--workers",
            "1",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            "--request-timeout",
            "5",
            "--report",
            "ndjson",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "10/10" in result.stdout  # every operation was tested
