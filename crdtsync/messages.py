"""Every message of the crdtsync gossip protocol, as frozen dataclasses.

These are plain values: the pure core (:mod:`crdtsync.gossip`) consumes and produces them, the
codec (:mod:`crdtsync.wire`) turns them into frames and back, validating everything on the way
in. A connection carries one :class:`Hello` from each side first, then any of the others.

==================  ============================================================================
message             purpose
==================  ============================================================================
:class:`Hello`      handshake: protocol version, mesh, agent name, listen address, shards held
:class:`Push`       fresh deltas of one shard (a batch), optionally with a piggybacked ack
:class:`Summary`    anti-entropy step 1: one root hash over every per-shard digest
:class:`Digests`    anti-entropy step 2: per-shard digests, only when the roots differ
:class:`SyncRequest`  anti-entropy step 3: state vectors of the shards whose digests differ
:class:`Diff`       anti-entropy step 4/5: what the asker lacks (structs + whole delete set)
:class:`DiffChunk`  one piece of a Diff too big for one frame, reassembled by the receiver
:class:`DiffBatch`  several small Diffs (of different shards) in one frame: catching up many shards
:class:`Ack`        replication acks: the (state vector, delete set) the sender has on disk
:class:`PeerList`   peer exchange and membership: names, addresses, liveness, incarnations
:class:`Close`      the sender is closing this connection, and why
:class:`Holdings`   placement: the shards the sender holds now (partial replication only)
:class:`Offer`      placement hand-off: "you should hold these shards; fetch them from me"
:class:`ReadRequest`  a read of shards the asker does not hold, with its cached state vectors
:class:`ReadReply`  the answer: what the asker lacks of each shard, or None (not held here)
==================  ============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import CloseCode

__all__ = [
    "PROTOCOL_VERSION",
    "Message",
    "Hello",
    "Push",
    "Summary",
    "Digests",
    "SyncRequest",
    "Diff",
    "ShardState",
    "RelayedAck",
    "Ack",
    "DiffChunk",
    "DiffBatch",
    "PeerEntry",
    "PeerList",
    "Close",
    "Holdings",
    "Offer",
    "ReadRequest",
    "ReadReply",
    "Certificates",
]

#: Version of the wire protocol; a Hello with any other version is refused (close code
#: ``PROTOCOL_VERSION``), so agents of two incompatible versions say so at once instead of
#: cutting each other off over a frame the older one cannot read.
#:
#: 2: an Ack's or a Push's durable state may carry an empty delete set, "as in my last ack on
#: this link" (:data:`crdtsync.gossip.acks.SAME_DELETE_SET`); version 1 refused it as an
#: invalid update.
PROTOCOL_VERSION = 2


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message on every connection, from each side.

    Attributes:
        version: :data:`PROTOCOL_VERSION` of the sender.
        mesh: name of the mesh; agents of different meshes never talk to each other.
        name: the sender's agent name, unique in the mesh.
        address: where the sender accepts connections (``ws://host:port``), or None if it
            does not listen; shared with other agents through :class:`PeerList`.
        shards: empty from this release on (issue #11: its size must not grow with the
            shard count); an older sender lists the shards it holds (sorted).
        incarnation: the sender's membership incarnation, raised when it refutes a report
            of its death (see :class:`PeerEntry`).
        instance: a random number drawn by each run of the sender: a connection from
            another run than the one we are connected to comes from an agent that restarted,
            and replaces the old connection at once (see ``GossipCore.connection_made``).
    """

    version: int
    mesh: str
    name: str
    address: str | None
    shards: tuple[str, ...] = ()
    incarnation: int = 0
    instance: int = 0


