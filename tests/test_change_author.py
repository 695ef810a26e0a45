"""Change.author over real websockets (issue 16): the agent that wrote a change, not the
neighbour that delivered it; None, honestly, for what came by an anti-entropy diff."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from crdtsync import Agent, Change, GossipConfig

WS = "ws://127.0.0.1:0"
DEBUG: list[object] = []


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` until true (the bound only stops a hung test; nothing is timed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached {DEBUG}")
        await asyncio.sleep(0.02)


async def test_direct_and_local_changes_name_their_author(tmp_path) -> None:
    async with Agent("a", tmp_path / "a", listen=WS) as a:
        async with Agent("b", tmp_path / "b", peers=[a.address or ""]) as b:
            sa, sb = await a.shard("s"), await b.shard("s")
            seen_a: list[Change] = []
            seen_b: list[Change] = []
            sa.on_change(seen_a.append)
            sb.on_change(seen_b.append)
            DEBUG[:] = [seen_a, seen_b]
            await until(lambda: bool(a.core and a.core.connected()))
            await until(lambda: sa.digest() == sb.digest())  # the on-connect round is over
            sa["x"] = 1
            await until(lambda: any(c.author == "a" and not c.local for c in seen_b))
            sb["y"] = 2
            await until(lambda: any(c.author == "b" and not c.local for c in seen_a))
            local = [c for c in seen_a if c.local]
            assert local and all(c.author == "a" for c in local)
            for change in seen_b:
                if not change.local:
                    assert change.origin == "a" and change.author in ("a", None)


async def test_relayed_change_names_the_writer_not_the_relay(tmp_path) -> None:
    # A chain of three (a tree of fanout 1): the ends are not connected, the middle relays.
    config = GossipConfig.lan(full_mesh_max=2, relay_max=0, fanout=1, tree_core=1)
    agents: list[Agent] = []
    try:
        first = Agent("n1", tmp_path / "n1", listen=WS, gossip=config)
        await first.start()
        agents.append(first)
        for name in ("n2", "n3"):
            agent = Agent(
                name, tmp_path / name, listen=WS, peers=[first.address or ""], gossip=config
            )
            await agent.start()
            agents.append(agent)

        def neighbours(agent: Agent) -> set[str]:
            return {p.name for p in agent.peers if p.neighbour}

        def settled() -> bool:
            if any(len(ag.peers) != 2 for ag in agents):
                return False
            return all(
                ag.core is not None and set(ag.core.connected()) == neighbours(ag) for ag in agents
            ) and sorted(len(neighbours(ag)) for ag in agents) == [1, 1, 2]

        await until(settled)
        middle = next(ag for ag in agents if len(neighbours(ag)) == 2)
        writer, reader = (ag for ag in agents if ag is not middle)
        ws, rs = await writer.shard("t"), await reader.shard("t")
        seen: list[Change] = []
        rs.on_change(seen.append)
        for i in range(5):
            ws[f"k{i}"] = i
        await until(lambda: rs.snapshot() == {f"k{i}": i for i in range(5)})
        # The writes were pushed along the chain: every one reached the reader through the
        # middle agent, and each says who wrote it. (A change that came by an anti-entropy
        # diff instead would say None; a wrong name is never allowed.)
        # (Path-less changes are each agent's value-format marker on the new shard: written by
        # whichever agent created its copy, the middle one included, and named so.)
        writes = [c for c in seen if c.paths]
        assert writes and all(c.origin == middle.name for c in seen)
        assert all(c.author in (writer.name, None) for c in writes)
        assert any(c.author == writer.name for c in writes)
        assert {c.author for c in seen if not c.paths} <= {writer.name, middle.name, None}
    finally:
        for agent in reversed(agents):
            await agent.close()


async def test_catch_up_by_diff_reports_unknown_author(tmp_path) -> None:
    # b was not running while a wrote: it catches up by an anti-entropy diff, which merges
    # whatever a holds (any number of writers), so its changes report author None.
    async with Agent("a", tmp_path / "a", listen=WS) as a:
        sa = await a.shard("s")
        sa["x"] = 1
        sa["y"] = 2
        await sa.flush()
        async with Agent("b", tmp_path / "b", peers=[a.address or ""]) as b:
            sb = await b.shard("s")
            seen: list[Change] = []
            sb.on_change(seen.append)
            await until(lambda: sb.snapshot() == {"x": 1, "y": 2})
            assert seen and all(c.origin == "a" and c.author is None for c in seen)


@pytest.mark.parametrize("chunk", [256])
async def test_big_delta_sent_in_pieces_keeps_its_author(tmp_path, chunk: int) -> None:
    config = GossipConfig.lan(chunk_bytes=chunk)
    async with Agent("a", tmp_path / "a", listen=WS, gossip=config) as a:
        async with Agent("b", tmp_path / "b", peers=[a.address or ""], gossip=config) as b:
            sa, sb = await a.shard("s"), await b.shard("s")
            await until(lambda: bool(a.core and a.core.connected()))
            await until(lambda: sa.digest() == sb.digest())  # the on-connect round is over
            seen: list[Change] = []
            sb.on_change(seen.append)
            sa["blob"] = "x" * (4 * chunk)  # one delta bigger than a chunk: DiffChunk pieces
            await until(lambda: sb.get("blob") == "x" * (4 * chunk))
            assert any(c.author == "a" for c in seen), seen
