/* crdtsync.yjs._cscan: what the struct loop calls for every field and every item, inlined.
 *
 * Included by _cscan.h only (every file of the extension gets it): the bounded readers
 * (_scan_content.py's read_uint, bytes_span, skip_str, string_content), the item content
 * (its content(); Any values themselves are read in _cscan_values.c), a client's ranges
 * (add_range) and the queue of places the native table gets LAG items late (Pending, in
 * _cscan.h). Static inline, so that they stay inlined into the struct loop as they were
 * when the extension was one file: compiled as functions of another file, content() and the
 * queue cost the map's scan ~4-5 %, add_range the paper's ~1.5 % (measured: h-csplit's
 * section of benchmarks/history/catchup-restart.md). A Vec's growth (cs_vec_grow, rare) is
 * out of line, in _cscan_spans.c: with it inline too the map's scan was ~2 % slower.
 */
#ifndef CRDTSYNC_CSCAN_INLINE_H
#define CRDTSYNC_CSCAN_INLINE_H

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

/* content: an Item's content of kind; *length its length in clocks. */
static inline int
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
            if ((r = cs_any_value(b, &p, 0)) != OK) {
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
        return cs_any_value(b, pos, 0);
    default: /* JSON (refused), Embed and Format (JSON: the reference parses it) */
        return DEFER;
    }
}

/* vec_push: x appended to vec (grown by cs_vec_grow, out of line): OK or FAIL (memory). */
static inline int
vec_push(Vec *vec, int64_t x)
{
    if (vec->n == vec->cap && cs_vec_grow(vec) != OK) {
        return FAIL;
    }
    vec->v[vec->n++] = x;
    return OK;
}

/* add_range: [clock, end) appended to (los, his), merged with the last if adjacent. */
static inline int
add_range(Vec *los, Vec *his, int64_t clock, int64_t end)
{
    if (his->n && his->v[his->n - 1] == clock) {
        his->v[his->n - 1] = end;
        return OK;
    }
    return vec_push(los, clock) == OK ? vec_push(his, end) : FAIL;
}

/* pending_pop: add the oldest pending place: OK, DEFER (its count is over the limit, or a sum
 * overflows) or FAIL. */
static inline int
pending_pop(Pending *q, PyObject *fans)
{
    int i = q->head;
    Py_ssize_t fan = cs_fans_add_hashed(fans, (Py_ssize_t)q->start[i], (Py_ssize_t)q->len[i],
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

/* pending_push: a place read, hashed, its slot prefetched, queued (the oldest added if the
 * queue is full). OK, DEFER (a count over the limit, or a sum overflows) or FAIL. */
static inline int
pending_push(Pending *q, PyObject *fans, int64_t start, int64_t len)
{
    Py_hash_t h = cs_fans_prefetch(fans, (Py_ssize_t)start, (Py_ssize_t)len);
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

/* pending_flush: every queued place added, in order: OK, DEFER or FAIL. */
static inline int
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

#endif /* CRDTSYNC_CSCAN_INLINE_H */
