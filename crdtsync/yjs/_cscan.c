/* crdtsync.yjs._cscan: the struct section of a Yjs update scanned in C (issue 17).
 *
 * The same checks, in the same order, as scan_structs in crdtsync/yjs/_scan.py and the
 * readers of crdtsync/yjs/_scan_content.py, which stay the reference and the fallback. This
 * scan only ever ACCEPTS: on a valid struct section it returns the very tuple scan_structs
 * returns; on anything else it returns None, "not decided here", and the caller
 * (crdtsync/yjs/parse.py) runs the reference scan, which raises the Malformed or OverLimit
 * with its offset and message (or, if this scan gave up on something it does not handle,
 * returns the result). So every error is the reference's own, and a wrong refusal here can
 * only cost time. What it hands back to the reference (returns None for), beside every
 * malformed or over-limit input: Embed and Format content (JSON, parsed by Python's json
 * there), limits outside 64-bit integers, and counts that would overflow 64 bits.
 * tests/yjs/test_cscan.py checks, on valid, mutated, truncated and spliced updates, that
 * None comes back exactly where the reference raises (or on those kinds) and the same
 * result everywhere else.
 *
 * Hostile input: every read is bounds-checked against the buffer's length (all offsets and
 * lengths are signed 64-bit, lengths capped at 2**53 - 1 as the reference caps them, so a
 * sum of an offset and a length cannot overflow); the only recursion is any_value's, which
 * stops at MAX_NESTING (100) as the reference's; counts are added with overflow checks.
 *
 * Places (fans) are counted where the reference counts them: in the native table of
 * crdtsync/yjs/_fans.c called through its capsule (no Python call per item), in any other
 * object through its add() method, or (fans None) in a dict of placement bytes, as the
 * reference does. Optional: setup.py builds it when a C compiler is there (never failing
 * the build); crdtsync/yjs/_native.py does not use it with CRDTSYNC_PURE_PYTHON=1 or when it
 * was built from another version of this file (SOURCE_SHA256).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef CSCAN_SOURCE_SHA256
#define CSCAN_SOURCE_SHA256 ""
#endif

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

typedef struct {
    const uint8_t *d;
    int64_t n;
} Buf;

typedef Py_ssize_t (*fans_add_fn)(PyObject *, Py_ssize_t, Py_ssize_t);
typedef Py_hash_t (*fans_prefetch_fn)(PyObject *, Py_ssize_t, Py_ssize_t);
typedef Py_ssize_t (*fans_add_hashed_fn)(PyObject *, Py_ssize_t, Py_ssize_t, Py_hash_t);
/* From crdtsync.yjs._fans, if it is there (its capsules). */
static fans_add_fn fans_add_c = NULL;
static fans_prefetch_fn fans_prefetch_c = NULL;
static fans_add_hashed_fn fans_add_hashed_c = NULL;
static PyTypeObject *places_type = NULL;

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

/* skip_varint: a minimal lib0 signed varint of magnitude <= 2**53 - 1. */
static int
skip_varint(const Buf *b, int64_t *pos)
{
    int64_t p = *pos;
    if (p >= b->n) {
        return DEFER;
    }
    uint8_t c = b->d[p];
    if (c < 0x80) {
        *pos = p + 1;
        return OK;
    }
    uint64_t value = c & 0x3F;
    int shift = 6;
    int64_t q = p + 1;
    for (;;) {
        if (q >= b->n) {
            return DEFER;
        }
        c = b->d[q];
        q += 1;
        value |= (uint64_t)(c & 0x7F) << shift; /* shift <= 48 */
        if (c < 0x80) {
            break;
        }
        shift += 7;
        if (q - p >= MAX_VARUINT_BYTES) {
            return DEFER;
        }
    }
    if (c == 0 || value > (uint64_t)MAX_SAFE) {
        return DEFER;
    }
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
 * check); *units: its length in UTF-16 code units. 1 yes, 0 no, -1 an exception (memory). */
