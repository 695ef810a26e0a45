"""How Python values are stored in a shard so that Python reads them back exactly and
JavaScript (Yjs) reads them as they are.

Yjs has one number type (a double), and pycrdt stores an ``int`` as a float and reads every
number back as ``float``. The encoding (format 2) keeps what both languages read naturally
plain, and gives the few values that cannot be both exact and natural a small JSON object:

====================================  ===========================  ==========================
Python value                          stored as (Yjs)              JavaScript reads
====================================  ===========================  ==========================
``None``, ``bool``, ``str``           as is                        ``null``, boolean, string
``int`` with ``|n| <= 2**53 - 1``     a number                     number
``int`` beyond that (64-bit range)    ``{"$int": "<decimal>"}``    object: ``BigInt(v.$int)``
``float``, not whole (``0.5``,        a number                     number
``inf``, ``nan``), ``-0.0``, and
whole floats beyond ``2**53``
``float``, whole, ``|x| <= 2**53``    ``{"$float": x}``            object: ``v.$float``
(``2.0``, ``0.0``)
``bytes``                             Yjs binary, untagged         ``Uint8Array``
``dict`` (str keys) / ``list``        a CRDT ``Map`` / ``Array``   ``Y.Map`` / ``Y.Array``
pycrdt shared types                   as they are                  ``Y.Text``, ``Y.Xml*``...
====================================  ===========================  ==========================

Reading: a number that is whole, within ``2**53 - 1`` and not ``-0.0`` reads back as ``int``
(so whole JavaScript numbers are Python ints), other numbers as ``float``; Yjs binary as
``bytes``; a JSON object that is exactly ``{"$int": "<decimal>"}`` or ``{"$float": <number>}``
as that int or float (a JavaScript client writing such an object means that value); other JSON
objects and arrays (written by Yjs-level clients) as dicts and lists, decoded the same way.

Why this and not the alternatives (measured by ``benchmarks/values_encoding.py``): tagged
binary for every int (format 1) is exact but unreadable in JavaScript; decimal strings for
every int are readable but make ints and strings indistinguishable; Yjs bigints for big ints
are natural in JavaScript but pycrdt rounds them through a double (``2**63 - 1`` comes back as
``2**63``) and panics at ``2**63``. The JSON objects are only needed for ints beyond ``2**53``
and whole floats; everything else is the plain Yjs value.

Format 1 (releases before this one) stored ``int`` as ``b"\\x01"`` + 8 bytes and ``bytes`` as
``b"\\x00"`` + the bytes. :func:`migrate` rewrites such a document to format 2 once, when the
store opens a shard it wrote (see :mod:`crdtsync._registry`), and marks the document so that a
replica which receives the migration does not migrate again; new shards are marked when they
are created (a migration of a document holding format-2 values would corrupt them). This module
is the one place that knows the encoding.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pycrdt

from ._render import Unreadable, render
from .errors import IntOutOfRange, UnsupportedValue

__all__ = [
    "FORMAT",
    "INT_MAX",
    "INT_MIN",
    "MARKER",
    "MAX_REWRITERS",
    "REWRITES",
    "decode_leaf",
    "encode_value",
    "is_marked",
    "mark",
    "migrate",
    "migration_client_id",
    "repair_rewrites",
    "rewriters",
    "to_plain",
    "Unreadable",
]

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
#: Largest int a double (and so a JavaScript number) holds exactly, with all below it.
SAFE = 2**53 - 1
#: The value encoding this module writes.
FORMAT = 2
#: Root-level map of the document holding ``{"values": FORMAT}`` once a shard was migrated.
MARKER = "crdtsync"
#: Prefix of the marker keys ``rewrites.<client id>``: a migration that rewrote values.
REWRITES = "rewrites."

_INT_KEY = "$int"
_FLOAT_KEY = "$float"
_V1_TAG_BYTES = 0
_V1_TAG_INT = 1
_V1_INT = struct.Struct(">q")
_SHARED_TYPES = (
    pycrdt.Text,
    pycrdt.Map,
    pycrdt.Array,
    pycrdt.XmlFragment,
    pycrdt.XmlElement,
    pycrdt.XmlText,
)


def _plain_float(value: float) -> bool:
    """Whether a float is stored as a plain number (it would not read back as an int)."""
    if not value.is_integer() or abs(value) > SAFE:
        return True
    return value == 0 and math.copysign(1.0, value) < 0  # -0.0: no int reads as it


def check_text(text: str, path: str = "value") -> str:
    """``text`` if it can be stored: Yrs keeps strings as UTF-8, and a str holding a lone
    surrogate (``"\\ud800"``, e.g. half of an emoji cut by a UTF-16 index) has no UTF-8 form;
    pycrdt then panics (a ``BaseException``) instead of refusing it. ASCII, the common case,
    costs one ``isascii()``.

    Raises:
        UnsupportedValue: for a str with a lone surrogate (nothing is written).
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsupportedValue(
                f"{path}: a str with a lone surrogate has no UTF-8 form and cannot be stored"
            ) from None
    return text


