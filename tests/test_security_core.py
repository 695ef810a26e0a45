"""The gossip core behind a security gate, driven directly (no network, no clock): the
receive boundary, the send path and the rotating relay with a read-only member.

The gate here is :class:`NameGate`: the real :class:`~crdtsync.security.acl.Guard` and
:class:`~crdtsync.security.acl.Permissions` for permissions, with records "signed" by a
keyed hash per name (the Ed25519 records have their own tests and the hostile-peer suite
runs the real gate over wss)."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "gossip"))

from corepair import RELAY, W, deliver, put, rt, settle
from crdtsync.transports.memory import MemoryReplicas

from crdtsync.gossip import GossipConfig, GossipCore
from crdtsync.messages import Message, Push
from crdtsync.security.acl import Guard, PeerIdentity, Permissions

RCFG = GossipConfig(
    push_interval=W,
    full_mesh_max=4,
    anti_entropy_interval=1000.0,
    anti_entropy_jitter=0.0,
    peer_exchange_interval=1000.0,
    relay_settle=0.0,
)
READ_ONLY = Permissions(read=("**",))


def _sig(name: str, *fields: object) -> bytes:
    return hashlib.blake2b(repr((name, fields)).encode(), digest_size=32).digest()


class NameGate:
    """A test :class:`~crdtsync.gossip.gate.Gate` for agent ``name``; identities are
    :class:`PeerIdentity`; ``perms`` maps every agent to its permissions."""

    def __init__(self, name: str, perms: dict[str, Permissions]) -> None:
        self.name, self.perms, self.guard = name, perms, Guard()

    def check(self, identity: object, msg: Message) -> tuple[Message | None, str]:
        assert isinstance(identity, PeerIdentity)
        v = self.guard.check(identity, msg)
        return v.message, v.reason

    def outgoing(self, identity: object, msg: Message) -> Message | None:
        assert isinstance(identity, PeerIdentity)
        return self.guard.outgoing(identity, msg)

    def may_send(self, identity: object, shard: str) -> bool:
        assert isinstance(identity, PeerIdentity)
        return self.guard.may_send(identity, shard)

    def may_write(self, shard: str) -> bool:
        return self.perms[self.name].may_write(shard)

    def may_relay(self, identity: object, shards: list[str]) -> bool:
        assert isinstance(identity, PeerIdentity)
        return all(identity.permissions.may_write(s) for s in shards)

    def counts_as_replica(self, agent: str, shard: str) -> bool:
        return self.perms[agent].may_write(shard)

    def learn(self, identity: object) -> None:
        pass

    def certificates(self) -> tuple[bytes, ...]:
        return ()

    def learn_certificates(self, certificates: tuple[bytes, ...]) -> tuple[bytes, ...]:
        return ()

    def sign_ack(self, shard: str, sv: bytes, ds: bytes) -> bytes | None:
        return _sig(self.name, shard, sv, ds)

    def verify_ack(self, agent: str, shard: str, sv: bytes, ds: bytes, sig: bytes | None) -> bool:
        return sig == _sig(agent, shard, sv, ds)

    def sign_announcement(self, address: str | None, incarnation: int) -> bytes | None:
        return _sig(self.name, address, incarnation)

    def verify_announcement(
        self, agent: str, address: str | None, incarnation: int, sig: bytes | None
    ) -> bool:
        return sig == _sig(agent, address, incarnation)


def secure_mesh(n: int, read_only: set[str]) -> dict[str, GossipCore]:
    names = [f"r{i}" for i in range(n)]
    perms = {m: READ_ONLY if m in read_only else Permissions.full() for m in names}
    cores = {}
    for i, m in enumerate(names):
        core = GossipCore(
            m,
            MemoryReplicas(random.Random(f"ids/{m}"), ["s"]),
            rng=random.Random(i),
            config=RCFG,
            address=f"mem://{m}",
        )
        core.secure(NameGate(m, perms))
        cores[m] = core
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ca, cb = cores[a], cores[b]
            ca.connection_made(
                rt(cb.hello()), 0.0, outbound=True, identity=PeerIdentity(b, perms[b])
            )
            cb.connection_made(
                rt(ca.hello()), 0.0, outbound=False, identity=PeerIdentity(a, perms[a])
            )
    deliver(cores, 0.0)
    settle(cores, W)
    settle(cores, 2 * W)
    return cores


def _value(core: GossipCore, key: str) -> object:
    import pycrdt

    replicas = core.replicas
    assert isinstance(replicas, MemoryReplicas)
    return replicas.doc("s").get("m", type=pycrdt.Map).to_py().get(key)


def test_a_read_only_member_is_never_the_rotating_relay_and_writes_still_spread() -> None:
    cores = secure_mesh(6, read_only={"r2"})
    assert {c.mode() for c in cores.values()} == {RELAY}
    relays = {c.relay_at(10.0 + k * W) for c in cores.values() for k in range(12)}
    assert "r2" not in relays and len(relays) == 5
    for k in range(12):  # every agent, r2 included, agrees on each window's relay
        assert len({c.relay_at(10.0 + k * W) for c in cores.values()}) == 1
    t = 10.1
    for writer in ("r0", "r3", "r5"):
        delta = put(cores[writer], "s", writer, 1)
        cores[writer].local_update("s", delta, t)
    for k in range(1, 8):
        settle(cores, 10.0 + k * W)
    for name, core in cores.items():
        assert [_value(core, w) for w in ("r0", "r3", "r5")] == [1, 1, 1], name


def test_a_read_only_members_writes_stay_local_and_its_pushes_are_refused() -> None:
    cores = secure_mesh(3, read_only={"r2"})  # a full mesh
    delta = put(cores["r2"], "s", "mine", 1)
    cores["r2"].local_update("s", delta, 1.1)
    for k in range(5, 10):
        settle(cores, k * W)
    assert _value(cores["r0"], "mine") is None and _value(cores["r1"], "mine") is None
    assert cores["r2"].security_counters.get("unsent", 0) >= 1
    # and sent by hand (a hostile r2): dropped and counted at the receive boundary
    cores["r0"].receive("r2", rt(Push("s", (delta,), seq=0)), 3.0)
    assert _value(cores["r0"], "mine") is None
    assert cores["r0"].security_counters["forbidden.Push"] == 1
    # a read-only agent's acks do not make a replica: it could never give the data back
    d2 = put(cores["r0"], "s", "k", 2)
    cores["r0"].local_update("s", d2, 3.1)
    for k in range(13, 20):
        settle(cores, k * W)
    cores["r0"].durable(["s"], 5.0)
    for core in cores.values():
        core.durable(["s"], 5.0)
    for k in range(20, 30):
        settle(cores, k * W)
    sv, ds = cores["r0"].replicas.durable_state("s")
    assert cores["r0"].replicated("s", sv, ds) == ("r1",)
