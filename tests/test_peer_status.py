"""PeerStatus reads well, and ``crdtsync inspect --peer`` leaves no ghosts (issue 16)."""

from __future__ import annotations

from polling import until

from crdtsync import Agent, GossipConfig, PeerStatus
from crdtsync.cli.meshview import inspect_mesh
from crdtsync.messages import ShardState

WS = "ws://127.0.0.1:0"


def test_repr_is_one_readable_line_without_raw_bytes() -> None:
    sv = bytes([2, 7, 5, 9, 3])  # two clients: 5 + 3 items
    status = PeerStatus(
        "worker-1", "ws://127.0.0.1:9", "connected", 2, True, 10, 1, (ShardState("t", sv, b"\0"),)
    )
    text = repr(status)
    assert text == (
        "<PeerStatus 'worker-1' connected at ws://127.0.0.1:9 incarnation=2 neighbour "
        "queued=10B dropped=1 acked_items={'t': 8}>"
    )
    assert "\\x" not in text and "\n" not in text
    many = PeerStatus(
        "w", None, "dead", 0, False, acked=tuple(ShardState(f"s{i}", sv, b"\0") for i in range(9))
    )
    assert "at - " in repr(many) and "... (9 shards)" in repr(many)
    assert status.acked_items() == {"t": 8}


async def test_inspect_peer_leaves_no_ghosts(tmp_path) -> None:
    async with Agent("a", tmp_path / "a", listen=WS) as a:
        async with Agent("b", tmp_path / "b", listen=WS, peers=[a.address or ""]) as b:
            await until(lambda: len(a.peers) == 1 and len(b.peers) == 1)
            for _ in range(2):
                view = await inspect_mesh(a.address or "", settle=0.2)
                assert set(view.members) == {"a", "b"}  # no observer, no ghost
            # The observers came, were seen, and left: nobody lists them any more.
            await until(
                lambda: all(
                    not any(p.name.startswith("inspect-") for p in agent.peers) for agent in (a, b)
                )
            )
            assert [p.name for p in a.peers] == ["b"] and [p.name for p in b.peers] == ["a"]


async def test_a_departed_agent_that_listens_stays_listed_as_dead(tmp_path) -> None:
    # Only address-less departed agents are left out: a listening one that left may come
    # back at its address, and the user wants to see it is down.
    config = GossipConfig.lan(suspect_timeout=30.0)
    async with Agent("a", tmp_path / "a", listen=WS, gossip=config) as a:
        b = Agent("b", tmp_path / "b", listen=WS, peers=[a.address or ""], gossip=config)
        await b.start()
        c = Agent("c", tmp_path / "c", peers=[a.address or ""], gossip=config)  # a client
        await c.start()
        await until(lambda: {p.name for p in a.peers} == {"b", "c"})
        await b.close()
        await c.close()
        await until(lambda: [(p.name, p.state) for p in a.peers] == [("b", "dead")])
