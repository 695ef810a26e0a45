"""AES-GCM sealing of shard values (the store hook is not wired yet): round trip, wrong key,
moved or altered values, and key files kept away from the data."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from crdtsync.errors import CredentialsError
from crdtsync.security.atrest import AtRestCipher, WrongKey, generate_key_file, load_key


def test_seal_open_round_trip_and_wrong_key(tmp_path: Path) -> None:
    key = generate_key_file(tmp_path / "k")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert load_key(tmp_path / "k") == key
    c = AtRestCipher(key)
    sealed = c.seal("tasks/a", "log", b"update bytes")
    assert b"update bytes" not in sealed
    assert c.open("tasks/a", "log", sealed) == b"update bytes"
    assert c.seal("tasks/a", "log", b"x") != c.seal("tasks/a", "log", b"x")  # fresh nonces
    other = AtRestCipher(b"\x01" * 32)
    with pytest.raises(WrongKey):
        other.open("tasks/a", "log", sealed)
    with pytest.raises(WrongKey):
        other.verify_check(c.check_value())
    c.verify_check(c.check_value())


def test_moved_or_altered_values_do_not_open() -> None:
    c = AtRestCipher(b"\x02" * 32)
    sealed = c.seal("tasks/a", "snapshot", b"state")
    for shard, kind, value in [
        ("tasks/b", "snapshot", sealed),  # moved to another shard
        ("tasks/a", "log", sealed),  # passed off as another record type
        ("tasks/a", "snapshot", sealed[:-1] + bytes([sealed[-1] ^ 1])),  # altered
        ("tasks/a", "snapshot", b"\x01short"),
    ]:
        with pytest.raises(WrongKey):
            c.open(shard, kind, value)


def test_key_file_inside_data_dir_or_readable_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    generate_key_file(data / "k")
    with pytest.raises(CredentialsError, match="inside the data directory"):
        load_key(data / "k", data_dir=data)
    generate_key_file(tmp_path / "k")
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(CredentialsError, match="readable by others"):
        load_key(tmp_path / "k", data_dir=data)
    with pytest.raises(CredentialsError):
        AtRestCipher(b"short")
