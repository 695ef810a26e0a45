"""The OpenAPI document matches the live server: schemathesis against a real agent process.

`crdtsync agent --http 127.0.0.1:0` runs as its own process; schemathesis loads
``/openapi.json`` from it and runs every operation through its coverage (systematic valid and
invalid inputs), fuzzing and stateful phases with every check, plus ``problem_json_on_4xx``
(tests/schemathesis_hooks.py): 0 server errors, every status and body as documented, every 4xx
an RFC 9457 problem. Max examples are small so the run stays around half a minute.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_process import agent_process, tool

HERE = Path(__file__).parent


@pytest.fixture
def agent_url(tmp_path: Path) -> Iterator[str]:
    with agent_process(tmp_path) as url:
        yield url


def test_served_schema_is_openapi_3_1_for_every_route(agent_url: str) -> None:
    schema = httpx.get(f"{agent_url}/openapi.json").json()
    assert schema["openapi"] == "3.1.0"
    assert "security" not in schema  # no authorizer: no auth to declare
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
            tool("st"),
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
        cwd=tmp_path,  # schemathesis keeps a .schemathesis/ folder in its working directory
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "10/10" in result.stdout  # every operation was tested
