"""The README's code blocks and the names it gives, checked against the code (the h-walk pass).

Blocks that run on their own run here as a newcomer would paste them (top-level ``await``
inside an ``async def``, relative data directories in a temporary directory); blocks that
need a running mesh, a remote broker or a signal are not run (``tests/test_readme_walkthrough.py``
runs the curl walkthrough, ``tests/test_readme_overlay.py`` the overlay's simulator snippet,
``tests/test_metrics_hooks.py`` the figures block, ``tests/test_examples.py`` and
``tests/test_yjs_door.py`` the examples). The other checks keep the README's names true: every
``--option`` it gives a ``crdtsync`` command exists, the Errors section names every
``CrdtSyncError`` and where to import it, the layer table names modules at their layer, and the
test command is the one ``.ci/run`` runs.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest

import crdtsync
import crdtsync.errors
from crdtsync.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def block_after(anchor: str, nth: int = 0) -> str:
    """The ``nth`` ```python block after the first occurrence of ``anchor``, dedented."""
    text = README.read_text(encoding="utf-8")
    start = text.index(anchor)
    blocks = re.findall(r"^ *```python\n(.*?)^ *```", text[start:], re.DOTALL | re.MULTILINE)
    assert len(blocks) > nth, f"no python block {nth} after {anchor!r}"
    return textwrap.dedent(blocks[nth])


def run_async(
    body: str, *, inside: str = "", scope: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run ``body`` as the body of an ``async def`` (inside ``inside``, a with-statement
    header, when given); return its locals."""
    if inside:
        body = inside + "\n" + textwrap.indent(body, "    ") + "\n    ns = dict(locals())"
    else:
        body += "\nns = dict(locals())"
    source = "async def main():\n" + textwrap.indent(body, "    ") + "\n    return ns\n"
    namespace: dict[str, Any] = {"Agent": crdtsync.Agent, **(scope or {})}
    exec(compile(source, str(README), "exec"), namespace)  # our own README's code
    result: dict[str, Any] = asyncio.run(namespace["main"]())
    return result


def test_the_api_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ns = run_async(block_after("## The API"))
    assert ns["change"].paths == (("log",),)  # the subscription returned (no endless loop)
    assert (tmp_path / "data" / "planner").is_dir()


def test_the_compaction_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    body = 'shard = await agent.shard("board")\nshard["k"] = "v" * 1000\n' + block_after(
        "`await shard.compact()` folds"
    )
    ns = run_async(body, inside='async with Agent("a", data_dir="data/a") as agent:')
    assert ns["stats"].log_count == 0 and ns["space"].live_bytes > 0


def test_the_coordination_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ns = run_async(
        block_after("**Which write wins.**"),
        inside='async with Agent("a", data_dir="data/a") as agent:',
    )
    assert ns["done"].value == -1 and str(ns["answer"]) == "Hello"
    assert ns["board"].snapshot()["tasks"] == {"t1": {"title": "crawl"}}


def test_the_testing_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(block_after("### Testing your agent code"), str(README), "exec"), scope)
    assert [type(m).__name__ for _, _, m in scope["pair"].log].count("Push") >= 1
    ns = run_async(block_after("### Testing your agent code", 1), scope={"tmp": tmp_path})
    assert ns["board"].snapshot() == {"task": "write docs"}


def test_the_quota_block_builds_its_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRDTSYNC_HOME", str(tmp_path))  # (no data_dir: the default one)
    scope: dict[str, Any] = {}
    exec(
        compile(block_after("#### Quotas that hold across connections"), str(README), "exec"), scope
    )
    assert scope["agent"].name == "planner"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.index("\n#", start + len(title))
    return text[start:end]


def test_the_errors_section_names_every_error_and_where_it_is() -> None:
    section = _section("### Errors")
    errors = {
        name
        for name, obj in vars(crdtsync.errors).items()
        if isinstance(obj, type) and issubclass(obj, crdtsync.errors.CrdtSyncError)
    }
    named = set(re.findall(r"`(\w+)`", section))
    assert errors <= named, f"errors the README's Errors section lacks: {errors - named}"
    assert "has every one of them" in section, "the section no longer says where they are"
    missing = {e for e in errors if e not in crdtsync.__all__ or not hasattr(crdtsync, e)}
    assert not missing, f"errors `from crdtsync import` lacks: {missing}"


def _command(words: list[str]) -> click.Command:
    cmd: click.Command = cli_main
    for word in words:
        if not isinstance(cmd, click.Group) or word not in cmd.commands:
            break
        cmd = cmd.commands[word]
    return cmd


def test_every_option_the_readme_gives_a_command_exists() -> None:
    text = README.read_text(encoding="utf-8")
    checked, wrong = 0, []
    for found in re.finditer(r"crdtsync ((?:keys )?[a-z][a-z-]*)([^`\n]*)", text):
        cmd = _command(found.group(1).split())
        if cmd is cli_main:
            continue
        options = {o for p in cmd.params for o in p.opts + p.secondary_opts} | {"--help"}
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", found.group(2)):
            checked += 1
            if flag not in options:
                wrong.append(f"{found.group(0)!r}: {flag}")
    assert checked >= 30
    assert not wrong, wrong


