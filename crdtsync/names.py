"""Shard names: the one place that decides what a valid name is.

A shard name is 1 to 128 characters from ``A-Z a-z 0-9 . _ - : /``, starts with a letter or
digit, and has no empty ``/`` segment (no ``//``, no trailing ``/``). Names are keys inside the
LMDB store, never paths on disk, and the store separates them from other key parts with a NUL
byte that no valid name contains, so two names can never collide. ``/`` is allowed so callers
can group shards (``sensors/kitchen``) and read them by prefix.
"""

from __future__ import annotations

import re

from .errors import InvalidShardName

__all__ = ["MAX_SHARD_NAME", "validate_shard_name", "validate_agent_name", "is_valid_shard_name"]

MAX_SHARD_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*(?:/[A-Za-z0-9._:\-]+)*")


#: Names found valid lately (every received frame names its shard and writer: issue 17/18);
#: emptied when full, so names a flood invents cost what they cost without it.
_VALID: set[str] = set()
_VALID_MAX = 4096


def is_valid_shard_name(name: object) -> bool:
    """Whether ``name`` is a valid shard name (never raises)."""
    if type(name) is str and name in _VALID:
        return True
    ok = (
        isinstance(name, str)
        and 0 < len(name) <= MAX_SHARD_NAME
        and _NAME.fullmatch(name) is not None
    )
    if ok and type(name) is str:
        if len(_VALID) >= _VALID_MAX:
            _VALID.clear()
        _VALID.add(name)
    return ok


def validate_shard_name(name: object, what: str = "shard") -> str:
    """Return ``name`` if it is a valid shard name, else raise :class:`InvalidShardName`
    (whose message calls it a ``what`` name)."""
    if not is_valid_shard_name(name):
        raise InvalidShardName(
            f"invalid {what} name {name!r}: use 1-{MAX_SHARD_NAME} characters from "
            "A-Z a-z 0-9 . _ - : /, starting with a letter or digit, no empty '/' segments"
        )
    return name  # type: ignore[return-value]


def validate_agent_name(name: object) -> str:
    """Agent names use the shard-name alphabet; the error says "invalid agent name"."""
    return validate_shard_name(name, "agent")
