"""Where the Glomers latency goes: every write traced to every agent, with every lost frame.

Runs the scenario of :mod:`gossip_sim` (its set-up, :func:`gossip_sim.simulate`: the same
agents, seeds, writes and figures; that the probes change nothing is checked against
``run_scenario`` in ``tests/test_bench_smoke.py``) on a network that also
records, for every frame, whether the simulator dropped it, and for every (write, agent)
pair, which frame brought the write. Then it says why a write took what it took:

* ``writes``: the writes by the fate of the writer's push to the coming window's relay
  (``arrived``, ``lost``, ``none``: the writer relays that window itself, or pushed later) and
  by how many relay broadcasts can reach an agent before ``threshold_ms`` (``copies_in_time``:
  a write made ``u`` before its window's end reaches an agent in broadcasts at
  ``u + W + L``, ``u + 2W + L``, ...), each with the share done by ``threshold_ms``;
* ``deliveries``: the (write, agent) pairs of writes whose push arrived, by what brought the
  write (``copy 0`` the first relay broadcast, ``copy 1`` the next relay's repeat, ...;
  ``relay`` the push itself; ``repair`` a Diff) and their median latency;
* ``late_agents``: of the writes whose push arrived but that were done after ``threshold_ms``,
  how many agents were late;
* ``mix``: frames per write by role (writers' pushes to the relay, relay broadcasts, repairs,
  acks, the rest).

Virtual time: the figures are exact and the same on every run.

    python benchmarks/glomers_profile.py [--seed 1] [--loss 0.2] [--threshold-ms 450]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from crdtsync.transports.memory import Network

from crdtsync import wire
from crdtsync.gossip import GossipConfig
from crdtsync.gossip._context import LOSSY_WINDOW
from crdtsync.messages import Message, Push

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gossip_sim import Sim, simulate  # noqa: E402

__all__ = ["profile", "main"]

#: (time, sender, receiver, kind, lost); kind is "push" (a writer's batch to the relay),
#: "broadcast" (a relay's, with its hint), "push-other", or the message type's name.
Frame = tuple[float, str, str, str, bool]


def _kind(msg: Message) -> str:
    if isinstance(msg, Push):
        if msg.relay:
            return "push"
        return "broadcast" if msg.hint is not None else "push-other"
    return type(msg).__name__


class _ProbedNetwork(Network):
    """The simulator, recording each frame's fate and the frame being delivered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[Frame] = []
        self.delivering: tuple[str, str] | None = None  # (sender, kind) of the frame in hand
        self._scheduled = 0

    def _schedule(self, t: float, kind: str, args: tuple[Any, ...]) -> int:
        if kind == "frame":
            self._scheduled += 1
        return super()._schedule(t, kind, args)

    def _transmit(self, conn: Any, src: str, msg: Message) -> None:
        if not conn.open_for.get(src):
            super()._transmit(conn, src, msg)
            return
        before = self._scheduled
        super()._transmit(conn, src, msg)
        lost = self._scheduled == before
        self.frames.append((self.now, src, conn.other(src), _kind(msg), lost))

    def reset_stats(self) -> None:
        super().reset_stats()
        self.frames.clear()  # (called as the writes begin: only their frames are kept)

    def _ev_frame(self, cid: int, dst: str, frame: bytes) -> None:
        conn = self._conns.get(cid)
        src = conn.other(dst) if conn is not None else "?"
        try:
            kind = _kind(wire.decode(frame, max_size=1 << 30))
        except Exception:  # a frame the core will refuse: not one that delivers a write
            kind = "?"
        self.delivering = (src, kind)
        try:
            super()._ev_frame(cid, dst, frame)
        finally:
            self.delivering = None


def _run(
    agents: int, latency: float, rate: float, duration: float, loss: float, seed: int
) -> dict[str, Any]:
    """gossip_sim's scenario (:func:`gossip_sim.simulate`, as ``run_scenario`` runs it) on the
    probed network, keeping per-pair arrivals and every frame."""
    arrivals: defaultdict[int, dict[str, tuple[float, tuple[str, str] | None]]]
    arrivals = defaultdict(dict)

    def arrived(sim: Sim, w: int, node: str, now: float) -> None:
        assert isinstance(sim.net, _ProbedNetwork)
        arrivals[w][node] = (now, sim.net.delivering)

    sim = simulate(
        agents=agents,
        latency=latency,
        rate=rate,
        duration=duration,
        loss=loss,
        seed=seed,
        config=GossipConfig(),
        network=_ProbedNetwork,
        on_arrival=arrived,
    )
    assert isinstance(sim.net, _ProbedNetwork)
    return {
        "written_at": sim.written_at,
        "origins": sim.origins,
        "arrivals": [arrivals[w] for w in range(len(sim.written_at))],
        "frames": sim.net.frames,
        "messages": sim.net.total_messages(),
    }


