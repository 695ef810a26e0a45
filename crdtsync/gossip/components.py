"""The composition of one core's components, wired along the package's DAG in one place.

:func:`build` creates every component of a :class:`~crdtsync.gossip.GossipCore` around its
:class:`~crdtsync.gossip._context.Context` and connects the few upward calls (a Diff's update
is applied by the pushes; a push's hint is the relay's business) as callbacks, so that no
module imports one above it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._context import Context
from ._tail_check import TailChecks
from .acks import Acks
from .antientropy import AntiEntropy
from .dialer import Dialer
from .links import Link
from .membership import Membership
from .overlay import OverlayCache
from .push import Pushes
from .relay import Relay
from .repair import Repairs
from .transfer import Replies
from .window import Window

__all__ = ["Components", "build"]


@dataclass(slots=True)
class Components:
    """Every component of one core (see the package docstring for what each owns)."""

    members: Membership
    dialer: Dialer
    overlay: OverlayCache
    replies: Replies
    repairs: Repairs
    ae: AntiEntropy
    acks: Acks
    pushes: Pushes
    relay: Relay
    window: Window
    tails: TailChecks


def build(ctx: Context, mesh: str, address: str | None, seeds: Iterable[str]) -> Components:
    """The components of the core of ``ctx.name``, wired together."""
    links = ctx.links
    dialer = Dialer(ctx.name, address, seeds, ctx.config, ctx.rng)
    members = Membership(
        ctx.name,
        address,
        ctx.config,
        send=ctx.send,
        schedule_flush=ctx.schedule_flush,
        connected=links.__contains__,
        has_links=lambda: bool(links),
    )
    ctx.listens = lambda: members.address is not None  # (Context.client_hub)
    overlay = OverlayCache(ctx.name, mesh, ctx.config, members, ctx.policy)
    replies = Replies(ctx)
    repairs = Repairs(ctx)
    ae = AntiEntropy(ctx, replies)
    acks = Acks(ctx, members, repairs)
    pushes = Pushes(ctx, acks, repairs)
    tails = TailChecks(ctx, acks)
    pushes.on_pushed = tails.pushed

    def apply(
        conn: Link, shard: str, update: bytes, forward: bool, solicited: bool, author: str | None
    ) -> bool:
        done = pushes.apply(
            conn, shard, update, forward=forward, solicited=solicited, author=author
        )
        return done is not None

    ae.apply = apply
    replies.on_drained = ae.resume
    relay = Relay(ctx, pushes, ae, repairs, lambda: overlay.view().order)
    pushes.on_hint = relay.on_hint
    pushes.on_relay_news = relay.on_broadcast
    pushes.on_hub_broadcast = relay.hub_inherit
    ctx.flush_lead = relay.lead
    pushes.hand_on = relay.hand_on
    window = Window(
        ctx, members=members, pushes=pushes, relay=relay, acks=acks, replies=replies, ae=ae
    )
    return Components(
        members, dialer, overlay, replies, repairs, ae, acks, pushes, relay, window, tails
    )