def encode_value(value: Any, _path: str = "value") -> Any:
    """Turn a Python value into what is assigned into a pycrdt container.

    Raises:
        UnsupportedValue: for a type that cannot round-trip exactly (nothing is written).
        IntOutOfRange: for an int outside the signed 64-bit range.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value, _path)
    if isinstance(value, int):
        if -SAFE <= value <= SAFE:
            return value
        if not INT_MIN <= value <= INT_MAX:
            raise IntOutOfRange(f"{_path}: int {value} is outside the signed 64-bit range")
        return {_INT_KEY: str(value)}
    if isinstance(value, float):
        return value if _plain_float(value) else {_FLOAT_KEY: value}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        items = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsupportedValue(f"{_path}: dict keys must be str, not {type(key).__name__}")
            check_text(key, f"{_path} key {key!r}")
            items[key] = encode_value(item, f"{_path}[{key!r}]")
        return pycrdt.Map(items)
    if isinstance(value, list):
        return pycrdt.Array([encode_value(item, f"{_path}[{i}]") for i, item in enumerate(value)])
    if isinstance(value, _SHARED_TYPES):
        if getattr(value, "_integrated", None) is not None:
            raise UnsupportedValue(
                f"{_path}: this pycrdt {type(value).__name__} already belongs to a document"
            )
        return value
    raise UnsupportedValue(
        f"{_path}: cannot store a {type(value).__name__}; supported: None, bool, int (64-bit), "
        "float, str, bytes, dict with str keys, list, pycrdt types"
    )


def _number(value: float) -> int | float:
    if _plain_float(value):
        return value
    return int(value)


def _tagged(value: dict[str, Any]) -> tuple[bool, Any]:
    """(True, the value) if ``value`` is a ``$int``/``$float`` object, else (False, None)."""
    if len(value) != 1:
        return False, None
    if _INT_KEY in value:
        text = value[_INT_KEY]
        if isinstance(text, str) and text.lstrip("-").isdigit() and text.isascii():
            return True, int(text)
    elif _FLOAT_KEY in value:
        number = value[_FLOAT_KEY]
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return True, float(number)
    return False, None


def decode_leaf(value: Any) -> Any:
    """Turn a stored leaf (not a shared type) back into the Python value that was written."""
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):  # a JSON object: a tagged value, or written by a Yjs client
        tagged, decoded = _tagged(value)
        if tagged:
            return decoded
        return {k: decode_leaf(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_leaf(v) for v in value]
    return value


def to_plain(value: Any) -> Any:
    """A plain, detached Python copy of a stored value: Map -> dict, Array -> list, Text and
    Xml types -> their string (Text: the characters only, without formatting attributes or
    embeds; Xml: the XML markup), a subdocument -> ``{"$subdoc": guid}``. Total and
    iterative: see :mod:`crdtsync._render` for the forms of what cannot be shown (too deep,
    Format items), which render as :class:`Unreadable`."""
    return render(value, decode_leaf)


# -- format 1 -> 2 ---------------------------------------------------------------------------


def is_marked(doc: pycrdt.Doc[Any]) -> bool:
    """Whether the document says its values are in format 2 (it was migrated)."""
    if MARKER not in doc.keys():  # noqa: SIM118  (a Doc is no dict)
        return False
    marker = doc.get(MARKER, type=pycrdt.Map)
    return bool(marker.get("values") == float(FORMAT))


def mark(doc: pycrdt.Doc[Any]) -> None:
    """Record in the document that its values are in format 2."""
    doc.get(MARKER, type=pycrdt.Map)["values"] = FORMAT


def _decode_v1(value: Any) -> Any:
    """A format-1 leaf as the Python value it meant."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) == 9 and value[0] == _V1_TAG_INT:
            return _V1_INT.unpack_from(value, 1)[0]
        if value and value[0] == _V1_TAG_BYTES:
            return bytes(value[1:])
        return bytes(value)
    if isinstance(value, dict):
        return {k: _decode_v1(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_v1(v) for v in value]
    return value  # format 1 read floats (whole or not) as floats


def _reencode(value: Any) -> Any:
    """A format-2 leaf meaning what the format-1 leaf ``value`` meant (JSON objects stay JSON)."""
    plain = _decode_v1(value)
    if isinstance(plain, dict):
        return {k: _reencode_plain(v) for k, v in plain.items()}
    if isinstance(plain, list):
        return [_reencode_plain(v) for v in plain]
    return encode_value(plain)


def _reencode_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reencode_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reencode_plain(v) for v in value]
    return encode_value(value)