static int
utf8_units(const uint8_t *s, int64_t n, int64_t *units)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "strict");
    if (text == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int64_t u = PyUnicode_GET_LENGTH(text);
    Py_DECREF(text);
    /* every code point past U+FFFF (a 4-byte sequence, lead byte >= 0xF0) is two units */
    for (int64_t i = 0; i < n; i++) {
        u += s[i] >= 0xF0;
    }
    *units = u;
    return 1;
}

/* skip_str / string_content: a length-prefixed UTF-8 string; *units its UTF-16 length. */
static int
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
    int r = utf8_units(b->d + start, end - start, units);
    return r < 0 ? FAIL : (r ? OK : DEFER);
}

static int
skip_str(const Buf *b, int64_t *pos)
{
    int64_t units;
    return read_str(b, pos, &units);
}

/* Whether the Any object key b[ks:ke] was already seen among the n spans in keys (pairwise),
 * or in the set seen (larger objects). 1 repeated, 0 new, -1 an exception. */
static int
key_repeated(const Buf *b, int64_t ks, int64_t ke, int64_t *keys, int64_t n, PyObject *seen)
{
    if (seen == NULL) {
        for (int64_t i = 0; i < n; i++) {
            if (keys[2 * i + 1] - keys[2 * i] == ke - ks &&
                memcmp(b->d + keys[2 * i], b->d + ks, (size_t)(ke - ks)) == 0) {
                return 1;
            }
        }
        keys[2 * n] = ks;
        keys[2 * n + 1] = ke;
        return 0;
    }
    /* Valid UTF-8 decodes one way: equal keys as str are equal as bytes, as the reference's
     * set of str compares them. */
    PyObject *key = PyBytes_FromStringAndSize((const char *)b->d + ks, (Py_ssize_t)(ke - ks));
    if (key == NULL) {
        return -1;
    }
    int r = PySet_Contains(seen, key);
    if (r == 0 && PySet_Add(seen, key) < 0) {
        r = -1;
    }
    Py_DECREF(key);
    return r;
}

/* any_value: one lib0 Any value at nesting depth. */
static int
any_value(const Buf *b, int64_t *pos, int depth)
{
    int64_t p = *pos, n, start, end;
    if (p >= b->n) {
        return DEFER;
    }
    uint8_t tag = b->d[p];
    p += 1;
    switch (tag) {
    case 127: case 126: case 121: case 120: /* undefined, null, false, true */
        *pos = p;
        return OK;
    case 119:
        *pos = p;
        return skip_str(b, pos);
    case 125:
        *pos = p;
        return skip_varint(b, pos);
    case 124: case 123: case 122: { /* float32, float64, bigint64 */
        int64_t size = tag == 124 ? 4 : 8;
        if (size > b->n - p) {
            return DEFER;
        }
        *pos = p + size;
        return OK;
    }
    case 116:
        *pos = p;
        return bytes_span(b, pos, &start, &end);
    case 117: /* array */
        if (depth >= MAX_NESTING || read_uint(b, &p, MAX_SAFE, &n) != OK || n > b->n - p) {
            return DEFER;
        }
        for (int64_t i = 0; i < n; i++) {
            int r = any_value(b, &p, depth + 1);
            if (r != OK) {
                return r;
            }
        }
        *pos = p;
        return OK;
    case 118: { /* object */
        if (depth >= MAX_NESTING || read_uint(b, &p, MAX_SAFE, &n) != OK ||
            n > (b->n - p) >> 1) {
            return DEFER;
        }
        int64_t keys[2 * PAIRWISE_KEYS];
        PyObject *seen = NULL;
        if (n > PAIRWISE_KEYS && (seen = PySet_New(NULL)) == NULL) {
            return FAIL;
        }
        int r = OK;
        for (int64_t i = 0; i < n && r == OK; i++) {
            int64_t units;
            if (bytes_span(b, &p, &start, &end) != OK) { /* the key: valid UTF-8 */
                r = DEFER;
                break;
            }
            if (!is_ascii(b->d + start, end - start)) {
                int valid = utf8_units(b->d + start, end - start, &units);
                if (valid <= 0) {
                    r = valid < 0 ? FAIL : DEFER;
                    break;
                }
            }
            int rep = key_repeated(b, start, end, keys, i, seen);
            r = rep < 0 ? FAIL : (rep ? DEFER : OK);
            if (r == OK) {
                r = any_value(b, &p, depth + 1);
            }
        }
        Py_XDECREF(seen);
        if (r == OK) {
            *pos = p;
        }
        return r;
    }
    default:
        return DEFER;
    }
}

