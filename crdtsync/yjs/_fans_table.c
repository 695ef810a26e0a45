/* crdtsync.yjs._fans: the table itself, and what adds to it (see _fans.h for the files).
 *
 * Every add goes through places_add_hashed (static here, with the probe and the bounds check
 * inline from _fans.h): add() from Python, and the capsules' entry points _cscan.c calls per
 * item (fans_add_c, fans_prefetch_c then fans_add_hashed_c). They are kept in this one file
 * so that the whole per-item path is inlined into them, as it was when _fans.c was one file.
 */
#include "_fans.h"

static int
places_grow_index(Places *self)
{
    size_t size = (self->mask + 1) * 2;
    uint64_t *index = PyMem_Calloc(size, sizeof(uint64_t));
    if (index == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = size - 1;
    for (Py_ssize_t k = 0; k < self->n; k++) {
        Py_hash_t h = self->entries[k].hash;
        size_t i = (size_t)h & mask;
        while (index[i]) {
            i = (i + 1) & mask;
        }
        index[i] = TAG(h) | (uint64_t)(k + 1);
    }
    PyMem_Free(self->index);
    self->index = index;
    self->mask = mask;
    return 0;
}

int
fans_init(Places *self, PyObject *args, PyObject *kwds)
{
    PyObject *data;
    static char *kwlist[] = {"data", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!:Places", kwlist, &PyBytes_Type, &data)) {
        return -1;
    }
    if (self->data != NULL) {
        PyErr_SetString(PyExc_TypeError, "Places is initialised once");
        return -1;
    }
    Py_INCREF(data);
    self->data = data;
    self->buf = PyBytes_AS_STRING(data);
    self->size = PyBytes_GET_SIZE(data);
    self->mask = 63;
    self->index = PyMem_Calloc(64, sizeof(uint64_t));
    if (self->index == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

void
fans_dealloc(Places *self)
{
    Py_XDECREF(self->data);
    Py_XDECREF(self->dict);
    PyMem_Free(self->entries);
    PyMem_Free(self->index);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* One more item placed at data[start:start + len] (checked by the caller), whose hash h
 * (FANS_HASH of its bytes) is already made: the items placed there now, or -1 with an
 * exception set. */
static Py_ssize_t
places_add_hashed(Places *self, Py_ssize_t start, Py_ssize_t len, Py_hash_t h)
{
    const char *key = self->buf + start;
    size_t slot;
    Py_ssize_t k = places_find(self, key, len, h, &slot);
    Py_CLEAR(self->dict);
    if (k >= 0) {
        Entry *e = &self->entries[k];
        if (e->count == UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "too many items at one place");
            return -1;
        }
        e->count += 1;
        return (Py_ssize_t)e->count;
    }
    if (self->n >= INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many places");
        return -1;
    }
    if (self->n == self->cap) {
        Py_ssize_t cap = self->cap ? self->cap * 2 : 64;
        Entry *entries = PyMem_Realloc(self->entries, (size_t)cap * sizeof(Entry));
        if (entries == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->entries = entries;
        self->cap = cap;
    }
    Entry *e = &self->entries[self->n];
    e->start = start;
    e->len = (uint32_t)len;
    e->count = 1;
    e->hash = h;
    self->index[slot] = TAG(h) | (uint64_t)(self->n + 1);
    self->n += 1;
    if ((size_t)self->n * 2 > self->mask) { /* at most half full */
        if (places_grow_index(self) < 0) {
            return -1;
        }
    }
    return 1;
}

/* As places_add_hashed, the bounds checked and the hash made here. */
static Py_ssize_t
places_add_place(Places *self, Py_ssize_t start, Py_ssize_t len)
{
    if (places_check(self, start, len) < 0) {
        return -1;
    }
    return places_add_hashed(self, start, len, FANS_HASH(self->buf + start, len));
}

/* add(start, length) -> int: one more item placed at data[start:start + length]; the items
 * placed there now. */
PyObject *
fans_add(Places *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add() takes start and length");
        return NULL;
    }
    if (places_ready(self) < 0) {
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[0]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t len = PyLong_AsSsize_t(args[1]);
    if (len == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t count = places_add_place(self, start, len);
    return count < 0 ? NULL : PyLong_FromSsize_t(count);
}

/* The C entry point for crdtsync/yjs/_cscan*.c (the capsule _add_v1 holds a pointer to it):
 * as add(), without a Python call or a boxed int. -2 (no exception set) when table is not a
 * Places: the caller then calls its add() method. */
Py_ssize_t
fans_add_c(PyObject *table, Py_ssize_t start, Py_ssize_t len)
{
    if (!PyObject_TypeCheck(table, &FansPlacesType)) {
        return -2;
    }
    return places_add_place((Places *)table, start, len);
}

/* For a scan that adds its places a few items late (_cscan.c: the index's cache miss is
 * then waited for while later items are read): the place's hash, with the index slot where
 * its probe starts fetched into the cache. -1 with an exception set if the place is outside
 * the update or table is not a Places (the hash itself is never -1: CPython's never is). */
Py_hash_t
fans_prefetch_c(PyObject *table, Py_ssize_t start, Py_ssize_t len)
{
    if (!PyObject_TypeCheck(table, &FansPlacesType)) {
        PyErr_SetString(PyExc_TypeError, "not a Places");
        return -1;
    }
    Places *self = (Places *)table;
    if (places_check(self, start, len) < 0) {
        return -1;
    }
    Py_hash_t h = FANS_HASH(self->buf + start, len);
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(&self->index[(size_t)h & self->mask]);
#endif
    return h;
}

/* add() of a place whose hash fans_prefetch_c made (the same table, the same place). */
Py_ssize_t
fans_add_hashed_c(PyObject *table, Py_ssize_t start, Py_ssize_t len, Py_hash_t h)
{
    Places *self = (Places *)table;
    if (!PyObject_TypeCheck(table, &FansPlacesType) || places_check(self, start, len) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "not a Places");
        }
        return -1;
    }
    return places_add_hashed(self, start, len, h);
}

/* reserve(n): room for n more places without growing (a hint: the scan passes the number of
 * structs a client declares, bounded by the bytes left); never shrinks. */
PyObject *
fans_reserve(Places *self, PyObject *arg)
{
    if (places_ready(self) < 0) {
        return NULL;
    }
    Py_ssize_t more = PyLong_AsSsize_t(arg);
    if (more == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (more < 0 || more > INT32_MAX - self->n) {
        PyErr_SetString(PyExc_ValueError, "reserve() takes 0 to 2**31 - 1 - len(self)");
        return NULL;
    }
    Py_ssize_t want = self->n + more;
    if (want > self->cap) {
        Entry *entries = PyMem_Realloc(self->entries, (size_t)want * sizeof(Entry));
        if (entries == NULL) {
            return PyErr_NoMemory();
        }
        self->entries = entries;
        self->cap = want;
    }
    while ((size_t)want * 2 > self->mask) {
        if (places_grow_index(self) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}