@dataclass(frozen=True, slots=True)
class Push:
    """Fresh deltas of one shard, batched: apply them in order.

    Deltas are not merged into one update: the core cannot merge Yjs updates cheaply without
    touching pycrdt, and applying a short list costs the receiver the same. Duplicates need no
    message id: applying an update twice is a no-op, and the receiver forwards only what changed
    its state.

    Attributes:
        shard: the shard the deltas belong to.
        updates: one or more Yjs v1 updates.
        durable: the sender's on-disk (state vector, delete set) of this shard, when it owes
            the receiver an ack; piggybacking saves a message per batch on busy links.
        seq: 1, 2, 3... per connection and shard (0: unsequenced). A gap means a Push was
            lost; since later deltas of the same client cannot be integrated without it,
            the receiver asks for a repair at once instead of waiting for anti-entropy.
        relayed: other agents' durable states the sender passes on (sorted by agent, then
            shard), so that acks reach agents that are not directly connected.
        forward: the receiver is asked to pass on to every other peer what these deltas
            (and ``relayed``) change of its state: a flood, which dies out where nothing is
            new (in a tree, and while a rotating relay's mesh is not fully connected).
        relay: the receiver is this window's relay (rotating relay): it passes these deltas
            on to every other peer as they are, with its broadcast, even those it cannot
            integrate yet (a writer's next batch may reach the next relay before the
            broadcast carrying the previous one); relays never ask to pass a broadcast on,
            so this cannot loop.
        hint: the sender's state vector of the shard after this batch (rotating relay
            broadcasts only). A receiver whose own state vector does not cover it after
            applying missed an earlier batch, and asks the sender for a repair.
        authors: the agent that wrote each update (same length as ``updates``), None where
            the sender does not know it (a delta it took from an anti-entropy diff); empty:
            unknown for all. Relays pass it on unchanged, so a subscriber sees the writer
            (:attr:`crdtsync.changes.Change.author`), not the neighbour that delivered it.
            As the sender claims it: not authenticated, even with credentials.
    """

    shard: str
    updates: tuple[bytes, ...]
    durable: tuple[bytes, bytes] | None = None
    seq: int = 0
    relayed: tuple[RelayedAck, ...] = ()
    forward: bool = False
    hint: bytes | None = None
    relay: bool = False
    durable_signature: bytes | None = None  # the sender's signature of ``durable`` (credentials)
    #: Not compared by ``==``: a report about the deltas, not part of what they do.
    authors: tuple[str | None, ...] = field(default=(), compare=False)

    def author(self, index: int) -> str | None:
        """The writer of ``updates[index]``, None if unknown."""
        return self.authors[index] if index < len(self.authors) else None


@dataclass(frozen=True, slots=True)
class Summary:
    """Anti-entropy step 1: a hash over the sender's (shard, digest) pairs.

    Equal roots end the round with this one message, whatever the number of shards.
    """

    root: bytes
    shards: int