/* content: an Item's content of kind; *length its length in clocks. */
static int
content(const Buf *b, int64_t *pos, int kind, int64_t *length)
{
    int64_t p = *pos, n, start, end;
    int r;
    switch (kind) {
    case CONTENT_STRING:
        return read_str(b, pos, length);
    case CONTENT_ANY:
        if (read_uint(b, &p, MAX_CLOCK, &n) != OK || n > b->n - p) {
            return DEFER;
        }
        for (int64_t i = 0; i < n; i++) {
            if ((r = any_value(b, &p, 0)) != OK) {
                return r;
            }
        }
        *length = n;
        *pos = p;
        return OK;
    case CONTENT_DELETED:
        return read_uint(b, pos, MAX_CLOCK, length);
    case CONTENT_TYPE:
        if (p >= b->n) {
            return DEFER;
        }
        *length = 1;
        switch (b->d[p]) {
        case 0: case 1: case 2: case 4: case 6: /* Array, Map, Text, XmlFragment, XmlText */
            *pos = p + 1;
            return OK;
        case 3: /* XmlElement and its name */
            *pos = p + 1;
            return skip_str(b, pos);
        default: /* XmlHook, unknown */
            return DEFER;
        }
    case CONTENT_BINARY:
        *length = 1;
        return bytes_span(b, pos, &start, &end);
    case CONTENT_DOC:
        if ((r = skip_str(b, &p)) != OK) {
            return r;
        }
        if (p >= b->n || b->d[p] != 118) {
            return DEFER;
        }
        *length = 1;
        *pos = p;
        return any_value(b, pos, 0);
    default: /* JSON (refused), Embed and Format (JSON: the reference parses it) */
        return DEFER;
    }
}

/* A growable array of int64 (the ranges of one client, the parents). */
typedef struct {
    int64_t *v;
    Py_ssize_t n, cap;
} Vec;

static int
vec_push(Vec *vec, int64_t x)
{
    if (vec->n == vec->cap) {
        Py_ssize_t cap = vec->cap ? vec->cap * 2 : 16;
        int64_t *v = PyMem_Realloc(vec->v, (size_t)cap * sizeof(int64_t));
        if (v == NULL) {
            PyErr_NoMemory();
            return FAIL;
        }
        vec->v = v;
        vec->cap = cap;
    }
    vec->v[vec->n++] = x;
    return OK;
}

/* _add_range: [clock, end) appended to (los, his), merged with the last if adjacent. */
static int
add_range(Vec *los, Vec *his, int64_t clock, int64_t end)
{
    if (his->n && his->v[his->n - 1] == clock) {
        his->v[his->n - 1] = end;
        return OK;
    }
    return vec_push(los, clock) == OK ? vec_push(his, end) : FAIL;
}

static PyObject *
vec_list(const Vec *vec)
{
    PyObject *list = PyList_New(vec->n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < vec->n; i++) {
        PyObject *x = PyLong_FromLongLong(vec->v[i]);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, x);
    }
    return list;
}

/* Append Py_BuildValue(fmt, ...) to list. */
#define APPEND(list, ...)                                                                    \
    do {                                                                                     \
        PyObject *item_ = Py_BuildValue(__VA_ARGS__);                                        \
        if (item_ == NULL || PyList_Append((list), item_) < 0) {                             \
            Py_XDECREF(item_);                                                               \
            goto fail;                                                                       \
        }                                                                                    \
        Py_DECREF(item_);                                                                    \
    } while (0)

