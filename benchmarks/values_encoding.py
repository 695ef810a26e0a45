"""Value encodings compared (crdtsync.values format 2 was chosen from this): bytes of a Yjs
update holding 10,000 values, and write + read time per value through pycrdt, for small ints,
64-bit ints, floats and bytes, under four encodings:

* ``v1-tagged``: format 1 (``b"\\x01"`` + 8-byte int, ``b"\\x00"`` + bytes): exact, JS-opaque;
* ``v2``: format 2 (plain numbers and binary; ``{"$int": "..."}``/``{"$float": x}`` objects);
* ``decimal-str``: every int as a decimal string (readable, but ints and strs collide);
* ``yjs-bigint``: pycrdt's own int handling (plain number, Yjs bigint beyond 53 bits); its
  ``exact`` column shows the values it does not return exactly.

Prints one JSON object. ``python benchmarks/values_encoding.py``.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from typing import Any

import pycrdt

from crdtsync import values

N = 10_000
_Q = struct.Struct(">q")


def v1(value: Any) -> Any:
    if isinstance(value, int):
        return b"\x01" + _Q.pack(value)
    if isinstance(value, bytes):
        return b"\x00" + value
    return value


def v1_read(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        if len(value) == 9 and value[0] == 1:
            return _Q.unpack_from(value, 1)[0]
        return bytes(value[1:])
    return value


def dec(value: Any) -> Any:
    return str(value) if isinstance(value, int) else value


def dec_read(value: Any) -> Any:
    return int(value) if isinstance(value, str) else raw_read(value)


def raw_read(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytearray) else value


ENCODINGS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "v1-tagged": (v1, v1_read),
    "v2": (values.encode_value, values.decode_leaf),
    "decimal-str": (dec, dec_read),
    "yjs-bigint": (lambda v: v, raw_read),
}

DATA: dict[str, list[Any]] = {
    "small int": [i * 7 - 5000 for i in range(N)],
    "64-bit int": [(i * 0x9E3779B97F4A7C15) % 2**63 - 2**62 for i in range(N)],
    "float": [i / 7 for i in range(N)],
    "bytes(16)": [i.to_bytes(16, "big") for i in range(N)],
}


def run(
    encode: Callable[[Any], Any], decode: Callable[[Any], Any], data: list[Any]
) -> dict[str, Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    arr = doc.get("a", type=pycrdt.Array)
    start = time.perf_counter()
    try:
        with doc.transaction():
            for v in data:
                arr.append(encode(v))
    except BaseException as exc:  # noqa: BLE001  (pycrdt panics are BaseExceptions)
        return {"error": f"{type(exc).__name__}: {exc}"[:80]}
    write = time.perf_counter() - start
    update = doc.get_update()
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    other.apply_update(update)
    start = time.perf_counter()
    got = [decode(v) for v in other.get("a", type=pycrdt.Array)]
    read = time.perf_counter() - start
    wrong = sum(1 for a, b in zip(got, data, strict=True) if type(a) is not type(b) or a != b)
    return {
        "update_bytes": len(update),
        "write_us": round(write / len(data) * 1e6, 2),
        "read_us": round(read / len(data) * 1e6, 2),
        "inexact": wrong,
    }


def main() -> None:
    out = {
        kind: {name: run(e, d, data) for name, (e, d) in ENCODINGS.items()}
        for kind, data in DATA.items()
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
