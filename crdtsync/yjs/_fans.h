/* crdtsync.yjs._fans's private header: what its sources share.
 *
 * The extension is one module built from three C files and this header, split by concern
 * so that each stays a few hundred lines (the project's size rule), as _cscan*.c were:
 *   _fans.c          the module: its doc, the Places type, the capsules, PyInit__fans;
 *   _fans_table.c    the table: init, dealloc, the index's growth, add() and its C entry
 *                    points (the capsules _cscan.c calls per item), reserve();
 *   _fans_mapping.c  reading it: len, [], in, _as_dict(), iteration and reversed();
 *   _fans.h          (this) the types, the shared functions, and, static inline, what the
 *                    hot path and a lookup share (the probe, the bounds check).
 * The hot path (a place added from the C scan: the capsule, the bounds check, the hash, the
 * probe, the entry) stays within _fans_table.c and this header, so it is inlined as it was
 * when the extension was one file. setup.py compiles the three C files into
 * crdtsync.yjs._fans and lists every file here (FANS_SOURCES there, the same list in
 * crdtsync/yjs/_native.py): the hash compiled in (SOURCE_SHA256) covers all four, so an edit
 * to any one of them makes a build stale. The functions shared between the files are hidden
 * (never exported from the .so); nothing here is a public API.
 */
#ifndef CRDTSYNC_FANS_H
#define CRDTSYNC_FANS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030E0000
#define FANS_HASH(p, n) Py_HashBuffer((p), (n))
#else
#define FANS_HASH(p, n) _Py_HashBytes((p), (n))
#endif

/* Shared between the files of this one extension only (never exported from the .so). */
#if defined(__GNUC__)
#define FANS_HIDDEN __attribute__((visibility("hidden")))
#else
#define FANS_HIDDEN
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

#define TAG(h) ((uint64_t)(h) & 0xFFFFFFFF00000000ull)

/* The types (_fans.c: Places; _fans_mapping.c: its iterator). */
FANS_HIDDEN extern PyTypeObject FansPlacesType;
FANS_HIDDEN extern PyTypeObject FansPlacesIterType;

/* ------------------------------------------------------------------------------------------
 * _fans_table.c: the table, and what adds to it. */

FANS_HIDDEN int fans_init(Places *self, PyObject *args, PyObject *kwds);
FANS_HIDDEN void fans_dealloc(Places *self);
/* add(start, length) -> int; reserve(n) (the methods of Places). */
FANS_HIDDEN PyObject *fans_add(Places *self, PyObject *const *args, Py_ssize_t nargs);
FANS_HIDDEN PyObject *fans_reserve(Places *self, PyObject *arg);
/* The C entry points the capsules hold (see there). */
FANS_HIDDEN Py_ssize_t fans_add_c(PyObject *table, Py_ssize_t start, Py_ssize_t len);
FANS_HIDDEN Py_hash_t fans_prefetch_c(PyObject *table, Py_ssize_t start, Py_ssize_t len);
FANS_HIDDEN Py_ssize_t fans_add_hashed_c(PyObject *table, Py_ssize_t start, Py_ssize_t len,
                                         Py_hash_t h);

/* ------------------------------------------------------------------------------------------
 * _fans_mapping.c: reading the table. */

FANS_HIDDEN Py_ssize_t fans_len(Places *self);
FANS_HIDDEN PyObject *fans_getitem(Places *self, PyObject *key);
FANS_HIDDEN int fans_contains(Places *self, PyObject *key);
FANS_HIDDEN PyObject *fans_as_dict(Places *self, PyObject *ignored);
FANS_HIDDEN PyObject *fans_iter(Places *self);
FANS_HIDDEN PyObject *fans_reversed(Places *self, PyObject *ignored);

/* ------------------------------------------------------------------------------------------
 * Inline: what an add (per item, the hot path) and a lookup share. */

/* The entry number of the place key[0:len] with hash h, or -1; *slot: where it goes. */
static inline Py_ssize_t
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

static inline int
places_ready(Places *self)
{
    if (self->data == NULL) {
        PyErr_SetString(PyExc_TypeError, "Places was not initialised");
        return -1;
    }
    return 0;
}

/* Whether data[start:start + len] is a place of this (initialised) table: 0, or -1 with an
 * exception set. The bounds are checked here, whoever calls. */
static inline int
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

#endif /* CRDTSYNC_FANS_H */
