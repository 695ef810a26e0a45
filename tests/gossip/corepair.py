"""Helpers for driving gossip cores directly (not a test module): no network, no clock,
exact expected messages.

Cores talk through :func:`deliver`, which passes each outbox through the real codec, like
h11's ConnectionPair. Times are chosen so that window boundaries are exact binary fractions.
The ``test_core_*.py`` modules next to this one import everything from here.
"""

# ruff: noqa: F401 (the imports are re-exported to the test modules)

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pycrdt
import pytest
from crdtsync.transports.memory import MemoryReplicas, Network

from crdtsync import updates, wire
from crdtsync.errors import CloseCode, InvalidShardName, ProtocolError, UsageError
from crdtsync.gossip import (
    DEAD,
    EMPTY_STATE_VECTOR,
    FULL,
    RELAY,
    SUSPECT,
    TREE,
    GossipConfig,
    GossipCore,
    Handshake,
)
from crdtsync.messages import (
    PROTOCOL_VERSION,
    Ack,
    Close,
    Diff,
    DiffBatch,
    DiffChunk,
    Digests,
    Hello,
    Message,
    PeerEntry,
    PeerList,
    Push,
    RelayedAck,
    ShardState,
    Summary,
    SyncRequest,
)

W = 0.25  # batching window used in these tests
CFG = GossipConfig(
    push_interval=W,
    anti_entropy_interval=8.0,
    anti_entropy_jitter=0.0,
    peer_exchange_interval=1000.0,
)
#: CFG without the early ask (crdtsync/gossip/_early_ask.py): for the tests that pin the
#: classic round's exact messages.
CLASSIC = replace(CFG, early_sync_shards=0)


def make(
    name: str,
    shards: Iterable[str] = (),
    config: GossipConfig = CFG,
    seeds: Iterable[str] = (),
    *,
    run: int = 0,
) -> GossipCore:
    """A core named ``name``; ``run`` numbers the runs of one agent (restarts)."""
    replicas = MemoryReplicas(random.Random(f"ids/{name}"), shards)
    return GossipCore(
        name, replicas, rng=random.Random(run), config=config, address=f"mem://{name}", seeds=seeds
    )


def rt(msg: Message) -> Message:
    """Through the codec and back."""
    return wire.decode(wire.encode(msg))


def reps(core: GossipCore) -> MemoryReplicas:
    r = core.replicas
    assert isinstance(r, MemoryReplicas)
    return r


def put(core: GossipCore, shard: str, key: str, value: object) -> bytes:
    delta = reps(core).change(shard, lambda d: d.get("m", type=pycrdt.Map).__setitem__(key, value))
    assert delta is not None
    return delta


def content(core: GossipCore, shard: str) -> dict[str, object]:
    return reps(core).doc(shard).get("m", type=pycrdt.Map).to_py() or {}


def connect(a: GossipCore, b: GossipCore, now: float = 0.0) -> None:
    """``a`` dialled ``b``; both handshakes complete at ``now``."""
    assert a.connection_made(rt(b.hello()), now, outbound=True) == b.name
    assert b.connection_made(rt(a.hello()), now, outbound=False) == a.name


def deliver(
    cores: dict[str, GossipCore], now: float, *, drop: set[type] = frozenset()
) -> list[tuple[str, str, Message]]:  # type: ignore[assignment]
    """Pass every outbox to its recipient until all are empty; return the (src, dst, msg) log."""
    log: list[tuple[str, str, Message]] = []
    queue: deque[tuple[str, str, Message]] = deque()
    for name, core in cores.items():
        queue.extend((name, dst, m) for dst, m in core.data_to_send())
    while queue:
        src, dst, msg = queue.popleft()
        log.append((src, dst, msg))
        if type(msg) in drop or dst not in cores:
            continue
        cores[dst].receive(src, rt(msg), now)
        queue.extend((dst, d, m) for d, m in cores[dst].data_to_send())
    return log


def settle(cores: dict[str, GossipCore], now: float) -> list[tuple[str, str, Message]]:
    """Run every core's timers at ``now`` and deliver everything."""
    for core in cores.values():
        core.tick(now)
    return deliver(cores, now)


def kinds(log: list[tuple[str, str, Message]]) -> list[tuple[str, str, str]]:
    return [(s, d, type(m).__name__) for s, d, m in log]


def mesh_views(n: int, cfg: GossipConfig) -> dict[str, GossipCore]:
    cores = {f"n{i:02d}": make(f"n{i:02d}", config=cfg) for i in range(n)}
    table = PeerList(
        tuple(PeerEntry(name, f"mem://{name}", 0, True) for name in sorted(cores)), full=True
    )
    hub = cores["n00"]
    for name, core in cores.items():
        if name != "n00":
            connect(hub, core)
            core.receive("n00", table, 0.0)
    for core in cores.values():
        core.data_to_send()
    return cores


def lan_text_stream(
    seed: int, times: Iterable[float], on_frame: Callable[[Any, str, Message], None]
) -> Network:
    """Three agents on LAN settings in the simulator (``a01`` and ``a02`` seeded with ``a00``),
    settled until 3.0; ``a00`` is scheduled to append one character to the Text ``t`` of shard
    ``s`` at each of ``times``, and ``on_frame(conn, src, msg)`` sees every frame sent on an
    open link from then on. The caller runs the network on."""
    net = Network(seed, config=GossipConfig.lan(), latency=0.0005)
    net.add_node("a00")
    for name in ("a01", "a02"):
        net.add_node(name, seeds=[net.address("a00")])
    net.run_until(3.0)
    original = net._transmit  # noqa: SLF001

    def tracing(conn: Any, src: str, msg: Message) -> None:
        if conn.open_for.get(src):
            on_frame(conn, src, msg)
        original(conn, src, msg)

    net._transmit = tracing  # type: ignore[method-assign]  # noqa: SLF001

    def write(i: int) -> None:
        def edit(doc: pycrdt.Doc[Any]) -> None:
            text = doc.get("t", type=pycrdt.Text)
            text.insert(len(text), "xyz"[i % 3])

        net.write("a00", "s", edit)

    for i, t in enumerate(times):
        net.at(t, lambda i=i: write(i))
    return net