def _same_leaf(a: Any, b: Any) -> bool:
    if type(a) is not type(b) and not (
        isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray))
    ):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def _migrate_container(crdt: Any) -> int:
    # Deterministic: map keys in sorted order (a Yrs map iterates in hash order, which may
    # differ between replicas), array elements by index, nested containers depth first.
    changed = 0
    if isinstance(crdt, pycrdt.Map):
        for key in sorted(crdt.keys()):
            item = crdt[key]
            if isinstance(item, _SHARED_TYPES):
                changed += _migrate_container(item)
                continue
            new = _reencode(item)
            if not _same_leaf(new, item):
                crdt[key] = new
                changed += 1
    elif isinstance(crdt, pycrdt.Array):
        for i in range(len(crdt)):
            item = crdt[i]
            if isinstance(item, _SHARED_TYPES):
                changed += _migrate_container(item)
                continue
            new = _reencode(item)
            if not _same_leaf(new, item):
                # Before the old element, then delete it: the copy's right origin is the old
                # element's ID (Yrs places an insert right before the element at that index,
                # after any deleted ones), which is how crdtsync.yjs.rewrites finds two
                # copies of one element.
                crdt.insert(i, new)
                del crdt[i + 1]
                changed += 1
    return changed


# Two agents that open the same format-1 shard at once each migrate it. An array element cannot
# be replaced in place: migration deletes it and inserts the new value, and two such inserts by
# two clients are two elements. So the migration is made a function of the old state alone:
# it runs on a scratch copy of the document whose client id is derived from a hash of that
# state (its state vector and its delete set, both in a canonical form), in a fixed order.
# Two replicas holding the same old state then create the same structs with the same IDs, and
# the CRDT integrates the second copy as the no-op it is: no duplicate, nothing lost. The
# derived id is never one the old state already uses. Replicas whose old states differ (one
# had writes the other lacked) derive different ids, so both copies of an array element they
# both rewrite show: each migration records its id in the marker (``rewrites.<id>``), and
# repair_rewrites, run when a shard opens and after remote updates bring a migration, deletes
# every copy but the one of the smallest id, or all if a migration that held the element saw
# it deleted (crdtsync.yjs.rewrites: the same decision on every replica). What is not
# covered: a map value's rewrite is a write concurrent with the writes that replica lacked,
# which Yjs's last-writer rule (ordered by client id) may let win, so the older value comes
# back; and a user's delete of a copy that is not the smallest id's, made
# before the migrations met, is undone by that copy. Replicas still converge, every value in
# format 2 (tested with two real stores in tests/test_values_migration.py). The marker,
# gossiped like any write, keeps that window short (an agent that receives a migration before
# opening the shard does not migrate).
_MIGRATION_SALT = b"crdtsync values migration 1->2\x00"
#: Client ids stay within what JavaScript's lib0 reads exactly.
_CLIENT_MASK = (1 << 53) - 1


