"""The facade's own contract: effects(), the dispatch table and plug-ins (policy, services)."""

from __future__ import annotations

from corepair import *  # noqa: F403

# ruff: noqa: F405 (names from corepair)
from crdtsync.gossip import Effects, FullReplication
from crdtsync.gossip.policy import CoreView
from crdtsync.messages import Holdings


class Echo:
    """A service owning Holdings: it answers each with the sender's name as a Holdings."""

    messages = (Holdings,)

    def __init__(self) -> None:
        self.core: CoreView | None = None
        self.events: list[str] = []

    def bind(self, core: CoreView) -> None:
        self.core = core

    def connection_made(self, peer: str, hello: Hello, now: float) -> None:
        self.events.append(f"made {peer}")

    def connection_lost(self, peer: str, now: float) -> None:
        self.events.append(f"lost {peer}")

    def receive(self, peer: str, msg: Message, now: float) -> None:
        assert self.core is not None
        self.events.append(f"got {type(msg).__name__} from {peer}")
        self.core.send(peer, Holdings(0, (self.core.name,)))

    def tick(self, now: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None


def _core(name: str, **kw: object) -> GossipCore:
    replicas = MemoryReplicas(random.Random(name))
    return GossipCore(
        name, replicas, rng=random.Random(0), config=CFG, address=f"mem://{name}", **kw
    )  # type: ignore[arg-type]


def test_effects_is_data_to_send_dials_and_deadline_in_one_value() -> None:
    a = make("a", seeds=["mem://b"])
    a.tick(0.0)
    fx = a.effects()
    assert isinstance(fx, Effects)
    assert fx.messages == [] and fx.dials == ["mem://b"]
    assert fx.deadline == a.next_deadline()
    assert a.effects().dials == []  # handed out once


def test_default_policy_is_full_replication() -> None:
    a = make("a")
    assert isinstance(a.policy, FullReplication) and a.sharding is a.policy
    assert not a.policy.partial and a.policy.sends_to("x", "s") and a.policy.accepts("s")


def test_a_service_gets_its_message_types_and_the_connection_events() -> None:
    echo = Echo()
    a = _core("a", services=[echo])
    b = _core("b")
    connect(a, b)
    a.data_to_send()
    b.data_to_send()
    a.receive("b", rt(Holdings(1, ("s",))), 0.1)
    assert echo.events == ["made b", "got Holdings from b"]
    assert a.data_to_send() == [("b", Holdings(0, ("a",)))]
    a.connection_lost("b", 0.2)
    assert echo.events[-1] == "lost b"


def test_two_handlers_for_one_message_type_are_refused() -> None:
    with pytest.raises(UsageError, match="two handlers for Holdings"):
        _core("a", services=[Echo(), Echo()])
    with pytest.raises(UsageError, match="two handlers for Push"):

        class Hijack(Echo):
            messages = (Push,)  # type: ignore[assignment]

        _core("a", services=[Hijack()])
