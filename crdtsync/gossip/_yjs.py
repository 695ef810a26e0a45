"""The one door from the gossip core to the Yjs byte layer.

Every Yjs-format question the core asks (is this update well formed, does one state cover
another, decode a state vector or a delete set) goes through the names below, so switching the
core to another implementation of the byte layer (the pycrdt-free ``crdtsync.yjs`` package) is
a change of the one import in this file.
"""

from __future__ import annotations

from ..errors import CloseCode, InvalidUpdate, map_exceptions
from ..updates import covers, decode_delete_set, decode_state_vector, validate_update

__all__ = [
    "EMPTY_STATE_VECTOR",
    "covers",
    "decode_delete_set",
    "decode_state_vector",
    "validate_update",
]

#: The encoded empty Yjs state vector (a varuint 0: no clients): ``diff`` of it is everything.
EMPTY_STATE_VECTOR = b"\x00"


def check_state(sv: bytes, ds: bytes | None) -> None:
    """Validate a state vector (and delete set) from a peer before anything uses it.

    Raises:
        ProtocolError: INVALID_UPDATE.
    """
    with map_exceptions({InvalidUpdate: CloseCode.INVALID_UPDATE}):
        decode_state_vector(sv)
        if ds is not None:
            decode_delete_set(ds)
