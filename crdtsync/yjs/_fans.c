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
 * This file is the module: the Places type, the capsules for _cscan*.c and PyInit__fans. The
 * table is in _fans_table.c, its reading in _fans_mapping.c, what they share in _fans.h.
 *
 * Optional: setup.py builds it when a C compiler is there; without it parse.py passes no
 * counter and _scan.py counts in a dict. tests/yjs/test_scan_builds.py runs both ways.
 */
#include "_fans.h"

/* The SHA-256 of all the extension's sources (setup.py, FANS_SOURCES): _native.py does not
 * use a build of another version of any of them. */
#ifndef FANS_SOURCE_SHA256
#define FANS_SOURCE_SHA256 ""
#endif

static PyMethodDef places_methods[] = {
    {"add", (PyCFunction)(void (*)(void))fans_add, METH_FASTCALL,
     "add(start, length) -> int: one more item placed at data[start:start+length]; the items there now."},
    {"reserve", (PyCFunction)fans_reserve, METH_O,
     "reserve(n): room for n more places without growing."},
    {"_as_dict", (PyCFunction)fans_as_dict, METH_NOARGS,
     "The items as a dict, made once until the next add (do not change it)."},
    {"__reversed__", (PyCFunction)fans_reversed, METH_NOARGS, "The keys, the last seen first."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods places_as_mapping = {
    .mp_length = (lenfunc)fans_len,
    .mp_subscript = (binaryfunc)fans_getitem,
};

static PySequenceMethods places_as_sequence = {
    .sq_contains = (objobjproc)fans_contains,
};

PyTypeObject FansPlacesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "crdtsync.yjs._fans.Places",
    .tp_basicsize = sizeof(Places),
    .tp_dealloc = (destructor)fans_dealloc,
    .tp_as_mapping = &places_as_mapping,
    .tp_as_sequence = &places_as_sequence,
    .tp_hash = PyObject_HashNotImplemented,
    /* a base type: crdtsync/yjs/_places.py makes the Mapping of it */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_MAPPING,
    .tp_doc = "Places(data): items per place of one update, keyed by slices of data.",
    .tp_iter = (getiterfunc)fans_iter,
    .tp_methods = places_methods,
    .tp_init = (initproc)fans_init,
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
    if (PyType_Ready(&FansPlacesType) < 0 || PyType_Ready(&FansPlacesIterType) < 0) {
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
        {"crdtsync.yjs._fans._add_v1", "_add_v1", (void *)fans_add_c},
        {"crdtsync.yjs._fans._prefetch_v1", "_prefetch_v1", (void *)fans_prefetch_c},
        {"crdtsync.yjs._fans._add_hashed_v1", "_add_hashed_v1", (void *)fans_add_hashed_c},
        {"crdtsync.yjs._fans._type_v1", "_type_v1", (void *)&FansPlacesType},
    };
    for (size_t i = 0; i < sizeof(capsules) / sizeof(capsules[0]); i++) {
        PyObject *capsule = PyCapsule_New(capsules[i].fn, capsules[i].name, NULL);
        if (capsule == NULL || PyModule_AddObject(module, capsules[i].attr, capsule) < 0) {
            Py_XDECREF(capsule);
            Py_DECREF(module);
            return NULL;
        }
    }
    Py_INCREF(&FansPlacesType);
    if (PyModule_AddObject(module, "Places", (PyObject *)&FansPlacesType) < 0) {
        Py_DECREF(&FansPlacesType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