def test_the_layer_table_names_modules_at_their_layer() -> None:
    from test_layers import layer_of

    rows = re.findall(r"^\| ([0-6]) \| (.*?) \| .*\|$", _section("## Where things live"), re.M)
    assert len(rows) == 7
    for layer, modules in rows:
        names = re.findall(r"`([\w/]+)`", re.sub(r":[^;()]*", "", modules))
        assert names, f"layer {layer} names no module"
        for name in names:
            dotted = "crdtsync." + name.rstrip("/").replace("/", ".")
            path = ROOT / ("transports" if name == "transports/" else f"crdtsync/{name}")
            assert path.with_suffix(".py").exists() or path.is_dir(), f"no module {name}"
            assert layer_of(dotted) == int(layer), f"{name} is not in layer {layer}"


def test_the_test_command_is_the_one_ci_runs() -> None:
    readme = README.read_text(encoding="utf-8")
    command = re.findall(r"```bash\n(python3 -m venv .*?)\n```", readme)[1]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert "python3 -m venv .venv" in ci and ". .venv/bin/activate" in ci
    assert command == "python3 -m venv .venv && . .venv/bin/activate && " + ci[-1]


def test_every_simulator_call_the_readme_gives_works() -> None:
    from crdtsync.testing import fast_config, mesh

    text = README.read_text(encoding="utf-8")
    scope = {"fast_config": fast_config, "mesh": mesh, "ShardingConfig": crdtsync.ShardingConfig}
    calls = re.findall(r"fast_config\((?:[^()`]|\([^()`]*\))*\)", text)
    assert len(calls) >= 3
    for call in calls:
        eval(call, scope, {"R": 3})  # a GossipConfig field it does not have: TypeError
    found = re.search(r"`(mesh\(n, sharding=ShardingConfig\(replication_factor=R\)\))`", text)
    assert found, "the testing section no longer says how to simulate partial replication"
    net = eval(found.group(1), scope, {"n": 4, "R": 2})
    assert net.sharding.replication_factor == 2


def test_every_dotted_crdtsync_name_the_readme_gives_resolves() -> None:
    import importlib

    def resolve(path: str) -> object:
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for part in parts[i:]:
                obj = getattr(obj, part)
            return obj
        raise ImportError(path)

    names = set(re.findall(r"`(crdtsync(?:\.\w+)+)", README.read_text(encoding="utf-8")))
    assert len(names) >= 30
    missing = []
    for name in sorted(names):
        try:
            resolve(name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, missing


def test_the_sharing_block_runs_on_free_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.chdir(tmp_path)
    body = block_after("### Sharing shards with other agents")
    for fixed in ("9001", "9002"):  # (other processes may hold the README's ports)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            free = str(sock.getsockname()[1])
        assert f"127.0.0.1:{fixed}" in body
        body = body.replace(f"127.0.0.1:{fixed}", f"127.0.0.1:{free}")
    ns = run_async(body)
    assert [p.name for p in ns["agent"].peers] == ["worker"]


def test_the_bridge_block_runs_on_a_local_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("aiomqtt")
    from mqttbroker import MOSQUITTO, Mosquitto, free_port

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    body = block_after("It bridges the two")
    assert body.count("mqtt://127.0.0.1:1883") == 2 and "127.0.0.1:7001" in body
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        monkeypatch.chdir(tmp_path)
        body = body.replace("mqtt://127.0.0.1:1883", broker.url)
        ns = run_async(body.replace("127.0.0.1:7001", f"127.0.0.1:{free_port()}"))
    finally:
        broker.stop()
    assert ns["change"].shard == "board" and (tmp_path / "data" / "far").is_dir()


def test_every_path_and_anchor_the_readme_gives_exists() -> None:
    text = README.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.*)$", text, re.MULTILINE)
    }
    assert not [a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in anchors]
    roots = "benchmarks|tests|crdtsync|examples|transports|docs"
    paths = set(re.findall(rf"`((?:{roots})/[\w./-]+)`", text))
    paths |= {p for p in re.findall(r"\]\(([^)#]+)\)", text) if not p.startswith("http")}
    assert len(paths) >= 20
    # node_modules folders are made by npm on first use (a fresh checkout has none)
    made = {p for p in paths if p.endswith("/node_modules")}
    assert not [p for p in sorted(paths - made) if not (ROOT / p).exists()]
    assert all((ROOT / p).parent.joinpath("package.json").exists() for p in made)
