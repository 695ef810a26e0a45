/* crdtsync.yjs._fans: the validator's fan bookkeeping in a native hash table (issue 17).
 *
 * The strict validator (crdtsync/yjs/_scan.py) counts, per item that does not continue its
 * client's previous clock, the items of the update placed at its place (its placement bytes:
 * origin, right origin, parent, key; data[start:end]). In Python: a bytes slice, its hash and
 * two dict operations per item (~150 ns; 28-35 ms of the 42-49 ms of a 200,000-key map). Here
 * a place is its offsets into the update (held by reference), hashed with the interpreter's
 * keyed hash of bytes (SipHash: the same hash, and the same resistance to chosen collisions,
 * as the dict it replaces) and compared by its bytes: no object is made per place.
 *
 * Places(data) also gives, in first-seen order (the dict's): len, [], in, iteration and
 * reversed() on the table (a bytes object per key visited), and _as_dict(): the items as a
 * dict made once (again after a later add). crdtsync/yjs/_places.py makes it a Mapping:
 * keys(), items(), values() are that dict's views (as fast as a dict's: the registry
 * intersects a large update's keys with a batch's); get and == are Mapping's.
 *
 * Optional: setup.py builds it when a C compiler is there; without it parse.py passes no
 * counter and _scan.py counts in a dict. tests/yjs/test_scan_builds.py runs both ways.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030E0000
#define FANS_HASH(p, n) Py_HashBuffer((p), (n))
#else
#define FANS_HASH(p, n) _Py_HashBytes((p), (n))
#endif

/* The SHA-256 of this file (setup.py): _native.py does not use a build of another version. */
#ifndef FANS_SOURCE_SHA256
#define FANS_SOURCE_SHA256 ""
#endif

typedef struct {
    Py_ssize_t start;
    uint32_t len;
    uint32_t count;
    Py_hash_t hash;
} Entry;

typedef struct {
    PyObject_HEAD
    PyObject *data; /* the update (bytes); the keys are slices of it */
    const char *buf;
    Py_ssize_t size;
    Entry *entries; /* in the order first seen */
    Py_ssize_t n, cap;
    uint64_t *index; /* open addressing: 0 (empty) or the entry number + 1 in the low 32
                        bits and the hash's high 32 bits above (compared before the entry) */
    size_t mask;
    PyObject *dict; /* the mapping as a dict, made on demand; NULL after an add */
} Places;

static PyTypeObject PlacesType;
static PyTypeObject PlacesIterType;

#define TAG(h) ((uint64_t)(h) & 0xFFFFFFFF00000000ull)

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

static int
places_init(Places *self, PyObject *args, PyObject *kwds)
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

static void
places_dealloc(Places *self)
{
    Py_XDECREF(self->data);
    Py_XDECREF(self->dict);
    PyMem_Free(self->entries);
    PyMem_Free(self->index);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The entry number of the place buf[0:len] with hash h, or -1; *slot: where it goes. */
static Py_ssize_t
places_find(Places *self, const char *key, Py_ssize_t len, Py_hash_t h, size_t *slot)
{
    size_t i = (size_t)h & self->mask;
    uint64_t tag = TAG(h);
    for (;;) {
        uint64_t v = self->index[i];
        if (!v) {
            *slot = i;
            return -1;
        }
        if ((v & 0xFFFFFFFF00000000ull) == tag) {
            Py_ssize_t k = (Py_ssize_t)(v & 0xFFFFFFFFull) - 1;
            Entry *e = &self->entries[k];
            if (e->hash == h && (Py_ssize_t)e->len == len &&
                memcmp(self->buf + e->start, key, (size_t)len) == 0) {
                *slot = i;
                return k;
            }
        }
        i = (i + 1) & self->mask;
    }
}

static int
places_ready(Places *self)
{
    if (self->data == NULL) {
        PyErr_SetString(PyExc_TypeError, "Places was not initialised");
        return -1;
    }
    return 0;
}

/* One more item placed at data[start:start + len]: the items placed there now, or -1 with an
 * exception set. The bounds are checked here, whoever calls. */
static int
places_check(Places *self, Py_ssize_t start, Py_ssize_t len)
{
    if (places_ready(self) < 0) {
        return -1;
    }
    if (start < 0 || len < 0 || len > self->size - start || len > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "place outside the update");
        return -1;
    }
    return 0;
}

/* As places_add_place, with the place's hash h (FANS_HASH of its bytes) already made. */
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
static PyObject *
places_add(Places *self, PyObject *const *args, Py_ssize_t nargs)
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

/* The C entry point for crdtsync/yjs/_cscan.c (the capsule FANS_ADD_CAPSULE holds a pointer
 * to it): as add(), without a Python call or a boxed int. -2 (no exception set) when table
 * is not a Places: the caller then calls its add() method. */
static Py_ssize_t
places_add_c(PyObject *table, Py_ssize_t start, Py_ssize_t len)
{
    if (!PyObject_TypeCheck(table, &PlacesType)) {
        return -2;
    }
    return places_add_place((Places *)table, start, len);
}

/* For a scan that adds its places a few items late (_cscan.c: the index's cache miss is
 * then waited for while later items are read): the place's hash, with the index slot where
 * its probe starts fetched into the cache. -1 with an exception set if the place is outside
 * the update or table is not a Places (the hash itself is never -1: CPython's never is). */
