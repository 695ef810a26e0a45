"""Caps on what is held at once, of :mod:`crdtsync.quotas` (issue #11): unfinished chunked
transfers (:class:`TransferCap`) and connections (:class:`ConnectionCap`).

Unlike the rate policies (token buckets, :mod:`crdtsync._quota_buckets` and
:mod:`crdtsync._quota_pacing`) these count what is held now (bytes, connections, TCP
connections waiting for their request) and how long it has been held (a transfer's age, a
connection's time without a Hello), and free it when it ends. Split out of ``quotas.py`` (a
pure move) so that each module stays a few hundred lines; import the public names from
:mod:`crdtsync.quotas`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._quota_buckets import QuotaExceeded
from .errors import CloseCode

__all__ = ["ConnectionCap", "TransferCap"]


@dataclass
class TransferCap:
    """Unfinished chunked transfers (DiffChunk): bytes held per peer and in all, and age.

    4 connections x 248 MiB of chunks never completed held 1 GiB with no timeout. Defaults:
    64 MiB per peer, 256 MiB in all, 60 s from the first chunk to the last.
    """

    per_peer_bytes: int = 64 << 20
    total_bytes: int = 256 << 20
    timeout: float = 60.0

    def __post_init__(self) -> None:
        self._held: dict[tuple[str, int], tuple[int, float]] = {}  # -> (bytes, started)
        self._per_peer: dict[str, int] = {}
        self._total = 0

    @property
    def held(self) -> int:
        """Bytes held by all unfinished transfers."""
        return self._total

    def add(self, peer: str, transfer: int, n: int, now: float) -> None:
        """Account ``n`` more bytes of ``peer``'s transfer ``transfer`` (started if new).

        Raises:
            QuotaExceeded: over the per-peer or total cap (``code=OVERSIZE``); the caller
                drops the transfer (:meth:`finish`) and closes the connection.
        """
        key = (peer, transfer)
        held, started = self._held.get(key, (0, now))
        if self._per_peer.get(peer, 0) + n > self.per_peer_bytes:
            raise QuotaExceeded(
                f"{peer!r} holds more than {self.per_peer_bytes} bytes of unfinished chunks",
                "transfer-per-peer",
                CloseCode.OVERSIZE,
            )
        if self._total + n > self.total_bytes:
            raise QuotaExceeded(
                f"unfinished chunked transfers would hold more than {self.total_bytes} bytes",
                "transfer-total",
                CloseCode.OVERSIZE,
            )
        self._held[key] = (held + n, started)
        self._per_peer[peer] = self._per_peer.get(peer, 0) + n
        self._total += n

    def finish(self, peer: str, transfer: int) -> None:
        """Forget a transfer (completed, dropped, or its connection closed)."""
        held, _ = self._held.pop((peer, transfer), (0, 0.0))
        if held:
            left = self._per_peer[peer] - held
            if left:
                self._per_peer[peer] = left
            else:
                del self._per_peer[peer]
            self._total -= held

    def drop_peer(self, peer: str) -> None:
        """Forget every transfer of ``peer`` (its connection closed)."""
        for key in [k for k in self._held if k[0] == peer]:
            self.finish(*key)

    def expire(self, now: float) -> list[tuple[str, int]]:
        """Drop and return the transfers older than ``timeout``."""
        old = [k for k, (_, started) in self._held.items() if now - started > self.timeout]
        for key in old:
            self.finish(*key)
        return old


@dataclass
class ConnectionCap:
    """Connections in all and per remote address, and the handshake deadline.

    1,000 connections that never sent a Hello stayed open (and 1,013 exhausted the fd limit).
    Defaults: 512 in all, 16 per address, 10 s to complete the handshake.
    """

    max_total: int = 512
    max_per_address: int = 16
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        self._by_address: dict[str, int] = {}
        self._pending: dict[int, float] = {}  # connection id -> accepted at (no Hello yet)
        self._total = 0
        self._waiting_by_address: dict[str, int] = {}  # TCP accepted, no upgrade request yet
        self._waiting = 0

    @property
    def max_waiting(self) -> int:
        """TCP connections that may wait for their upgrade request at once, in all: a
        quarter of ``max_total`` (per address: ``max_per_address``). They hold no slot, but
        a file descriptor each until the driver's open timeout."""
        return max(1, self.max_total // 4)

    def tcp_accepted(self, address: str) -> None:
        """Count a just-accepted TCP connection that has not sent its upgrade request.

        Raises:
            QuotaExceeded: ``unrequested``: too many wait, in all or from ``address`` (abort
                it at once, nothing read).
        """
        per_address = self._waiting_by_address.get(address, 0)
        if self._waiting >= self.max_waiting or per_address >= self.max_per_address:
            raise QuotaExceeded(
                f"{self._waiting} connections wait without a request", "unrequested"
            )
        self._waiting_by_address[address] = per_address + 1
        self._waiting += 1

    def tcp_requested(self, address: str) -> None:
        """A connection counted by :meth:`tcp_accepted` sent its request, or ended."""
        self._waiting -= 1
        left = self._waiting_by_address[address] - 1
        if left:
            self._waiting_by_address[address] = left
        else:
            del self._waiting_by_address[address]

    def accept(self, conn: int, address: str, now: float) -> None:
        """Admit a new connection from ``address`` (call before reading from it).

        Raises:
            QuotaExceeded: too many in all or from this address (close it at once).
        """
        if self._total >= self.max_total:
            raise QuotaExceeded(
                f"{self._total} connections open, the limit is {self.max_total}", "connections"
            )
        if self._by_address.get(address, 0) >= self.max_per_address:
            raise QuotaExceeded(
                f"{address} has {self.max_per_address} connections open (the limit)",
                "connections-per-address",
            )
        self._by_address[address] = self._by_address.get(address, 0) + 1
        self._total += 1
        self._pending[conn] = now

    def handshaken(self, conn: int) -> None:
        """The connection completed its handshake; its deadline no longer applies."""
        self._pending.pop(conn, None)

    def closed(self, conn: int, address: str) -> None:
        """The connection closed (whatever the reason); frees its slots."""
        self._pending.pop(conn, None)
        n = self._by_address.get(address, 0) - 1
        if n > 0:
            self._by_address[address] = n
        else:
            self._by_address.pop(address, None)
        self._total = max(0, self._total - 1)

    def overdue(self, now: float) -> list[int]:
        """Connections still without a handshake after ``handshake_timeout`` (close them with
        ``BAD_HANDSHAKE``)."""
        return [c for c, t in self._pending.items() if now - t > self.handshake_timeout]
