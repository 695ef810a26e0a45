"""Polling with a bound, shared by the tests that wait for real agents (websockets, LMDB).

:func:`until` polls a condition every 20 ms. Its bound only stops a hung test with a clear
failure; nothing is timed, so no test asserts a duration through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["until"]


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until true; AssertionError if it is not within ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)
