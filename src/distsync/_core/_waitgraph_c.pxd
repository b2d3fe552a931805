# cython: language_level=3
"""Declarations of the compiled wait-for graph (see ``_waitgraph_c.pyx``)."""

cimport cython
from libc.stdint cimport int32_t, uint32_t


# A growable array of node ids. ``out`` vectors keep insertion order (it
# decides which cycle is reported); ``inn`` vectors are unordered.
ctypedef struct IdVec:
    int32_t *data
    int32_t len
    int32_t cap


# One id slot. A live node has at least one edge; a free slot has none.
ctypedef struct NodeRec:
    IdVec out   # holders this node waits for, in insertion order
    IdVec inn   # nodes waiting for this one, in no particular order


@cython.final
cdef class WaitForGraph:
    # name -> id (Python int), and id -> name (None for a free slot).
    cdef dict _ids
    cdef list _names
    # Id slots 0.._nslots-1 are in use (live or free); _cap is allocated.
    cdef NodeRec *_nodes
    cdef int32_t _nslots
    cdef int32_t _cap
    # Free ids, a binary min-heap of _nfree entries (capacity _cap).
    cdef int32_t *_heap
    cdef int32_t _nfree
    cdef Py_ssize_t _nedges
    # Visit marks: slot i is marked in the current search iff
    # _mark[i] == _epoch. Bumping _epoch unmarks everything in O(1).
    cdef uint32_t *_mark
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
    cdef int32_t _lookup(self, object name) noexcept
    cdef int32_t _intern(self, object name) except -1
    cdef int _release_if_isolated(self, int32_t i) except -1
    cdef uint32_t _next_epoch(self) noexcept nogil
    cdef int32_t _search(self, int32_t h, int32_t w) noexcept nogil
    cdef list _path_names(self, int32_t *ids, int32_t n)
    cdef list _shortest_cycle(self, int32_t r)
