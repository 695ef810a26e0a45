"""Issue #11, rows "1,000 connections that never say Hello" and "4 connections each just under
the flood limit; reconnect-after-cut": real websockets on 127.0.0.1 (and 127.0.0.2, a second
loopback host for the per-address cap).

Each test ends with the connection refused (an HTTP status before any upgrade, over the
connection cap) or closed with a clear close code, a counter, and an honest peer that connects
and syncs afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_websocket import CFG, nodes, until  # noqa: F401 (the fixture)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

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


async def _refused_status(url: str, **kwargs: Any) -> InvalidStatus:
    """Dial ``url`` expecting an HTTP answer instead of the upgrade; that answer."""
    with pytest.raises(InvalidStatus) as exc:
        await connect(url, proxy=None, **kwargs)
    return exc.value


async def test_connections_over_the_cap_are_refused_before_the_upgrade(nodes: Any) -> None:  # noqa: F811
    """Over the per-address cap: HTTP 429, never an upgrade then a close; another host, and
    then the same host once its slots are given back, still get in."""
    cap = ConnectionCap(max_total=10, max_per_address=3, handshake_timeout=60.0)
    victim = await nodes("victim", connection_cap=cap)
    other = {"local_addr": ("127.0.0.2", 0)}  # a second loopback host: its own per-host count
    held = [await connect(victim.address, proxy=None, **other) for _ in range(3)]
    refused = await _refused_status(victim.address, **other)
    assert refused.response.status_code == 429
    assert refused.response.headers["Retry-After"] == "1"
    assert b"127.0.0.2 has 3 connections open" in refused.response.body
    assert victim.transport.counters["refused.connections-per-address"] == 1
    assert cap._total == 3  # the refused one never held a slot
    # An honest peer on 127.0.0.1 connects while 127.0.0.2 is at its limit.
    await _honest_sync(victim, nodes)
    for ws in held:  # the slots are given back when they close
        await ws.close()
    await until(lambda: cap._total == 1, what="slots freed (the honest peer's stays)")
    again = await connect(victim.address, proxy=None, **other)
    await again.close()


async def test_connections_over_the_total_cap_get_503_and_slots_never_leak(nodes: Any) -> None:  # noqa: F811
    """Over the cap in all: HTTP 503. A request that takes a slot and then fails the upgrade
    (not a websocket request) gives it back when its TCP connection ends."""
    cap = ConnectionCap(max_total=3, max_per_address=10, handshake_timeout=60.0)
    victim = await nodes("victim", connection_cap=cap)
    held = [await connect(victim.address, proxy=None) for _ in range(3)]
    refused = await _refused_status(victim.address)
    assert refused.response.status_code == 503
    assert victim.transport.counters["refused.connections"] == 1
    for ws in held:
        await ws.close()
    await until(lambda: cap._total == 0, what="slots freed")
    # A plain HTTP GET passes the cap, fails the upgrade (426/400), and frees its slot.
    host, port = victim.address.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status = await reader.readline()
    assert status.split()[1] in (b"400", b"426")
    writer.close()
    await until(lambda: cap._total == 0, what="the failed upgrade's slot freed")
    await _honest_sync(victim, nodes)


async def _raw_tcp(address: str, local_host: str) -> tuple[Any, Any]:
    host, port = address.removeprefix("ws://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port), local_addr=(local_host, 0))


async def _aborted(reader: Any) -> bool:
    """Whether the server ended this TCP connection (EOF or reset) without a byte."""
    try:
        async with asyncio.timeout(5.0):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True


async def test_tcp_connections_that_send_no_request_are_capped_at_accept(nodes: Any) -> None:  # noqa: F811
    """Raw TCP connections that never send the upgrade request hold no cap slot, but are
    counted from their accept: beyond the per-host limit the next one is aborted at once
    (before its open timeout), counted; another host still gets in, and the slots come back."""
    cap = ConnectionCap(max_total=40, max_per_address=2, handshake_timeout=60.0)
    victim = await nodes("victim", connection_cap=cap)
    silent = [await _raw_tcp(victim.address, "127.0.0.2") for _ in range(2)]
    reader, writer = await _raw_tcp(victim.address, "127.0.0.2")
    assert await _aborted(reader)
    writer.close()
    assert victim.transport.counters["refused.unrequested"] == 1
    assert cap._total == 0  # none of them took an upgrade slot
    await _honest_sync(victim, nodes)  # 127.0.0.1 is not held back by 127.0.0.2's waiters
    for _, w in silent:
        w.close()
    await asyncio.sleep(0.2)
    again = await connect(victim.address, proxy=None, local_addr=("127.0.0.2", 0))
    await again.close()
    assert victim.transport.counters["refused.unrequested"] == 1


async def test_unrequested_connections_in_all_are_capped_too(nodes: Any) -> None:  # noqa: F811
    """In all, a quarter of max_total may wait without a request (here 2 of 8), so silent
    TCP connections cannot take every file descriptor while they wait."""
    cap = ConnectionCap(max_total=8, max_per_address=8, handshake_timeout=60.0)
    victim = await nodes("victim", connection_cap=cap)
    silent = [await _raw_tcp(victim.address, "127.0.0.2") for _ in range(2)]
    reader, writer = await _raw_tcp(victim.address, "127.0.0.3")
    assert await _aborted(reader)
    writer.close()
    assert victim.transport.counters["refused.unrequested"] == 1
    for _, w in silent:
        w.close()
    await asyncio.sleep(0.2)
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
