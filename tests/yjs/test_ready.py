"""Parse once: readiness, apply_if_ready and Backlog use a carried UpdateInfo, not the bytes."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from crdtsync.errors import InvalidUpdate
from crdtsync.yjs import ready
from crdtsync.yjs.parse import parse_update, validate_update
from crdtsync.yjs.ready import Backlog, apply_if_ready, is_ready


def _two_steps() -> tuple[bytes, bytes]:
    """Two updates of one writer, the second building on the first."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    text = doc.get("t", type=pycrdt.Text)
    text += "hello"
    first = doc.get_update()
    sv = doc.get_state()
    text += " world"
    return first, doc.get_update(sv)


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(ready, "parse_update", refuse)


def test_validate_update_returns_the_parse() -> None:
    _, second = _two_steps()
    info = validate_update(second)
    assert info.size == len(second)
    assert info.ends == {7: 11}
    assert info.missing({}) == (7, 4)
    assert info.missing({7: 5}) is None


def test_apply_if_ready_and_is_ready_do_not_parse_a_carried_info(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = _two_steps()
    infos = parse_update(first), parse_update(second)
    _no_parsing(monkeypatch)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    assert not is_ready(doc.get_state(), second, infos[1])
    assert apply_if_ready(doc, second, infos[1]) == (7, 4)
    assert apply_if_ready(doc, first, infos[0]) is None
    assert apply_if_ready(doc, second, infos[1]) is None
    assert str(doc.get("t", type=pycrdt.Text)) == "hello world"


def test_backlog_keeps_the_info_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _two_steps()
    infos = parse_update(first), parse_update(second)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    backlog = Backlog()
    missing = apply_if_ready(doc, second, infos[1])
    assert missing is not None
    backlog.add(second, missing, infos[1])
    _no_parsing(monkeypatch)
    assert apply_if_ready(doc, first, infos[0]) is None
    assert backlog.apply_ready(doc) == 1
    assert str(doc.get("t", type=pycrdt.Text)) == "hello world"


def test_an_info_of_other_bytes_is_refused() -> None:
    first, _ = _two_steps()
    longer = first + b""  # (same bytes, own object) and a different update below
    assert apply_if_ready(pycrdt.Doc(), longer, parse_update(first)) is None
    with pytest.raises(ValueError):
        apply_if_ready(pycrdt.Doc(), first, parse_update(b"\x00\x00"))


def test_without_info_the_bytes_are_still_validated() -> None:
    with pytest.raises(InvalidUpdate):
        apply_if_ready(pycrdt.Doc(), bytes(range(256)))
