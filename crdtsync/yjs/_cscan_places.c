/* crdtsync.yjs._cscan: counting the places (fans) of the items.
 *
 * Part of the one extension crdtsync.yjs._cscan (see _cscan.h for its files). Places are
 * counted where the reference counts them: in the native table of crdtsync/yjs/_fans.c
 * called through its capsules (no Python call per item; added LAG items late with the
 * table's index slot prefetched, Pending in _cscan.h), in any other object through its add()
 * method, or (fans None) in a dict of placement bytes, as the reference does.
 */
#include "_cscan.h"

typedef Py_ssize_t (*fans_add_fn)(PyObject *, Py_ssize_t, Py_ssize_t);
typedef Py_hash_t (*fans_prefetch_fn)(PyObject *, Py_ssize_t, Py_ssize_t);
typedef Py_ssize_t (*fans_add_hashed_fn)(PyObject *, Py_ssize_t, Py_ssize_t, Py_hash_t);
/* From crdtsync.yjs._fans, if it is there (its capsules; versioned by name, so a _fans built
 * with another signature offers none and places are counted through its add method). */
static fans_add_fn fans_add_c = NULL;
static fans_prefetch_fn fans_prefetch_c = NULL;
static fans_add_hashed_fn fans_add_hashed_c = NULL;
static PyTypeObject *places_type = NULL;

int
cs_import_fans(void)
{
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
        return 0;
    }
    return 1;
}

int
cs_is_native_table(PyObject *fans)
{
    return places_type != NULL && PyObject_TypeCheck(fans, places_type);
}

/* See _cscan.h. */
int
cs_count_place(PyObject *fans, PyObject *fan_count, const Buf *b, int64_t start, int64_t len,
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

int
cs_pending_push(Pending *q, PyObject *fans, int64_t start, int64_t len)
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

int
cs_pending_flush(Pending *q, PyObject *fans)
{
    while (q->n) {
        int r = pending_pop(q, fans);
        if (r != OK) {
            return r;
        }
    }
    return OK;
}