static Py_hash_t
places_prefetch_c(PyObject *table, Py_ssize_t start, Py_ssize_t len)
{
    if (!PyObject_TypeCheck(table, &PlacesType)) {
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

/* add() of a place whose hash places_prefetch_c made (the same table, the same place). */
static Py_ssize_t
places_add_hashed_c(PyObject *table, Py_ssize_t start, Py_ssize_t len, Py_hash_t h)
{
    Places *self = (Places *)table;
    if (!PyObject_TypeCheck(table, &PlacesType) || places_check(self, start, len) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "not a Places");
        }
        return -1;
    }
    return places_add_hashed(self, start, len, h);
}

/* reserve(n): room for n more places without growing (a hint: the scan passes the number of
 * structs a client declares, bounded by the bytes left); never shrinks. */
static PyObject *
places_reserve(Places *self, PyObject *arg)
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

static Py_ssize_t
places_len(Places *self)
{
    return self->n;
}

static PyObject *
places_key(Places *self, Py_ssize_t k)
{
    Entry *e = &self->entries[k];
    return PyBytes_FromStringAndSize(self->buf + e->start, (Py_ssize_t)e->len);
}

/* The entry of ``key`` (a bytes object), -1 if none, -2 on error. */
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

static PyObject *
places_getitem(Places *self, PyObject *key)
{
    Py_ssize_t k = places_lookup(self, key);
    if (k < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return PyLong_FromUnsignedLong(self->entries[k].count);
}

static int
places_contains(Places *self, PyObject *key)
{
    return places_lookup(self, key) >= 0;
}

/* The mapping as a dict (cached until the next add): a new reference. */
static PyObject *
places_as_dict(Places *self, PyObject *Py_UNUSED(ignored))
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
    PlacesIter *it = PyObject_New(PlacesIter, &PlacesIterType);
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

static PyObject *
places_iter(Places *self)
{
    return places_iter_new(self, 1);
}

static PyObject *
places_reversed(Places *self, PyObject *Py_UNUSED(ignored))
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

static PyTypeObject PlacesIterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "crdtsync.yjs._fans.PlacesIterator",
    .tp_basicsize = sizeof(PlacesIter),
    .tp_dealloc = (destructor)places_iter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)places_iter_next,
};

static PyMethodDef places_methods[] = {
    {"add", (PyCFunction)(void (*)(void))places_add, METH_FASTCALL,
     "add(start, length) -> int: one more item placed at data[start:start+length]; the items there now."},
    {"reserve", (PyCFunction)places_reserve, METH_O,
     "reserve(n): room for n more places without growing."},
    {"_as_dict", (PyCFunction)places_as_dict, METH_NOARGS,
     "The items as a dict, made once until the next add (do not change it)."},
    {"__reversed__", (PyCFunction)places_reversed, METH_NOARGS,
     "The keys, the last seen first."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods places_as_mapping = {
    .mp_length = (lenfunc)places_len,
    .mp_subscript = (binaryfunc)places_getitem,
};

static PySequenceMethods places_as_sequence = {
    .sq_contains = (objobjproc)places_contains,
};

static PyTypeObject PlacesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "crdtsync.yjs._fans.Places",
    .tp_basicsize = sizeof(Places),
    .tp_dealloc = (destructor)places_dealloc,
    .tp_as_mapping = &places_as_mapping,
    .tp_as_sequence = &places_as_sequence,
    .tp_hash = PyObject_HashNotImplemented,
    /* a base type: crdtsync/yjs/_places.py makes the Mapping of it */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_MAPPING,
    .tp_doc = "Places(data): items per place of one update, keyed by slices of data.",
    .tp_iter = (getiterfunc)places_iter,
    .tp_methods = places_methods,
    .tp_init = (initproc)places_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef fans_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "crdtsync.yjs._fans",
    .m_doc = "The validator's fan bookkeeping in a native hash table (optional speedup).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fans(void)
{
    if (PyType_Ready(&PlacesType) < 0 || PyType_Ready(&PlacesIterType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&fans_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "SOURCE_SHA256", FANS_SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    /* Versioned by its name: a _cscan built against another signature finds no capsule. */
    struct {
        const char *name, *attr;
        void *fn;
    } capsules[] = {
        {"crdtsync.yjs._fans._add_v1", "_add_v1", (void *)places_add_c},
        {"crdtsync.yjs._fans._prefetch_v1", "_prefetch_v1", (void *)places_prefetch_c},
        {"crdtsync.yjs._fans._add_hashed_v1", "_add_hashed_v1", (void *)places_add_hashed_c},
        {"crdtsync.yjs._fans._type_v1", "_type_v1", (void *)&PlacesType},
    };
    for (size_t i = 0; i < sizeof(capsules) / sizeof(capsules[0]); i++) {
        PyObject *capsule = PyCapsule_New(capsules[i].fn, capsules[i].name, NULL);
        if (capsule == NULL || PyModule_AddObject(module, capsules[i].attr, capsule) < 0) {
            Py_XDECREF(capsule);
            Py_DECREF(module);
            return NULL;
        }
    }
    Py_INCREF(&PlacesType);
    if (PyModule_AddObject(module, "Places", (PyObject *)&PlacesType) < 0) {
        Py_DECREF(&PlacesType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
