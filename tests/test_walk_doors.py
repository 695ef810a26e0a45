"""What the doors say when they refuse (the h-walk2 walk): the refusal names what to do.

``crdtsync agent --http 0.0.0.0:8080`` used to answer "configure authorize=, or pass
insecure=True", Python-API advice a command-line user cannot follow (and ``--insecure`` does not
open the HTTP door). The message now names ``--keys`` and ``crdtsync keys token`` as well.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from crdtsync import Agent, UsageError
from crdtsync.cli import main as cli_main

pytestmark = pytest.mark.timeout(60)


async def test_http_beyond_loopback_says_what_to_do(tmp_path: Path) -> None:
    agent = Agent("a", data_dir=tmp_path / "a", http="0.0.0.0:0")
    with pytest.raises(UsageError) as refused:
        await agent.start()  # refused before anything is bound: no traffic
    message = str(refused.value)
    assert "refusing to serve HTTP on '0.0.0.0'" in message
    assert "--keys" in message and "crdtsync keys token" in message, message
    assert "insecure=True" in message and "--insecure` does not open the HTTP door" in message


def test_agent_help_says_insecure_is_not_for_http() -> None:
    result = CliRunner().invoke(cli_main, ["agent", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "not --http, which serves beyond loopback only with --keys" in text, text
