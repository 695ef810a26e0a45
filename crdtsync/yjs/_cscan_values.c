/* crdtsync.yjs._cscan: Any values (the readers of _scan_content.py behind item content).
 *
 * Part of the one extension crdtsync.yjs._cscan (see _cscan.h for its files and _cscan.c for
 * the rules it keeps): lib0 signed varints, the strict UTF-8 check of strings that are not
 * ASCII, and Any values of every tag (arrays and objects stop at MAX_NESTING, the only
 * recursion; an object's repeated key is found pairwise up to PAIRWISE_KEYS keys, in a set
 * of bytes above). Item content itself (content()) is in _cscan_inline.h, inlined into the
 * struct loop. Every read is bounds-checked against the buffer's length; anything not
 * accepted returns DEFER and the reference decides.
 */
#include "_cscan.h"

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

/* See _cscan.h. */
int
cs_utf8_units(const uint8_t *s, int64_t n, int64_t *units)
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
int
cs_any_value(const Buf *b, int64_t *pos, int depth)
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
            int r = cs_any_value(b, &p, depth + 1);
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
                int valid = cs_utf8_units(b->d + start, end - start, &units);
                if (valid <= 0) {
                    r = valid < 0 ? FAIL : DEFER;
                    break;
                }
            }
            int rep = key_repeated(b, start, end, keys, i, seen);
            r = rep < 0 ? FAIL : (rep ? DEFER : OK);
            if (r == OK) {
                r = cs_any_value(b, &p, depth + 1);
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
