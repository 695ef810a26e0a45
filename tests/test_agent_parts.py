"""The agent's parts meet through small interfaces: a transport factory, the shard registry
(the core's ReplicaSet), a ShardHost for shards, Protocols for the reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crdtsync.transports.websocket import WebsocketTransport

import crdtsync
from crdtsync import Agent, UsageError
from crdtsync._registry import ShardRegistry
from crdtsync.gossip import GossipCore
from crdtsync.transport import Transport, default_factory, set_default_factory


async def test_an_agent_runs_over_the_transport_it_is_given(tmp_path: Path) -> None:
    built: list[tuple[str, str | None, int]] = []

    def recording(
        core: GossipCore, *, listen: str | None, max_frame: int, on_activity: Callable[[], None]
    ) -> Transport:
        built.append((core.name, listen, max_frame))
        return WebsocketTransport(core, listen=listen, max_frame=max_frame, on_activity=on_activity)

    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0", transport=recording) as a:
        assert a.address is not None
        async with Agent("b", tmp_path / "b", peers=[a.address], transport=recording) as b:
            shard = await b.shard("s")
            shard["k"] = 1
            await shard.replicated(peers=1, timeout=10)
            assert (await a.shard("s")).snapshot() == {"k": 1}
    assert [(n, listen) for n, listen, _ in built] == [("a", "ws://127.0.0.1:0"), ("b", None)]
    assert isinstance(a.core, GossipCore) and isinstance(a.core.replicas, ShardRegistry)


async def test_the_default_transport_is_wired_by_the_package(tmp_path: Path) -> None:
    assert default_factory() is crdtsync._compose.websocket_transport
    saved = default_factory()
    set_default_factory(None)
    try:
        agent = Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0")
        with pytest.raises(UsageError, match="no transport"):
            await agent.start()
        async with Agent("a", tmp_path / "a") as alone:  # no peers: no transport needed,
            (await alone.shard("s"))["k"] = 1  # and the failed start left no lock behind
    finally:
        set_default_factory(saved)


async def test_the_registry_is_what_the_core_reads_and_writes(tmp_path: Path) -> None:
    async with Agent("a", tmp_path / "a", listen="ws://127.0.0.1:0") as agent:
        registry: Any = agent.core.replicas if agent.core is not None else None
        shard = await agent.shard("s")
        shard["k"] = "v"
        assert list(registry.shard_names()) == ["s"]
        assert registry.open("s") is shard
        assert agent.registry is registry and agent.local_shard("s") is shard
        await shard.flush()
        assert registry.durable_state("s") == shard.durable_state
    assert list(registry.shard_names()) == []  # closed: the core sees nothing any more


async def test_a_shard_without_host_says_so(tmp_path: Path) -> None:
    import pycrdt

    from crdtsync.shard import Shard
    from crdtsync.store import Store

    store = Store(tmp_path / "s")
    try:
        shard = Shard("s", pycrdt.Doc(), store, notify=lambda: None)
        with pytest.raises(UsageError, match="not served by an agent"):
            await shard.flush()
    finally:
        store.close()
