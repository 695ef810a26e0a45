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
started (what ``crdtsync agent`` does): two process-wide interpreter settings that cut the
latency tail of received updates (issue 18).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
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


#: The GIL switch interval :func:`tune_for_serving` sets at least (Python's default: 5 ms).
SERVING_SWITCH_INTERVAL = 0.05


def tune_for_serving(*, freeze: bool = True, switch_interval: float | None = None) -> None:
    """Process-wide settings for a long-running agent process; call once after start-up.

    * ``freeze``: collect, then move every object alive now (modules, classes, the agent's
      long-lived state) out of the cyclic garbage collector's reach (``gc.freeze()``). A
      full collection otherwise walks them all: 20-50 ms on a loaded 2-core machine, one
      pause that every update received or sent meanwhile waits for. Objects made later are
      collected as usual.
    * ``switch_interval`` (default :data:`SERVING_SWITCH_INTERVAL`, never lowered): how long
      a thread that wants the GIL waits before it forces the running one to hand it over.
      The agent's group commit runs in a worker thread; when that thread wakes while the
      event loop handles a frame for longer than the interval (of wall time: on a busy
      machine the loop thread is often preempted mid-frame), CPython makes the loop thread
      drop the GIL *and wait until the worker has taken it*, so the loop also waits for the
      worker thread to be scheduled. With a longer interval the loop releases the GIL
      itself when it next waits for the network, and a received update no longer waits
      for the commit thread's turn on a CPU. The commit only starts a little later, well
      within the durability interval: acks still follow it, so they still mean durable.

    Both are the application's choice (they act on the whole interpreter), hence a function
    to call rather than something :class:`~crdtsync.Agent` does by itself.
    """
    if freeze:
        gc.collect()
        gc.freeze()
    wanted = SERVING_SWITCH_INTERVAL if switch_interval is None else switch_interval
    if sys.getswitchinterval() < wanted:
        sys.setswitchinterval(wanted)
