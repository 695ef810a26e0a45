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
