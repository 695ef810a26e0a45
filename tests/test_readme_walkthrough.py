"""README's curl walkthrough, run verbatim against a live agent process on 127.0.0.1.

Each command of the ```bash block under "Walkthrough with curl" runs in bash as written (only
``CRDTSYNC_HTTP`` is set, to the test agent's address); a following ``# -> JSON`` line must
equal its answer as JSON, a ``# ~> text`` line must occur in its answer.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from http_process import agent_process

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass
class Step:
    command: str
    equals: list[str] = field(default_factory=list)
    contains: list[str] = field(default_factory=list)


def start_command() -> list[str]:
    """The arguments of the ``crdtsync agent ...`` command the walkthrough's prose starts the
    agent with (after ``crdtsync``)."""
    text = README.read_text()
    section = text[text.index("### Walkthrough with curl") :]
    prose = section[: section.index("```bash")]
    found = re.search(r"`crdtsync (agent [^`]*)`", prose)
    assert found, "the walkthrough does not say how to start the agent"
    return shlex.split(found.group(1))


def walkthrough() -> tuple[str, list[Step]]:
    """(the block's first line, the steps after it)."""
    text = README.read_text()
    section = text[text.index("### Walkthrough with curl") :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "no ```bash block in the walkthrough section"
    lines = block.group(1).splitlines()
    prelude, steps, pending = lines[0], [], ""
    for line in lines[1:]:
        if pending:
            pending += "\n" + line
            if not line.endswith("\\"):
                steps.append(Step(pending))
                pending = ""
        elif line.startswith("# -> "):
            steps[-1].equals.append(line[5:])
        elif line.startswith("# ~> "):
            steps[-1].contains.append(line[5:])
        elif not line.strip() or line.startswith("#"):
            continue
        elif line.endswith("\\"):
            pending = line
        else:
            steps.append(Step(line))
    return prelude, steps


def test_walkthrough_parses() -> None:
    prelude, steps = walkthrough()
    assert prelude.startswith("H=${CRDTSYNC_HTTP:-http://127.0.0.1:8080}")
    args = start_command()
    assert args[0] == "agent" and args[args.index("--http") + 1] == "127.0.0.1:8080"
    assert len(steps) >= 15 and all(s.command.startswith("curl ") for s in steps)
    assert sum(len(s.equals) + len(s.contains) for s in steps) >= 12


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_walkthrough_runs_verbatim(tmp_path: Path) -> None:
    prelude, steps = walkthrough()
    # The README's own start command, run in an empty directory (its relative --data lands
    # there); only the port is a free one instead of 8080, which CRDTSYNC_HTTP then names.
    args = start_command()
    args[args.index("--http") + 1] = "127.0.0.1:0"
    with agent_process(tmp_path, "walkthrough", args=args) as url:
        env = dict(os.environ, CRDTSYNC_HTTP=url)
        for step in steps:
            done = subprocess.run(
                ["bash", "-c", f"set -eo pipefail\n{prelude}\n{step.command}"],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
                check=False,
            )
            out = done.stdout
            assert done.returncode == 0, f"{step.command}\n{out}\n{done.stderr}"
            for expected in step.equals:
                assert json.loads(out) == json.loads(expected), f"{step.command}\n{out}"
            for expected in step.contains:
                assert expected in out, f"{step.command}\nanswered: {out}"
    assert (tmp_path / "crdtsync-data" / "walkthrough").is_dir()  # where the README said
