/* crdtsync.yjs._cscan's private header: what its three sources share.
 *
 * The extension is one module built from four files, split by concern so that each stays
 * a few hundred lines (the project's size rule) while mirroring the reference:
 *   _cscan.c         scan_structs (the struct section's loop) and the module;
 *   _cscan_values.c  lib0 signed varints, UTF-8, Any values and item content
 *                    (the readers of _scan_content.py);
 *   _cscan_places.c  the places (fans): the native table's capsules, the lag, the dict;
 *   _cscan_spans.c   the per-client ranges and spans, and the parents check.
 * The bounded readers the struct loop calls for every field (read_uint, bytes_span, the
 * ASCII check, strings) are static inline here, so that they stay inlined in every file as
 * they were in one. setup.py lists every source and this header (CSCAN_SOURCES there, the
 * same list in crdtsync/yjs/_native.py): the hash compiled in (SOURCE_SHA256) covers all of
 * them, so an edit to any one makes a build stale. Not part of any public API.
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

/* ------------------------------------------------------------------------------------------
 * The bounded readers (_scan_content.py's read_uint, bytes_span, skip_str, string_content). */

/* read_uint: a minimal lib0 varuint no larger than limit (limit >= 0). */
static inline int
read_uint(const Buf *b, int64_t *pos, int64_t limit, int64_t *out)
{
    int64_t p = *pos;
    if (p >= b->n) {
        return DEFER;
    }
    uint8_t c = b->d[p];
    if (c < 0x80) {
        if ((int64_t)c > limit) {
            return DEFER;
        }
        *out = c;
        *pos = p + 1;
        return OK;
    }
    uint64_t value = c & 0x7F;
    int shift = 7;
    int64_t q = p + 1;
    for (;;) {
        if (q >= b->n) {
            return DEFER;
        }
        c = b->d[q];
        q += 1;
        value |= (uint64_t)(c & 0x7F) << shift; /* shift <= 49: at most 8 bytes */
        if (c < 0x80) {
            break;
        }
        shift += 7;
        if (q - p >= MAX_VARUINT_BYTES) {
            return DEFER;
        }
    }
    if (c == 0 || value > (uint64_t)limit) {
        return DEFER;
    }
    *out = (int64_t)value;
    *pos = q;
    return OK;
}

/* bytes_span: a length-prefixed byte string; *start, *end of its payload. */
static inline int
bytes_span(const Buf *b, int64_t *pos, int64_t *start, int64_t *end)
{
    int64_t n, p = *pos;
    if (read_uint(b, &p, MAX_SAFE, &n) != OK) {
        return DEFER;
    }
    if (n > b->n - p) { /* n <= 2**53 - 1 and p <= b->n: no overflow */
        return DEFER;
    }
    *start = p;
    *end = p + n;
    *pos = p + n;
    return OK;
}

static inline int
is_ascii(const uint8_t *s, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ull) {
            return 0;
        }
    }
    for (; i < n; i++) {
        if (s[i] & 0x80) {
            return 0;
        }
    }
    return 1;
}

/* Whether s[0:n] (not ASCII) is valid UTF-8 by Python's own strict decoder (the reference's
 * check); *units: its length in UTF-16 code units. 1 yes, 0 no, -1 an exception (memory).
 * In _cscan_values.c: only strings that are not ASCII get there. */
CS_HIDDEN int cs_utf8_units(const uint8_t *s, int64_t n, int64_t *units);

/* skip_str / string_content: a length-prefixed UTF-8 string; *units its UTF-16 length. */
static inline int
read_str(const Buf *b, int64_t *pos, int64_t *units)
{
    int64_t start, end;
    if (bytes_span(b, pos, &start, &end) != OK) {
        return DEFER;
    }
    if (is_ascii(b->d + start, end - start)) {
        *units = end - start;
        return OK;
    }
    int r = cs_utf8_units(b->d + start, end - start, units);
    return r < 0 ? FAIL : (r ? OK : DEFER);
}

static inline int
skip_str(const Buf *b, int64_t *pos)
{
    int64_t units;
    return read_str(b, pos, &units);
}

/* ------------------------------------------------------------------------------------------
 * _cscan_values.c: Any values and item content. */

/* any_value: one lib0 Any value at nesting depth (stops at MAX_NESTING: the only recursion). */
CS_HIDDEN int cs_any_value(const Buf *b, int64_t *pos, int depth);
/* content: an Item's content of kind; *length its length in clocks. DEFER for JSON kinds. */
CS_HIDDEN int cs_content(const Buf *b, int64_t *pos, int kind, int64_t *length);

/* ------------------------------------------------------------------------------------------
 * _cscan_spans.c: growable arrays, the per-client ranges, the parents check. */

/* A growable array of int64 (the ranges of one client, the parents). */
typedef struct {
    int64_t *v;
    Py_ssize_t n, cap;
} Vec;

CS_HIDDEN int cs_vec_push(Vec *vec, int64_t x);
/* _add_range: [clock, end) appended to (los, his), merged with the last if adjacent. */
CS_HIDDEN int cs_add_range(Vec *los, Vec *his, int64_t clock, int64_t end);
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

/* A place read: hashed, its slot prefetched, queued (the oldest added if the queue is full).
 * OK, DEFER (a count over the limit, or a sum overflows) or FAIL. */
CS_HIDDEN int cs_pending_push(Pending *q, PyObject *fans, int64_t start, int64_t len);
/* Every queued place added, in order: OK, DEFER or FAIL. */
CS_HIDDEN int cs_pending_flush(Pending *q, PyObject *fans);

#endif /* CRDTSYNC_CSCAN_H */
