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
 * Places (fans) are counted where the reference counts them (_cscan_places.c). The module
 * is built from this file, _cscan_values.c, _cscan_places.c and _cscan_spans.c with their
 * private headers _cscan.h and _cscan_inline.h (what each holds: see _cscan.h). Optional: setup.py builds it when a
 * C compiler is there (never failing the build); crdtsync/yjs/_native.py does not use it
 * with CRDTSYNC_PURE_PYTHON=1 or when it was built from another version of any of those
 * six files (SOURCE_SHA256: one hash over all of them).
 */
#include "_cscan.h"

#ifndef CSCAN_SOURCE_SHA256
#define CSCAN_SOURCE_SHA256 ""
#endif

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
    int lagged = count_fans && cs_is_native_table(fans);
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
                    STEP(cs_count_place(fans, fan_count, b, start + 1, pos - start - 1, &fan));
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
        STEP(cs_end_client(ends, spans, client, end, first, clock, &los, &his));
    }
    if (lagged) {
        STEP(pending_flush(&pending, fans));
        CHECKED_ADD(fan_work, pending.fan_work);
        if (pending.most > most) {
            most = pending.most;
        }
    }
    /* A parent that is an item of this update must be a type (a range of los/his). */
    STEP(cs_parents_are_types(&parents, spans));
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
    int fans_native = cs_import_fans();
    if (PyModule_AddIntConstant(module, "FANS_NATIVE", fans_native) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
