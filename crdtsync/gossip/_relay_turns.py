"""Whose turn it is in the rotating relay: the relay of each batching window.

The agents take turns in rank order (:func:`~crdtsync.gossip.overlay.relay_of` over the
live agents of our view), one window each, or ``GossipConfig.hub_term`` windows under the hub
term (:mod:`._relay_hub`). With credentials, an agent that may not write every shard held
here is skipped by everyone alike. Whether we are linked to every live agent (else relays
flood) is read here too.

A mixin of :class:`~crdtsync.gossip.relay.Relay`, split from :mod:`crdtsync.gossip.relay` along
the seam between the turns (a function of the view, the links and the credentials) and the
batches, their confirmations and their repeats (the relay's state); its state is the
``Relay`` instance's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .overlay import relay_of

if TYPE_CHECKING:
    from ._context import Context

__all__: list[str] = []


class _RelayTurns:
    """Mixin of :class:`~crdtsync.gossip.relay.Relay`: the turns (module docstring)."""

    _ctx: Context
    #: the live agents and us in rank order (the turns), from the overlay view
    _order: Callable[[], tuple[str, ...]]
    #: with credentials: whether an agent may be the relay, per agent, for the shard set it
    #: was computed for (a permission check per shard is too dear for every window)
    _eligible: dict[str, tuple[int, object, bool]]

    if TYPE_CHECKING:  # _RelayHub's (_relay_hub.py); declared for the type checker only

        def hub(self, now: float) -> bool: ...

    def relay_of(self, k: int, hub: bool | None = None) -> str | None:
        """The relay of window ``k``; under the hub term (``hub``, default: whether it is on
        now) a turn lasts ``GossipConfig.hub_term`` windows (_relay_hub.py)."""
        if hub is None:
            hub = self.hub(self._ctx.now)
        if hub:
            k //= self._ctx.config.hub_term
        conns = self._ctx.links
        gate = self._ctx.gate
        if gate is None:
            return relay_of(
                self._order(),
                k,
                self._ctx.name,
                lambda n: n in conns and not conns[n].closing,
            )
        # With credentials, an agent that may not write every shard held here cannot be the
        # relay: its broadcasts of others' deltas would be refused by the receivers. Every
        # agent skips it alike (its identity is known: the relay needs direct links), itself
        # included, so the next one in rank order stands in.
        shards = self._ctx.shard_names()
        key = hash(tuple(shards))
        cache = self._eligible

        def eligible(n: str) -> bool:
            c = conns.get(n)
            if n != self._ctx.name and (c is None or c.closing):
                return False
            mine = n == self._ctx.name
            identity = None if mine else c.identity  # type: ignore[union-attr]
            hit = cache.get(n)
            if hit is not None and hit[0] == key and hit[1] is identity:
                return hit[2]
            if mine:
                ok = all(gate.may_write(s) for s in shards)
            else:
                ok = identity is not None and gate.may_relay(identity, shards)
            cache[n] = (key, identity, ok)
            return ok

        return relay_of(self._order(), k, "", eligible)

    def fully_connected(self) -> bool:
        """Whether we are connected to every live agent of our view (rotating relay)."""
        conns = self._ctx.links
        return all(
            n == self._ctx.name or (n in conns and not conns[n].closing) for n in self._order()
        )
