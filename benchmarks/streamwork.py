"""The live-streaming workload of ``stream.py``, run inside the child processes (``nodes.py``).

One writer replays a sequential editing trace into a root-level ``pycrdt.Text`` (``text:<tag>``,
what ``Shard.text(tag)`` names; one per phase), each edit its own transaction, yielding to the event loop
after each, as fast as it can or paced on an absolute schedule. Followers record, inside
their document observer, when each prefix of the edits has arrived.

How a follower knows which edits it holds without any marker in the document: updates reach
it in the writer's order, so it always holds a prefix of the edits. Every edit inserts or
deletes characters; the writer's clock in the follower's state vector counts the inserted
characters, and ``clock - len(text)`` the deleted ones (only the writer writes). Their sum is
the number of edited characters of the prefix (counted from the writer's clock when
following starts: an earlier phase's text is complete by then), which identifies the prefix (a bisection of the
cumulative counts). The follower records ``(time_ns, edits held)`` after each transaction that
changed the count; the parent joins that with the writer's per-edit stamps.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import gc
import gzip
import hashlib
import json
import time
from array import array
from itertools import accumulate
from pathlib import Path
from typing import Any

import pycrdt

__all__ = ["Follower", "load_edits", "stream_edits", "text_root", "text_sha"]


def text_root(tag: str) -> str:
    """The root name of ``Shard.text(tag)``; the hub's clients use the same root Text."""
    return f"text:{tag}"


def load_edits(trace: str | Path, n: int | None) -> list[tuple[int, int, str]]:
    """The first ``n`` patches (all if None) of a sequential trace, in order."""
    edits = _all_edits(str(trace))
    return list(edits if n is None else edits[:n])


@functools.lru_cache(maxsize=2)
def _all_edits(trace: str) -> tuple[tuple[int, int, str], ...]:
    """Every patch of a trace, parsed once per process (the JSON is 16 MB for the paper)."""
    with gzip.open(trace, "rt", encoding="utf-8") as f:
        data = json.load(f)
    edits = tuple((pos, n_del, ins) for txn in data["txns"] for pos, n_del, ins in txn["patches"])
    del data
    # The harness's own copy of the trace (hundreds of thousands of objects, in every child
    # process, whatever the system) is moved out of the cyclic GC's reach: a full collection
    # that scans it took 35-150 ms here, a pause that would land in some edit's latency and
    # belongs to no system under test. Objects made later (the systems') are collected as usual.
    gc.collect()
    gc.freeze()
    return edits


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def apply_edit(text: pycrdt.Text, pos: int, n_del: int, ins: str) -> None:
    if n_del:
        del text[pos : pos + n_del]
    if ins:
        text.insert(pos, ins)


async def stream_edits(
    doc: pycrdt.Doc, text: pycrdt.Text, cmd: dict[str, Any], flush: Any = None
) -> dict[str, Any]:
    """Replay ``cmd["trace"]``'s first ``cmd["n"]`` edits into ``text``, one transaction each,
    yielding after each; ``cmd["rate"]`` > 0 paces them. The time of each edit (just before
    its transaction) goes to ``cmd["out"]`` (int64 ns). ``flush`` (awaited after the last
    edit, if given) makes the replay durable; its end is ``durable_ns``."""
    edits = load_edits(cmd["trace"], cmd["n"])
    rate = float(cmd.get("rate") or 0)
    stamps = array("q")
    start = time.perf_counter()
    for i, (pos, n_del, ins) in enumerate(edits):
        if rate > 0:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        stamps.append(time.time_ns())
        with doc.transaction():
            apply_edit(text, pos, n_del, ins)
        await asyncio.sleep(0)
    end_ns = time.time_ns()
    durable_ns = None
    if flush is not None:
        await flush()
        durable_ns = time.time_ns()
    Path(cmd["out"]).write_bytes(stamps.tobytes())
    return {
        "event": "streamed",
        "tag": cmd.get("tag"),
        "n": len(edits),
        "first_ns": stamps[0] if stamps else end_ns,
        "end_ns": end_ns,
        "durable_ns": durable_ns,
        "sha": text_sha(str(text)),
        "client_id": doc.client_id,
    }


def _writer_clock(doc: pycrdt.Doc, client: int) -> int:
    """The writer's clock in ``doc``'s state vector (lib0 varints: count, then pairs)."""
    sv = doc.get_state()
    pos = 0

    def varint() -> int:
        nonlocal pos
        out = shift = 0
        while True:
            b = sv[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            if b < 0x80:
                return out
            shift += 7

    for _ in range(varint()):
        c, clock = varint(), varint()
        if c == client:
            return clock
    return 0


class Follower:
    """Records when each prefix of the writer's edits arrives (see the module docstring).

    ``done`` resolves with the ``followed`` event once all ``n`` edits are held and the text
    equals the expected content (``sha``).
    """

    def __init__(self, doc: pycrdt.Doc, text: pycrdt.Text, cmd: dict[str, Any]) -> None:
        edits = load_edits(cmd["trace"], cmd["n"])
        self.n = len(edits)
        self.cum = [0, *accumulate(len(ins) + n_del for _, n_del, ins in edits)]
        self.doc, self.text, self.cmd = doc, text, cmd
        self.client = int(cmd["client_id"])
        self.base = _writer_clock(doc, self.client)
        self.held = 0
        self.log: list[tuple[int, int]] = []
        self.done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._last_ns = time.time_ns()
        self._pending = False
        self._sub = doc.observe(self._on_transaction)
        self._check()  # what arrived before the observer was installed

    def _on_transaction(self, _event: Any) -> None:
        # Inside the observer only the time is taken (the doc is mid-commit); the count is read
        # just after, and belongs to the last transaction seen before that read.
        self._last_ns = time.time_ns()
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._pending = False
        now = self._last_ns
        clock = _writer_clock(self.doc, self.client) - self.base
        chars = 2 * clock - len(self.text)
        held = bisect.bisect_right(self.cum, chars) - 1
        if held > self.held:
            self.held = held
            self.log.append((now, held))
            if held >= self.n and not self.done.done():
                self.done.get_loop().call_soon(self._finish)

    def _finish(self) -> None:
        if self.done.done():
            return
        content = str(self.text)
        self.done.set_result(
            {
                "event": "followed",
                "tag": self.cmd.get("tag"),
                "done_ns": self.log[-1][0],
                "checked_ns": time.time_ns(),
                "sha": text_sha(content),
                "matches": text_sha(content) == self.cmd["sha"],
                "len": len(content),
            }
        )

    def dump(self) -> dict[str, Any]:
        """Write the arrival log to ``cmd["log"]`` (JSON pairs), after the phase."""
        self.doc.unobserve(self._sub)
        Path(self.cmd["log"]).write_text(json.dumps(self.log))
        return {"event": "follow-dumped", "tag": self.cmd.get("tag")}
