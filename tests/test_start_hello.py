"""``Agent.start()`` ends by giving its early-dialled seeds a few loop turns to send our Hello
(``_agent_wiring._hellos_progress``, issue 17, h-paper3): when ``start()`` returns the Hello is on
its way, before the caller's own set-up, and nothing has been received; a seed that never
answers the websocket upgrade does not hold ``start()`` beyond the bound of turns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from polling import until

import crdtsync._agent_wiring as wiring
from crdtsync import Agent

WS = "ws://127.0.0.1:0"


def _pending(agent: Agent) -> bool:
    return bool(agent._transport.hellos_pending())  # type: ignore[union-attr]


@pytest.mark.parametrize("turns", [0, 10_000])
async def test_the_hello_is_sent_before_start_returns_and_nothing_was_received(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, turns: int
) -> None:
    """With no turns (the order before h-paper3) the dial has not even taken its early
    connection when ``start()`` returns; with turns enough for a holder in this very loop to
    answer the upgrade, our Hello was written, and the holder's Hello not yet read (no peer
    connected), so the caller's ``agent.shard()`` still runs before any message is handled.
    The join completes either way."""
    monkeypatch.setattr(wiring, "_HELLO_TURNS", turns)
    async with Agent("holder", tmp_path / "h", listen=WS) as holder:
        shard = await holder.shard("doc")
        for i in range(50):
            shard[f"k{i}"] = i
        joiner = Agent("joiner", tmp_path / "j", peers=[holder.address or ""])
        await joiner.start()
        try:
            assert _pending(joiner) is (turns == 0)
            assert not any(p.state == "connected" for p in joiner.peers)
            mine = await joiner.shard("doc")
            await until(lambda: len(mine) == 50, timeout=20)
        finally:
            await joiner.close()


async def test_a_seed_that_never_answers_the_upgrade_does_not_hold_start(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TCP peer that accepts and says nothing: ``start()`` returns after its turns, with our
    Hello still pending (the dial waits on the upgrade), and the agent closes cleanly."""
    turns: list[int] = []
    real_sleep = asyncio.sleep

    async def counting_sleep(delay: float, *args: Any) -> Any:
        if delay == 0:
            turns.append(1)
        return await real_sleep(delay, *args)

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):  # the upgrade request, never answered, until closed
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        joiner = Agent("joiner", tmp_path / "j", peers=[f"ws://127.0.0.1:{port}"])
        monkeypatch.setattr(wiring.asyncio, "sleep", counting_sleep)
        await asyncio.wait_for(joiner.start(), 5)
        monkeypatch.setattr(wiring.asyncio, "sleep", real_sleep)
        try:
            assert _pending(joiner)
            # the early dials' turns (one before the store, _EARLY_TURNS after) and ours
            assert len(turns) <= 1 + wiring._EARLY_TURNS + wiring._HELLO_TURNS
            assert len(turns) > 1 + wiring._EARLY_TURNS  # ours ran: the Hello was pending
        finally:
            await asyncio.wait_for(joiner.close(), 20)
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
