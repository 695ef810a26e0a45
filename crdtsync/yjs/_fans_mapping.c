/* crdtsync.yjs._fans: reading the table as a mapping (see _fans.h for the files).
 *
 * len, [] and in (a bytes key looked up by its bytes, with the same hash as an add), the
 * items as a dict (_as_dict(), made once until the next add: crdtsync/yjs/_places.py's
 * views are that dict's), and iteration over the keys in the order first seen or its
 * reverse (a bytes object per key visited). None of it is on the validator's hot path.
 */
#include "_fans.h"

Py_ssize_t
fans_len(Places *self)
{
    return self->n;
}

static PyObject *
places_key(Places *self, Py_ssize_t k)
{
    Entry *e = &self->entries[k];
    return PyBytes_FromStringAndSize(self->buf + e->start, (Py_ssize_t)e->len);
}

/* The entry of ``key`` (a bytes object), -1 if none. */
static Py_ssize_t
places_lookup(Places *self, PyObject *key)
{
    if (self->data == NULL || !PyBytes_Check(key)) {
        return -1;
    }
    const char *p = PyBytes_AS_STRING(key);
    Py_ssize_t len = PyBytes_GET_SIZE(key);
    size_t slot;
    return places_find(self, p, len, FANS_HASH(p, len), &slot);
}

PyObject *
fans_getitem(Places *self, PyObject *key)
{
    Py_ssize_t k = places_lookup(self, key);
    if (k < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return PyLong_FromUnsignedLong(self->entries[k].count);
}

int
fans_contains(Places *self, PyObject *key)
{
    return places_lookup(self, key) >= 0;
}

/* The mapping as a dict (cached until the next add): a new reference. */
PyObject *
fans_as_dict(Places *self, PyObject *Py_UNUSED(ignored))
{
    if (self->dict == NULL) {
        PyObject *dict = PyDict_New();
        if (dict == NULL) {
            return NULL;
        }
        for (Py_ssize_t k = 0; k < self->n; k++) {
            PyObject *key = places_key(self, k);
            PyObject *value = key ? PyLong_FromUnsignedLong(self->entries[k].count) : NULL;
            if (value == NULL || PyDict_SetItem(dict, key, value) < 0) {
                Py_XDECREF(key);
                Py_XDECREF(value);
                Py_DECREF(dict);
                return NULL;
            }
            Py_DECREF(key);
            Py_DECREF(value);
        }
        self->dict = dict;
    }
    Py_INCREF(self->dict);
    return self->dict;
}

/* iteration: keys in the order first seen, or the reverse */

typedef struct {
    PyObject_HEAD
    Places *places;
    Py_ssize_t next; /* the entry to give next */
    Py_ssize_t n;    /* entries when the iterator was made: a later add raises */
    int step;        /* +1 or -1 */
} PlacesIter;

static PyObject *
places_iter_new(Places *self, int step)
{
    PlacesIter *it = PyObject_New(PlacesIter, &FansPlacesIterType);
    if (it == NULL) {
        return NULL;
    }
    Py_INCREF(self);
    it->places = self;
    it->n = self->n;
    it->step = step;
    it->next = step > 0 ? 0 : self->n - 1;
    return (PyObject *)it;
}

PyObject *
fans_iter(Places *self)
{
    return places_iter_new(self, 1);
}

PyObject *
fans_reversed(Places *self, PyObject *Py_UNUSED(ignored))
{
    return places_iter_new(self, -1);
}

static void
places_iter_dealloc(PlacesIter *it)
{
    Py_DECREF(it->places);
    PyObject_Free(it);
}

static PyObject *
places_iter_next(PlacesIter *it)
{
    if (it->places->n != it->n) {
        PyErr_SetString(PyExc_RuntimeError, "Places changed size during iteration");
        return NULL;
    }
    if (it->next < 0 || it->next >= it->n) {
        return NULL;
    }
    PyObject *key = places_key(it->places, it->next);
    it->next += it->step;
    return key;
}

PyTypeObject FansPlacesIterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "crdtsync.yjs._fans.PlacesIterator",
    .tp_basicsize = sizeof(PlacesIter),
    .tp_dealloc = (destructor)places_iter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)places_iter_next,
};
