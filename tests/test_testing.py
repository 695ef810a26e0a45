"""crdtsync.testing: what users test their own code with must itself work."""

from __future__ import annotations

import pycrdt

from crdtsync import messages
from crdtsync.sharding import ShardingConfig
from crdtsync.testing import core_pair, delete, fast_config, mesh, put, value


def _set(key: str, val: object):
    return lambda d: d.get("root", type=pycrdt.Map).__setitem__(key, val)


def test_core_pair_delivers_a_write_as_one_push() -> None:
    pair = core_pair(seed=1)
    assert pair.a.connected() == ("b",) and pair.b.connected() == ("a",)
    pair.write("a", "board", _set("task", "docs"))
    pair.advance(1.0)  # one batching window
    pushes = [(s, r) for s, r, m in pair.log if isinstance(m, messages.Push)]
    assert ("a", "b") in pushes
    assert pair.converged()
    assert pair.replicas["b"].doc("board").get("root", type=pycrdt.Map).to_py() == {"task": "docs"}


def test_core_pair_acks_durable_state() -> None:
    pair = core_pair(seed=2)
    pair.write("b", "s", _set("k", 1))
    pair.advance(2.0)
    doc = pair.replicas["b"].doc("s")
    from crdtsync import updates

    assert pair.b.replicated("s", updates.state_vector(doc), updates.delete_set(doc)) == ("a",)


def test_a_lossy_mesh_converges_and_replays_by_seed() -> None:
    def run(seed: int) -> tuple[dict[str, object], int]:
        net = mesh(4, seed=seed, loss=0.1, config=fast_config())
        put(net, "n0", "board", "a", 1)
        put(net, "n3", "board", "b", 2)
        net.run_for(1.0)
        delete(net, "n1", "board", "a")
        net.run_until_converged(timeout=60)
        return value(net, "n2", "board"), net.total_messages()

    first = run(5)
    assert first[0] == {"b": 2}
    assert run(5) == first  # same seed, same run


def test_fast_config_partial_replication() -> None:
    net = mesh(5, seed=3, config=fast_config(), sharding=ShardingConfig(replication_factor=2))
    net.run_for(10.0)
    put(net, "n0", "s", "k", "v")
    net.run_for(20.0)
    holders = [n for n in net.nodes if "s" in net.nodes[n].replicas.shard_names()]
    assert 2 <= len(holders) < 5
