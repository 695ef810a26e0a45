"""Early dials (``transports/_ws_early.py``): a starting agent's seed connections are opened
before its store, then run by its transport as its seed dials; nothing reaches the agent before
its core exists, unused or refused early connections are closed, failures keep the dial's path."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path
from typing import Any

import pytest
from crdtsync.transports import _ws_early
from crdtsync.transports._ws_early import EarlyDials, client_options, dial_early
from crdtsync.transports.memory import MemoryReplicas
from crdtsync.transports.websocket import WebsocketTransport
from polling import until
from websockets.asyncio.server import ServerConnection, serve
from websockets.protocol import State

import crdtsync.agent as agent_module
from crdtsync import Agent, GossipConfig
from crdtsync._compose import websocket_transport
from crdtsync.errors import ClosedError, DataDirLocked
from crdtsync.gossip import GossipCore

WS = "ws://127.0.0.1:0"
FAST = GossipConfig.lan(backoff_base=0.05, backoff_max=0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Recorder:
    """Wraps the default factory's ``dial_early`` and ``Store``: what was dialled early, and
    whether the dial had started when the store was opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.early: list[EarlyDials] = []
        self.dialled_before_store: list[tuple[str, bool]] = []  # (data dir, started)
        real_dial, real_store = _ws_early.dial_early, agent_module.Store

        def recording_dial(addresses: Any, *, max_frame: int) -> EarlyDials:
            early = real_dial(addresses, max_frame=max_frame)
            self.early.append(early)
            return early

        def recording_store(*args: Any, **kwargs: Any) -> Any:
            # the connect of each early dial was started (its task ran) before the store opens
            tasks = [t for e in self.early for t in e._tasks.values()]
            started = bool(tasks) and all(_started(t) for t in tasks)
            self.dialled_before_store.append((Path(args[0]).name, started))
            return real_store(*args, **kwargs)

        monkeypatch.setattr(_ws_early, "dial_early", recording_dial)
        monkeypatch.setattr(agent_module, "Store", recording_store)


def _started(task: asyncio.Task[Any]) -> bool:
    """The task ran its first step (it is waiting on the connect, or already done)."""
    return task.done() or task._fut_waiter is not None  # type: ignore[attr-defined]


async def test_the_seed_is_dialled_before_the_store_and_run_as_the_seed_dial(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch)
    async with Agent("holder", tmp_path / "h", listen=WS) as holder:
        shard = await holder.shard("doc")
        for i in range(200):
            shard[f"k{i}"] = i
        assert rec.early == []  # no seeds, no early dial
        joiner = Agent("joiner", tmp_path / "j", peers=[holder.address or ""])
        await joiner.start()
        mine = await joiner.shard("doc")  # no await since start(): nothing could arrive yet
        try:
            assert rec.dialled_before_store == [("h", False), ("j", True)]
            (early,) = rec.early
            await until(lambda: len(mine) == 200)
            assert early.taken == [holder.address] and len(early) == 0
            assert mine.digest() == shard.digest()
            assert joiner.seeds == {holder.address: "connected"}
            # one connection between them: the early one, not a second dial
            assert [p.name for p in holder.peers] == ["joiner"]
            assert len(holder._transport.connections()) == 1  # type: ignore[union-attr]
        finally:
            await joiner.close()


async def test_nothing_reaches_the_joiner_before_its_core_exists(tmp_path: Any) -> None:
    # The early connection is complete while the store opens; the holder must not speak on it
    # (it waits for the dialer's Hello, which only the core's handshake queues).
    async with Agent("holder", tmp_path / "h", listen=WS) as holder:
        (await holder.shard("doc"))["x"] = 1
        joiner = Agent("joiner", tmp_path / "j", peers=[holder.address or ""])
        await joiner._dial_seeds_early(websocket_transport)  # the first step of start()
        early = joiner._early_dials
        assert isinstance(early, EarlyDials)
        (task,) = list(early._tasks.values())
        ws = await asyncio.wait_for(task, 20)  # connected and upgraded, no store, no core
        with pytest.raises(TimeoutError):  # the holder had time to say something: it did not
            await asyncio.wait_for(ws.recv(), 0.3)
        assert list(holder.peers) == []  # and it knows no peer yet
        joiner._early_dials = None
        await early.close()
        assert ws.state is State.CLOSED


