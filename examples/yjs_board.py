"""A crdtsync agent and a stock JavaScript Yjs client edit the same shard.

    python examples/yjs_board.py [--data DIR] [--client yjs_board.mjs]

The agent listens on 127.0.0.1 (a free port) and so serves ``ws://127.0.0.1:PORT/yjs/<shard>``
to y-websocket clients. It writes a small task board through the dict-like API, then starts
``node yjs_board.mjs`` (npm ``yjs``, ``y-websocket`` and ``ws`` installed next to that file),
which reads the board (the int reads as a JavaScript number), adds a task and a value, and
waits for the agent's acknowledgement. The agent prints what the client wrote; its edits are
persisted and would be gossiped to every other agent of the mesh like the agent's own.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from crdtsync import Agent

HERE = Path(__file__).resolve().parent


async def main(data: Path, client: Path) -> int:
    async with Agent("board-agent", data, listen="ws://127.0.0.1:0") as agent:
        board = await agent.shard("board")
        board["tasks"] = {"t1": "write the docs"}
        board["count"] = 3
        node = await asyncio.create_subprocess_exec(
            "node", str(client), f"{agent.address}/yjs", "board", stdout=asyncio.subprocess.PIPE
        )
        try:
            async with asyncio.timeout(30):
                while "from_js" not in board or "t2" not in board["tasks"]:
                    await asyncio.sleep(0.02)
            print(
                f"python read: from_js={board['from_js']!r} tasks={dict(sorted(board.snapshot()['tasks'].items()))}"
            )
            board["ack"] = True
            out, _ = await asyncio.wait_for(node.communicate(), 30)
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()
        print(out.decode().strip())
        return node.returncode or 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: a temp one)")
    parser.add_argument("--client", type=Path, default=HERE / "yjs_board.mjs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crdtsync-yjs-") as tmp:
        data = args.data if args.data is not None else Path(tmp)
        raise SystemExit(asyncio.run(main(data / "board-agent", args.client)))
