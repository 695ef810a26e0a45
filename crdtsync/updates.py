"""Compatibility shim: the Yjs byte layer now lives in :mod:`crdtsync.yjs`.

Every name this module had is re-exported from there, so ``from crdtsync import updates`` and
``updates.apply_if_ready(...)`` keep working. New code imports from the package:

- :mod:`crdtsync.yjs.parse`: ``validate_update``, ``parse_update``/``UpdateInfo``, ``is_noop``;
- :mod:`crdtsync.yjs.state`: ``decode_state_vector``, ``decode_delete_set``, ``covers``,
  ``EMPTY_STATE_VECTOR``;
- :mod:`crdtsync.yjs.doc`: ``apply_update``, ``state_vector``, ``delete_set``, ``digest``;
- :mod:`crdtsync.yjs.ready`: ``is_ready``, ``apply_if_ready``, ``Backlog``;
- :mod:`crdtsync.yjs.replay`: ``replay``.
"""

from __future__ import annotations

from .errors import InvalidUpdate  # noqa: F401  (re-exported for old imports)

# Private names of the old module that tests reach for (kept so they pass unchanged).
from .yjs.doc import PASS_THROUGH as _PASS_THROUGH  # noqa: F401
from .yjs.doc import apply_update, delete_set, digest, merge_updates, squash_local, state_vector
from .yjs.doc import apply_validated as _apply_validated  # noqa: F401
from .yjs.doc import doc_delete_set as _doc_delete_set  # noqa: F401
from .yjs.parse import MAX_NESTING, UpdateInfo, is_noop, parse_update, validate_update
from .yjs.ready import Backlog, apply_if_ready, is_ready
from .yjs.replay import replay
from .yjs.state import EMPTY_STATE_VECTOR, covers, decode_delete_set, decode_state_vector
from .yjs.state import ds_within as _ds_within  # noqa: F401
from .yjs.state import encode_delete_set as _encode_ds  # noqa: F401
from .yjs.state import normalize_delete_set as _normalize  # noqa: F401

__all__ = [
    "EMPTY_STATE_VECTOR",
    "MAX_NESTING",
    "Backlog",
    "UpdateInfo",
    "apply_if_ready",
    "apply_update",
    "covers",
    "decode_delete_set",
    "decode_state_vector",
    "delete_set",
    "digest",
    "is_noop",
    "merge_updates",
    "squash_local",
    "is_ready",
    "parse_update",
    "replay",
    "state_vector",
    "validate_update",
]

# Private names older tests reach for; kept so they pass unchanged.
_Summary = tuple[int, dict[int, int], dict[int, list[tuple[int, int]]], "tuple[int, int] | None"]


def _parse_update(
    update: object, max_size: int | None, sv: dict[int, int] | None = None
) -> _Summary:
    """(number of structs, struct ends, delete set, missing for ``sv`` or None): the old tuple."""
    info = parse_update(update, max_size=max_size)  # type: ignore[arg-type]
    return info.n_structs, info.ends, info.delete_set, None if sv is None else info.missing(sv)


_checked_parse = _parse_update
