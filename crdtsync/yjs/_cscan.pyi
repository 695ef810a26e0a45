"""Types of the C scan of a Yjs update's struct section (``_cscan.c``): it only accepts."""

from typing import Any, Final

SOURCE_SHA256: Final[str]
#: 1 if the native table's capsules were found (places counted without a Python call).
FANS_NATIVE: Final[int]

def scan_structs(
    data: bytes,
    pos: int,
    max_structs: int,
    max_fan: int,
    max_depth: int,
    max_merge: int,
    refuse_format_in_map: bool,
    refuse_subdocs: bool,
    fans: Any,
    /,
) -> (
    tuple[
        int,
        dict[int, int],
        dict[int, tuple[int, int, list[int], list[int]]],
        list[tuple[int, int]],
        list[tuple[int, int, int, int]],
        int,
        dict[bytes, int],
        int,
        int,
    ]
    | None
): ...
