"""Total, iterative rendering of a stored CRDT value into plain Python (issue #11).

:func:`render` is what ``snapshot()`` and the views' ``to_py()`` use. Whatever a stored shard
holds, it returns a value and never raises or crashes: a hostile or buggy peer can store shapes
that pycrdt's own readers cannot show (a Format item as a map value makes ``Map.items()`` raise
KeyError; 1,000 nested maps overflow a recursive walk; 100,000 nested XML elements make
``str(XmlElement)`` overflow the native stack and segfault). So:

* the walk uses an explicit stack, never recursion, and stops at :data:`MAX_READ_DEPTH`;
* XML is serialised here, iteratively, in pycrdt's format (``<tag a="1">children</tag>``);
* what cannot be shown is rendered as an :class:`Unreadable`, a ``str`` subclass whose text
  says why (so a snapshot stays JSON-serialisable, and code can test ``isinstance``):

  ==============================  =========================================
  stored                          rendered
  ==============================  =========================================
  container deeper than the cap   ``Unreadable("<unreadable: deeper than 64>")``
  a value pycrdt cannot read      ``Unreadable("<unreadable: KeyError ...>")`` (e.g. a Format)
  a subdocument                   ``{"$subdoc": GUID}`` (its content is its own)
  anything else unknown           ``Unreadable("<unreadable: TYPE>")``
  ==============================  =========================================

Imports only pycrdt; the leaf decoder is passed in (see :func:`crdtsync.values.to_plain`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pycrdt

__all__ = ["MAX_READ_DEPTH", "Unreadable", "render"]

#: Deepest container nesting a read renders; deeper containers render as :class:`Unreadable`.
#: The validator refuses updates that nest types deeper than this within themselves, and
#: crdtsync's own writes never come near it; only nesting built across many updates gets here.
MAX_READ_DEPTH = 64

_XML = (pycrdt.XmlFragment, pycrdt.XmlElement)


class Unreadable(str):
    """A stored value that a read cannot show; the text says why (see the module table)."""

    __slots__ = ()


def _why(exc: BaseException) -> Unreadable:
    return Unreadable(f"<unreadable: {type(exc).__name__} {str(exc)[:60]}>")


def _xml_text(value: Any) -> str:
    """An XML fragment or element as pycrdt's ``str()`` writes it, without recursion; elements
    deeper than MAX_READ_DEPTH are cut off (written as an Unreadable marker)."""
    out: list[str] = []
    # A stack of work: either a node to open (with its depth) or a closing tag to write.
    stack: list[tuple[Any, int] | str] = [(value, 0)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node, depth = item
        try:
            if isinstance(node, pycrdt.XmlText):
                out.append(str(node))
                continue
            if not isinstance(node, _XML):
                out.append(str(node))
                continue
            if depth > MAX_READ_DEPTH:
                out.append(f"<unreadable: deeper than {MAX_READ_DEPTH}>")
                continue
            children = list(node.children)
            if isinstance(node, pycrdt.XmlElement):
                attrs = "".join(f' {k}="{v}"' for k, v in sorted(node.attributes))
                out.append(f"<{node.tag}{attrs}>")
                stack.append(f"</{node.tag}>")
            stack.extend((child, depth + 1) for child in reversed(children))
        except Exception as exc:  # noqa: BLE001 - a read must never raise
            out.append(_why(exc))
    return "".join(out)


def _leaf(value: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(value, pycrdt.Text):
        return str(value)
    if isinstance(value, _XML):
        return _xml_text(value)
    if isinstance(value, pycrdt.XmlText):
        return str(value)
    if isinstance(value, pycrdt.Doc):
        return {"$subdoc": str(value.guid)}  # a subdocument: its guid (its content is its own)
    if value is None or isinstance(value, (bool, int, float, str, bytes, bytearray, list, dict)):
        try:
            return leaf(value)
        except Exception as exc:  # noqa: BLE001
            return _why(exc)
    return Unreadable(f"<unreadable: {type(value).__name__}>")


def render(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """A plain, detached copy of ``value``: Map -> dict, Array -> list, Text and XML -> str,
    leaves through ``leaf``; total (never raises) and iterative (see the module docstring)."""
    if not isinstance(value, (pycrdt.Map, pycrdt.Array)):
        return _leaf(value, leaf)
    root: list[Any] = [None]
    # (container, depth, where to put the result: (parent object, key or index))
    stack: list[tuple[Any, int, Any, Any]] = [(value, 0, root, 0)]
    while stack:
        crdt, depth, parent, slot = stack.pop()
        if depth > MAX_READ_DEPTH:
            parent[slot] = Unreadable(f"<unreadable: deeper than {MAX_READ_DEPTH}>")
            continue
        try:
            if isinstance(crdt, pycrdt.Map):
                out: Any = {}
                for key in list(crdt.keys()):
                    try:
                        child = crdt[key]
                    except Exception as exc:  # noqa: BLE001 - e.g. a Format item as value
                        out[key] = _why(exc)
                        continue
                    if isinstance(child, (pycrdt.Map, pycrdt.Array)):
                        out[key] = None
                        stack.append((child, depth + 1, out, key))
                    else:
                        out[key] = _leaf(child, leaf)
            else:
                items = list(crdt)
                out = [None] * len(items)
                for i, child in enumerate(items):
                    if isinstance(child, (pycrdt.Map, pycrdt.Array)):
                        stack.append((child, depth + 1, out, i))
                    else:
                        out[i] = _leaf(child, leaf)
        except Exception as exc:  # noqa: BLE001 - a read must never raise
            out = _why(exc)
        parent[slot] = out
    return root[0]
