"""One walk over the items of a validated update's struct section, for the pure-Python
readers that need each item's ID, origins and content span (:mod:`.surrogates`,
:mod:`.rewrites`). The strict parser (:mod:`crdtsync.yjs.parse`, compiled ``_scan``) has its
own loop: it checks every field and prices the work, which these readers need not repeat.
"""

from __future__ import annotations

from collections.abc import Callable

from ._content import content
from ._lib0 import MAX_CLOCK, MAX_SAFE, read_uint, skip_str

__all__ = ["ID", "ItemVisitor", "walk_items"]

ID = tuple[int, int]

#: Called for every item (not GC or skip ranges): (client, clock, kind, origin, right
#: origin, content start, content end, length in clocks).
ItemVisitor = Callable[[int, int, int, "ID | None", "ID | None", int, int, int], None]

_INFO_GC, _INFO_SKIP = 0, 10
_HAS_ORIGIN, _HAS_RIGHT_ORIGIN, _HAS_PARENT_SUB = 0x80, 0x40, 0x20


def walk_items(data: bytes, visit: ItemVisitor) -> int:
    """Call ``visit`` for every item of the update ``data`` in encoding order, and return the
    offset of its delete set."""
    n_clients, pos = read_uint(data, 0, MAX_SAFE, "number of clients")
    for _ in range(n_clients):
        n_structs, pos = read_uint(data, pos, MAX_SAFE, "number of structs")
        client, pos = read_uint(data, pos, MAX_SAFE, "client id")
        clock, pos = read_uint(data, pos, MAX_CLOCK, "first clock")
        for _ in range(n_structs):
            info = data[pos]
            pos += 1
            if info in (_INFO_GC, _INFO_SKIP):
                length, pos = read_uint(data, pos, MAX_CLOCK, "length")
                clock += length
                continue
            origin: ID | None = None
            right: ID | None = None
            if info & _HAS_ORIGIN:
                c, pos = read_uint(data, pos, MAX_SAFE, "origin client")
                k, pos = read_uint(data, pos, MAX_CLOCK, "origin clock")
                origin = (c, k)
            if info & _HAS_RIGHT_ORIGIN:
                c, pos = read_uint(data, pos, MAX_SAFE, "right origin client")
                k, pos = read_uint(data, pos, MAX_CLOCK, "right origin clock")
                right = (c, k)
            if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
                parent_info, pos = read_uint(data, pos, 1, "parent info")
                if parent_info:
                    pos = skip_str(data, pos, "root type name")
                else:
                    _, pos = read_uint(data, pos, MAX_SAFE, "parent client")
                    _, pos = read_uint(data, pos, MAX_CLOCK, "parent clock")
                if info & _HAS_PARENT_SUB:
                    pos = skip_str(data, pos, "parent key")
            kind = info & 0x0F
            start = pos
            length, pos = content(data, pos, kind)
            visit(client, clock, kind, origin, right, start, pos, length)
            clock += length
    return pos
