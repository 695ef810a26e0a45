"""``crdtsync demo``'s durability round kills its writer mid-write (the h-walk2 walk).

The kill was timed from the writer's start, so at load 5 a round killed a writer that was still
importing (the demo's table showed a round of 0 acknowledged writes under "killed mid-write").
It is now timed from the writer's first acknowledged write: even ``kill_after=0`` kills a
writer that has acknowledged writes, and none of them is lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtsync.cli.demo import crash_and_recover

pytestmark = pytest.mark.timeout(120)


def test_the_kill_lands_after_the_first_acknowledged_write(tmp_path: Path) -> None:
    first = crash_and_recover(tmp_path / "d", kill_after=0.0)
    assert first.acknowledged >= 1, first  # was 0: killed before its imports were done
    assert first.lost == 0 and first.present >= first.acknowledged
    second = crash_and_recover(tmp_path / "d", kill_after=0.0)  # resumes after the keys there
    assert second.acknowledged >= 1 and second.lost == 0
    assert second.present >= first.present + second.acknowledged


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """``crdtsync demo --data DIR`` wiped DIR first whatever it held: ``--data .`` in a
    checkout deleted the checkout. It now wipes only its own entries (or an empty folder)."""
    from click.testing import CliRunner

    from crdtsync.cli import main as cli_main

    precious = tmp_path / "work"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    (precious / "mesh").mkdir()  # one of the demo's own entries beside it changes nothing
    result = CliRunner().invoke(cli_main, ["demo", "--data", str(precious)])
    assert result.exit_code == 1, result.output
    assert "the demo wipes its folder first, and this one holds notes.txt" in result.output
    assert (precious / "notes.txt").read_text() == "keep me" and (precious / "mesh").is_dir()
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(cli_main, ["demo", "--data", str(tmp_path / "file")])
    assert result.exit_code == 1 and "is not a folder" in result.output, result.output


@pytest.mark.parametrize("option", ["--agents", "--writes"])
def test_demo_sizes_must_be_positive(option: str, tmp_path: Path) -> None:
    """``crdtsync demo --agents 0`` ended in an IndexError traceback; ``--writes 0`` waited
    93 s for a mesh of 0 keys to 'converge'."""
    from click.testing import CliRunner

    from crdtsync.cli import main as cli_main

    result = CliRunner().invoke(cli_main, ["demo", "--data", str(tmp_path / "d"), option, "0"])
    assert result.exit_code == 2 and "is not in the range x>=1" in result.output, result.output
    assert not (tmp_path / "d").exists()  # refused before anything is made
