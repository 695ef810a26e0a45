"""The agent's reads of shards it may not hold: :meth:`_AgentReads.read` and
:meth:`_AgentReads.read_json`, :meth:`_AgentReads.read_many`, and the :class:`ReadMany` the latter returns.

A shard held here is read locally; otherwise its holders are asked through the agent's
:class:`~crdtsync.reads.Reader` (``Agent.reader``) and their answers merged by CRDT join (see
:mod:`crdtsync.reads`). ``read_many`` also names the known agents it could not ask
(``Agent.peers``). A mixin of :class:`~crdtsync.agent.Agent` (:class:`_AgentReads`), split
from :mod:`crdtsync.agent` as :mod:`crdtsync._agent_figures` is; ``agent`` re-exports
:class:`ReadMany` (``from crdtsync.agent import ReadMany`` still works).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import jsonform
from .errors import ReplicationTimeout
from .reads import Quorum

if TYPE_CHECKING:
    from .gossip import PeerStatus
    from .reads import Reader

__all__ = ["ReadMany"]


class ReadMany(dict[str, dict[str, Any]]):
    """What :meth:`Agent.read_many` returns: a dict {shard name: plain dict}, plus
    ``unreachable``: known agents that were not asked (suspect or dead), whose shards may be
    missing."""

    def __init__(self, found: dict[str, dict[str, Any]], unreachable: tuple[str, ...] = ()) -> None:
        super().__init__(found)
        self.unreachable = unreachable

    @property
    def complete(self) -> bool:
        """Whether every agent known here was reachable (nothing can be missing)."""
        return not self.unreachable

    def __repr__(self) -> str:
        extra = f", unreachable={self.unreachable!r}" if self.unreachable else ""
        return f"ReadMany({dict.__repr__(self)}{extra})"


class _AgentReads:
    """Mixin of :class:`~crdtsync.agent.Agent`: its reads of shards (module docstring).

    The properties declared below belong to the agent.
    """

    if TYPE_CHECKING:  # Agent's (agent.py) and _AgentFigures'; for the type checker only

        @property
        def reader(self) -> Reader: ...

        @property
        def peers(self) -> tuple[PeerStatus, ...]: ...

    async def read(
        self, name: str, *, quorum: Quorum = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The shard's converged state as a plain dict, from here or from its holders.

        A shard held here is read locally. Otherwise its holders are asked and their answers
        merged by CRDT join (a burst of reads within a quarter second asks once).

        Args:
            quorum: holders whose state the answer must include: 1 (default), an int,
                ``"majority"`` (floor(R/2)+1) or ``"all"``; this agent counts if it holds it.
            timeout: seconds to wait for the answers.

        Raises:
            ShardNotFound: no agent holds the shard.
            ReplicationTimeout: fewer than ``quorum`` holders answered in time; ``lagging``
                names those that did not.
        """
        return await self.reader.read(name, quorum=quorum, timeout=timeout)

    async def read_json(
        self, name: str, *, quorum: Quorum = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """:meth:`read`, in the JSON form of :mod:`crdtsync.jsonform`: a ``Text`` stays
        tagged as ``{"$text": ...}``, big ints as ``{"$int": ...}``, bytes as ``{"$bytes": ...}``
        (what ``GET /shards/NAME`` and the MCP ``read`` tool answer). The plain dict of
        :meth:`read` has a Text as its ``str``, so writing it back would turn the Text into a
        string; this form round-trips. Same arguments and errors as :meth:`read`."""
        doc = await self.reader.read_doc(name, quorum=quorum, timeout=timeout)
        return jsonform.doc_json(doc)

    async def read_many(
        self,
        *,
        prefix: str = "",
        quorum: Quorum = None,
        timeout: float = 5.0,
        complete: bool = False,
    ) -> ReadMany:
        """Every shard named ``prefix...`` that any live agent holds: {name: plain dict}.

        Asks every other live agent (each answers with its matching shards) and merges by
        CRDT join, like :meth:`read`. Agents this one knows but cannot reach now (suspect or
        dead) are not asked: shards only they hold are missing from the answer. The result
        (a dict) says so in ``result.unreachable`` (and ``result.complete`` is False).

        Args:
            complete: raise instead of answering without some known agent.

        Raises:
            ReplicationTimeout: some agent did not answer in time, or a shard has fewer
                holders than ``quorum``, or (with ``complete``) some known agent is
                unreachable; ``lagging`` names them.
        """
        found = await self.reader.read_many(prefix, quorum=quorum, timeout=timeout)
        unreachable = tuple(sorted(p.name for p in self.peers if p.state in ("suspect", "dead")))
        if complete and unreachable:
            raise ReplicationTimeout(
                f"read_many({prefix!r}): {len(found)} shards found, but "
                f"{', '.join(unreachable)} cannot be reached and may hold more",
                unreachable,
            )
        return ReadMany(found, unreachable)