/* STEP(r): a reader's result: on DEFER return None, on FAIL the exception. */
#define STEP(call)                                                                           \
    do {                                                                                     \
        int r_ = (call);                                                                     \
        if (r_ != OK) {                                                                      \
            if (r_ == DEFER) {                                                               \
                goto defer;                                                                  \
            }                                                                                \
            goto fail;                                                                       \
        }                                                                                    \
    } while (0)

#define CHECKED_ADD(a, b)                                                                    \
    do {                                                                                     \
        if (__builtin_add_overflow((a), (b), &(a))) {                                        \
            goto defer;                                                                      \
        }                                                                                    \
    } while (0)

/* A limit as int64, or 0 (the caller then defers) if it does not fit. */
static int
as_limit(PyObject *obj, int64_t *out)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return FAIL;
    }
    if (overflow) {
        return DEFER;
    }
    *out = v;
    return OK;
}

/* One more item at the place b[start:start + len]: *fan the items there now. */
static int
count_place(PyObject *fans, PyObject *fan_count, const Buf *b, int64_t start, int64_t len,
            int64_t *fan)
{
    if (fans != Py_None) {
        if (fans_add_c != NULL) {
            Py_ssize_t c = fans_add_c(fans, (Py_ssize_t)start, (Py_ssize_t)len);
            if (c >= 0) {
                *fan = c;
                return OK;
            }
            if (c == -1) {
                return FAIL;
            }
        }
        PyObject *c = PyObject_CallMethod(fans, "add", "LL", (long long)start, (long long)len);
        if (c == NULL) {
            return FAIL;
        }
        long long v = PyLong_AsLongLong(c);
        Py_DECREF(c);
        if (v == -1 && PyErr_Occurred()) {
            return FAIL;
        }
        *fan = v;
        return OK;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)b->d + start, (Py_ssize_t)len);
    if (key == NULL) {
        return FAIL;
    }
    PyObject *old = PyDict_GetItemWithError(fan_count, key); /* borrowed */
    int64_t v = 1;
    if (old != NULL) {
        v = PyLong_AsLongLong(old) + 1;
    }
    PyObject *count = PyErr_Occurred() ? NULL : PyLong_FromLongLong(v);
    int r = count == NULL ? FAIL : (PyDict_SetItem(fan_count, key, count) < 0 ? FAIL : OK);
    Py_XDECREF(count);
    Py_DECREF(key);
    *fan = v;
    return r;
}

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

/* Add the oldest pending place: OK, DEFER (its count is over the limit, or a sum
 * overflows) or FAIL. */
static int
pending_pop(Pending *q, PyObject *fans)
{
    int i = q->head;
    Py_ssize_t fan = fans_add_hashed_c(fans, (Py_ssize_t)q->start[i], (Py_ssize_t)q->len[i],
                                       q->hash[i]);
    q->head = (i + 1) % LAG;
    q->n -= 1;
    if (fan < 0) {
        return FAIL;
    }
    if (fan > 1) {
        if (__builtin_add_overflow(q->fan_work, (int64_t)fan, &q->fan_work)) {
            return DEFER;
        }
        if (fan > q->most) {
            q->most = fan;
        }
        if (fan > q->max_fan) {
            return DEFER;
        }
    }
    return OK;
}

static int
pending_push(Pending *q, PyObject *fans, int64_t start, int64_t len)
{
    Py_hash_t h = fans_prefetch_c(fans, (Py_ssize_t)start, (Py_ssize_t)len);
    if (h == -1) {
        return FAIL;
    }
    int r = q->n == LAG ? pending_pop(q, fans) : OK;
    int i = (q->head + q->n) % LAG;
    q->start[i] = start;
    q->len[i] = len;
    q->hash[i] = h;
    q->n += 1;
    return r;
}

