"""squash_local: a window of local writes as one update with runs squashed (issue 17): it
applies to the same document as the writes themselves, with far fewer structs and far less
validator work than pycrdt.merge_updates of the same writes."""

from __future__ import annotations

from typing import Any

import pycrdt

from crdtsync import updates


def _writes(doc: pycrdt.Doc[Any], n: int) -> list[bytes]:
    """n one-character edits of a text in ``doc``, each its own transaction; their deltas."""
    text = doc.get("t", type=pycrdt.Text)
    deltas: list[bytes] = []
    sub = doc.observe(lambda e: deltas.append(e.update))
    for i in range(n):
        with doc.transaction():
            if i % 20 == 19:  # typing, with a backspace now and then
                del text[len(text) - 1]
            else:
                text.insert(len(text), "abc"[i % 3])
    doc.unobserve(sub)
    return deltas


def test_a_window_of_writes_squashes_to_the_same_state_with_fewer_structs() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    first = _writes(doc, 50)  # an earlier window, already sent
    window = _writes(doc, 200)
    squashed, merged = updates.squash_local(doc, window), updates.merge_updates(window)
    s_info, m_info = updates.validate_update(squashed), updates.validate_update(merged)
    assert s_info.n_structs < m_info.n_structs / 4 and s_info.work < m_info.work / 10
    assert s_info.delete_set == m_info.delete_set  # the window's deletions, not the document's
    receiver: pycrdt.Doc[Any] = pycrdt.Doc()
    receiver.apply_update(updates.merge_updates(first))
    receiver.apply_update(squashed)
    assert updates.digest(receiver) == updates.digest(doc)
    assert str(receiver.get("t", type=pycrdt.Text)) == str(doc.get("t", type=pycrdt.Text))


def test_deltas_of_another_client_are_merged_as_they_are() -> None:
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    deltas = _writes(other, 20)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for d in deltas:  # applied here (e.g. through the Yjs door): not this doc's client
        doc.apply_update(d)
    assert updates.squash_local(doc, deltas) == updates.merge_updates(deltas)
    assert updates.squash_local(doc, deltas[:1]) == deltas[0]
