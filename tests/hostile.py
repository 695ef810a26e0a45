"""Generators of hostile inputs (issue #11): lib0 v1 updates and msgpack frames that passed the
strict validator (or the wire decoder) before the limits, and hurt whoever integrated or read
them.

Each generator returns bytes built directly (no pycrdt), so the shapes are exact and cheap to
make at any size. :func:`run_limited` runs a function in a child process under an address-space
cap and a wall-clock timeout, so a crash, an abort or a hang shows as a result, not a dead
test run. :class:`RawPeer` drives one websocket connection by hand (the attacker of the
over-the-wire tests), :func:`honest_update` and :func:`until` are what those tests share;
:func:`slow_reader_socket` is the socket of a peer that does not read (back-pressure tests).
Shared by ``tests/test_hostile_updates.py``, ``test_hostile_refusals.py``,
``test_hostile_wire.py`` and the fuzzers.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import resource
import socket
from collections.abc import Callable
from typing import Any

import pycrdt
from websockets.exceptions import ConnectionClosed

from crdtsync import wire

__all__ = [
    "RawPeer",
    "big_delete_set",
    "format_in_map",
    "hostile_shapes",
    "honest_update",
    "many_chars",
    "many_items",
    "many_unmerged",
    "nested_maps",
    "nested_xml",
    "one_value_chain",
    "root_array",
    "run_limited",
    "same_origin_fan",
    "string",
    "subdoc_in_map",
    "uint",
    "until",
]


def uint(n: int) -> bytes:
    """lib0 varuint."""
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def string(s: str) -> bytes:
    """lib0 string: varuint UTF-8 length then the bytes."""
    b = s.encode()
    return uint(len(b)) + b


_ROOT = b"\x01" + string("root")  # parent_info 1: a root type named "root"
_ANY_ONE = b"\x01\x7d\x00"  # Any content: 1 value, varint 0
_EMPTY_DS = b"\x00"


def _client(client: int, clock: int, structs: list[bytes]) -> bytes:
    return uint(len(structs)) + uint(client) + uint(clock) + b"".join(structs)


def _update(sections: list[bytes], ds: bytes = _EMPTY_DS) -> bytes:
    return uint(len(sections)) + b"".join(sections) + ds


def root_array(client: int = 1) -> bytes:
    """One item: a one-value Any in the root type ``root`` (the anchor the fans hang off)."""
    return _update([_client(client, 0, [b"\x08" + _ROOT + _ANY_ONE])])


def same_origin_fan(n: int, anchor: int = 1, first: int = 2) -> bytes:
    """``n`` one-value items of clients ``first``.. ``first+n-1``, all with origin (anchor, 0)
    and no right origin. Integrated after a fan of lower clients at the same origin, each item
    scans every one of those (YATA's conflict loop: same origin, lower client, go on): two such
    pushes cost O(n^2) in Yrs."""
    sections = [
        _client(first + i, 0, [b"\x88" + uint(anchor) + b"\x00" + _ANY_ONE]) for i in range(n)
    ]
    return _update(sections)


def one_value_chain(n: int, client: int = 2, anchor: int = 1) -> bytes:
    """``n`` one-value items of one client, each with right origin = the previous one (each is
    inserted in front of the last): the shape of a chain of single items Yrs cannot squash."""
    structs = [b"\x48" + uint(anchor) + b"\x00" + _ANY_ONE]
    for k in range(1, n):
        structs.append(b"\x48" + uint(client) + uint(k - 1) + _ANY_ONE)
    return _update([_client(client, 0, structs)])


def nested_maps(depth: int, client: int = 1) -> bytes:
    """Map in map ... ``depth`` deep, hung off the root map ``root`` under key "k"."""
    structs = [b"\x27" + _ROOT + string("k") + b"\x01"]  # Type content, parentSub, YMap
    for k in range(1, depth):
        structs.append(b"\x27" + b"\x00" + uint(client) + uint(k - 1) + string("k") + b"\x01")
    return _update([_client(client, 0, structs)])


def nested_xml(depth: int, client: int = 1) -> bytes:
    """XmlElement in XmlElement ... ``depth`` deep under the root fragment ``root``."""
    el = b"\x03" + string("p")
    structs = [b"\x07" + _ROOT + el]
    for k in range(1, depth):
        structs.append(b"\x07" + b"\x00" + uint(client) + uint(k - 1) + el)
    return _update([_client(client, 0, structs)])


def format_in_map(client: int = 1) -> bytes:
    """A Format item stored as the value of key "f" of the root map (27 bytes)."""
    return _update(
        [_client(client, 0, [b"\x26" + _ROOT + string("f") + string("b") + string("1")])]
    )


def subdoc_in_map(client: int = 1) -> bytes:
    """A subdocument (Doc content) as the value of key "d" of the root map."""
    doc = string("guid-1") + b"\x76\x00"  # options: empty Any object
    return _update([_client(client, 0, [b"\x29" + _ROOT + string("d") + doc])])


def many_items(n: int, client: int = 1) -> bytes:
    """``n`` one-value Any items appended one after the other, unsquashed: "chained one-value
    items". Yrs squashes the run at the end of the transaction in O(n^2) time and memory."""
    structs = [b"\x08" + _ROOT + _ANY_ONE]
    for k in range(1, n):
        structs.append(b"\x88" + uint(client) + uint(k - 1) + _ANY_ONE)
    return _update([_client(client, 0, structs)])


def many_chars(n: int, client: int = 1) -> bytes:
    """``n`` one-character String items typed one after the other into the root text,
    unsquashed (Yrs merges them linearly: the honest shape at the struct limit)."""
    structs = [b"\x04" + _ROOT + string("a")]
    for k in range(1, n):
        structs.append(b"\x84" + uint(client) + uint(k - 1) + string("a"))
    return _update([_client(client, 0, structs)])


def many_unmerged(n: int, client: int = 1) -> bytes:
    """``n`` one-character String items of one client, each typed in front of the previous
    one (right origin = the previous item, no origin): none continues another, so Yrs merges
    none. The honest shape of typing backwards; used at the struct limit."""
    structs = [b"\x04" + _ROOT + string("a")]
    for k in range(1, n):
        structs.append(b"\x44" + uint(client) + uint(k - 1) + string("a"))
    return _update([_client(client, 0, structs)])


def big_delete_set(n: int, client: int = 1) -> bytes:
    """No structs, and a delete set of ``n`` one-clock ranges of one client."""
    ranges = b"".join(uint(2 * k) + b"\x01" for k in range(n))
    return _update([], uint(1) + uint(client) + uint(n) + ranges)


def _child(conn: Any, as_bytes: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    # The cap is on top of what the fork inherited (a pytest process with everything imported
    # maps far more than a fresh interpreter), so a result does not depend on the test run.
    with open("/proc/self/statm") as f:
        inherited = int(f.read().split()[0]) * resource.getpagesize()
    limit = inherited + as_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - report everything, PanicException included
        conn.send(("raised", f"{type(exc).__name__}: {exc}"[:500]))


def run_limited(
    fn: Callable[..., Any], *args: Any, mem_mib: int = 1024, timeout: float = 30.0
) -> tuple[str, Any]:
    """Run ``fn(*args)`` in a forked child with RLIMIT_AS = what it inherited + ``mem_mib``,
    and a timeout.

    Returns ``("ok", result)``, ``("raised", message)``, ``("timeout", None)`` or
    ``("died", exitcode)`` (a negative exitcode is the signal: -11 a segfault, -6 an abort).
    ``fn`` and its result must be picklable.
    """
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, mem_mib << 20, fn, args))
    proc.start()
    child.close()
    try:
        if parent.poll(timeout):
            try:
                result = parent.recv()
            except EOFError:
                result = None
            proc.join(5)
            if result is not None:
                return result  # type: ignore[no-any-return]
            return "died", proc.exitcode
        return "timeout", None
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()


