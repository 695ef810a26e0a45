"""The dashboard in a real headless browser: the distribution's Chromium driven by Playwright.

A mesh of 3 real agents on 127.0.0.1; the page of one of them must load without console
errors, show all 3 agents, and show a write made through the HTTP API within 1 s (over SSE).
Set CRDTSYNC_SCREENSHOT=1 to refresh docs/dashboard.png from this run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from crdtsync import Agent

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="needs the distribution's Chromium: apt-get install -y chromium",
)


async def _connected(agent: Agent, n: int) -> None:
    for _ in range(400):
        if sum(1 for p in agent.peers if p.state == "connected") >= n:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{agent.name} did not connect to {n} peers: {agent.peers}")


async def test_dashboard_shows_mesh_and_live_writes(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    a = Agent("planner", data_dir=tmp_path / "a", listen="ws://127.0.0.1:0", http="127.0.0.1:0")
    await a.start()
    others = [
        Agent(
            name,
            data_dir=tmp_path / name,
            listen="ws://127.0.0.1:0",
            peers=[a.address or ""],
            http="127.0.0.1:0",
        )
        for name in ("crawler", "critic")
    ]
    try:
        for agent in others:
            await agent.start()
        await _connected(a, 2)
        board = await a.shard("board")
        board["tasks"] = {"t1": {"title": "crawl", "done": False}}
        for i in range(20):
            (await a.shard("sensors/kitchen"))["t"] = 20.0 + i / 10
        await board.replicated(peers=2, timeout=5)
        async with playwright_api.async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=ARGS,
                viewport={"width": 1280, "height": 860},
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                problems: list[str] = []
                page.on(
                    "console",
                    lambda m: (
                        problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning")
                        else None
                    ),
                )
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                await page.goto(f"{a.http_url}/#board")
                for name in ("planner", "crawler", "critic"):
                    await page.wait_for_selector(f'.agent-node[data-agent="{name}"]', timeout=5000)
                assert await page.locator(".agent-node").count() == 3
                assert await page.locator('.agent-node[data-state="connected"]').count() == 2
                await page.wait_for_function(
                    "() => document.getElementById('json').textContent.includes('crawl')",
                    timeout=5000,
                )
                await page.wait_for_selector('.shard-row[data-shard="board"]', timeout=5000)

                # A write through the HTTP API shows up within 1 s.
                async with httpx.AsyncClient(base_url=a.http_url or "") as client:
                    t0 = time.monotonic()
                    r = await client.patch(
                        "/shards/board", json={"tasks": {"t2": {"title": "written-over-http"}}}
                    )
                    assert r.status_code == 200
                    await page.wait_for_function(
                        "() => document.getElementById('json').textContent.includes('written-over-http')",
                        timeout=1000,
                    )
                    elapsed = time.monotonic() - t0
                assert elapsed < 1.0
                # ...and so does one made through another agent's API (replicated, then SSE).
                async with httpx.AsyncClient(base_url=others[0].http_url or "") as client:
                    r = await client.patch("/shards/board", json={"from": "crawler-api"})
                    assert r.status_code == 200
                await page.wait_for_function(
                    "() => document.getElementById('json').textContent.includes('crawler-api')",
                    timeout=5000,
                )
                # Holders and per-peer lag (updates · age) of a shard, from /shards.
                board_row = '.shard-row[data-shard="board"]'
                await page.wait_for_function(
                    f"""() => {{ const r = document.querySelector('{board_row} .holders');
                    return r && r.textContent === 'planner, crawler, critic'; }}""",
                    timeout=5000,
                )
                for peer in ("crawler", "critic"):
                    text = await page.locator(f'{board_row} .lag [data-peer="{peer}"]').inner_text()
                    assert re.fullmatch(rf"{peer}: \d+ · \d+\.\d s", text), text
                # Throughput: writes to a shard make its sparkline and writes/s move.
                sensors = await a.shard("sensors/kitchen")
                stop = asyncio.Event()

                async def keep_writing() -> None:
                    i = 0
                    while not stop.is_set():
                        sensors["t"] = 20.0 + i % 7
                        i += 1
                        await asyncio.sleep(0.02)

                writer = asyncio.create_task(keep_writing())
                try:
                    await page.wait_for_function(
                        """() => { const r = document.querySelector(
                          '.shard-row[data-shard="sensors/kitchen"] .throughput');
                        return r && parseFloat(r.querySelector('.rate').textContent) > 0
                          && r.querySelector('svg.spark polyline').getAttribute('points')
                               .split(' ').some((p) => parseFloat(p.split(',')[1]) < 22); }""",
                        timeout=10000,
                    )
                finally:
                    stop.set()
                    await writer
                if os.environ.get("CRDTSYNC_SCREENSHOT"):  # some traffic for the sparklines
                    sensors = await a.shard("sensors/kitchen")
                    for i in range(60):
                        sensors["t"] = 20.0 + (i % 7) / 10
                        board["tasks"]["t1"]["attempts"] = i
                        await asyncio.sleep(0.02 + 0.03 * (i % 10) / 10)
                await page.wait_for_timeout(1200)  # one more poll: lag and sparklines filled in
                shot = tmp_path / "dashboard.png"
                await page.screenshot(path=str(shot), full_page=True)
                if os.environ.get("CRDTSYNC_SCREENSHOT"):
                    DOCS.mkdir(exist_ok=True)
                    shutil.copy(shot, DOCS / "dashboard.png")
                assert problems == [], problems
            finally:
                await context.close()
    finally:
        for agent in others:
            await agent.close()
        await a.close()