static int
pending_flush(Pending *q, PyObject *fans)
{
    while (q->n) {
        int r = pending_pop(q, fans);
        if (r != OK) {
            return r;
        }
    }
    return OK;
}

PyDoc_STRVAR(scan_structs_doc,
"scan_structs(data, pos, max_structs, max_fan, max_depth, max_merge, refuse_format_in_map,\n"
"             refuse_subdocs, fans) -> tuple | None\n\n"
"crdtsync.yjs._scan.scan_structs in C: its result for a struct section it accepts, None\n"
"for anything else (the caller then runs the reference; see the top of _cscan.c).");

static PyObject *
scan_structs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan_structs(data: bytes, pos, 4 limits, 2 flags, fans)");
        return NULL;
    }
    Buf buf = {(const uint8_t *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0])};
    const Buf *b = &buf;
    int64_t pos, max_structs, max_fan, max_depth, max_merge;
    int lim;
    if ((lim = as_limit(args[1], &pos)) != OK || (lim = as_limit(args[2], &max_structs)) != OK ||
        (lim = as_limit(args[3], &max_fan)) != OK || (lim = as_limit(args[4], &max_depth)) != OK ||
        (lim = as_limit(args[5], &max_merge)) != OK) {
        if (lim == FAIL) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (pos < 0 || pos > b->n) {
        Py_RETURN_NONE;
    }
    int refuse_format_in_map = PyObject_IsTrue(args[6]);
    int refuse_subdocs = PyObject_IsTrue(args[7]);
    if (refuse_format_in_map < 0 || refuse_subdocs < 0) {
        return NULL;
    }
    PyObject *fans = args[8];
    int count_fans = max_fan >= 0;
    /* the native table, added to LAG items late (Pending) */
    int lagged = count_fans && places_type != NULL && PyObject_TypeCheck(fans, places_type);
    Pending pending = {.max_fan = max_fan};

    PyObject *ends = PyDict_New(), *spans = PyDict_New(), *gaps = PyList_New(0);
    PyObject *refs = PyList_New(0), *fan_count = PyDict_New(), *depths = PyDict_New();
    PyObject *result = NULL;
    Vec los = {0}, his = {0}, parents = {0};
    if (!ends || !spans || !gaps || !refs || !fan_count || !depths) {
        goto fail;
    }
    int64_t merge_work = 0, fan_work = 0, most = 0, total = 0, n_clients;
    STEP(read_uint(b, &pos, MAX_SAFE, &n_clients));
    if (n_clients > (b->n - pos) / 3) {
        goto defer;
    }
    for (int64_t ci = 0; ci < n_clients; ci++) {
        int64_t n_structs, client, clock;
        STEP(read_uint(b, &pos, MAX_SAFE, &n_structs));
        STEP(read_uint(b, &pos, MAX_SAFE, &client));
        PyObject *client_obj = PyLong_FromLongLong(client);
        if (client_obj == NULL) {
            goto fail;
        }
        int seen = PyDict_Contains(ends, client_obj);
        Py_DECREF(client_obj);
        if (seen) {
            if (seen < 0) {
                goto fail;
            }
            goto defer;
        }
        STEP(read_uint(b, &pos, MAX_CLOCK, &clock));
        if (n_structs > (b->n - pos) >> 1) {
            goto defer;
        }
        CHECKED_ADD(total, n_structs);
        if (max_structs >= 0 && total > max_structs) {
            goto defer;
        }
        if (fans != Py_None && count_fans && n_structs >= RESERVE_MIN) {
            int64_t more = (b->n - pos) >> 4;
            if (n_structs < more) {
                more = n_structs;
            }
            if (lagged) { /* the places so far added before the table grows (as in order) */
                STEP(pending_flush(&pending, fans));
            }
            PyObject *r = PyObject_CallMethod(fans, "reserve", "L", (long long)more);
            if (r == NULL) {
                goto fail;
            }
            Py_DECREF(r);
        }
        int64_t first = clock, end = 0;
        APPEND(gaps, "(LL)", (long long)client, (long long)first);
        los.n = his.n = 0;
        int64_t run = 0, run_right_at = 0, run_right_end = 0;
        int run_kind = 0;
        for (int64_t si = 0; si < n_structs; si++) {
            int64_t start = pos, length = 0;
            if (pos >= b->n) {
                goto defer;
            }
            int info = b->d[pos];
            pos += 1;
            if (info == INFO_GC || info == INFO_SKIP) {
                run = 0;
                STEP(read_uint(b, &pos, MAX_CLOCK, &length));
                if (length == 0) {
                    goto defer;
                }
                STEP(add_range(&los, &his, clock, clock + length));
                if (info == INFO_SKIP) {
                    APPEND(gaps, "(LL)", (long long)client, (long long)(clock + length));
                }
            } else {
                int kind = info & 0x0F;
                if ((info & RESERVED_BIT) || kind == INFO_GC || kind == INFO_SKIP || kind > 10) {
                    goto defer;
                }
                int chained = 0;
                int64_t depth = 0, ref_client, ref_clock;
                if (info & HAS_ORIGIN) {
                    STEP(read_uint(b, &pos, MAX_SAFE, &ref_client));
                    STEP(read_uint(b, &pos, MAX_CLOCK, &ref_clock));
                    chained = ref_client == client && ref_clock == clock - 1;
                    if (ref_client != client || ref_clock >= clock) {
                        APPEND(refs, "(LLLL)", (long long)client, (long long)clock,
                               (long long)ref_client, (long long)ref_clock);
                    }
                }
                int64_t right_at = pos;
                if (info & HAS_RIGHT_ORIGIN) {
                    STEP(read_uint(b, &pos, MAX_SAFE, &ref_client));
                    STEP(read_uint(b, &pos, MAX_CLOCK, &ref_clock));
                    if (ref_client != client || ref_clock >= clock) {
                        APPEND(refs, "(LLLL)", (long long)client, (long long)clock,
                               (long long)ref_client, (long long)ref_clock);
                    }
                }
                int merges = 0;
                if (max_merge >= 0) {
                    if (kind != CONTENT_ANY && kind != CONTENT_STRING) {
                        run = 0;
                    } else if (chained && run && kind == run_kind &&
                               pos - right_at == run_right_end - run_right_at &&
                               memcmp(b->d + right_at, b->d + run_right_at,
                                      (size_t)(pos - right_at)) == 0) {
                        merges = 1;
                    } else {
                        run = 0;
                        run_kind = kind;
                        run_right_at = right_at;
                        run_right_end = pos;
                    }
                }
                if (!(info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN))) {
                    int64_t parent_info;
                    STEP(read_uint(b, &pos, 1, &parent_info));
                    if (parent_info) {
                        STEP(skip_str(b, &pos));
                    } else {
                        int64_t parent_client, parent_clock;
                        STEP(read_uint(b, &pos, MAX_SAFE, &parent_client));
                        STEP(read_uint(b, &pos, MAX_CLOCK, &parent_clock));
                        STEP(vec_push(&parents, start));
                        STEP(vec_push(&parents, parent_client));
                        STEP(vec_push(&parents, parent_clock));
                        if (parent_client != client || parent_clock >= clock) {
                            APPEND(refs, "(LLLL)", (long long)client, (long long)clock,
                                   (long long)parent_client, (long long)parent_clock);
                        }
                        if (max_depth >= 0 && PyDict_GET_SIZE(depths)) {
                            PyObject *key = Py_BuildValue("(LL)", (long long)parent_client,
                                                          (long long)parent_clock);
                            if (key == NULL) {
                                goto fail;
                            }
                            PyObject *d = PyDict_GetItemWithError(depths, key);
                            Py_DECREF(key);
                            if (d == NULL && PyErr_Occurred()) {
                                goto fail;
                            }
                            depth = d == NULL ? 0 : PyLong_AsLongLong(d);
                        }
                    }
                    if (info & HAS_PARENT_SUB) {
                        STEP(skip_str(b, &pos));
                        if (kind == CONTENT_FORMAT && refuse_format_in_map) {
                            goto defer;
                        }
                    }
                }
                if (kind == CONTENT_DOC && refuse_subdocs) {
                    goto defer;
                }
                if (count_fans && !chained && lagged) {
                    STEP(pending_push(&pending, fans, start + 1, pos - start - 1));
                } else if (count_fans && !chained) {
                    int64_t fan;
                    STEP(count_place(fans, fan_count, b, start + 1, pos - start - 1, &fan));
                    if (fan > 1) {
                        CHECKED_ADD(fan_work, fan);
                        if (fan > most) {
                            most = fan;
                        }
                        if (fan > max_fan) {
                            goto defer;
                        }
                    }
                }
                if (max_depth >= 0 && kind == CONTENT_TYPE) {
                    depth += 1;
                    if (depth > max_depth) {
                        goto defer;
                    }
                    PyObject *key = Py_BuildValue("(LL)", (long long)client, (long long)clock);
                    PyObject *d = key == NULL ? NULL : PyLong_FromLongLong(depth);
                    if (d == NULL || PyDict_SetItem(depths, key, d) < 0) {
                        Py_XDECREF(key);
                        Py_XDECREF(d);
                        goto fail;
                    }
                    Py_DECREF(key);
                    Py_DECREF(d);
                }
                STEP(content(b, &pos, kind, &length));
                if (max_merge >= 0 && (kind == CONTENT_ANY || kind == CONTENT_STRING)) {
                    int64_t weighted;
                    if (__builtin_mul_overflow(length, kind == CONTENT_ANY ? ANY_WEIGHT : 1,
                                               &weighted)) {
                        goto defer;
                    }
                    CHECKED_ADD(run, weighted);
                    if (merges) {
                        CHECKED_ADD(merge_work, run);
                        if (merge_work > max_merge) {
                            goto defer;
                        }
                    }
                }
                if (kind == CONTENT_TYPE || kind == CONTENT_DELETED) {
                    STEP(add_range(&los, &his, clock, clock + length));
                }
            }
            CHECKED_ADD(clock, length);
            if (clock > MAX_CLOCK) {
                goto defer;
            }
            if (info != INFO_SKIP) {
                end = clock;
            }
        }
        if (clock == first) {
            goto defer;
        }
        PyObject *key = PyLong_FromLongLong(client);
        PyObject *value = PyLong_FromLongLong(end);
        PyObject *span = PyTuple_New(4);
        int r = -1;
        if (key != NULL && value != NULL && span != NULL) {
            PyObject *items[4] = {PyLong_FromLongLong(first), PyLong_FromLongLong(clock),
                                  vec_list(&los), vec_list(&his)};
            r = 0;
            for (int k = 0; k < 4; k++) {
                if (items[k] == NULL) {
                    r = -1;
                }
                PyTuple_SET_ITEM(span, k, items[k]); /* a NULL item: freed with span */
            }
            if (r == 0) {
                r = PyDict_SetItem(ends, key, value);
            }
            if (r == 0) {
                r = PyDict_SetItem(spans, key, span);
            }
        }
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(span);
        if (r < 0) {
            goto fail;
        }
    }
    if (lagged) {
        STEP(pending_flush(&pending, fans));
        CHECKED_ADD(fan_work, pending.fan_work);
        if (pending.most > most) {
            most = pending.most;
        }
    }
    /* A parent that is an item of this update must be a type (a range of los/his). */
    for (Py_ssize_t i = 0; i < parents.n; i += 3) {
        int64_t parent_client = parents.v[i + 1], parent_clock = parents.v[i + 2];
        PyObject *key = PyLong_FromLongLong(parent_client);
        if (key == NULL) {
            goto fail;
        }
        PyObject *span = PyDict_GetItemWithError(spans, key); /* borrowed */
        Py_DECREF(key);
        if (span == NULL) {
            if (PyErr_Occurred()) {
                goto fail;
            }
            continue;
        }
        int64_t first = PyLong_AsLongLong(PyTuple_GET_ITEM(span, 0));
        int64_t last = PyLong_AsLongLong(PyTuple_GET_ITEM(span, 1));
        if (!(first <= parent_clock && parent_clock < last)) {
            continue;
        }
        PyObject *lo = PyTuple_GET_ITEM(span, 2), *hi = PyTuple_GET_ITEM(span, 3);
        /* bisect_right(los, parent_clock) - 1 */
        Py_ssize_t a = 0, z = PyList_GET_SIZE(lo);
        while (a < z) {
            Py_ssize_t mid = a + (z - a) / 2;
            if (parent_clock < PyLong_AsLongLong(PyList_GET_ITEM(lo, mid))) {
                z = mid;
            } else {
                a = mid + 1;
            }
        }
        if (a - 1 < 0 || parent_clock >= PyLong_AsLongLong(PyList_GET_ITEM(hi, a - 1))) {
            goto defer;
        }
    }
    if (most == 0) {
        if (PyDict_GET_SIZE(fan_count)) {
            most = 1;
        } else if (fans != Py_None) {
            Py_ssize_t size = PyObject_Length(fans);
            if (size < 0) {
                goto fail;
            }
            most = size ? 1 : 0;
        }
    }
    int64_t work = total;
    CHECKED_ADD(work, fan_work);
    CHECKED_ADD(work, merge_work);
    result = Py_BuildValue("(LOOOOLOLL)", (long long)total, ends, spans, gaps, refs,
                           (long long)work, fan_count, (long long)most, (long long)pos);
    goto done;
