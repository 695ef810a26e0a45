/* crdtsync.yjs._cscan: counting the places (fans) of the items.
 *
 * Part of the one extension crdtsync.yjs._cscan (see _cscan.h for its files). Places are
 * counted where the reference counts them: in the native table of crdtsync/yjs/_fans.c
 * called through its capsules (no Python call per item; added LAG items late with the
 * table's index slot prefetched: Pending in _cscan.h, its queue in _cscan_inline.h), in any other object through its add()
 * method, or (fans None) in a dict of placement bytes, as the reference does.
 */
#include "_cscan.h"

typedef Py_ssize_t (*fans_add_fn)(PyObject *, Py_ssize_t, Py_ssize_t);
/* From crdtsync.yjs._fans, if it is there (its capsules; versioned by name, so a _fans built
 * with another signature offers none and places are counted through its add method). */
static fans_add_fn fans_add_c = NULL;
fans_prefetch_fn cs_fans_prefetch = NULL;
fans_add_hashed_fn cs_fans_add_hashed = NULL;
static PyTypeObject *places_type = NULL;

int
cs_import_fans(void)
{
    PyObject *fans_module = PyImport_ImportModule("crdtsync.yjs._fans");
    if (fans_module != NULL) {
        fans_add_c = (fans_add_fn)PyCapsule_Import("crdtsync.yjs._fans._add_v1", 0);
        cs_fans_prefetch = (fans_prefetch_fn)PyCapsule_Import("crdtsync.yjs._fans._prefetch_v1", 0);
        cs_fans_add_hashed =
            (fans_add_hashed_fn)PyCapsule_Import("crdtsync.yjs._fans._add_hashed_v1", 0);
        places_type = (PyTypeObject *)PyCapsule_Import("crdtsync.yjs._fans._type_v1", 0);
        Py_DECREF(fans_module);
    }
    if (fans_add_c == NULL || cs_fans_prefetch == NULL || cs_fans_add_hashed == NULL ||
        places_type == NULL) {
        PyErr_Clear();
        fans_add_c = NULL;
        cs_fans_prefetch = NULL;
        cs_fans_add_hashed = NULL;
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
