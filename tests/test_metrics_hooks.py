"""The metrics hooks test_metrics.py does not reach, each fed by real work and read both ways
(``agent.metrics()`` and ``GET /metrics``): queued bytes per peer (the core's hold and the
transport's send buffer) for a peer that does not read, a repair asked because a Push was lost
(a sequence gap), close codes of MQTT links of an agent on websockets *and* a broker (the
switchboard passes the observer to both drivers), a dropped MQTT link (1006, a SIGKILLed agent's
Last Will), and the README naming every metric an agent exports.

Real parts: LMDB stores, websockets on 127.0.0.1 (hand-written peers where a misbehaving one is
needed), a real mosquitto and a real agent process.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from crdtsync.transports.websocket import WebsocketTransport
from hostile import slow_reader_socket
from mqttbroker import MOSQUITTO, Mosquitto
from test_metrics import eventually, http, scrape, value
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Agent, wire
from crdtsync.messages import PROTOCOL_VERSION, Hello, Push, SyncRequest

README = Path(__file__).resolve().parents[1] / "README.md"


def hello(name: str) -> bytes:
    return wire.encode(Hello(version=PROTOCOL_VERSION, mesh="default", name=name, address=None))


async def drain(ws: ClientConnection) -> None:
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        pass


async def test_queued_bytes_of_a_peer_that_does_not_read(tmp_path: Path) -> None:
    high = 64 * 1024
    transport = functools.partial(WebsocketTransport, high_water=high)
    async with Agent(
        "a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http(), transport=transport
    ) as a:
        assert a.address is not None
        board = await a.shard("board")
        sock = slow_reader_socket(a.address)
        async with connect(
            a.address, sock=sock, proxy=None, compression=None, max_size=None, max_queue=1
        ) as ws:
            await ws.send(hello("slow"))
            assert isinstance(wire.decode(await ws.recv()), Hello)  # type: ignore[arg-type]
            await eventually(lambda: "slow" in a.metrics()["peers"], "slow peer accepted")
            assert a.metrics()["peers"]["slow"]["send_buffer_bytes"] == 0
            # "slow" reads (and acknowledges) nothing: the pushes fill the socket buffers, then
            # the transport's send buffer, and the core holds what it would push next (its
            # window of pushes a peer has not acknowledged, a paused link), dropping the excess.
            blob = "x" * (100 * 1024)
            figures: dict[str, Any] = {}
            for i in range(300):
                board[f"k{i}"] = blob
                await asyncio.sleep(0.01)
                figures = a.metrics()["peers"]["slow"]
                if figures["send_buffer_bytes"] and figures["queued_bytes"]:
                    break
            assert figures["send_buffer_bytes"] > 0 and figures["queued_bytes"] > 0, figures
            core_held = figures["queued_bytes"]
            assert figures["send_buffer_bytes"] == a.send_buffers()["slow"]
            text = await scrape(a)
            assert value(text, "crdtsync_peer_queued_bytes", peer="slow") == core_held
            buffered = value(text, "crdtsync_peer_send_buffer_bytes", peer="slow")
            assert buffered == figures["send_buffer_bytes"]  # (nothing was read meanwhile)
            assert value(text, "crdtsync_peer_dropped", peer="slow") == figures["dropped"]
            assert value(text, "crdtsync_open_connections") == a.metrics()["connections"] == 1
            reading = asyncio.create_task(drain(ws))
            await ws.close()
            await reading


def _update() -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("m", type=pycrdt.Map)["from_lossy"] = 1
    return doc.get_update()


async def test_a_lost_push_asks_a_repair_and_counts_it(tmp_path: Path) -> None:
    # A hand-written peer numbers its first Push of "board" 3: pushes 1 and 2 were lost on the
    # way, so the agent asks it for what it lacks at once (a SyncRequest), and counts a repair.
    # The peer never sends a Summary, so no anti-entropy round can count one.
    async with Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http()) as a:
        assert a.address is not None
        await a.shard("board")
        async with connect(a.address, proxy=None, compression=None) as ws:
            await ws.send(hello("lossy"))
            assert isinstance(wire.decode(await ws.recv()), Hello)  # type: ignore[arg-type]
            assert a.repairs == {}
            await ws.send(wire.encode(Push("board", (_update(),), seq=3)))
            asked = False
            async with asyncio.timeout(15):
                while not asked:
                    msg = wire.decode(await ws.recv())  # type: ignore[arg-type]
                    asked = isinstance(msg, SyncRequest) and "board" in dict(msg.state_vectors)
            await eventually(lambda: a.repairs.get(("lossy", "board"), 0) >= 1, "repair counted")
            # (lossy never answers, so the agent asks again every repair_timeout: the count
            # only grows between two readings)
            n = a.repairs[("lossy", "board")]
            got = a.metrics()["peers"]["lossy"]["repairs"]["board"]
            text = await scrape(a)
            scraped = value(
                text, "crdtsync_anti_entropy_repairs_total", peer="lossy", shard="board"
            )
            assert scraped is not None and n <= got <= scraped <= a.repairs[("lossy", "board")]


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
async def test_close_codes_of_mqtt_links_on_an_agent_with_websockets_too(tmp_path: Path) -> None:
    pytest.importorskip("aiomqtt")
    broker = Mosquitto(tmp_path / "broker").start()
    proc: asyncio.subprocess.Process | None = None
    try:
        kw: dict[str, Any] = {"broker": broker.url, "mesh": "m"}
        async with Agent(
            "a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http(), **kw
        ) as a:
            # b leaves politely: its CLOSE frame says 1001, over the broker.
            b = Agent("b", data_dir=tmp_path / "b", **kw)
            await b.start()
            await eventually(lambda: a.metrics()["connections"] == 1, "b connected")
            await b.close()
            await eventually(lambda: a.metrics()["connections"] == 0, "b gone")
            await eventually(
                lambda: "1001 going_away peer" in a.metrics()["closes"], "b's close counted"
            )
            # victim is SIGKILLed: no CLOSE frame, the broker's Last Will tells a (1006).
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "crdtsync.cli",
                "agent",
                "--name",
                "victim",
                "--data",
                str(tmp_path / "victim"),
                "--broker",
                broker.url,
                "--mesh",
                "m",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert proc.stdout is not None
            ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            assert ready["event"] == "ready"
            await eventually(lambda: a.metrics()["connections"] == 1, "victim connected", 30)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await eventually(
                lambda: "1006 abnormal none" in a.metrics()["closes"], "the drop counted", 30
            )
            # The Will drops every link a has with victim: one, or more while links that both
            # sides dialled at once were still being settled when it died.
            closes = a.metrics()["closes"]
            assert closes["1001 going_away peer"] == 1 and closes["1006 abnormal none"] >= 1
            text = await scrape(a)
            for code, reason, by in (("1001", "going_away", "peer"), ("1006", "abnormal", "none")):
                got = value(
                    text, "crdtsync_connection_closes_total", code=code, reason=reason, by=by
                )
                assert got == closes[f"{code} {reason} {by}"], (code, text)
            assert value(text, "crdtsync_open_connections") == 0
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        broker.stop()


def _readme_metrics_section() -> str:
    text = README.read_text()
    start = text.index("**Metrics.**")
    return text[start : text.index("\n### ", start)]


async def test_the_readme_names_every_metric_an_agent_exports(tmp_path: Path) -> None:
    async with Agent("a", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http=http()) as a:
        board = await a.shard("board")
        board["k"] = 1
        await board.flush()
        await board.compact()
        text = await scrape(a)
    # every family is declared (# TYPE), even one with no sample yet
    declared = re.findall(r"^# TYPE (crdtsync_\w+) (\w+)$", text, flags=re.M)
    # (prometheus-client adds a *_created gauge to each counter and histogram)
    names = {(n, kind) for n, kind in declared if not n.endswith("_created")}
    assert len(names) >= 25, names
    section = _readme_metrics_section()
    named = set(re.findall(r"`(crdtsync_\w+)`", section))
    missing = sorted(
        name for name, kind in names if name not in named and f"{name}_total" not in named
    )
    assert not missing, f"metrics the README's metrics section does not name: {missing}"
    exported = {n for n, _ in names} | {f"{n}_total" for n, kind in names if kind == "counter"}
    stale = sorted(named - exported)
    assert not stale, f"the README names metrics no agent exports: {stale}"


def test_the_readme_figures_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = README.read_text()
    start = text.index("The agent's figures are public, typed API")
    block = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None
    body = "\n".join("    " + line for line in block.group(1).splitlines())
    source = f"from crdtsync import Agent\n\nasync def main():\n{body}\n    return agent\n"
    scope: dict[str, Any] = {}
    exec(compile(source, "README figures example", "exec"), scope)
    monkeypatch.chdir(tmp_path)  # (its data_dir is relative)
    agent = asyncio.run(scope["main"]())
    assert (tmp_path / "data" / "a").is_dir() and agent.name == "a"
