"""The JSON form of shard values, and RFC 7386 JSON merge-patch applied to a shard.

A shard holds more types than JSON has (64-bit ints apart from floats, non-finite floats,
bytes, collaborative ``Text``), so the HTTP API and anything else that speaks JSON use this
one documented, exact and reversible form: ``from_json(to_json(v)) == v`` for every value a
shard can hold.

==========================  ===============================================================
shard value                 JSON form
==========================  ===============================================================
``None``, ``bool``, ``str``  ``null``, ``true``/``false``, a string
``int``                     a JSON integer (no ``.`` or exponent) when ``|v| < 2**53``, so
                            every JSON reader holds it exactly; beyond, ``{"$int": "<decimal>"}``
``float`` (finite)          a JSON number that always has a ``.`` or an exponent (``3.0``,
                            ``1e+100``); shortest repr, so it round-trips bit for bit
``float`` (non-finite)      ``{"$float": "NaN"}``, ``{"$float": "Infinity"}``, ``{"$float":
                            "-Infinity"}`` (strict JSON has no such numbers)
``bytes``                   ``{"$bytes": "<standard base64, padded>"}``
``pycrdt.Text``             ``{"$text": "<its content>"}`` (formatting attributes are not kept)
``Xml*`` types              ``{"$xml": "<serialised>"}``, read-only
``dict`` / CRDT map         a JSON object; a key that starts with ``$`` is written with one more
                            ``$`` in front (``"$ref"`` -> ``"$$ref"``), so tags never collide
``list`` / CRDT array       a JSON array
==========================  ===============================================================

On input the same forms are accepted, plus ``{"$int": <integer>}`` and ``{"$float": <number or
numeric string>}`` (a writer in a language that cannot tell ``3`` from ``3.0`` writes the float
``3.0`` as ``{"$float": 3}``). An object with a single key that is a tag is that tagged value;
any other key starting with a single ``$`` is refused, as are unknown tags, ints outside signed
64 bits, the non-standard literals ``NaN``/``Infinity``, numbers that overflow a double and
duplicate keys. Every refusal is a :class:`JsonFormError` naming the JSON Pointer of the
offending spot, raised before anything is written.

:func:`merge_patch` applies an RFC 7386 merge patch to a shard as **one** transaction (one
delta, one change record): nested objects merge key by key into nested maps, ``null`` deletes a
key, anything else (arrays, scalars, tagged values) replaces the key's value. As in RFC 7386, a
merge patch cannot store ``null`` inside a map (``null`` means delete there); arrays are
replaced whole and keep their ``null`` elements.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

from .containers import ROOT, Counter, counter_value, named_containers
from .errors import UnsupportedValue, UsageError
from .values import INT_MAX, INT_MIN, check_text
from .views import ListView, MapView

__all__ = [
    "MAX_DEPTH",
    "TAGS",
    "JsonFormError",
    "PatchOp",
    "doc_json",
    "dumps",
    "from_json",
    "loads",
    "merge_patch",
    "plan_merge_patch",
    "pointer",
    "shard_json",
    "to_json",
]

#: The tags of the JSON form (single-key objects), in the order the docs list them.
TAGS = ("$int", "$float", "$bytes", "$text", "$xml")
#: Deepest nesting accepted on input (objects and arrays), so a hostile body cannot recurse
#: the parser or pycrdt into a stack overflow.
MAX_DEPTH = 64
_INT_DIGITS = 20  # more significant decimal digits than any signed 64-bit int has (19)
_SAFE_INT = 2**53  # |v| below this: every JSON reader (IEEE doubles) holds the int exactly
_XML = (pycrdt.XmlFragment, pycrdt.XmlElement, pycrdt.XmlText)
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class JsonFormError(UsageError, ValueError):
    """JSON that is not a valid JSON form of a shard value, or a merge patch that cannot apply.

    Attributes:
        pointer: RFC 6901 JSON Pointer of the offending spot in the document ("" = the whole).
    """

    def __init__(self, message: str, at: str = "") -> None:
        # A refused key may hold a lone surrogate: escape it, so the message itself can be
        # sent (as UTF-8 JSON: an HTTP problem, an MCP tool error) instead of failing there.
        at = at.encode("utf-8", "backslashreplace").decode("utf-8")
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(f"at {at}: {message}" if at else message)
        self.pointer = at
        self.reason = message


def pointer(parent: str, key: str | int) -> str:
    """The JSON Pointer of ``key`` under ``parent`` (RFC 6901 escaping)."""
    return f"{parent}/{str(key).replace('~', '~0').replace('/', '~1')}"


_LIST_INDEX = re.compile(r"0|[1-9][0-9]*")  # RFC 6901's array-index, ASCII only


def list_index(token: str) -> int | None:
    """``token`` as an RFC 6901 array index, or None when it is not one.

    Only ``0`` or ASCII digits without a leading zero are indexes: ``str.isdigit`` also takes
    ``"01"``, ``"\u0661"`` (an Arabic-Indic one) and ``"\u00b2"`` (a superscript two, on which
    ``int()`` raises), so paths from HTTP and MCP callers are checked here instead.
    """
    if len(token) > 18:  # past any list's length, and int() refuses over 4300 digits
        return None
    return int(token) if _LIST_INDEX.fullmatch(token) else None


# -- shard values -> JSON ----------------------------------------------------------------------


def _escape_key(key: str) -> str:
    return "$" + key if key.startswith("$") else key


def to_json(value: Any) -> Any:
    """The JSON form of a shard value: plain values, live views, or pycrdt types.

    The result holds only ``dict``, ``list``, ``str``, ``int``, finite ``float``, ``bool`` and
    ``None``, so ``json.dumps(..., allow_nan=False)`` always succeeds.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT < value < _SAFE_INT else {"$int": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {
            "$float": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        }
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Counter):  # a named counter (shard.counter): its converged-so-far sum
        return to_json(value.value)
    if isinstance(value, pycrdt.Map):
        value = MapView(value)
    elif isinstance(value, pycrdt.Array):
        value = ListView(value)
    if isinstance(value, pycrdt.Text):
        return {"$text": str(value)}
    if isinstance(value, _XML):
        return {"$xml": str(value)}
    if isinstance(value, MapView):
        return {_escape_key(key): to_json(value[key]) for key in value}
    if isinstance(value, ListView):
        return [to_json(value[i]) for i in range(len(value))]
    if isinstance(value, Mapping):
        return {_escape_key(str(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [to_json(v) for v in value]
    raise JsonFormError(f"a {type(value).__name__} has no JSON form", "")


def shard_json(shard: MapView) -> dict[str, Any]:
    """The JSON form of a whole shard (or any map view), with ``Text`` kept as ``$text``."""
    return to_json(shard)  # type: ignore[no-any-return]


def doc_json(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    """The JSON form of a shard's document (:func:`shard_json` of the shard it holds): the
    root map's keys, then the non-empty named containers, as ``Shard.snapshot`` lists them.
    For a document that is not an open shard, such as the join of other holders' answers."""
    root = MapView(doc.get(ROOT, type=pycrdt.Map))
    out = {_escape_key(key): to_json(root[key]) for key in root}
    for kind, key, crdt in named_containers(doc):
        if key in root or len(crdt) == 0:
            continue
        out[_escape_key(key)] = to_json(counter_value(crdt) if kind == "counter" else crdt)
    return out


# -- JSON -> shard values ----------------------------------------------------------------------


def _tag_of(obj: Mapping[str, Any]) -> str | None:
    if len(obj) == 1:
        (key,) = obj
        if key in TAGS:
            return key
    return None


def _check_str(text: str, where: str, what: str = "string") -> str:
    """``text`` if Yrs can store it: a lone surrogate (``"\\ud800"``, e.g. half of an emoji cut
    by a UTF-16 index, or a ``\\ud800`` escape in JSON) has no UTF-8 form, and pycrdt fails on
    it halfway through a write; refused here, before anything is written."""
    try:
        return check_text(text, where)  # the values' own check (one isascii() for ASCII)
    except UnsupportedValue:
        raise JsonFormError(
            f"the {what} {text[:40]!r} holds a lone surrogate (half of a UTF-16 pair), "
            "which has no UTF-8 form and cannot be stored",
            where,
        ) from None


def _unescape_key(key: str, where: str) -> str:
    _check_str(key, where, "key")
    if key.startswith("$$"):
        return key[1:]
    if key.startswith("$"):
        raise JsonFormError(
            f"key {key!r}: keys starting with '$' are reserved for tags "
            f"({', '.join(TAGS)}); write the key {key!r} as {'$' + key!r}",
            where,
        )
    return key


def _from_tag(tag: str, arg: Any, where: str) -> Any:
    if tag == "$int":
        if isinstance(arg, str):
            text = arg.strip()
            digits = text.lstrip("+-")
            if not (digits.isascii() and digits.isdigit()) or text != arg:
                raise JsonFormError(f"$int needs a decimal integer string, not {arg!r}", where)
            if len(digits.lstrip("0")) > _INT_DIGITS:  # int() refuses over 4300 digits
                raise JsonFormError(
                    f"$int {arg[:24]}... ({len(digits)} digits) is outside the signed 64-bit range",
                    where,
                )
            arg = int(text)
        if isinstance(arg, bool) or not isinstance(arg, int):
            raise JsonFormError("$int needs an integer or a decimal integer string", where)
        return _check_int(arg, where)
    if tag == "$float":
        if isinstance(arg, str):
            if arg in _NON_FINITE:
                return _NON_FINITE[arg]
            try:
                number = float(arg)
            except ValueError:
                raise JsonFormError(
                    f"$float needs a number, 'NaN', 'Infinity' or '-Infinity', not {arg!r}", where
                ) from None
            if not math.isfinite(number):
                raise JsonFormError(
                    f"$float {arg!r}: spell non-finite floats 'NaN', 'Infinity' or '-Infinity'",
                    where,
                )
            return number
        if isinstance(arg, bool) or not isinstance(arg, (int, float)):
            raise JsonFormError("$float needs a number or a string", where)
        try:
            return float(arg)
        except OverflowError:
            raise JsonFormError(f"$float {arg}: too large for a double", where) from None
    if tag == "$bytes":
        if not isinstance(arg, str):
            raise JsonFormError("$bytes needs a base64 string", where)
        try:
            return base64.b64decode(arg.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise JsonFormError(
                "$bytes is not valid standard base64 (with padding)", where
            ) from None
    if tag == "$text":
        if not isinstance(arg, str):
            raise JsonFormError("$text needs a string", where)
        return pycrdt.Text(_check_str(arg, where))
    raise JsonFormError(f"{tag} values are read-only: they cannot be written through JSON", where)


def _check_int(value: int, where: str) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise JsonFormError(f"int {value} is outside the signed 64-bit range", where)
    return value


def from_json(obj: Any, where: str = "", *, drop_nulls: bool = False, _depth: int = 0) -> Any:
    """The shard value a JSON form stands for (the inverse of :func:`to_json`).

    ``obj`` is already-parsed JSON (see :func:`loads`). With ``drop_nulls`` (merge-patch
    semantics for a newly created map) ``null`` members of objects are left out; arrays always
    keep their elements. Validates everything: a value returned can be stored as it is.

    Raises:
        JsonFormError: unknown or malformed tag, reserved key, int out of range, nesting
            deeper than :data:`MAX_DEPTH`, or a non-JSON Python value.
    """
    if _depth > MAX_DEPTH:
        raise JsonFormError(f"nested deeper than {MAX_DEPTH} levels", where)
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return _check_str(obj, where)
    if isinstance(obj, int):
        return _check_int(obj, where)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise JsonFormError('non-finite number: write it as {"$float": "NaN"} etc.', where)
        return obj
    if isinstance(obj, dict):
        tag = _tag_of(obj)
        if tag is not None:
            return _from_tag(tag, obj[tag], pointer(where, tag))
        out: dict[str, Any] = {}
        for key, item in obj.items():
            if not isinstance(key, str):
                raise JsonFormError(f"object keys must be strings, not {type(key).__name__}", where)
            here = pointer(where, key)
            real = _unescape_key(key, here)
            if item is None and drop_nulls:
                continue
            out[real] = from_json(item, here, drop_nulls=drop_nulls, _depth=_depth + 1)
        return out
    if isinstance(obj, list):
        return [from_json(item, pointer(where, i), _depth=_depth + 1) for i, item in enumerate(obj)]
    raise JsonFormError(f"a {type(obj).__name__} is not JSON", where)


# -- strict text <-> JSON ----------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise JsonFormError(f'{name} is not JSON; write {{"$float": "{name}"}}')


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonFormError(
            f'number {text} overflows a double; use {{"$float": "Infinity"}} if meant'
        )
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonFormError(f"duplicate key {key!r} in an object")
        out[key] = value
    return out


def loads(data: str | bytes) -> Any:
    """Parse JSON text strictly: UTF-8 only, no ``NaN``/``Infinity`` literals, no numbers that
    overflow a double, no duplicate keys (:func:`from_json` then bounds the nesting).

    Raises:
        JsonFormError: the text is not such JSON (the message says where).
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonFormError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(
            data,
            parse_constant=_no_constant,
            parse_float=_parse_float,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise JsonFormError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise JsonFormError("nested too deeply") from None
    except JsonFormError:
        raise
    except ValueError:  # json raises it for an int literal over Python's 4300-digit limit
        raise JsonFormError(
            "invalid JSON: an integer of thousands of digits (a shard holds signed 64-bit ints)"
        ) from None


def dumps(obj: Any) -> str:
    """Serialise a JSON form compactly as strict JSON (UTF-8 text, no NaN)."""
    return json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


# -- merge patch -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatchOp:
    """One write of a planned merge patch: set ``target[key] = value`` or delete ``target[key]``.

    ``value`` is an already validated shard value; ``path`` the keys from the shard's top.
    """

    target: MapView
    key: str
    path: tuple[str, ...]
    value: Any = None
    delete: bool = False


def plan_merge_patch(root: MapView, patch: Any) -> list[PatchOp]:
    """Validate a merge patch against the current state and list the writes it makes.

    Reads only; nothing is written. The top level of a shard is a map, so the patch must be
    a JSON object (not a tagged value).

    Raises:
        JsonFormError: the patch (anywhere) is invalid; nothing was written.
    """
    if not isinstance(patch, dict) or _tag_of(patch) is not None:
        raise JsonFormError(
            "a shard's top level is a map: the merge patch must be a JSON object of keys"
        )
    ops: list[PatchOp] = []
    _plan(root, patch, "", (), ops, 0)
    return ops


def _plan(
    target: MapView,
    patch: dict[str, Any],
    where: str,
    path: tuple[str, ...],
    ops: list[PatchOp],
    depth: int,
) -> None:
    if depth > MAX_DEPTH:
        raise JsonFormError(f"nested deeper than {MAX_DEPTH} levels", where)
    for key, value in patch.items():
        here = pointer(where, key)
        real = _unescape_key(key, here)
        current = target.get(real)
        if value is None:
            if real in target:
                ops.append(PatchOp(target, real, path + (real,), delete=True))
        elif isinstance(value, dict) and _tag_of(value) is None and isinstance(current, MapView):
            _plan(current, value, here, path + (real,), ops, depth + 1)
        else:
            converted = from_json(value, here, drop_nulls=True, _depth=depth + 1)
            ops.append(PatchOp(target, real, path + (real,), value=converted))


def merge_patch(shard: Any, patch: Any) -> list[PatchOp]:
    """Apply an RFC 7386 merge patch (parsed JSON) to ``shard`` as one transaction.

    The whole patch is validated against the current state first; then every write happens
    in one ``shard.transaction()`` (one delta, one change record, replicated as one). A patch
    that changes nothing (e.g. deleting absent keys) writes nothing.

    Returns:
        The writes made, in order.

    Raises:
        JsonFormError: the patch is invalid; nothing was written.
        ClosedError: the shard is closed.
    """
    ops = plan_merge_patch(shard, patch)
    if ops:
        with shard.transaction():
            for op in ops:
                if op.delete:
                    del op.target[op.key]
                else:
                    op.target[op.key] = op.value
    return ops
