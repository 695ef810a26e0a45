"""Per-entry checksums: a damaged entry is a clear CorruptEntry, and a format-1 dir still opens.

Real LMDB files throughout: corruption is made by flipping a byte of ``data.mdb`` on disk
(LMDB itself keeps no checksums of values, so only crdtsync's catch it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
import pycrdt
import pytest

from crdtsync import Agent
from crdtsync.errors import CorruptEntry, StoreError
from crdtsync.shard import load_doc
from crdtsync.store import Store
from crdtsync.yjs.replay import replay

MARKER = "checksum-marker-" * 4


def _updates() -> list[bytes]:
    """Three transaction updates of one doc; the second holds MARKER."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=11)
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    text = doc.get("t", type=pycrdt.Text)
    text += "first "
    text += MARKER
    text += " last"
    return out


def _write(path: Path, log: list[bytes]) -> None:
    with Store(path) as store:
        for update in log:
            store.append("s", update)
        store.commit()


def _flip(path: Path, needle: bytes) -> None:
    """Flip one byte of ``needle`` wherever it lies in the LMDB data file (a page LMDB freed
    by copy-on-write may hold an old copy too)."""
    data = bytearray((path / "data.mdb").read_bytes())
    at = data.find(needle)
    assert at >= 0, "needle not found"
    while at >= 0:
        data[at + 3] ^= 0x01
        at = data.find(needle, at + 1)
    (path / "data.mdb").write_bytes(bytes(data))


def test_intact_entries_load_verified_and_unchanged(tmp_path: Path) -> None:
    log = _updates()
    _write(tmp_path, log)
    with Store(tmp_path) as store:
        loaded = store.load("s")
    assert loaded is not None and loaded.verified and loaded.log == log
    assert loaded.stats.log_bytes == sum(map(len, log))  # sizes count the updates only
    doc = load_doc(loaded.snapshot, loaded.log, "s", trusted=True)
    assert str(doc.get("t", type=pycrdt.Text)) == f"first {MARKER} last"


def test_a_flipped_byte_in_a_log_entry_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path, _updates())
    _flip(tmp_path, MARKER.encode())
    with Store(tmp_path) as store:
        with pytest.raises(CorruptEntry, match=r"shard 's': log entry 1 fails its checksum"):
            store.load("s")
        with pytest.raises(CorruptEntry, match="log entry 1"):
            store.compact("s", replay)
        assert store.stats("s").log_count == 3  # nothing was compacted away
    assert issubclass(CorruptEntry, StoreError)


async def test_an_agent_refuses_to_open_a_damaged_shard(tmp_path: Path) -> None:
    _write(tmp_path, _updates())
    _flip(tmp_path, MARKER.encode())
    async with Agent("a", data_dir=tmp_path) as agent:
        with pytest.raises(CorruptEntry, match="shard 's'"):
            await agent.shard("s")


def test_a_flipped_byte_in_the_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path, _updates())
    with Store(tmp_path) as store:
        store.compact("s", replay)
    _flip(tmp_path, MARKER.encode())
    with Store(tmp_path) as store, pytest.raises(CorruptEntry, match="'s': the snapshot"):
        store.load("s")


def _downgrade(path: Path) -> None:
    """Rewrite a store as format 1 wrote it: raw updates, no checksums, format b"1"."""
    env = lmdb.open(str(path), max_dbs=8, subdir=True)
    try:
        with env.begin(write=True) as txn:
            for name in (b"log", b"snap"):
                db = env.open_db(name, txn=txn)
                for key, value in list(txn.cursor(db=db).iternext()):
                    txn.put(key, bytes(value)[4:], db=db)
            txn.put(b"format", b"1", db=env.open_db(b"info", txn=txn))
    finally:
        env.close()


def test_a_format_1_store_opens_and_is_validated_once(tmp_path: Path) -> None:
    log = _updates()
    _write(tmp_path, log)
    _downgrade(tmp_path)
    with Store(tmp_path) as store:
        loaded = store.load("s")
        assert loaded is not None and not loaded.verified and loaded.log == log
        store.mark_verified("s")
        again = store.load("s")
        assert again is not None and again.verified and again.log == log
    with Store(tmp_path) as store:  # upgraded on disk: still verified after a reopen
        loaded = store.load("s")
        assert loaded is not None and loaded.verified


def test_a_legacy_shard_is_compacted_with_the_validating_merge(tmp_path: Path) -> None:
    _write(tmp_path, _updates())
    _downgrade(tmp_path)
    used: list[str] = []

    def checked(snapshot: bytes | None, log: list[bytes]) -> bytes:
        used.append("checked")
        return replay(snapshot, log)

    def trusted(snapshot: bytes | None, log: list[bytes]) -> bytes:
        used.append("trusted")
        return replay(snapshot, log)

    with Store(tmp_path) as store:
        store.compact("s", checked, trusted_merge=trusted)
        loaded = store.load("s")
        assert loaded is not None and loaded.verified  # the new snapshot was validated
        store.append("s", _updates()[0])
        store.commit()
        store.compact("s", checked, trusted_merge=trusted)
    assert used == ["checked", "trusted"]


def test_a_legacy_entry_that_is_not_an_update_still_fails_validation(tmp_path: Path) -> None:
    _write(tmp_path, [*_updates(), bytes(range(256))])
    _downgrade(tmp_path)
    with Store(tmp_path) as store:
        loaded = store.load("s")
    assert loaded is not None and not loaded.verified
    with pytest.raises(StoreError, match="does not apply"):
        load_doc(loaded.snapshot, loaded.log, "s", trusted=loaded.verified)


async def test_an_agent_opens_a_format_1_store_and_marks_it_verified(tmp_path: Path) -> None:
    _write(tmp_path, _updates())
    _downgrade(tmp_path)
    async with Agent("a", data_dir=tmp_path) as agent:
        shard = await agent.shard("s")
        assert str(shard.doc.get("t", type=pycrdt.Text)) == f"first {MARKER} last"
    with Store(tmp_path) as store:
        loaded = store.load("s")
    assert loaded is not None and loaded.verified
