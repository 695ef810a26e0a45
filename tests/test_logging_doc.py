"""Every logger crdtsync creates is named in the README's logging paragraph (issue #16: "document
logging: logger names, what each level says"). Fails when a module starts logging under a name
a reader of the README would not know to configure."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _logger_names() -> set[str]:
    names: set[str] = set()
    for package, prefix in (("crdtsync", "crdtsync"), ("transports", "crdtsync.transports")):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if "getLogger(__name__)" in text:
                module = ".".join(path.relative_to(ROOT / package).with_suffix("").parts)
                names.add(f"{prefix}.{module}".removesuffix(".__init__"))
            names.update(re.findall(r"getLogger\(\"(crdtsync[\w.]*)\"\)", text))
    return names


def test_every_logger_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("crdtsync logs through `logging`") :]
    paragraph = paragraph[: paragraph.index("\n\n")]
    names = _logger_names()
    assert "crdtsync.store" in names and "crdtsync.transports.websocket" in names
    missing = sorted(n for n in names if f"`{n}`" not in paragraph)
    assert not missing, f"loggers not named in the README's logging paragraph: {missing}"