def _canonical_state(doc: pycrdt.Doc[Any]) -> tuple[bytes, set[int]]:
    """(a canonical encoding of the document's state, the client ids it holds)."""
    from .yjs.parse import parse_update
    from .yjs.state import decode_state_vector, encode_delete_set, normalize_delete_set

    sv = decode_state_vector(doc.get_state())
    ds = normalize_delete_set(parse_update(doc.get_update()).delete_set)
    out = bytearray()
    for client in sorted(sv):
        out += b"%d:%d;" % (client, sv[client])
    out += b"|" + encode_delete_set(dict(sorted(ds.items())))
    return bytes(out), set(sv)


def migration_client_id(doc: pycrdt.Doc[Any]) -> int:
    """The client id the migration of ``doc``'s current (old) state writes with: the same on
    every replica holding that state, and none of the ids the state already uses."""
    import hashlib

    state, used = _canonical_state(doc)
    counter = 0
    while True:
        digest = hashlib.sha256(_MIGRATION_SALT + state + counter.to_bytes(4, "big")).digest()
        client = int.from_bytes(digest[:8], "big") & _CLIENT_MASK
        if client and client not in used and client != doc.client_id:
            return client
        counter += 1


def migrate(doc: pycrdt.Doc[Any], root: str) -> int:
    """Rewrite a format-1 document's values under the root map ``root`` to format 2 and mark it,
    in one transaction; returns how many leaves changed. A marked document is left alone.

    Concurrency: the rewrite is a deterministic function of the old state (see the block
    comment above), so replicas that migrate the same old state at once write identical
    structs and converge without duplicates. Replicas whose old states differ still
    converge; the array elements both rewrite show twice until :func:`repair_rewrites` runs,
    and a map write one lacked may be lost.
    """
    from .yjs.state import decode_state_vector

    if is_marked(doc):
        return 0
    state = doc.get_state()
    scratch: pycrdt.Doc[Any] = pycrdt.Doc(client_id=migration_client_id(doc))
    scratch.apply_update(doc.get_update())
    with scratch.transaction():
        changed = (
            _migrate_container(scratch.get(root, type=pycrdt.Map))
            if root in scratch.keys()  # noqa: SIM118  (a Doc is no dict)
            else 0
        )
        mark(scratch)
        if decode_state_vector(state):  # who rewrote what it held (crdtsync.yjs.rewrites)
            scratch.get(MARKER, type=pycrdt.Map)[f"{REWRITES}{scratch.client_id}"] = state
    doc.apply_update(scratch.get_update(state))
    return changed


def rewriters(doc: pycrdt.Doc[Any]) -> dict[int, dict[int, int]]:
    """The migrations that rewrote values in ``doc`` (their marker keys): client id -> the
    state vector of the old state each rewrote."""
    from .yjs.state import decode_state_vector

    if MARKER not in doc.keys():  # noqa: SIM118  (a Doc is no dict)
        return {}
    marker = doc.get(MARKER, type=pycrdt.Map)
    found: dict[int, dict[int, int]] = {}
    for key in marker.keys():  # noqa: SIM118  (a Map is no dict)
        suffix = key[len(REWRITES) :]
        if key.startswith(REWRITES) and suffix.isdigit():
            state = marker[key]
            try:
                found[int(suffix)] = decode_state_vector(bytes(state))
            except (TypeError, ValueError):  # not written by migrate(): not a rewriter
                continue
    return found


#: More migrations than this in one document are not repaired (a document holds one per old
#: replica that migrated before the others' migration reached it: a handful): the repair
#: parses the whole state, and a peer could add marker keys at will.
MAX_REWRITERS = 64


def repair_rewrites(doc: pycrdt.Doc[Any], writers: dict[int, dict[int, int]] | None = None) -> int:
    """Delete the extra copies of array elements that two or more migrations rewrote (see the
    block comment above :data:`_MIGRATION_SALT`), in one delete-only update applied to ``doc``;
    returns how many were deleted. ``writers``: :func:`rewriters` of ``doc`` if the caller has
    them. Cheap when fewer than two migrations rewrote values (the usual case): the document's
    state is parsed only then (and not beyond :data:`MAX_REWRITERS`)."""
    from .yjs.rewrites import delete_only_update, extra_copies

    if writers is None:
        writers = rewriters(doc)
    if not 2 <= len(writers) <= MAX_REWRITERS:
        return 0
    extra = extra_copies(doc.get_update(), writers)
    if not extra:
        return 0
    doc.apply_update(delete_only_update(extra))
    return sum(len(ranges) for ranges in extra.values())
