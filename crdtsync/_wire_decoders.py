"""The decoding half of the envelope codec (:mod:`crdtsync.wire`): field checkers, one decoder
per message type, and the limits they enforce.

:func:`crdtsync.wire.decode` unpacks a frame (bounded by its size and item budget) and hands the
fields after the tag to the decoder of that tag here (:data:`_DECODERS`). Each decoder checks
arity, types, lengths and sort order of every field, raising only
:class:`~crdtsync.errors.ProtocolError` with the close code to use (``MALFORMED_FRAME``,
``INVALID_SHARD``, ``PROTOCOL_VERSION``). Split from :mod:`crdtsync.wire` so "what a field of a
received frame may hold" reads in one module; the limits are public as ``crdtsync.wire.*``
(re-exported there), and this module imports no msgpack: the bytes are unpacked in ``wire``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from .errors import CloseCode, ProtocolError
from .messages import (
    PROTOCOL_VERSION,
    Ack,
    Certificates,
    Close,
    Diff,
    DiffBatch,
    DiffChunk,
    Digests,
    Hello,
    Holdings,
    Message,
    Offer,
    PeerEntry,
    PeerList,
    Push,
    ReadReply,
    ReadRequest,
    RelayedAck,
    ShardState,
    Summary,
    SyncRequest,
)
from .names import MAX_SHARD_NAME, is_valid_shard_name

__all__ = [
    "ROOT_SIZE",
    "MAX_DIGEST",
    "MAX_ADDRESS",
    "MAX_REASON",
    "MAX_CHUNKS",
    "MAX_SIGNATURE",
    "MAX_CERTIFICATE",
    "MAX_CERTIFICATES",
]

#: Length of a :class:`~crdtsync.messages.Summary` root hash.
ROOT_SIZE = 16
#: Longest per-shard digest accepted.
MAX_DIGEST = 64
#: Longest listen address accepted.
MAX_ADDRESS = 255
#: Longest close reason accepted (websocket close reasons are limited to 123 bytes anyway).
MAX_REASON = 1024
#: Most pieces one DiffChunk transfer may announce.
MAX_CHUNKS = 1 << 20
#: Longest record signature accepted (an Ed25519 signature is 64 bytes).
MAX_SIGNATURE = 64
#: Longest agent certificate (DER) and most certificates in one Certificates message.
MAX_CERTIFICATE = 8192
MAX_CERTIFICATES = 4096
_MAX_INT = 2**63 - 1


# -- decoding: small checkers, each raising ProtocolError -------------------------------------------


def _bad(what: str, code: CloseCode = CloseCode.MALFORMED_FRAME) -> NoReturn:
    raise ProtocolError(what, code)


def _int(v: object, what: str, lo: int = 0, hi: int = _MAX_INT) -> int:
    if type(v) is not int or not lo <= v <= hi:
        _bad(f"{what} must be an integer in [{lo}, {hi}]")
    return v


def _bool(v: object, what: str) -> bool:
    if type(v) is not bool:
        _bad(f"{what} must be a boolean")
    return v


def _str(v: object, what: str, max_len: int) -> str:
    if type(v) is not str or len(v) > max_len:
        _bad(f"{what} must be a string of at most {max_len} characters")
    return v


def _bytes(v: object, what: str, lo: int = 1, hi: int | None = None) -> bytes:
    if type(v) is not bytes or len(v) < lo or (hi is not None and len(v) > hi):
        _bad(f"{what} must be {lo}..{hi if hi is not None else 'any'} bytes")
    return v


def _opt_bytes(v: object, what: str) -> bytes | None:
    return None if v is None else _bytes(v, what)


def _shard(v: object) -> str:
    if not is_valid_shard_name(v):
        _bad(f"invalid shard name {v!r:.80}", CloseCode.INVALID_SHARD)
    return v  # type: ignore[return-value]


def _agent_name(v: object, what: str) -> str:
    # Agent and mesh names use the shard-name alphabet (the Agent validates its name so too).
    if not is_valid_shard_name(v):
        _bad(f"invalid {what} {v!r:.80}")
    return v  # type: ignore[return-value]


def _address(v: object) -> str | None:
    if v is None:
        return None
    a = _str(v, "address", MAX_ADDRESS)
    if not a or not a.isprintable():
        _bad("address must be a non-empty printable string")
    return a


def _array(v: object, what: str, n: int | None = None) -> tuple[Any, ...]:
    if type(v) is not tuple or (n is not None and len(v) != n):
        _bad(f"{what} must be an array" + (f" of {n} items" if n is not None else ""))
    return v


def _record(v: object, what: str, n: int) -> tuple[tuple[Any, ...], bytes | None]:
    """An array of ``n`` items, or ``n + 1`` whose last is a signature; (items, signature)."""
    if type(v) is not tuple or len(v) not in (n, n + 1):
        _bad(f"{what} must be an array of {n} items (or {n + 1} with a signature)")
    if len(v) == n:
        return v, None
    return v[:n], _bytes(v[n], "signature", 1, MAX_SIGNATURE)


def _sorted_keys(keys: list[str], what: str) -> None:
    # Strictly increasing: canonical, and rules out duplicates that would make a message
    # ambiguous (which of two digests for one shard counts?).
    for a, b in zip(keys, keys[1:], strict=False):
        if not a < b:
            _bad(f"{what} must be strictly sorted by name")


def _pairs(v: object, what: str, value: Callable[[object], bytes]) -> tuple[tuple[str, bytes], ...]:
    items = _array(v, what)
    out = tuple((_shard(p[0]), value(p[1])) for p in (_array(i, f"{what} entry", 2) for i in items))
    _sorted_keys([s for s, _ in out], what)
    return out


# -- decoding: one function per message type, fields already split from the tag -----------------


def _hello(f: tuple[Any, ...]) -> Hello:
    # The version comes first and is checked before the arity, so that a newer Hello (which
    # may have more fields) is refused as a version mismatch, not as garbage.
    if not f:
        _bad("Hello without a version", CloseCode.BAD_HANDSHAKE)
    if type(f[0]) is not int or f[0] != PROTOCOL_VERSION:
        _bad(f"protocol version {f[0]!r:.20} is not {PROTOCOL_VERSION}", CloseCode.PROTOCOL_VERSION)
    _array(f, "Hello", 7)
    shards = tuple(_shard(s) for s in _array(f[4], "Hello shards"))
    _sorted_keys(list(shards), "Hello shards")
    return Hello(
        version=f[0],
        mesh=_agent_name(f[1], "mesh name"),
        name=_agent_name(f[2], "agent name"),
        address=_address(f[3]),
        shards=shards,
        incarnation=_int(f[5], "incarnation"),
        instance=_int(f[6], "instance"),
    )


def _relayed(v: object) -> tuple[RelayedAck, ...]:
    out = tuple(
        RelayedAck(
            _agent_name(r[0], "agent name"),
            ShardState(_shard(r[1]), _bytes(r[2], "state vector"), _bytes(r[3], "delete set"), sig),
            _int(r[4], "hops", 1, 255),
        )
        for r, sig in (_record(i, "relayed ack", 5) for i in _array(v, "relayed acks"))
    )
    for a, b in zip(
        out, out[1:], strict=False
    ):  # strictly sorted by (agent, shard): canonical, no duplicates
        if not (a.agent, a.state.shard) < (b.agent, b.state.shard):
            _bad("relayed acks must be strictly sorted by agent and shard")
    return out


def _push(f: tuple[Any, ...]) -> Push:
    # The shape of nearly every Push, checked in one step: one update, no ack, no relayed
    # acks, no hint, no signature, one author. A paced receiver decodes one per update on
    # cold caches, where each small checker and generator touched costs ~1-2 us (issue
    # 17/18, benchmarks/history/fanout-receive.md, h-recv3). Anything else, valid or not, goes through
    # _push_fields, which gives the same Push or raises the error it raises.
    if (
        type(f) is tuple
        and len(f) == 10
        and f[2] is None
        and f[4] == ()
        and f[6] is None
        and f[8] is None
        and type(f[1]) is tuple
        and len(f[1]) == 1
        and type(f[1][0]) is bytes
        and f[1][0]
        and type(f[9]) is tuple
        and len(f[9]) == 1
        and (f[9][0] is None or is_valid_shard_name(f[9][0]))
        and type(f[3]) is int
        and 0 <= f[3] <= _MAX_INT
        and type(f[5]) is bool
        and type(f[7]) is bool
        and is_valid_shard_name(f[0])
    ):
        return Push(
            shard=f[0],
            updates=f[1],
            seq=f[3],
            forward=f[5],
            relay=f[7],
            authors=f[9],
        )
    return _push_fields(f)


def _push_fields(f: tuple[Any, ...]) -> Push:
    """Every field of a Push checked one by one (the general case of :func:`_push`)."""
    authors: tuple[str | None, ...] = ()
    if type(f) is tuple and len(f) == 10:  # with authors, after a signature or nil
        signature = None if f[8] is None else _bytes(f[8], "signature", 1, MAX_SIGNATURE)
        authors = tuple(_opt_author(a) for a in _array(f[9], "Push authors"))
        f = f[:8]
    else:
        f, signature = _record(f, "Push", 8)
    updates = tuple(_bytes(u, "update") for u in _array(f[1], "Push updates"))
    if not updates:
        _bad("Push without updates")
    if len(authors) == 1:
        authors *= len(updates)
    elif authors and len(authors) != len(updates):
        _bad("Push authors must be one name or one per update")
    durable = None
    if f[2] is not None:
        d = _array(f[2], "Push ack", 2)
        # (an empty delete set: "as in my last ack on this link", gossip/acks.py)
        durable = (_bytes(d[0], "state vector"), _bytes(d[1], "delete set", 0))
    return Push(
        shard=_shard(f[0]),
        updates=updates,
        durable=durable,
        seq=_int(f[3], "seq"),
        relayed=_relayed(f[4]),
        forward=_bool(f[5], "forward"),
        hint=_opt_bytes(f[6], "hint"),
        relay=_bool(f[7], "relay"),
        durable_signature=signature if durable is not None else None,
        authors=authors,
    )


def _opt_author(v: object) -> str | None:
    return None if v is None else _agent_name(v, "author")


def _summary(f: tuple[Any, ...]) -> Summary:
    _array(f, "Summary", 2)
    return Summary(
        root=_bytes(f[0], "root", ROOT_SIZE, ROOT_SIZE), shards=_int(f[1], "shard count")
    )


def _digests(f: tuple[Any, ...]) -> Digests:
    _array(f, "Digests", 1)
    return Digests(_pairs(f[0], "Digests", lambda d: _bytes(d, "digest", 1, MAX_DIGEST)))


def _sync_request(f: tuple[Any, ...]) -> SyncRequest:
    _array(f, "SyncRequest", 1)
    return SyncRequest(_pairs(f[0], "SyncRequest", lambda sv: _bytes(sv, "state vector")))


def _diff(f: tuple[Any, ...]) -> Diff:
    _array(f, "Diff", 3)
    return Diff(
        shard=_shard(f[0]),
        update=_bytes(f[1], "update"),
        state_vector=_opt_bytes(f[2], "state vector"),
    )


def _diff_batch(f: tuple[Any, ...]) -> DiffBatch:
    _array(f, "DiffBatch", 1)
    diffs = tuple(_diff(_array(d, "DiffBatch entry")) for d in _array(f[0], "DiffBatch diffs"))
    if not diffs:
        _bad("DiffBatch without diffs")
    _sorted_keys([d.shard for d in diffs], "DiffBatch diffs")
    return DiffBatch(diffs)


def _ack(f: tuple[Any, ...]) -> Ack:
    _array(f, "Ack", 3)
    states = tuple(
        ShardState(_shard(s[0]), _bytes(s[1], "state vector"), _bytes(s[2], "delete set", 0), sig)
        for s, sig in (_record(i, "Ack entry", 3) for i in _array(f[0], "Ack states"))
    )
    relayed = _relayed(f[1])
    if not states and not relayed:
        _bad("Ack without states")
    _sorted_keys([s.shard for s in states], "Ack states")
    return Ack(states, relayed, _bool(f[2], "forward"))


def _diff_chunk(f: tuple[Any, ...]) -> DiffChunk:
    if type(f) is not tuple or len(f) not in (6, 7):
        _bad("DiffChunk must be an array of 6 items (or 7 with an author)")
    total = _int(f[3], "chunk total", 1, MAX_CHUNKS)
    return DiffChunk(
        shard=_shard(f[0]),
        transfer=_int(f[1], "transfer"),
        index=_int(f[2], "chunk index", 0, total - 1),
        total=total,
        data=_bytes(f[4], "chunk data"),
        state_vector=_opt_bytes(f[5], "state vector"),
        author=_opt_author(f[6]) if len(f) == 7 else None,
    )


def _peer_list(f: tuple[Any, ...]) -> PeerList:
    _array(f, "PeerList", 2)
    peers = tuple(
        PeerEntry(
            name=_agent_name(p[0], "agent name"),
            address=_address(p[1]),
            incarnation=_int(p[2], "incarnation"),
            alive=_bool(p[3], "alive"),
            signature=sig,
        )
        for p, sig in (_record(i, "PeerList entry", 4) for i in _array(f[0], "PeerList peers"))
    )
    _sorted_keys([p.name for p in peers], "PeerList peers")
    return PeerList(peers=peers, full=_bool(f[1], "full"))


def _certificates(f: tuple[Any, ...]) -> Certificates:
    _array(f, "Certificates", 1)
    certs = _array(f[0], "certificates")
    if len(certs) > MAX_CERTIFICATES:
        _bad(f"more than {MAX_CERTIFICATES} certificates")
    return Certificates(tuple(_bytes(c, "certificate", 1, MAX_CERTIFICATE) for c in certs))


def _close(f: tuple[Any, ...]) -> Close:
    _array(f, "Close", 2)
    code = _int(f[0], "close code", 1000, 4999)
    try:
        known = CloseCode(code)
    except ValueError:
        _bad(f"unknown close code {code}")
    return Close(code=known, reason=_str(f[1], "close reason", MAX_REASON))


def _shard_names(v: object, what: str) -> tuple[str, ...]:
    names = tuple(_shard(s) for s in _array(v, what))
    _sorted_keys(list(names), what)
    return names


_PREFIX_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-/")


def _holdings(f: tuple[Any, ...]) -> Holdings:
    if len(f) != 3 or f[2] is not True:
        _array(f, "Holdings", 2)
    return Holdings(
        version=_int(f[0], "holdings version"),
        shards=_shard_names(f[1], "Holdings shards"),
        more=len(f) == 3,
    )


def _offer(f: tuple[Any, ...]) -> Offer:
    _array(f, "Offer", 1)
    shards = _shard_names(f[0], "Offer shards")
    if not shards:
        _bad("Offer without shards")
    return Offer(shards)


def _read_request(f: tuple[Any, ...]) -> ReadRequest:
    _array(f, "ReadRequest", 3)
    prefix = None
    if f[2] is not None:
        prefix = _str(f[2], "read prefix", MAX_SHARD_NAME)
        if not _PREFIX_CHARS.issuperset(prefix):
            _bad(
                f"read prefix {prefix!r:.80} has characters no shard name has",
                CloseCode.INVALID_SHARD,
            )
    shards = _pairs(f[1], "ReadRequest", lambda sv: _bytes(sv, "state vector"))
    if not shards and prefix is None:
        _bad("ReadRequest without shards or prefix")
    return ReadRequest(id=_int(f[0], "request id"), shards=shards, prefix=prefix)


def _read_reply(f: tuple[Any, ...]) -> ReadReply:
    _array(f, "ReadReply", 3)
    shards = _pairs(f[1], "ReadReply", lambda u: _opt_bytes(u, "update"))  # type: ignore[arg-type, return-value]
    return ReadReply(id=_int(f[0], "request id"), shards=shards, last=_bool(f[2], "last"))  # type: ignore[arg-type]


_DECODERS: dict[int, Callable[[tuple[Any, ...]], Message]] = {
    1: _hello,
    2: _push,
    3: _summary,
    4: _digests,
    5: _sync_request,
    6: _diff,
    7: _ack,
    8: _peer_list,
    9: _close,
    10: _holdings,
    11: _offer,
    12: _read_request,
    13: _read_reply,
    14: _diff_chunk,
    15: _certificates,
    16: _diff_batch,
}
