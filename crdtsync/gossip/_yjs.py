"""The one door from the gossip core to the Yjs byte layer.

Every Yjs-format question the core asks (is this update well formed, does one state cover
another, decode a state vector or a delete set) goes through the names below, so switching the
core to another implementation of the byte layer is a change of the imports in this file. They
come from the pycrdt-free half of :mod:`crdtsync.yjs` (``parse`` and ``state``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from ..errors import CloseCode, InvalidUpdate, map_exceptions
from ..yjs.parse import UpdateInfo, first_client, validate_update
from ..yjs.state import (
    EMPTY_STATE_VECTOR,
    DeleteSet,
    decode_delete_set,
    decode_state_vector,
    ds_within,
    encode_state_vector,
    sv_covers,
)

__all__ = [
    "EMPTY_STATE_VECTOR",
    "DeleteSet",
    "UpdateInfo",
    "covers",
    "decode_delete_set",
    "decode_state_vector",
    "ds_within",
    "encode_state_vector",
    "first_client",
    "validate_update",
]


#: Decoded delete sets kept (most recently used), and the largest encoding kept: a streamed
#: text's delete set is a few KB, decoded in pure Python at every ack and every comparison
#: (issue 17's profiles: the largest CPU item of a writer with followers). Bounded in count
#: and size: a peer cannot make us hold more than about 10 MB of decoded ranges.
_DS_CACHE_ENTRIES = 16
_DS_CACHE_MAX_BYTES = 16 * 1024
_ds_cache: OrderedDict[bytes, DeleteSet] = OrderedDict()


def _delete_set(ds: bytes) -> Mapping[int, list[tuple[int, int]]]:
    """``decode_delete_set(ds)``, from the cache when these bytes were decoded lately (the
    result is shared: read it, never change it). Raises what decoding raises."""
    if not isinstance(ds, bytes):
        return decode_delete_set(ds)  # (raises: a delete set is bytes)
    hit = _ds_cache.get(ds)
    if hit is not None:
        _ds_cache.move_to_end(ds)
        return hit
    decoded = decode_delete_set(ds)
    if len(ds) <= _DS_CACHE_MAX_BYTES:
        _ds_cache[ds] = decoded
        if len(_ds_cache) > _DS_CACHE_ENTRIES:
            _ds_cache.popitem(last=False)
    return decoded


def covers(sv_a: bytes, ds_a: bytes, sv_b: bytes, ds_b: bytes) -> bool:
    """Whether replica A holds everything replica B holds (:func:`crdtsync.yjs.state.covers`),
    with equal delete sets compared as bytes (the encodings are canonical) and the decoded
    ones taken from the cache.

    Raises:
        InvalidUpdate: one of the arguments is not well-formed.
    """
    if not sv_covers(sv_a, sv_b):
        return False
    return ds_a == ds_b or ds_within(_delete_set(ds_b), _delete_set(ds_a))


def check_state(sv: bytes, ds: bytes | None) -> None:
    """Validate a state vector (and delete set) from a peer before anything uses it (a delete
    set decoded lately passed already: it is not decoded again).

    Raises:
        ProtocolError: INVALID_UPDATE.
    """
    with map_exceptions({InvalidUpdate: CloseCode.INVALID_UPDATE}):
        decode_state_vector(sv)
        if ds is not None:
            _delete_set(ds)
