"""Two LangGraph graphs in two processes share long-term memory through crdtsync.

    python examples/langgraph_shared_memory.py [--data DIR]

The parent starts two processes. "alice" runs a graph whose (stub) LLM pulls facts out of the
user's messages and stores them as memories; "bob", another agent of the same mesh, runs a
graph that searches those memories to answer a question. The memories are replicated between
the processes by crdtsync (websockets on 127.0.0.1) and durable on each one's disk. The LLM is
a deterministic stub, so the example runs offline; swap in a real chat model to use it for real.

Each process prints JSON lines; the parent prints bob's answer and exits 0 if it used alice's
memories.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, TypedDict

from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph

from crdtsync.langgraph import open_store

NAMESPACE = ("memories", "user-42")  # shard "lg/memories": all users' memories together


class StubLLM:
    """A deterministic stand-in for a chat model: enough to drive the graphs offline."""

    def extract_facts(self, message: str) -> list[str]:
        """'remember that X. remember that Y' -> ['X', 'Y']."""
        parts = message.lower().split("remember that ")[1:]
        return [p.strip().rstrip(".") for p in parts if p.strip()]

    def answer(self, question: str, memories: list[str]) -> str:
        words = {w.strip("?.,!") for w in question.lower().split()}
        relevant = [m for m in memories if words & set(m.split())]
        if not relevant:
            return "I don't know yet."
        return "From what I remember: " + "; ".join(sorted(relevant)) + "."


class State(TypedDict, total=False):
    message: str
    stored: list[str]
    answer: str


llm = StubLLM()


def remember(state: State) -> State:
    """Alice's node: store every fact the LLM extracts, one memory item per fact."""
    store = get_store()
    facts = llm.extract_facts(state["message"])
    for n, fact in enumerate(facts):
        store.put(NAMESPACE, f"fact-{n}", {"text": fact, "source": "alice", "turn": n})
    return {"stored": facts}


def recall(state: State) -> State:
    """Bob's node: search the shared memories and answer with them."""
    store = get_store()
    memories = [item.value["text"] for item in store.search(NAMESPACE, limit=50)]
    return {"answer": llm.answer(state["message"], memories)}


def graph(node: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("step", node)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder


def emit(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def run_alice(data: str) -> None:
    with open_store("alice", data, listen="ws://127.0.0.1:0") as store:
        emit(event="ready", address=store.agent.address)
        app = graph(remember).compile(store=store)
        out = app.invoke(
            {
                "message": "Remember that alice likes green tea. "
                "Remember that the deploy window is friday."
            }
        )
        emit(event="stored", facts=out["stored"])
        sys.stdin.readline()  # keep serving the memories until the parent says stop


def run_bob(data: str, peer: str) -> None:
    with open_store("bob", data, peers=[peer]) as store:
        app = graph(recall).compile(store=store)
        deadline = time.monotonic() + 20
        while len(store.search(NAMESPACE)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the memories arrive by gossip
        out = app.invoke({"message": "What does alice like to drink? green or black tea?"})
        emit(event="answer", answer=out["answer"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="where the two agents keep their stores")
    parser.add_argument("--role", choices=["alice", "bob"], help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "alice":
        return run_alice(args.data)
    if args.role == "bob":
        return run_bob(args.data, args.peer)
    data = args.data or tempfile.mkdtemp(prefix="crdtsync-langgraph-")
    me = [sys.executable, os.path.abspath(__file__)]
    alice = subprocess.Popen(
        [*me, "--role", "alice", "--data", os.path.join(data, "alice")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert alice.stdout is not None and alice.stdin is not None
    try:
        address = json.loads(alice.stdout.readline())["address"]
        print("alice stored:", json.loads(alice.stdout.readline())["facts"])
        bob = subprocess.run(
            [*me, "--role", "bob", "--data", os.path.join(data, "bob"), "--peer", address],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        answer = json.loads(bob.stdout.splitlines()[-1])["answer"]
        print("bob answered:", answer)
    finally:
        alice.stdin.close()
        alice.wait(timeout=30)
        alice.stdout.close()
    sys.exit(0 if "green tea" in answer else 1)


if __name__ == "__main__":
    main()