async def test_an_early_dial_not_taken_is_closed() -> None:
    opened: list[ServerConnection] = []
    closed = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        opened.append(ws)
        await ws.wait_closed()
        closed.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        early = dial_early([f"ws://127.0.0.1:{port}"], max_frame=1 << 20)
        await until(lambda: len(opened) == 1)
        await early.close()
        await asyncio.wait_for(closed.wait(), 20)
        failed = dial_early([f"ws://127.0.0.1:{free_port()}"], max_frame=1 << 20)
        await failed.close()  # a failed connect is collected, not left unretrieved
        assert len(failed) == 0


async def test_an_unreachable_seed_dialled_early_is_retried_until_it_appears(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch)
    port = free_port()
    address = f"ws://127.0.0.1:{port}"
    joiner = Agent("joiner", tmp_path / "j", peers=[address], gossip=FAST)
    await joiner.start()
    try:
        mine = await joiner.shard("doc")
        await until(lambda: joiner.seeds[address].startswith("unreachable"))
        assert rec.early[0].taken == [address]  # the failed early dial went the dial's path
        async with Agent("holder", tmp_path / "h", listen=address, gossip=FAST) as holder:
            (await holder.shard("doc"))["x"] = 1
            await until(lambda: joiner.seeds[address] == "connected" and len(mine) == 1)
    finally:
        await joiner.close()


async def test_a_locked_data_dir_closes_the_early_dials(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch)
    async with Agent("holder", tmp_path / "h", listen=WS) as holder:
        async with Agent("first", tmp_path / "j"):
            second = Agent("second", tmp_path / "j", peers=[holder.address or ""])
            with pytest.raises(DataDirLocked):
                await second.start()
            (early,) = rec.early
            assert len(early) == 0 and early.taken == []
            assert second._early_dials is None
            # the holder never got a Hello from it and holds no connection from it
            await until(lambda: len(holder._transport.connections()) == 0)  # type: ignore[union-attr]
            assert list(holder.peers) == []


def test_with_credentials_nothing_is_dialled_early(tmp_path: Any) -> None:
    agent = Agent("a", tmp_path / "a", peers=["ws://127.0.0.1:9"])
    agent._credentials = object()  # type: ignore[assignment]  (only its presence is read)

    class Factory:
        def dial_early(self, *a: Any, **k: Any) -> Any:
            raise AssertionError("dialled early with credentials")

    asyncio.run(agent._dial_seeds_early(Factory()))  # type: ignore[arg-type]
    assert agent._early_dials is None


async def test_the_transport_adopts_only_its_own_client_options() -> None:
    def core() -> GossipCore:
        return GossipCore("a", MemoryReplicas(random.Random(1)), rng=random.Random(1))

    default = WebsocketTransport(core(), max_frame=1 << 20)
    assert default._client_options() == client_options(max_frame=1 << 20)
    other = WebsocketTransport(core(), max_frame=1 << 20, open_timeout=3.0)
    opened: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        opened.append(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        early = dial_early([f"ws://127.0.0.1:{port}"], max_frame=1 << 20)
        await until(lambda: len(opened) == 1)  # (a dial not yet connected is just cancelled)
        assert other.adopt_early_dials(early) is False  # closed, to be dialled as usual
        await until(lambda: opened[0].state is State.CLOSED)
        assert len(early) == 0
        await other.close()
        await default.close()


async def test_close_while_start_yields_to_the_early_dials_undoes_the_start(tmp_path: Any) -> None:
    # start() now yields (to let the early connects go out): a close() in that window must not
    # leave a half-started agent with an open store or a connection behind.
    async with Agent("holder", tmp_path / "h", listen=WS) as holder:
        joiner = Agent("joiner", tmp_path / "j", peers=[holder.address or ""])
        starting = asyncio.create_task(joiner.start())
        await asyncio.sleep(0)  # start() is at its first yield, the store not open yet
        await joiner.close()
        with pytest.raises(ClosedError):
            await starting
        assert joiner._store is None and joiner._early_dials is None
        async with Agent("again", tmp_path / "j"):  # the data directory was left unlocked
            pass
        await until(lambda: len(holder._transport.connections()) == 0)  # type: ignore[union-attr]
