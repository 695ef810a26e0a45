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


def _same_as_merged(doc: pycrdt.Doc[Any], earlier: list[bytes], window: list[bytes]) -> bytes:
    """Squash ``window``: it must delete what the merged window deletes and bring a receiver
    holding ``earlier`` to ``doc``'s state (digest and text)."""
    squashed, merged = updates.squash_local(doc, window), updates.merge_updates(window)
    s_info, m_info = updates.validate_update(squashed), updates.validate_update(merged)
    assert s_info.delete_set == m_info.delete_set
    receiver: pycrdt.Doc[Any] = pycrdt.Doc()
    if earlier:
        receiver.apply_update(updates.merge_updates(earlier))
    receiver.apply_update(squashed)
    assert updates.digest(receiver) == updates.digest(doc)
    assert str(receiver.get("t", type=pycrdt.Text)) == str(doc.get("t", type=pycrdt.Text))
    return squashed


def _record(doc: pycrdt.Doc[Any], edit: Any, n: int) -> list[bytes]:
    deltas: list[bytes] = []
    sub = doc.observe(lambda e: deltas.append(e.update))
    for i in range(n):
        with doc.transaction():
            edit(i)
    doc.unobserve(sub)
    return deltas


def test_a_window_of_deletes_only() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    earlier = _writes(doc, 60)
    window = _record(doc, lambda i: text.__delitem__(slice(2 * i, 2 * i + 1)), 10)
    assert all(d[:1] == b"\x00" for d in window)  # no structs: merged as they are
    assert _same_as_merged(doc, earlier, window) == updates.merge_updates(window)


def test_writes_of_several_structs_and_replacements() -> None:
    """Transactions that insert at two places (several structs in one delta) and that delete
    while inserting: squashed (not merged as they are), with the window's deletions."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    earlier = _writes(doc, 30)

    def edit(i: int) -> None:
        text.insert(0, "x")
        text.insert(len(text) // 2, "yz")
        if i % 3 == 0:
            del text[5:7]

    window = _record(doc, edit, 40)
    assert any(d[1] > 1 for d in window if d[0] == 1)  # several structs in one delta
    squashed = _same_as_merged(doc, earlier, window)
    assert squashed != updates.merge_updates(window)


def test_a_window_with_another_clients_write_is_merged_as_it_is() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    earlier = _writes(doc, 10)
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    other.apply_update(doc.get_update())
    foreign = _writes(other, 3)
    window = _writes(doc, 5)
    for d in foreign:  # applied here, as through the Yjs door, in the middle of the window
        doc.apply_update(d)
    window += foreign + _writes(doc, 5)
    assert updates.squash_local(doc, window) == updates.merge_updates(window)
    _same_as_merged(doc, earlier, window)
