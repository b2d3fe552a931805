# cython: language_level=3
"""Declarations of the compiled wait-for graph (see ``_waitgraph_c.pyx``)."""

cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, uint32_t


cdef enum:
    # Ids a SmallVec holds inline before it spills to the heap: most clients
    # wait for, and are waited on by, a handful of others.
    SMALL_INLINE = 4


ctypedef union SmallData:
    int32_t *ptr                 # heap storage, while cap > SMALL_INLINE
    int32_t inl[SMALL_INLINE]    # inline storage, while cap <= SMALL_INLINE


# A growable array of node ids with small-size inline storage. cap == 0 (a
# zeroed slot) or SMALL_INLINE means inline; cap > SMALL_INLINE means heap.
ctypedef struct SmallVec:
    int32_t len
    int32_t cap
    SmallData d


# What a search touches per node, packed in 32 bytes (half a cache line):
# the visit mark and the out-edges, inline when few. One memory access per
# step of a DFS instead of three (mark array, vector header, edge buffer).
ctypedef struct HotRec:
    uint32_t mark    # visited in the current search iff mark == _epoch
    int32_t spare
    SmallVec out     # holders this node waits for, in insertion order


# One entry of the name -> id hash table (open addressing, linear probing).
# ``key`` is borrowed: _names holds the reference for as long as the entry
# exists. key == NULL marks an empty entry.
ctypedef struct NameEntry:
    PyObject *key
    Py_hash_t hash
    int32_t id


@cython.final
cdef class WaitForGraph:
    # id -> name (None for a free slot); it owns the name references.
    cdef list _names
    # name -> id: a C hash table rather than a dict of Python ints, so a
    # lookup touches one entry instead of dict index, dict entry and int
    # object -- it is on the 1 us path of would_close_cycle twice.
    cdef NameEntry *_table
    cdef Py_ssize_t _tmask       # table size - 1 (size is a power of two)
    cdef Py_ssize_t _tcount      # live entries == live nodes
    cdef int _tshift             # 64 - log2(size), for Fibonacci hashing
    # Id slots 0.._nslots-1 are in use (live or free); _cap are allocated.
    # Invariant: a slot is live iff its out or inn vector is non-empty.
    cdef HotRec *_hot
    cdef SmallVec *_inn          # nodes waiting for each slot, unordered
    cdef int32_t _nslots
    cdef int32_t _cap
    # Free ids, a binary min-heap of _nfree entries (capacity _cap).
    cdef int32_t *_heap
    cdef int32_t _nfree
    cdef Py_ssize_t _nedges
    # Bumping _epoch unmarks every slot in O(1) (see HotRec.mark).
    cdef uint32_t _epoch
    # Scratch arrays of _cap entries for the searches (DFS/Tarjan/BFS).
    cdef int32_t *_s_node
    cdef int32_t *_s_edge
    cdef int32_t *_s_index
    cdef int32_t *_s_low
    cdef int32_t *_s_comp
    cdef int32_t *_s_stack

    cdef void _free_all(self) noexcept
    cdef int _grow(self) except -1
    cdef Py_ssize_t _find(self, object name, Py_hash_t h) noexcept
    cdef int32_t _lookup(self, object name) noexcept
    cdef int _table_insert(self, object name, int32_t i) except -1
    cdef void _table_delete(self, object name) noexcept
    cdef int _table_resize(self, Py_ssize_t size) except -1
    cdef int32_t _intern(self, object name) except -1
    cdef int _release_if_isolated(self, int32_t i) except -1
    cdef uint32_t _next_epoch(self) noexcept nogil
    cdef int32_t _search(self, int32_t h, int32_t w) noexcept nogil
    cdef list _path_names(self, const int32_t *ids, int32_t n)
    cdef list _shortest_cycle(self, int32_t r)