class RawPeer:
    """A hand-driven peer on an open websocket ``ws``: reads (and drops) everything in the
    background and notes the close code the agent sent. ``read=False``: reads nothing (a
    peer that asks and never reads; with ``max_queue=1`` on the client, TCP back-pressure
    reaches the agent after a few frames)."""

    def __init__(self, ws: Any, read: bool = True) -> None:
        self.ws = ws
        self.code: int | None = None
        self.closed = asyncio.Event()
        self.frames: list[bytes] = []  # the first few frames received (the agent's Hello first)
        self._task = asyncio.create_task(self._read()) if read else None

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if len(self.frames) < 4:
                    self.frames.append(frame)
        except ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        self.code = rcvd.code if rcvd is not None else None
        self.closed.set()

    async def send(self, msg: Any) -> None:
        await self.ws.send(wire.encode(msg))


def honest_update(key: str, value: str) -> bytes:
    """A pycrdt update setting ``key`` = ``value`` in the root map (what an honest peer sends)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("root", type=pycrdt.Map)[key] = value
    return doc.get_update()


async def until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait until ``cond()`` (polled every 20 ms); TimeoutError after ``timeout`` s."""
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not reached within {timeout} s: {what}") from None


def hostile_shapes() -> list[bytes]:
    """One of each hostile but well-formed shape above, at a size that costs work: the
    validator's builds are compared on them (tests/yjs/test_cscan.py, test_scan_builds.py)."""
    return [
        same_origin_fan(300),
        same_origin_fan(50),
        one_value_chain(3000),
        nested_maps(70),
        nested_xml(70),
        format_in_map(),
        subdoc_in_map(),
        many_chars(2000),
        many_unmerged(2000),
        big_delete_set(2000),
    ]


def slow_reader_socket(address: str) -> socket.socket:
    """A non-blocking socket connected to the agent at ``address`` (``ws://host:port``) with a
    4 KiB receive buffer: handed to ``websockets.connect(sock=...)``, it is a peer whose
    buffers fill at once when it stops reading, so the agent's back-pressure shows."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(address.rsplit(":", 1)[1])))
    sock.setblocking(False)
    return sock