defer:
    result = Py_None;
    Py_INCREF(result);
    goto done;
fail:
    result = NULL;
done:
    Py_XDECREF(ends);
    Py_XDECREF(spans);
    Py_XDECREF(gaps);
    Py_XDECREF(refs);
    Py_XDECREF(fan_count);
    Py_XDECREF(depths);
    PyMem_Free(los.v);
    PyMem_Free(his.v);
    PyMem_Free(parents.v);
    return result;
}

static PyMethodDef cscan_methods[] = {
    {"scan_structs", (PyCFunction)(void (*)(void))scan_structs, METH_FASTCALL, scan_structs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cscan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "crdtsync.yjs._cscan",
    .m_doc = "The strict validator's struct section in C (optional speedup; accepts only).",
    .m_size = -1,
    .m_methods = cscan_methods,
};

PyMODINIT_FUNC
PyInit__cscan(void)
{
    PyObject *module = PyModule_Create(&cscan_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "SOURCE_SHA256", CSCAN_SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    /* The native table's C entry, if that module is built: places counted without a call. */
    PyObject *fans_module = PyImport_ImportModule("crdtsync.yjs._fans");
    if (fans_module != NULL) {
        fans_add_c = (fans_add_fn)PyCapsule_Import("crdtsync.yjs._fans._add_v1", 0);
        fans_prefetch_c = (fans_prefetch_fn)PyCapsule_Import("crdtsync.yjs._fans._prefetch_v1", 0);
        fans_add_hashed_c =
            (fans_add_hashed_fn)PyCapsule_Import("crdtsync.yjs._fans._add_hashed_v1", 0);
        places_type = (PyTypeObject *)PyCapsule_Import("crdtsync.yjs._fans._type_v1", 0);
        Py_DECREF(fans_module);
    }
    if (fans_add_c == NULL || fans_prefetch_c == NULL || fans_add_hashed_c == NULL ||
        places_type == NULL) {
        PyErr_Clear();
        fans_add_c = NULL;
        fans_prefetch_c = NULL;
        fans_add_hashed_c = NULL;
        places_type = NULL;
    }
    if (PyModule_AddIntConstant(module, "FANS_NATIVE", fans_add_c != NULL) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