@dataclass(frozen=True, slots=True)
class Digests:
    """Anti-entropy step 2: the sender's per-shard digests, sorted by shard name."""

    digests: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Anti-entropy step 3: "send me what I lack": (shard, my state vector) pairs, sorted."""

    state_vectors: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Diff:
    """Anti-entropy steps 4 and 5: an update holding what the receiver lacks.

    ``update`` is ``diff(state_vector)``: the missing structs plus the sender's *whole* delete
    set, which is what repairs a lost delete when both state vectors are equal.

    Attributes:
        shard: the shard.
        update: a Yjs v1 update.
        state_vector: the sender's state vector, when it wants the receiver's diff back
            (step 4); None on the final reply (step 5).
    """

    shard: str
    update: bytes
    state_vector: bytes | None = None


@dataclass(frozen=True, slots=True)
class DiffChunk:
    """One piece of a :class:`Diff` (or of a single delta) too big for one frame.

    The sender cuts the update bytes into pieces of at most half the frame limit and sends
    them in order, nothing else of the same transfer in between; the receiver joins them (up
    to :attr:`~crdtsync.gossip.GossipConfig.max_diff_bytes`) and only then validates and
    applies the whole update, exactly like a Diff. pycrdt cannot split an update into smaller
    valid updates, so the bytes are cut, not the update.

    Attributes:
        shard: the shard.
        transfer: chosen by the sender, the same on every piece of one update; a piece of
            another transfer abandons an incomplete one (a piece was lost).
        index: 0, 1, ... total-1.
        total: number of pieces.
        data: this piece of the update bytes.
        state_vector: on the last piece only, what :attr:`Diff.state_vector` would carry.
        author: on the last piece only, the writer of a single delta too big for a Push
            (see :attr:`Push.authors`); None for a Diff (merged from any number of writers).
    """

    shard: str
    transfer: int
    index: int
    total: int
    data: bytes
    state_vector: bytes | None = None
    author: str | None = field(default=None, compare=False)  # (a report, as Push.authors)


@dataclass(frozen=True, slots=True)
class DiffBatch:
    """Several :class:`Diff` of different shards in one frame, sorted by shard name.

    A mesh of thousands of small shards is caught up (an agent joining, or back after a long
    absence) in frames of up to a chunk's size instead of one frame per shard; each Diff in
    it is handled exactly as if it had come alone. Never sent in a mesh with credentials:
    there each shard's Diff is checked and cut on its own.
    """

    diffs: tuple[Diff, ...]


@dataclass(frozen=True, slots=True)
class ShardState:
    """The (state vector, delete set) a peer holds of one shard.

    ``signature``: with credentials, the holder's Ed25519 signature over this state
    (:func:`crdtsync.security.records.sign_ack`), so that a relay can pass it on but not make
    it up; None in meshes without credentials (and then not on the wire).
    """

    shard: str
    state_vector: bytes
    delete_set: bytes
    signature: bytes | None = None


@dataclass(frozen=True, slots=True)
class RelayedAck:
    """Another agent's durable state of one shard, passed on by the sender of the message.

    ``hops``: how many agents passed it on so far, the sender included (1: the sender got it
    from ``agent`` itself); a tree passes acks on only within a few hops.
    """

    agent: str
    state: ShardState
    hops: int = 1


@dataclass(frozen=True, slots=True)
class Ack:
    """Replication acks: what the sender holds *on disk* of some shards, sorted by shard.

    Attributes:
        states: the sender's own durable states (may be empty when ``relayed`` is not).
        relayed: other agents' durable states passed on (see :attr:`Push.relayed`).
        forward: the receiver is asked to pass these on (see :attr:`Push.forward`).
    """

    states: tuple[ShardState, ...]
    relayed: tuple[RelayedAck, ...] = ()
    forward: bool = False


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """One agent as the sender knows it.

    Attributes:
        name: agent name.
        address: where it listens, or None.
        incarnation: the incarnation this entry is about; a higher one always wins, and at
            equal incarnations "dead" wins over "alive" (as in SWIM), so an agent wrongly
            reported dead refutes it by raising its incarnation.
        alive: False reports the agent dead (it was unreachable for the suspect timeout).
        signature: with credentials, the named agent's signature over (address,
            incarnation) (:func:`crdtsync.security.records.sign_announcement`); None without
            credentials (and then not on the wire).
    """

    name: str
    address: str | None
    incarnation: int
    alive: bool = True
    signature: bytes | None = None


@dataclass(frozen=True, slots=True)
class PeerList:
    """Peer exchange: agents the sender knows, sorted by name.

    ``full`` is True for the sender's whole table (on connect and in periodic exchange),
    False for a batch of changes being disseminated.
    """

    peers: tuple[PeerEntry, ...]
    full: bool = False


@dataclass(frozen=True, slots=True)
class Close:
    """The sender closes this connection right after this message.

    ``code`` says why: :attr:`~crdtsync.errors.CloseCode.NORMAL` when it prunes a connection
    the overlay no longer needs, a protocol error code when the receiver misbehaved.
    Transports with close codes (websockets) carry the same code in their close frame.
    """

    code: CloseCode
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Holdings:
    """The shards the sender holds now, replacing what its Hello or an earlier Holdings said.

    Sent with partial replication only (see :mod:`crdtsync.placement`), whenever the set
    changes: gossip of a shard then flows only to the agents that hold it.

    A long list goes as several Holdings of one version, in order, each but the last with
    ``more`` set (:func:`crdtsync.quotas.name_pieces`): no frame grows with the number of
    shards (issue #11: 132,000 shards made one Hello larger than any peer accepts).

    Attributes:
        version: increases with every change; an older Holdings arriving late is ignored.
        shards: sorted shard names (of this piece).
        more: further pieces of this version follow; the set applies once the last came.
    """

    version: int
    shards: tuple[str, ...]
    more: bool = False


@dataclass(frozen=True, slots=True)
class Offer:
    """Placement hand-off: the receiver is a placement holder of these shards (sorted) in the
    sender's view and does not hold them; it adopts those its own view agrees on and fetches
    them from the sender (:class:`SyncRequest`)."""

    shards: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """A read of shards the asker does not hold (see :mod:`crdtsync.query`).

    Attributes:
        id: chosen by the asker, echoed in every :class:`ReadReply`.
        shards: (shard, state vector of the asker's cached copy), sorted; the empty state
            vector ``b"\x00"`` when it has none.
        prefix: also every shard held whose name starts with this (a scan), or None.
    """

    id: int
    shards: tuple[tuple[str, bytes], ...]
    prefix: str | None = None


@dataclass(frozen=True, slots=True)
class ReadReply:
    """The answer to a :class:`ReadRequest`, possibly in several frames.

    Attributes:
        id: the request's id.
        shards: (shard, ``diff(state vector)``) sorted by shard; the update is None for an
            asked shard the sender does not hold.
        last: whether this is the last frame of the answer.
    """

    id: int
    shards: tuple[tuple[str, bytes | None], ...]
    last: bool = True


@dataclass(frozen=True, slots=True)
class Certificates:
    """Agent certificates (DER) of the mesh, passed on so that every agent can verify the
    signed acks and membership entries of agents it is not connected to. Sent only in meshes
    with certificates; each is checked against the mesh CA (and its revocation list) by the
    receiver, so a relay can pass them on but not make one up.
    """

    certificates: tuple[bytes, ...]


#: Any protocol message.
Message = (
    Hello
    | Push
    | Summary
    | Digests
    | SyncRequest
    | Diff
    | Ack
    | PeerList
    | Close
    | Holdings
    | Offer
    | ReadRequest
    | ReadReply
    | DiffChunk
    | Certificates
    | DiffBatch
)