def profile(
    *,
    seed: int = 1,
    loss: float = 0.2,
    agents: int = 25,
    latency: float = 0.1,
    rate: float = 100.0,
    duration: float = 20.0,
    threshold_ms: float = 450.0,
) -> dict[str, Any]:
    """Run one Glomers scenario and explain its latency (see the module docstring)."""
    raw = _run(agents, latency, rate, duration, loss, seed)
    cfg = GossipConfig()
    w = cfg.push_interval * (LOSSY_WINDOW if loss > 0 else 1.0)  # the window while writes flow
    th = threshold_ms / 1000
    eps = 1e-6
    pushes: dict[str, list[Frame]] = defaultdict(list)
    for f in raw["frames"]:
        if f[3] == "push":
            pushes[f[1]].append(f)
    writes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    deliveries: dict[str, list[float]] = defaultdict(list)
    late_agents: Counter[int] = Counter()
    lat: list[float] = []
    for t, origin, arr in zip(raw["written_at"], raw["origins"], raw["arrivals"], strict=True):
        others = {n: a for n, a in arr.items() if n != origin}
        if len(others) < agents - 1:
            continue  # not converged within the drain time
        done = max(a[0] for a in others.values()) - t
        lat.append(done * 1000)
        u = math.ceil(t / w - eps) * w - t  # to its window's end (one made at it leaves at it)
        times = [f[0] for f in pushes[origin]]
        i = bisect.bisect_left(times, t - eps)
        push = pushes[origin][i] if i < len(times) and times[i] <= t + u + eps else None
        fate = "none" if push is None else ("lost" if push[4] else "arrived")
        first = u + w + latency  # the first relay broadcast, when the push arrived
        copies = max(0, 1 + math.floor((th - first) / w + eps))
        key = f"push {fate}, copies_in_time {min(copies, 3)}"
        writes[key][0] += 1
        writes[key][1] += done <= th + eps
        if fate != "arrived":
            continue
        late = 0
        for ta, via in others.values():
            late += ta - t > th + eps
            sender, kind = via if via is not None else ("?", "?")
            if kind == "broadcast":
                j = (ta - t - first) / w
                name = f"copy {round(j)}" if abs(j - round(j)) < 0.01 and j > -0.5 else "other"
            elif kind == "push":
                name = "relay"
            elif kind == "Diff":
                name = "repair"
            else:
                name = "other"
            deliveries[name].append((ta - t) * 1000)
        if done > th + eps:
            late_agents[min(late, 5)] += 1
    n_pairs = sum(len(v) for v in deliveries.values())
    mix = Counter(f[3] for f in raw["frames"])
    n = len(raw["written_at"])
    return {
        "seed": seed,
        "loss": loss,
        "window_ms": round(w * 1000, 1),
        "threshold_ms": threshold_ms,
        "msgs_per_write": round(raw["messages"] / n, 3),
        "latency_median_ms": round(statistics.median(lat), 1) if lat else None,
        "done_by_threshold": round(sum(x <= threshold_ms + 1e-3 for x in lat) / n, 3),
        "writes": {
            k: {"writes": c, "done_share": round(d / c, 3)} for k, (c, d) in sorted(writes.items())
        },
        "deliveries": {
            k: {"share": round(len(v) / n_pairs, 4), "median_ms": round(statistics.median(v), 1)}
            for k, v in sorted(deliveries.items(), key=lambda kv: -len(kv[1]))
        },
        "late_agents": {("5+" if k == 5 else str(k)): c for k, c in sorted(late_agents.items())},
        "mix": {k: round(c / n, 3) for k, c in mix.most_common()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loss", type=float, default=0.2)
    p.add_argument("--agents", type=int, default=25)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--threshold-ms", type=float, default=450.0)
    a = p.parse_args(argv)
    out = profile(
        seed=a.seed,
        loss=a.loss,
        agents=a.agents,
        duration=a.duration,
        threshold_ms=a.threshold_ms,
    )
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
