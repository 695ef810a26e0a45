"""The README's overlay section runs as written: its simulator snippet builds a 5 x 5 grid
(``overlay_shape="grid"``) and every agent ends with the write. The snippet is read from the
README, so a change to either the docs or the grid that breaks it fails here."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippet() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("**Meshes of many agents: the overlay.**")
    block = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None, "the overlay section lost its snippet"
    return block.group(1)


def test_overlay_snippet_runs_and_uses_the_grid() -> None:
    code = _snippet()
    assert 'overlay_shape="grid"' in code
    scope: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - our own README's snippet
    net = scope["net"]
    # The grid really formed: once the overlay settles, each of the 25 agents keeps its row
    # and its column of the 5 x 5 grid (8 links), not the 24 of a full mesh.
    net.run_for(15)  # type: ignore[attr-defined]
    cores = [node.core for node in net.nodes.values() if node.core]  # type: ignore[attr-defined]
    assert len(cores) == 25
    assert sorted({len(core.connected()) for core in cores}) == [8]
