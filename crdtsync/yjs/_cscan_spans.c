/* crdtsync.yjs._cscan: the per-client ranges and spans, and the parents check.
 *
 * Part of the one extension crdtsync.yjs._cscan (see _cscan.h for its files): from the
 * growable arrays of int64 the struct loop keeps (one client's ranges of clocks that are
 * types or deleted, the parents of its items; appended to in _cscan_inline.h), the
 * (first, clock, los, his) span it records per client, and the check after the loop that a
 * parent which is an item of this update is a type (the last loop of the reference's
 * scan_structs).
 */
#include "_cscan.h"

int
cs_vec_grow(Vec *vec)
{
    Py_ssize_t cap = vec->cap ? vec->cap * 2 : 16;
    int64_t *v = PyMem_Realloc(vec->v, (size_t)cap * sizeof(int64_t));
    if (v == NULL) {
        PyErr_NoMemory();
        return FAIL;
    }
    vec->v = v;
    vec->cap = cap;
    return OK;
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

int
cs_end_client(PyObject *ends, PyObject *spans, int64_t client, int64_t end, int64_t first,
              int64_t clock, const Vec *los, const Vec *his)
{
    PyObject *key = PyLong_FromLongLong(client);
    PyObject *value = PyLong_FromLongLong(end);
    PyObject *span = PyTuple_New(4);
    int r = -1;
    if (key != NULL && value != NULL && span != NULL) {
        PyObject *items[4] = {PyLong_FromLongLong(first), PyLong_FromLongLong(clock),
                              vec_list(los), vec_list(his)};
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
    return r < 0 ? FAIL : OK;
}

int
cs_parents_are_types(const Vec *parents, PyObject *spans)
{
    for (Py_ssize_t i = 0; i < parents->n; i += 3) {
        int64_t parent_client = parents->v[i + 1], parent_clock = parents->v[i + 2];
        PyObject *key = PyLong_FromLongLong(parent_client);
        if (key == NULL) {
            return FAIL;
        }
        PyObject *span = PyDict_GetItemWithError(spans, key); /* borrowed */
        Py_DECREF(key);
        if (span == NULL) {
            if (PyErr_Occurred()) {
                return FAIL;
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
            return DEFER;
        }
    }
    return OK;
}
