"""The lone Push's short path (``gossip/_push_receive.py``, issue 17/18, h-recv6) against the
general path it skips: the same frames, at the same virtual times, and the same replicas.

A Push of one update with no ack, no relayed acks, no hint, not a relay batch and not to be
forwarded (a paced writer's Push in a full mesh) goes straight to the apply, the receipt time
and the sequence check. Each scenario below runs twice in the seeded simulator, with the short
path and with it turned off (``_PushReceive.lone_push_path``); the sha256 of every frame put on
a link (time, sender, receiver, bytes) and of every replica's final digest must be equal, and
the short path must have been taken often enough to matter. The scenarios: two golden ones
(WAN windows; a lossy partition), and the LAN settings' full mesh with paced writes from
rotating writers, lossless and at 10 % loss (gaps in the sequence: repairs asked).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_golden_traces import SCENARIOS, TracingNetwork, _network, _writes

from crdtsync.gossip import GossipConfig
from crdtsync.gossip._push_receive import _PushReceive
from crdtsync.gossip.acks import WANT_ACK
from crdtsync.gossip.overlay import TREE

LAN = GossipConfig.lan(anti_entropy_interval=2.0, suspect_timeout=3.0, prune_grace=3.0)


def _lan_paced(loss: float = 0.0) -> TracingNetwork:
    net = _network(11, 6, latency=0.001, loss=loss, config=LAN)
    net.run_for(3)
    _writes(net, 150, net.now, 0.005)  # 200 writes/s, the writer rotating
    net.run_for(4)
    return net


CASES: dict[str, tuple[Any, int]] = {
    # name: (scenario, lone Pushes it must bring at least)
    "full_mesh": (SCENARIOS["full_mesh"], 20),
    "lossy_partition": (SCENARIOS["lossy_partition"], 1),
    "lan_paced": (_lan_paced, 100),
    "lan_lossy": (lambda: _lan_paced(0.1), 100),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lone_push_path_sends_what_the_general_path_sends(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, least = CASES[name]
    lone = 0
    on_push = _PushReceive.on_push

    def counting(self: Any, conn: Any, msg: Any, now: float) -> None:
        nonlocal lone
        if (
            self.lone_push_path
            and msg.durable is None
            and msg.hint is None
            and not msg.relayed
            and not msg.relay
            and not msg.forward
            and len(msg.updates) == 1
            and msg.updates[0] != WANT_ACK
            and self._ctx.mode() != TREE
        ):
            lone += 1
        on_push(self, conn, msg, now)

    monkeypatch.setattr(_PushReceive, "on_push", counting)
    short = scenario()
    assert lone >= least, f"the short path was taken {lone} times only"
    monkeypatch.setattr(_PushReceive, "lone_push_path", False)
    lone = 0
    general = scenario()
    assert lone == 0
    assert short.frames > 100
    assert short.digest() == general.digest(), "the lone Push's path sent or kept something else"
    assert _links(short) == _links(general), "the lone Push's path left a link's records otherwise"


def _links(net: TracingNetwork) -> dict[tuple[str, str], tuple[Any, ...]]:
    """What a received Push records on its link, for every live link of every agent: the
    last Push's time, the sequence numbers seen, the shards it sent, the acks it may want."""
    out: dict[tuple[str, str], tuple[Any, ...]] = {}
    for name, node in sorted(net.nodes.items()):
        if node.core is None:
            continue
        for peer, conn in sorted(node.core._conns.items()):
            out[name, peer] = (
                conn.rounds.last_push_in,
                sorted(conn.repair.seq_in.items()),
                sorted(conn.interest),
                sorted(conn.acks.wanted.items()),
            )
    return out
