"""An anti-entropy round's lost step is tried again (``GossipConfig.round_retries``, 2 in
:meth:`GossipConfig.lan`, only while loss was seen lately; issue 17, branch h-aeretry).

Before, a round whose Digests or SyncRequest (or the reply Diff) was lost just ended, and the
next round with that peer came about degree x ``anti_entropy_interval`` later (h-loss64's
traces: 5.05 -> 11.29 s, 10.18 -> 27.84 s at 64 agents and 10 % loss). Seeded simulator
runs, virtual time, two agents on the LAN config: chosen frames are dropped (the network's
frame hook), so the step lost is always the same one.
"""

from __future__ import annotations

from typing import Any

import pycrdt
from crdtsync.transports.memory import Network

from crdtsync.gossip import GossipConfig
from crdtsync.messages import Ack, Digests, Push, SyncRequest

A, B = "a00", "a01"


class _Dropper:
    """Drops chosen frames: ``rules`` is a list of [src, dst, type, count] (drop the next
    ``count`` such frames); every frame sent is logged as (time, src, dst, type, dropped)."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.rules: list[list[Any]] = []
        self.log: list[tuple[float, str, str, str, bool]] = []
        self._orig = net._transmit
        net._transmit = self._transmit  # type: ignore[method-assign]

    def _transmit(self, conn: Any, src: str, msg: Any) -> None:
        dst = conn.other(src)
        for rule in self.rules:
            if rule[3] > 0 and (rule[0], rule[1]) == (src, dst) and isinstance(msg, rule[2]):
                rule[3] -= 1
                self.log.append((self.net.now, src, dst, type(msg).__name__, True))
                return
        self.log.append((self.net.now, src, dst, type(msg).__name__, False))
        self._orig(conn, src, msg)


def _has(net: Network, name: str, key: str) -> bool:
    return key in net.nodes[name].replicas.docs["s"].get("m", type=pycrdt.Map)


def _write(net: Network, name: str, key: str) -> None:
    net.write(name, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__(key, 1))


def _run(round_retries: int, lost: type, seed: int = 1) -> tuple[Network, _Dropper, float, float]:
    """Two agents; both see a loss (a Push lost mid-stream each way: a gap, repaired), then
    A's last Push to B is lost (no gap follows) and the first ``lost`` frame (Digests or
    SyncRequest) of the next round is dropped, and the periodic rounds after it are postponed
    past the end. Returns the network, the dropper, when that
    frame was dropped and when B held A's last key (inf: not within 20 s)."""
    # The full mesh's tail check (on in lan(), h-meshtail) would push the lost last Push again
    # before any round: off here, so that a round is what repairs it (as in a tree whose
    # tail check has spent its tries).
    cfg = GossipConfig.lan(round_retries=round_retries, tail_check_full=False)
    net = Network(seed, config=cfg, latency=0.0005)
    net.add_node(A)
    net.add_node(B, seeds=[net.address(A)])
    net.write(A, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__("warm", 0))
    net.run_for(15.0)
    drop = _Dropper(net)
    for src, dst in ((A, B), (B, A)):  # a gap each way: both agents have seen a loss
        drop.rules.append([src, dst, Push, 1])
        for i in range(3):
            _write(net, src, f"{src}-{i}")
            net.run_for(0.05)
    net.run_for(0.5)
    assert _has(net, B, f"{A}-2") and _has(net, A, f"{B}-2")
    assert net.nodes[A].core._ctx.lossy(net.now) and net.nodes[B].core._ctx.lossy(net.now)
    # The last Push, and A's acks from then on (in a full mesh an ack of A's that B does not
    # cover is a loss too, repaired at once; in a tree acks climb towards the writer and
    # never come down): nothing tells B it missed the last Push but a round.
    drop.rules.append([A, B, Push, 1])
    drop.rules.append([A, B, Ack, 1 << 30])
    _write(net, A, "last")
    net.run_for(0.05)
    assert not _has(net, B, "last")
    # The round's first such frame on the link, whichever side started it.
    rules = [[A, B, lost, 1], [B, A, lost, 1]]
    drop.rules.extend(rules)
    dropped_at = got_at = float("inf")
    end = net.now + 20.0
    while net.now < end:
        net.run_for(0.01)
        if dropped_at == float("inf") and any(r[3] == 0 for r in rules):
            dropped_at = net.now
            for r in rules:
                r[3] = 0  # one frame dropped, no more
            # As in a tree, where each agent picks one of its ~6 neighbours per round: the
            # next periodic round between these two is far away (30 s here, past the end).
            for node in net.nodes.values():
                node.core._p.ae.next_round = net.now + 30.0
        if _has(net, B, "last"):
            got_at = net.now
            break
    return net, drop, dropped_at, got_at


def _retried(drop: _Dropper, kind: str, again: str, starter: str) -> bool:
    """Whether, after the dropped ``kind`` frame, its sender sent ``again`` on that link
    before the other side sent a ``starter`` frame (that would be its own new step)."""
    lost = next(i for i, f in enumerate(drop.log) if f[4] and f[3] == kind)
    _, src, dst, _, _ = drop.log[lost]
    for _, s, d, k, _ in drop.log[lost + 1 :]:
        if (s, d) == (dst, src) and k == starter:
            return False  # the other side moved on its own: not a retry
        if (s, d) == (src, dst) and k == again:
            return True
    return False


def test_lost_digests_start_a_round_of_the_sender() -> None:
    # Before: nobody answers lost Digests, and the next round comes with the periodic timer.
    # Now the agent whose Digests got no answer starts a round of its own with that peer.
    net, drop, dropped, got = _run(2, Digests)
    assert dropped < float("inf")
    assert _retried(drop, "Digests", "Summary", "Summary")
    assert got - dropped < 0.5, (dropped, got)  # the repair timeout, then a round


def test_lost_sync_request_is_asked_again() -> None:
    net, drop, dropped, got = _run(2, SyncRequest)
    assert dropped < float("inf")
    assert _retried(drop, "SyncRequest", "SyncRequest", "Digests")
    assert got - dropped < 0.5, (dropped, got)  # repair_timeout 0.1 s, then a round trip


def test_off_nothing_is_tried_again() -> None:
    # round_retries 0 (the class default): the lost step is not tried again.
    for kind, again, starter in (
        (Digests, "Summary", "Summary"),
        (SyncRequest,) * 2 + ("Digests",),
    ):
        net, drop, dropped, got = _run(0, kind)
        assert dropped < float("inf")
        assert not _retried(drop, kind.__name__, again, starter)
        assert got - dropped > 5.0, (kind, dropped, got)  # the defect: left to a later round
        assert sum(n.core._p.ae.retries.asked_again for n in net.nodes.values()) == 0


def test_nothing_tried_again_without_loss() -> None:
    # Lossless: no loss seen, nothing recorded, nothing sent again.
    net = Network(2, config=GossipConfig.lan(), latency=0.0005)
    net.add_node(A)
    net.add_node(B, seeds=[net.address(A)])
    net.write(A, "s", lambda d: d.get("m", type=pycrdt.Map).__setitem__("warm", 0))
    net.run_for(15.0)
    for i in range(50):
        _write(net, A if i % 2 else B, f"k{i}")
        net.run_for(0.3)
    net.run_for(20.0)
    retries = [n.core._p.ae.retries for n in net.nodes.values()]
    assert sum(r.asked_again + r.listed_again for r in retries) == 0
    assert not any(r.asking or r.listing for r in retries)


def test_lan_turns_it_on_and_the_class_default_is_off() -> None:
    assert GossipConfig.lan().round_retries == 2
    assert GossipConfig().round_retries == 0
