"""A window's Push to each of its peers, encoded once (transports/_ws_effects.py, issue 17,
h-burst9).

The core hands the driver one Push per link; at a window's flush or a lone write these are
most often the same message for every peer (the same deltas, the same sequence number, no ack
riding). The driver encodes such a run once and writes that frame to each link; a Push that
differs in anything (a sequence number, an ack riding on it) is encoded on its own, and every
link still gets exactly the frame ``wire.encode`` makes of its own message. Stand-ins for the
core and the links: no socket, no timing.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from crdtsync.transports import _ws_effects
from crdtsync.transports._ws_effects import _Effects

from crdtsync import wire
from crdtsync.messages import Ack, Push, ShardState


class _Effecting(_Effects):
    """The effects mixin over a core that hands out ``out`` once; frames are recorded."""

    def __init__(self, out: list[tuple[str, Any]]) -> None:
        self.core = SimpleNamespace(  # type: ignore[assignment]
            name="w", data_to_send=lambda: list(out), dials=lambda: []
        )
        self._closing = False
        self._max_frame = 1 << 20
        self._by_peer = {p: SimpleNamespace(closing=False, peer=p) for p, _ in out}  # type: ignore[misc]
        self.sent: list[tuple[str, bytes]] = []

    def _enqueue(self, link: Any, frame: bytes) -> None:
        self.sent.append((link.peer, frame))

    def _arm(self) -> None:
        pass


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = wire.encode

    def counted(msg: Any) -> bytes:
        seen.append(msg)
        return real(msg)

    monkeypatch.setattr(_ws_effects.wire, "encode", counted)
    return seen


def test_the_same_push_for_several_peers_is_encoded_once(encodes: list[Any]) -> None:
    delta = b"\x01\x01\x07\x00\x28\x01\x01m\x01k\x77\x01v\x00"
    # One Push object per link, as the core makes them: equal, the delta the same object.
    out = [(p, Push("s", (delta,), None, 3, authors=("w",))) for p in ("a", "b", "c")]
    effects = _Effecting(out)
    effects._execute_effects()
    assert len(encodes) == 1
    frame = wire.encode(out[0][1])
    assert effects.sent == [("a", frame), ("b", frame), ("c", frame)]


def test_a_push_that_differs_is_encoded_for_its_own_peer(encodes: list[Any]) -> None:
    delta = b"\x01\x01\x07\x00\x28\x01\x01m\x01k\x77\x01v\x00"
    out: list[tuple[str, Any]] = [
        ("a", Push("s", (delta,), None, 3, authors=("w",))),
        ("b", Push("s", (delta,), None, 4, authors=("w",))),  # another sequence number
        ("c", Push("s", (delta,), (b"\x01\x07\x01", b"\x00"), 4, authors=("w",))),  # an ack
        ("d", Push("s", (delta,), (b"\x01\x07\x01", b"\x00"), 4, authors=("w",))),
        ("e", Ack((ShardState("s", b"\x01\x07\x01", b"\x00"),))),
        ("f", Push("s", (delta,), (b"\x01\x07\x01", b"\x00"), 4, authors=("w",))),
    ]
    effects = _Effecting(out)
    effects._execute_effects()
    encoded = [next(i for i, (_, o) in enumerate(out) if o is m) for m in encodes]
    # Every peer got the frame of its own message; the Pushes equal to the last Push encoded
    # (d's and f's, an Ack between them) took its frame.
    assert effects.sent == [(p, wire.encode(m)) for p, m in out]
    assert encoded == [0, 1, 2, 4]
