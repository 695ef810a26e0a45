"""Passing on what a received Push brought: news where the overlay wants it, asks along a tree.

What changed our state (a delta of a received Push or Diff) goes on where the overlay, or a
partial :class:`~crdtsync.gossip.policy.ReplicationPolicy`, wants it
(:meth:`_PushForward._forward`), never back to where it came from, and onto the broker when
we bridge one; a WANT_ACK of a tree (or of a hub's client) is passed on the same way
(:meth:`_PushForward.pass_ask`). Where a received update goes, not whether it is taken: the
checks, quotas and apply are :mod:`~crdtsync.gossip._push_receive`'s.

A mixin of :class:`~crdtsync.gossip.push.Pushes` through
:class:`~crdtsync.gossip._push_receive._PushReceive`, split from it so the receive side's two
questions (take it? pass it on to whom?) each read in one module; the state is the ``Pushes``
instance's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .acks import WANT_ACK, Acks
from .overlay import TREE

if TYPE_CHECKING:
    from ._context import Context
    from .links import Link

__all__: list[str] = []


class _PushForward:
    """Mixin of :class:`~crdtsync.gossip.push.Pushes`: what is passed on (module docstring).

    The attributes declared below belong to ``Pushes`` (set in its ``__init__``).
    """

    _ctx: Context
    _acks: Acks
    any_fanout: bool  # a fanout link exists (push.py; has_fanout's first test)

    if TYPE_CHECKING:  # the send side's (push.py); declared for the type checker only

        def enqueue(
            self,
            conn: Link,
            shard: str,
            update: bytes,
            author: str | None = None,
            hold: bool = False,
        ) -> None: ...

        def enqueue_fanout(self, shard: str, update: bytes, author: str | None = None) -> None: ...

        def push(
            self,
            conn: Link,
            shard: str,
            queued: list[bytes],
            *,
            now: float,
            authors: list[str | None] | None = None,
        ) -> None: ...

        def has_fanout(self, shard: str) -> bool: ...

    def pass_ask(self, conn: Link, shard: str, asker: str, now: float) -> None:
        """A tree: pass a WANT_ACK of ``shard`` from ``asker`` (it came on ``conn``) on to our
        other neighbours, so that the agents past us answer towards it (see acks.py)."""
        if not self._acks.ask_on(shard, conn.name, now):
            return
        # A grid: along the asker's own tree, as its writes go (each agent asked once, and
        # its acks climb back the same two hops); flooded, every agent would be asked by
        # each of its 2 (sqrt(N) - 1) neighbours and owe them all acks.
        grid = self._ctx.grid()
        children = grid.children(asker) if grid is not None else None
        skip = self._ctx.shortcuts()[0]  # along the tree, as news goes (tree_writer_top)
        clients = self._ctx.clients_only(conn)  # a full mesh: to our other clients only
        for other in self._ctx.links.values():
            if (
                other is not conn
                and not other.closing
                and not other.fanout
                and other.name != asker
                and (children is None or other.name in children)
                and other.name not in skip
                and not (clients and other.listens)
                and self._ctx.policy.sends_to(other.name, shard)
            ):
                self.push(other, shard, [WANT_ACK], now=now, authors=[asker])

    def _forward(
        self,
        conn: Link,
        shard: str,
        delta: bytes,
        forward: bool,
        author: str | None,
        solicited: bool = False,
        together: bool = False,
    ) -> None:
        # Forward what changed our state when asked to: in a tree every agent relays, in the
        # rotating relay the writer asks the window's relay. In a full mesh (and from a relay)
        # the origin reached everyone itself. Never back to where it came from.
        # What came through a fanout medium reached every fanout link already.
        targets = self._ctx.policy.forward_to(conn.name, shard)
        if targets is not None:  # partial replication: the holders it did not reach itself
            for name in targets:
                other = self._ctx.links.get(name)
                if (
                    other is not None
                    and other is not conn
                    and not other.closing
                    and not (conn.fanout and other.fanout)
                ):
                    self.enqueue(other, shard, delta, author)
        elif forward:
            # A tree's relay passes news on without a window of its own (tree_relay_wait >= 0;
            # -1: it waits for the window like our own writes): with 0 a lone delta at once
            # on an idle link, else (``together``: several deltas of one batch, kept
            # together) at the end of the driver's turn; above 0 everything is held for that
            # long at most (a tiny wait: every forward at the end of the driver's turn).
            # (A hub passing on a client's write to its other clients does the same.)
            clients = self._ctx.clients_only(conn)
            wait = self._ctx.config.tree_relay_wait
            cut = wait >= 0 and (clients or self._ctx.mode() == TREE)
            hold = cut and (together or wait > 0)
            queued = False
            # A grid (overlay_shape="grid"): only to our children in the writer's own tree,
            # two hops deep (_source_tree.py); a writer not in our view: to every link. News
            # of no known writer (a Diff we asked for) goes one hop, to every link, and is
            # not passed on again (a writer-less Push): flooded on, each copy would cross
            # all 2 (sqrt(N) - 1) links of every agent. Anti-entropy repairs the rest.
            grid = self._ctx.grid()
            children: frozenset[str] | None = None
            if grid is not None:
                if author is not None:
                    children = grid.children(author)
                elif not solicited:
                    children = frozenset()
            # The tree's shortcut links (tree_writer_top) carry a writer's own writes only.
            skip = self._ctx.shortcuts()[0]
            # A full mesh: a client's write asked of its hub goes to the hub's other clients
            # only (the listening agents had it from the writer; _context.py, client_hub).
            for other in self._ctx.links.values():
                if (
                    other is not conn
                    and not other.closing
                    and not (conn.fanout and other.fanout)
                    and (children is None or other.name in children)
                    and other.name not in skip
                    and not (clients and other.listens)
                ):
                    self.enqueue(other, shard, delta, author, hold)
                    queued = queued or bool(other.push.queue)
            if cut and queued:
                # No window of its own: the writer's first hop batched it already.
                self._ctx.flush_by(self._ctx.now + wait)
        if self.any_fanout and not conn.fanout and self.has_fanout(shard):
            # A bridge: what a websocket peer sent goes to the broker's agents too.
            self.enqueue_fanout(shard, delta, author)
