"""``CRDTSYNC_BENCH_EVLOG=DIR``: what each benchmark child process did, and when (investigations).

Installed by ``nodes.py`` when the variable is set (off by default; nothing in the library
changes: wrappers on module attributes). Every event is a tuple ``(time.time_ns(), kind, a,
b)`` appended to one list, written as JSON to ``DIR/ev-<name>-<pid>.json`` when the process
exits. The kinds:

``set``      the writer's map set of key ``a`` (its stamp is the time, to the microsecond)
``s``        a websocket frame sent (``a``: crdtsync message type or ``?``, ``b``: bytes)
``d0 d1``    websockets' ``data_received`` (``a``: bytes): a socket read, and with crdtsync's
             inline frames the whole handling of the frame in it
``rx0 rx1``  ``GossipCore.receive`` (``a``: message type)
``arr``      the benchmark's map observer saw key ``a`` (the arrival of ``Arrivals``)
``sel0 sel1`` the event loop entered / left ``select`` (``b``: ready events): the process was
             idle between them
``tk0 tk1``  the gossip core's timer tick (the transport's timer callback, with its pump)
``c0 c1``    one group commit on the loop side (from the hand-over to the worker thread
             until ``on_durable`` and the flushers ran)
``w0 w1``    the LMDB commit in the worker thread
``gc0 gc1``  a garbage collection (``a``: generation, ``b``: collected)

``tail_report.py`` merges the files of one run into a per-update timeline of the slow
updates.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["EV", "dump", "install", "note_set"]

EV: list[tuple[int, str, Any, Any]] = []
_now = time.time_ns


def note_set(key: str) -> None:
    """The writer is about to set ``key`` (called by ``write_keys`` when installed)."""
    EV.append((_now(), "set", key, 0))


def _name() -> str:
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--name" and i + 1 < len(argv):
            return argv[i + 1]
    return (argv[1] if len(argv) > 1 else "proc").replace("-", "")


def install(frame_type: Any) -> None:
    """Install every hook; ``frame_type(bytes) -> str`` names a crdtsync frame."""
    ev = EV.append

    def _gc(phase: str, info: dict[str, Any]) -> None:
        ev((_now(), "gc0" if phase == "start" else "gc1", info["generation"], info["collected"]))

    gc.callbacks.append(_gc)

    from websockets.asyncio.connection import Connection
    from websockets.protocol import Protocol

    inner_send = Protocol.send_binary

    def send_binary(self: Protocol, data: Any, fin: bool = True) -> None:
        ev((_now(), "s", frame_type(bytes(data[:6])) if data else "?", len(data)))
        inner_send(self, data, fin)

    Protocol.send_binary = send_binary  # type: ignore[method-assign]
    from crdtsync.transports._ws_inline import InlineFrames

    # crdtsync's connections enter at InlineFrames.data_received (a read of one binary frame
    # does not reach websockets' own); the peers' clients at websockets'. Each read once.
    for owner, skip_inline in ((Connection, True), (InlineFrames, False)):
        inner_data = owner.data_received

        def data_received(
            self: Connection, data: bytes, inner_data: Any = inner_data, skip: bool = skip_inline
        ) -> None:
            if skip and isinstance(self, InlineFrames):
                inner_data(self, data)
                return
            ev((_now(), "d0", len(data), 0))
            try:
                inner_data(self, data)
            finally:
                ev((_now(), "d1", 0, 0))

        owner.data_received = data_received  # type: ignore[method-assign]
    import selectors

    for cls_name in ("EpollSelector", "PollSelector", "SelectSelector"):
        cls = getattr(selectors, cls_name, None)
        if cls is None:
            continue

        def wrap_select(inner: Any) -> Any:
            def select(self: Any, timeout: float | None = None) -> Any:
                ev((_now(), "sel0", 0, 0))
                got = inner(self, timeout)
                ev((_now(), "sel1", 0, len(got)))
                return got

            return select

        cls.select = wrap_select(cls.select)
    try:
        _install_crdtsync(ev)
    except ImportError:  # a hub client's process may not have crdtsync's transports
        pass

    atexit.register(dump)


def dump() -> None:
    """Write the events so far (again at each phase's ``dump``: a hub client may be killed
    rather than exit)."""
    out = Path(os.environ["CRDTSYNC_BENCH_EVLOG"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ev-{_name().replace('/', '-')}-{os.getpid()}.json"
    path.write_text(json.dumps(EV))


def _install_crdtsync(ev: Any) -> None:
    from crdtsync.transports._ws_effects import _Effects

    from crdtsync.durability import GroupCommitter
    from crdtsync.gossip.core import GossipCore

    on_timer = _Effects._on_timer

    def timed_on_timer(self: Any, deadline: float) -> None:
        ev((_now(), "tk0", 0, 0))
        try:
            on_timer(self, deadline)
        finally:
            ev((_now(), "tk1", 0, 0))

    _Effects._on_timer = timed_on_timer  # type: ignore[method-assign]
    commit_once = GroupCommitter._commit_once

    async def timed_commit_once(self: Any) -> None:
        ev((_now(), "c0", 0, 0))
        try:
            await commit_once(self)
        finally:
            ev((_now(), "c1", 0, 0))

    GroupCommitter._commit_once = timed_commit_once  # type: ignore[method-assign]
    in_worker = GroupCommitter._commit_in_worker

    def timed_in_worker(self: Any, *a: Any, **k: Any) -> Any:
        ev((_now(), "w0", 0, 0))
        try:
            return in_worker(self, *a, **k)
        finally:
            ev((_now(), "w1", 0, 0))

    GroupCommitter._commit_in_worker = timed_in_worker  # type: ignore[method-assign]
    receive = GossipCore.receive

    def timed_receive(self: Any, peer: str, msg: Any, *a: Any, **k: Any) -> Any:
        ev((_now(), "rx0", type(msg).__name__, 0))
        try:
            return receive(self, peer, msg, *a, **k)
        finally:
            ev((_now(), "rx1", 0, 0))

    GossipCore.receive = timed_receive  # type: ignore[method-assign]
