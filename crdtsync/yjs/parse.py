"""The strict parser of lib0 **v1** Yjs updates: :func:`parse_update` and :func:`validate_update`.

Every update that arrives from a peer goes through here before pycrdt sees it, because pycrdt
is not a safe parser of hostile bytes: it accepts some garbage silently
(``bytes(range(256))`` applies as a no-op), panics on others (``pyo3_runtime.PanicException``,
which ``except Exception`` does not catch), and a few inputs make it allocate without bound.
The block comment below says what is refused and why.

One pass yields an :class:`UpdateInfo`, the summary the rest of crdtsync needs: the clocks the
update reaches per client, its delete set, its size, and what it references, so that
:meth:`UpdateInfo.missing` can say for any state vector whether a doc there would integrate
all of it at once (see :mod:`crdtsync.yjs.ready`). Parse once at the trust boundary and carry
the info on, rather than parsing the same bytes again.

Pure Python, no pycrdt: the sans-I/O gossip core imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import InvalidUpdate, UpdateOverLimit
from ._causal import first_missing
from ._content import MAX_NESTING
from ._lib0 import MAX_SAFE, read_uint
from ._malformed import Malformed, OverLimit
from .limits import DEFAULT_LIMITS, UpdateLimits
from .state import DeleteSet, read_delete_set

if TYPE_CHECKING:
    from . import _scan as scan
else:
    from ._native import scan
from . import _native
from ._native import PLACES

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_NESTING",
    "UpdateInfo",
    "UpdateLimits",
    "WORK_PER_BYTE",
    "first_client",
    "is_noop",
    "parse_update",
    "validate_update",
]


#: Bound of :attr:`UpdateInfo.work` per byte of an update accepted under the default limits
#: (not counting the merge work, capped by ``max_merge_work``): an item costs 1 step plus at
#: most ``max_fan`` (256) conflict-scan steps, and takes at least 4 bytes (info byte, origin,
#: one byte of content); a deleted range costs 1 step and takes at least 2 bytes.
WORK_PER_BYTE = 65


def first_client(update: bytes) -> int | None:
    """The client id of the first struct group of a Yjs v1 update (a local delta holds only
    the writer's own structs), read without validating the rest; None if the update has no
    struct group (deletes only) or its first three varuints cannot be read."""
    try:
        groups, pos = read_uint(update, 0, MAX_SAFE, "number of clients")
        if not groups:
            return None
        _, pos = read_uint(update, pos, MAX_SAFE, "number of structs")
        client, _ = read_uint(update, pos, MAX_SAFE, "client")
    except Malformed:
        return None
    return client


# ---------------------------------------------------------------------------------------------
# The lib0 v1 update encoding, as Yjs (src/utils/encoding.js, src/structs/*.js) and Yrs
# (yrs/src/update.rs, block.rs, any.rs, id_set.rs) read it. All integers are lib0 varuints
# (7 bits a byte, least significant group first, high bit = "more follows") unless noted.
#
#   update      = structs delete_set
#   structs     = n_clients { n_structs client clock struct* }
#   struct      = info:u8 ...
#     info == 0         GC      len                       (collected tombstones)
#     info == 10        Skip    len                       (a hole in a merged update)
#     otherwise         Item:   bit 7 (0x80) origin present, bit 6 (0x40) right origin present,
#                               bit 5 (0x20) parentSub present, bits 0-3 content kind
#         [origin = client clock] [right_origin = client clock]
#         if neither origin: parent_info (1 = root type named by a string, 0 = parent item ID)
#                            then that string or ID, then parentSub string if bit 5
#         content by kind:
#           1 Deleted  len                 4 String  string (length = its UTF-16 code units)
#           2 JSON     n string*           5 Embed   string holding JSON
#           3 Binary   bytes               6 Format  key string, string holding JSON
#           7 Type     type_ref:u8 (3 XmlElement and 5 XmlHook are followed by a name string)
#           8 Any      n any*              9 Doc     guid string, any (options map)
#       Every struct occupies `length` clocks; a client's structs are consecutive from `clock`.
#   delete_set  = n_clients { client n_ranges { clock len }* }
#   string      = len utf8_bytes (length in UTF-8 bytes), bytes = len raw_bytes
#   any         = tag:u8 ...   127 undefined, 126 null, 125 varint, 124 float32 (4 bytes BE),
#                 123 float64 (8 BE), 122 bigint64 (8 BE), 121 false, 120 true, 119 string,
#                 118 object n {key_string any}*, 117 array n any*, 116 bytes
#   varint      = first byte: bit 7 more, bit 6 sign, 6 magnitude bits; then varuint groups
#   state vector = n { client clock }*
#
# What this validator is stricter about than both decoders, and why:
# * Integer ranges. Clocks are u32 in Yrs, and pycrdt panics ("Option::unwrap() on None")
#   when a struct wraps past 2**32-1, and already when a struct starts more than 2**31 clocks
#   beyond what the doc holds of its client. So every clock, length and end clock (of structs,
#   delete ranges, origins, parents, state vectors) must stay <= 2**31-1: two billion
#   operations of one client, far beyond any real document. Client ids and other counts are
#   capped at 2**53-1 like lib0's readVarUint (pycrdt refuses client ids above 53 bits too).
#   Varints must be minimally encoded and at most 8 bytes: every encoder writes them so, and
#   one value has then exactly one encoding.
# * Counts are checked against the bytes left before looping: Yrs pre-allocates from some of
#   them (delete-set ranges, Any arrays and maps), and an absurd count aborts the process.
# * Nesting of Any values and of JSON is limited to MAX_NESTING: Yrs decodes Any recursively on
#   the native stack, and serde_json gives up at 128.
# * Strings must be valid UTF-8 (older Yrs reads them unchecked) and JSON must be JSON that
#   serde_json reads back: no NaN/Infinity, no lone surrogate escapes, no duplicate keys.
# * Where Yjs and Yrs read the same bytes differently, the bytes are refused, because the
#   structure validated here must be the structure pycrdt applies:
#     - JSON content (kind 2, legacy Yjs): Yjs reads n strings, Yrs reads n+1;
#     - XmlHook type (type_ref 5): Yjs reads a hook name after it, Yrs does not;
#     - GC/Skip info bytes with other bits set: Yjs masks them (info & 31), Yrs does not;
#     - bit 4 of an Item's info: Yrs ignores it (info & 15), Yjs takes it as a content kind;
#     - a client listed twice in the struct section: Yjs keeps the last list, Yrs appends.
#   Type refs that only Yrs knows (7 weak link, not compiled into pycrdt; 9 and 15 internal)
#   are refused too; pycrdt's Python API cannot create them.
# * Zero-length GC and Skip structs are refused: Yrs keeps them as blocks that break its
#   clock arithmetic, and no encoder writes them. Zero-length *items* (an empty string, an
#   empty Any list, Deleted 0) are accepted: Yrs drops them on decode, and pycrdt itself
#   writes empty strings when a Text edit splits a multi-byte character (pycrdt's Text
#   offsets count UTF-8 bytes). But a client section must span at least one clock: one with
#   no structs, or only empty items, decodes to an empty block list, and pycrdt panics on it
#   when the doc already knows that client.
# * Delete-set ranges of a client must be sorted, non-empty and non-overlapping: Yrs decodes
#   them with `IdRanges::from_raw`, which assumes exactly that. The same client twice in a
#   delete set (Yrs keeps the last list, Yjs appends) and duplicate keys in an Any object are
#   refused as well.
# * An item whose parent is given as an ID must not name another item *of the same update*
#   unless that one is a shared type (or deleted, GC or Skip): Yrs integrates the update item
#   by item and stops with "block parent must be deleted or shared ref type" half-way, after
#   part of the update is in the doc.
# Beyond that validation checks nothing semantic. An update may name parents or origins this
# replica does not have (pycrdt keeps such structs pending) and may re-send structs it already
# has. Two failures are left that no check of the bytes alone can catch, because they depend
# on what the replica already holds:
# - a parent ID naming an item the replica holds that is not a type: pycrdt refuses the
#   update after applying part of it (see apply_update);
# - structs that contradict structs the replica keeps *pending* (same client and clocks,
#   different boundaries or parents): pycrdt 0.14.13 can crash the process (SIGSEGV) on such
#   input. Honest peers never send it (an ID always names the same content); a hostile or
#   corrupt one can. Never applying updates that would leave anything pending closes that
#   door: see is_ready and apply_if_ready below.
# ---------------------------------------------------------------------------------------------

_NO_LIMITS = UpdateLimits(None, None, None, None, None, False, False)

# Per client of an update: first clock, clock after its last struct, and the [lo, hi) ranges
# of the structs that may be a parent (two ascending lists, adjacent ranges merged).
_Span = tuple[int, int, list[int], list[int]]


class UpdateInfo:
    """What one strict parse found out about a valid update; immutable once made.

    Made by :func:`parse_update` (and returned by :func:`validate_update`); carry it along with
    the update's bytes so that readiness checks, backlogs and compaction need not parse them
    again. It holds no reference to the bytes.
    """

    __slots__ = (
        "_gaps",
        "_refs",
        "_spans",
        "delete_set",
        "ends",
        "n_structs",
        "places",
        "places_most",
        "size",
        "work",
    )

    def __init__(
        self,
        size: int,
        n_structs: int,
        ends: dict[int, int],
        delete_set: DeleteSet,
        spans: dict[int, _Span],
        gaps: list[tuple[int, int]],
        refs: list[tuple[int, int, int, int]],
    ) -> None:
        #: Length of the update in bytes.
        self.size = size
        #: Number of structs (GC, Skip and items) in the struct section.
        self.n_structs = n_structs
        #: ``{client: clock after its last struct that is not a Skip}``, in section order.
        self.ends = ends
        #: The update's delete set as read (sorted, non-overlapping ranges per client).
        self.delete_set = delete_set
        self._spans = spans
        # (client, c) in struct order: a doc below clock c of client has a hole before it
        # (the client's first clock, and the end of each Skip).
        self._gaps = gaps
        # (client, clock of the struct, referenced client, referenced clock) of every origin,
        # right origin and parent ID, in struct order, except references to an earlier clock
        # of the struct's own client (that struct is in this update and integrated before).
        self._refs = refs
        #: Integration steps this update costs Yrs, as the parser counts them (issue #11):
        #: one per struct and per deleted range, plus for each item placed where other
        #: items of this update already sit the number of those (YATA's conflict scan),
        #: plus the bytes Yrs copies merging runs (UpdateLimits.max_merge_work). With
        #: limits it is at most ``WORK_PER_BYTE * size + max_merge_work``: linear in the size
        #: plus a constant (see :data:`WORK_PER_BYTE`). The fan and merge parts are counted
        #: only when ``max_fan`` and ``max_merge_work`` apply.
        self.work = 0
        #: ``{placement bytes: items placed there}`` (origin, right origin, parent and key)
        #: of every item but those continuing their client's previous clock (typing), as the
        #: fan check counted them; empty without ``max_fan``.
        #: :class:`~crdtsync.yjs.limits.PlaceHistory` adds them up over a shard's updates
        #: (the fan built by many updates).
        #: A dict, or for an update of ``NATIVE_PLACES_MIN`` bytes or more where the native
        #: table is built (``crdtsync.yjs._places.Places``) that table: the same mapping, in
        #: the same order, without a bytes object per place until one is asked for.
        self.places: Mapping[bytes, int] = {}
        #: ``max(places.values())``, 0 when there are none: counted by the parser, so that
        #: PlaceHistory need not pass over a whole map's places to find it.
        self.places_most = 0

    def __repr__(self) -> str:
        return (
            f"UpdateInfo(size={self.size}, n_structs={self.n_structs}, "
            f"clients={len(self.ends)}, deleted_clients={len(self.delete_set)})"
        )

    @property
    def changes_anything(self) -> bool:
        """Whether the update has any struct or deleted range (see also :func:`is_noop`)."""
        return bool(self.n_structs) or any(self.delete_set.values())

    def first_clocks(self) -> dict[int, int]:
        """``{client: the clock of its first struct}``, in section order."""
        out: dict[int, int] = {}
        for client, clock in self._gaps:
            out.setdefault(client, clock)
        return out

    def missing(self, sv: Mapping[int, int]) -> tuple[int, int] | None:
        """None if a doc at state vector ``sv`` ({client: clock}) would integrate every struct
        of the update at once; else an ID (client, clock) such a doc must hold first.

        See :mod:`crdtsync.yjs.ready` for the rule. The first gap in struct order wins; without
        a gap, the first reference that neither ``sv`` nor the update can satisfy; then the
        last clock of the first client whose deleted ranges reach past what the doc and the
        update hold together (a delete of items the doc lacks would stay pending in pycrdt).
        """
        for client, clock in self._gaps:
            if clock > sv.get(client, 0):
                return client, clock - 1
        refs = self._refs
        if refs:  # (none in a map set of a new key: no comprehension made for it)
            waits = [ref for ref in refs if ref[3] >= sv.get(ref[2], 0)]
            if waits:
                return first_missing(sv, self._spans, waits)
        # No gap: the doc holds every clock of a client below max(its clock, the update's end).
        for client, ranges in self.delete_set.items():
            if ranges:  # sorted and non-overlapping: the last range ends last
                clock, length = ranges[-1]
                if clock + length > max(sv.get(client, 0), self.ends.get(client, 0)):
                    return client, clock + length - 1
        return None


#: Updates of this many bytes or more count their places in the native table
#: (:data:`crdtsync.yjs._native.PLACES`) where it is built: a whole state's 200,000 map keys
#: cost the dict 28-35 ms of the 42-49 that validating them took (issue 17). Smaller ones
#: (the live path: a few places each) keep the dict, which is cheaper to make and to price.
NATIVE_PLACES_MIN = 32 << 10

#: The struct section's scan in C (:data:`crdtsync.yjs._native.CSCAN`), or None.
CSCAN = _native.CSCAN


def _structs(data: bytes, pos: int, limits: UpdateLimits) -> tuple[UpdateInfo, int]:
    """Validate the struct section; return its summary (delete set still empty), new position.

    The loop is :func:`crdtsync.yjs._scan.scan_structs` (compiled where it could be built),
    tried first in C where that is built (:data:`CSCAN`): the C scan returns the same result
    for what it accepts and None for everything else, which the reference then decides (and
    raises with its own offset and message). A rule changed in ``_scan.py`` or
    ``_scan_content.py`` must be changed in the ``_cscan*.c`` files too: ``tests/yjs/test_cscan.py``
    compares them, and ``tests/yjs/test_cscan_accepts.py`` fails when the reference accepts
    what C hands back (a rule relaxed in the reference only).
    """
    fans = None
    exact = type(data) is bytes
    if (
        PLACES is not None
        and limits.max_fan is not None
        and len(data) >= NATIVE_PLACES_MIN
        and exact
    ):
        fans = PLACES(data)
    args = (data, pos, *limits.scan_args)
    found = None
    if CSCAN is not None and exact:
        found = CSCAN.scan_structs(*args, fans)
        if found is None and fans is not None:
            fans = type(fans)(data)  # the C scan counted in it: the reference starts afresh
    if found is None:
        found = scan.scan_structs(*args, fans)
    total, ends, spans, gaps, refs, work, places, most, pos = found
    summary = UpdateInfo(len(data), total, ends, {}, spans, gaps, refs)
    summary.work = work
    summary.places = places if fans is None else fans
    summary.places_most = most
    return summary, pos


def parse_update(
    update: bytes, *, max_size: int | None = None, limits: UpdateLimits | None = None
) -> UpdateInfo:
    """Check that ``update`` is a well-formed lib0 v1 update that pycrdt can apply safely, and
    return what the parse found (:class:`UpdateInfo`).

    A strict parse of the whole input: struct section, every kind of item content, Any values,
    and the delete set, with nothing left over. See the block comment above for what is
    refused beyond the plain encoding and why. Apart from parents named within the update
    itself, semantic questions (does the parent exist here?) are left to pycrdt, which keeps
    structs it cannot place yet pending.

    Args:
        update: the bytes to check; must be ``bytes`` (not a mutable buffer that could change
            between validation and application).
        max_size: refuse updates longer than this many bytes.
        limits: the work limits (:class:`~crdtsync.yjs.limits.UpdateLimits`) to apply; None
            (the default here) applies none: for updates this replica made or stored itself.
            Updates from peers go through :func:`validate_update` or
            :func:`~crdtsync.yjs.ready.apply_if_ready`, which apply ``DEFAULT_LIMITS``.

    Raises:
        InvalidUpdate: anything wrong, with the byte offset and what was found there. Nothing
            else is ever raised.
    """
    lim = _NO_LIMITS if limits is None else limits
    try:
        if not isinstance(update, bytes):
            raise InvalidUpdate(f"an update must be bytes, not {type(update).__name__}")
        if not update:
            raise InvalidUpdate("an update cannot be empty")
        if max_size is not None and len(update) > max_size:
            raise InvalidUpdate(f"update of {len(update)} bytes exceeds the limit of {max_size}")
        try:
            info, pos = _structs(update, 0, lim)
            if pos == len(update) - 1 and update[pos] == 0:
                pos += 1  # an empty delete set ends it (a new map key): as read, {} and no work
            else:
                info.delete_set, pos = read_delete_set(
                    update, pos, strict=True, max_ranges=lim.max_delete_ranges
                )
                info.work += sum(len(r) for r in info.delete_set.values())
            if pos != len(update):
                raise Malformed(pos, f"{len(update) - pos} trailing bytes after the delete set")
        except OverLimit as exc:  # the struct limits and the delete set's
            raise UpdateOverLimit(
                f"invalid update at byte {exc.pos} of {len(update)}: {exc.what}"
            ) from None
        except Malformed as exc:
            raise InvalidUpdate(
                f"invalid update at byte {exc.pos} of {len(update)}: {exc.what}"
            ) from None
        except RecursionError as exc:  # not reachable with MAX_NESTING well below the limit
            raise InvalidUpdate("invalid update: nested too deeply") from exc
        return info
    except InvalidUpdate:
        raise
    except Exception as exc:  # a bug here must still look like a refusal, never a crash
        raise InvalidUpdate(f"update could not be validated: {exc!r}") from exc


def validate_update(
    update: bytes, *, max_size: int | None = None, limits: UpdateLimits | None = DEFAULT_LIMITS
) -> UpdateInfo:
    """Validate an update from a peer as :func:`parse_update` does, with the work ``limits``
    (``DEFAULT_LIMITS`` unless told otherwise); the result may be ignored.

    Raises:
        InvalidUpdate: the bytes are not a valid update or exceed a limit (nothing else is
            ever raised).
    """
    return parse_update(update, max_size=max_size, limits=limits)


def is_noop(update: bytes) -> bool:
    """Whether ``update`` is a well-formed update with no structs and no deleted ranges.

    pycrdt reports such updates for transactions that changed nothing; they need neither
    storing nor forwarding. Cheap: it looks at the first byte, and reads the delete set only
    when there are no structs. Anything that is not bytes or not a well-formed empty update
    gives False; it never raises.
    """
    if not isinstance(update, bytes) or len(update) < 2 or update[0] != 0:
        return False  # an update with a client section holds at least one struct
    if update == b"\x00\x00":
        return True
    try:
        ds, pos = read_delete_set(update, 1, strict=True)
    except Malformed:
        return False
    return pos == len(update) and not any(ds.values())
