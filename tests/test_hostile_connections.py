"""Issue #11, rows "1,000 connections that never say Hello" and "4 connections each just under
the flood limit; reconnect-after-cut": real websockets on 127.0.0.1.

Each test ends with the connection refused or closed with a clear close code, a counter, and
an honest peer that connects and syncs afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

from test_websocket import CFG, nodes, until  # noqa: F401 (the fixture)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdtsync import wire
from crdtsync.errors import CloseCode
from crdtsync.messages import Summary
from crdtsync.quotas import ConnectionCap


async def _close_code(ws: Any, timeout: float = 10.0) -> int | None:
    """Read until the server closes ``ws``; its close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None
    return None  # pragma: no cover


async def _honest_sync(victim: Any, make: Any, name: str = "honest") -> None:
    victim.put("k", name)
    honest = await make(name, seeds=[victim.address])
    await until(lambda: honest.read() == victim.read(), what=f"{name} synced")


async def test_connections_that_never_say_hello_are_closed_at_the_deadline(nodes: Any) -> None:  # noqa: F811
    victim = await nodes("victim", connection_cap=ConnectionCap(handshake_timeout=0.5))
    silent = [await connect(victim.address, proxy=None) for _ in range(5)]
    codes = await asyncio.gather(*(_close_code(ws) for ws in silent))
    assert codes == [CloseCode.BAD_HANDSHAKE] * 5
    assert victim.transport.counters["handshake_timeout"] == 5
    await _honest_sync(victim, nodes)


async def test_connections_are_capped_per_address_and_in_all(nodes: Any) -> None:  # noqa: F811
    cap = ConnectionCap(max_total=10, max_per_address=3, handshake_timeout=60.0)
    victim = await nodes("victim", connection_cap=cap)
    held = [await connect(victim.address, proxy=None) for _ in range(3)]
    extra = await connect(victim.address, proxy=None)
    assert await _close_code(extra) == CloseCode.FLOODING
    assert victim.transport.counters["refused.connections-per-address"] == 1
    for ws in held:  # the slots are given back when they close
        await ws.close()
    await until(lambda: cap._total == 0, what="slots freed")
    await _honest_sync(victim, nodes)


async def test_a_flooder_cut_off_gets_no_fresh_budget_by_reconnecting(nodes: Any) -> None:  # noqa: F811
    from dataclasses import replace

    victim = await nodes("victim", config=replace(CFG, flood_rate=1.0, flood_burst=50.0))
    flooder = await nodes("flooder", seeds=[victim.address], config=CFG)
    # Both sides: the acceptor lists the dialer as soon as it accepted its Hello, the dialer
    # the acceptor only once the acceptor's Hello (sent after that) has come back.
    await until(
        lambda: victim.connected() == {"flooder"} and "victim" in flooder.transport._by_peer,
        what="connected",
    )
    ping = wire.encode(Summary(bytes(16), 0))
    link = flooder.transport._by_peer["victim"]
    for _ in range(60):  # over the burst
        await link.ws.send(ping)
    await until(lambda: "flooder" not in victim.connected(), what="cut off")
    assert victim.core.quota_counters["quota.flood"] >= 1
    # It redials at once (backoff 50 ms) and floods again: the bucket is the same one.
    before = victim.core.quota_counters["quota.flood"]
    await until(
        lambda: victim.connected() == {"flooder"} and "victim" in flooder.transport._by_peer,
        what="reconnected",
        timeout=20,
    )
    link = flooder.transport._by_peer["victim"]
    for _ in range(20):  # far fewer than a fresh burst of 50 would allow
        try:
            await link.ws.send(ping)
        except ConnectionClosed:
            break
    await until(lambda: victim.core.quota_counters["quota.flood"] > before, what="cut off again")
    await _honest_sync(victim, nodes)


def test_default_cap_leaves_room_for_a_loopback_relay_mesh() -> None:
    from crdtsync.transports.websocket import default_connection_cap

    from crdtsync.gossip import GossipConfig

    cap = default_connection_cap()
    assert cap.max_per_address >= GossipConfig().relay_max
    assert cap.max_total < 1024  # under the usual file-descriptor limit
