/* crdtsync.yjs._cscan's private header: what its sources share.
 *
 * The extension is one module built from four C files and two headers, split by concern so
 * that each stays a few hundred lines (the project's size rule) while mirroring the reference:
 *   _cscan.c         scan_structs (the struct section's loop) and the module;
 *   _cscan_values.c  lib0 signed varints, the strict UTF-8 check, Any values (the readers
 *                    of _scan_content.py that the loop does not call per field);
 *   _cscan_places.c  the places (fans): the native table's capsules, the dict, add();
 *   _cscan_spans.c   the per-client ranges and spans, and the parents check;
 *   _cscan.h         (this) constants, types, the functions the files share;
 *   _cscan_inline.h  what the loop calls per field and per item, static inline: the bounded
 *                    readers, item content, a client's ranges, the lag's queue of places.
 * setup.py compiles the four C files into crdtsync.yjs._cscan and lists every file here
 * (CSCAN_SOURCES there, the same list in crdtsync/yjs/_native.py): the hash compiled in
 * (SOURCE_SHA256) covers all six, so an edit to any one of them makes a build stale. The
 * functions shared between the files are hidden (never exported from the .so); nothing here
 * is a public API.
 */
#ifndef CRDTSYNC_CSCAN_H
#define CRDTSYNC_CSCAN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The reference's constants (_scan_content.py, _scan.py). */
#define MAX_SAFE 9007199254740991LL /* 2**53 - 1 */
#define MAX_CLOCK 2147483647LL      /* 2**31 - 1 */
#define MAX_VARUINT_BYTES 8
#define MAX_NESTING 100
#define CONTENT_DELETED 1
#define CONTENT_JSON 2
#define CONTENT_BINARY 3
#define CONTENT_STRING 4
#define CONTENT_EMBED 5
#define CONTENT_FORMAT 6
#define CONTENT_TYPE 7
#define CONTENT_ANY 8
#define CONTENT_DOC 9
#define INFO_GC 0
#define INFO_SKIP 10
#define HAS_ORIGIN 0x80
#define HAS_RIGHT_ORIGIN 0x40
#define HAS_PARENT_SUB 0x20
#define RESERVED_BIT 0x10
#define ANY_WEIGHT 32
#define RESERVE_MIN (1 << 16)
/* Any objects up to this many keys are checked for a repeated key pairwise, larger ones in
 * a set (as the reference always does). */
#define PAIRWISE_KEYS 16

/* Return codes of the readers: OK, or DEFER (not accepted here: the reference decides; no
 * exception set), or FAIL (a Python exception is set: memory, or the table's own error). */
#define OK 0
#define DEFER 1
#define FAIL (-1)

/* Shared between the files of this one extension only (never exported from the .so). */
#if defined(__GNUC__)
#define CS_HIDDEN __attribute__((visibility("hidden")))
#else
#define CS_HIDDEN
#endif

typedef struct {
    const uint8_t *d;
    int64_t n;
} Buf;

/* Whether s[0:n] (not ASCII) is valid UTF-8 by Python's own strict decoder (the reference's
 * check); *units: its length in UTF-16 code units. 1 yes, 0 no, -1 an exception (memory).
 * In _cscan_values.c: only strings that are not ASCII get there. */
CS_HIDDEN int cs_utf8_units(const uint8_t *s, int64_t n, int64_t *units);

/* ------------------------------------------------------------------------------------------
 * _cscan_values.c: Any values. */

/* any_value: one lib0 Any value at nesting depth (stops at MAX_NESTING: the only recursion). */
CS_HIDDEN int cs_any_value(const Buf *b, int64_t *pos, int depth);

/* ------------------------------------------------------------------------------------------
 * _cscan_spans.c: growable arrays, the per-client ranges, the parents check. */

/* A growable array of int64 (the ranges of one client, the parents). */
typedef struct {
    int64_t *v;
    Py_ssize_t n, cap;
} Vec;
/* The growth of a Vec (doubling): OK or FAIL (memory). */
CS_HIDDEN int cs_vec_grow(Vec *vec);

/* ends[client] = end and spans[client] = (first, clock, los, his), as the reference sets
 * them at the end of a client: OK or FAIL. */
CS_HIDDEN int cs_end_client(PyObject *ends, PyObject *spans, int64_t client, int64_t end,
                            int64_t first, int64_t clock, const Vec *los, const Vec *his);
/* A parent (parents: (offset, client, clock) triples) that is an item of this update must be
 * a type (in a range of its client's los/his): OK, DEFER (one is not) or FAIL. */
CS_HIDDEN int cs_parents_are_types(const Vec *parents, PyObject *spans);

/* ------------------------------------------------------------------------------------------
 * _cscan_places.c: counting places (fans). */

/* Import crdtsync.yjs._fans's capsules if that module is built (places then counted without
 * a Python call); 1 if found, 0 if not (no exception left set). */
CS_HIDDEN int cs_import_fans(void);
/* Whether fans is the native table (then places go through the lag, Pending). */
CS_HIDDEN int cs_is_native_table(PyObject *fans);
/* One more item at the place b[start:start + len] (fans not the native table, or None: the
 * dict fan_count): *fan the items there now. OK or FAIL. */
CS_HIDDEN int cs_count_place(PyObject *fans, PyObject *fan_count, const Buf *b, int64_t start,
                             int64_t len, int64_t *fan);

/* Places of the native table added LAG items late, in the items' order: the table's index
 * is a cache miss per new place (4 MiB for a 200,000-key map, random by design), so its slot
 * is fetched when the place is read and probed LAG items later, while the scan reads on.
 * The same places are added in the same order, so the counts are the same; a count over the
 * limit is found up to LAG items later, which changes nothing here: this scan then hands
 * the whole update to the reference, whose error is the one raised. */
#define LAG 8
typedef struct {
    int64_t start[LAG], len[LAG];
    Py_hash_t hash[LAG];
    int head, n;
    int64_t fan_work, most, max_fan;
} Pending;

/* The native table's capsules the queue calls (set by cs_import_fans, NULL without it). */
typedef Py_hash_t (*fans_prefetch_fn)(PyObject *, Py_ssize_t, Py_ssize_t);
typedef Py_ssize_t (*fans_add_hashed_fn)(PyObject *, Py_ssize_t, Py_ssize_t, Py_hash_t);
CS_HIDDEN extern fans_prefetch_fn cs_fans_prefetch;
CS_HIDDEN extern fans_add_hashed_fn cs_fans_add_hashed;

/* The bounded readers, item content and the queue, inlined into the struct loop. */
#include "_cscan_inline.h"

#endif /* CRDTSYNC_CSCAN_H */
