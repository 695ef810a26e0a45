"""Stopping an agent cleanly on SIGTERM / SIGINT (the library user's shutdown story).

A SIGKILLed agent loses nothing it flushed (every change reaches the disk within the agent's
``durability_interval`` anyway), but a SIGTERM should still end with a last flush, peers told
goodbye and the data directory unlocked. Python's default SIGTERM action ends the process at
once, without running ``finally`` blocks or ``async with`` exits, so an agent needs a handler::

    from crdtsync import Agent, stop_event

    async def main() -> None:
        async with Agent("worker", data_dir="data/worker", peers=[...]) as agent:
            stop = stop_event()                    # set on SIGTERM or SIGINT
            while not stop.is_set():
                ...                                # work
        # leaving the block flushed and closed the agent

or, for an agent that only serves: ``await run_until_signal(agent)``.

A process that serves for long can also call :func:`tune_for_serving` once its agents are
started (what ``crdtsync agent`` does): ``gc.freeze()``, which cuts the latency tail of
received updates (issue 18).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["run_until_signal", "stop_event", "tune_for_serving"]

_DEFAULT = (signal.SIGTERM, signal.SIGINT)


def stop_event(signals: Iterable[int] = _DEFAULT) -> asyncio.Event:
    """An event set when one of ``signals`` arrives (handlers on the running loop; Unix).

    The signal number received is kept as the event's ``signum`` attribute.
    """
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def fire(signum: int) -> None:
        event.signum = signum  # type: ignore[attr-defined]
        event.set()

    for sig in signals:
        loop.add_signal_handler(sig, fire, int(sig))
    return event


async def run_until_signal(agent: Agent, signals: Iterable[int] = _DEFAULT) -> int:
    """Wait for one of ``signals``, then flush and close ``agent``; the signal number.

    Starts the agent first if it is not running yet. The handlers are removed on return.
    """
    sigs = tuple(signals)
    if agent._store is None and not agent._closed:  # not started yet
        await agent.start()
    stop = stop_event(sigs)
    try:
        await stop.wait()
    finally:
        loop = asyncio.get_running_loop()
        for sig in sigs:
            loop.remove_signal_handler(sig)
        await agent.close()
    return int(getattr(stop, "signum", 0))


def tune_for_serving() -> None:
    """Move what start-up made out of the cyclic garbage collector's reach; call once after
    the process's agents are started (what ``crdtsync agent`` does).

    Collects, then freezes every object alive now (modules, classes, the agents' long-lived
    state: ``gc.freeze()``). Otherwise the next full collection walks them all: 15-57 ms
    measured in a paced fanout receiver on a loaded 2-core machine, a pause that every update
    in flight waits for, and the receivers of one stream reach it at about the same update
    (they allocate alike). Objects made later are collected as usual. It acts on the whole
    interpreter, hence a function for the application to call rather than something
    :class:`~crdtsync.Agent` does by itself.
    """
    gc.collect()
    gc.freeze()
