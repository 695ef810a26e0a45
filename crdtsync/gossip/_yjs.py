"""The one door from the gossip core to the Yjs byte layer.

Every Yjs-format question the core asks (is this update well formed, does one state cover
another, decode a state vector or a delete set) goes through the names below, so switching the
core to another implementation of the byte layer is a change of the imports in this file. They
come from the pycrdt-free half of :mod:`crdtsync.yjs` (``parse`` and ``state``).
"""

from __future__ import annotations

from ..errors import CloseCode, InvalidUpdate, map_exceptions
from ..yjs.parse import UpdateInfo, validate_update
from ..yjs.state import EMPTY_STATE_VECTOR, covers, decode_delete_set, decode_state_vector

__all__ = [
    "EMPTY_STATE_VECTOR",
    "UpdateInfo",
    "covers",
    "decode_delete_set",
    "decode_state_vector",
    "validate_update",
]


def check_state(sv: bytes, ds: bytes | None) -> None:
    """Validate a state vector (and delete set) from a peer before anything uses it.

    Raises:
        ProtocolError: INVALID_UPDATE.
    """
    with map_exceptions({InvalidUpdate: CloseCode.INVALID_UPDATE}):
        decode_state_vector(sv)
        if ds is not None:
            decode_delete_set(ds)
