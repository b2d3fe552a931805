# Declarations of the compiled consistent hash ring (see _ring_c.pyx).
cimport cython
from libc.stdint cimport uint32_t, uint64_t


@cython.final
cdef class _Table:
    # One immutable snapshot of the ring. HashRing swaps in a new _Table on
    # every add/remove and never mutates one in place, so lookup_many can keep
    # reading a snapshot without the GIL while another thread changes the ring.
    cdef uint64_t *points      # sorted by (point, node name), `count` of them
    cdef Py_ssize_t *owners    # owners[i]: index into `names` of points[i]; owners[count] == owners[0]
    cdef uint32_t *index       # index[t]: first i with points[i] >= t << shift; 2**bits + 1 entries
    cdef Py_ssize_t count
    cdef int shift             # 64 - bits
    cdef readonly tuple names  # node names at snapshot time, insertion order

    cdef Py_ssize_t position(self, uint64_t h) noexcept nogil


@cython.final
cdef class HashRing:
    cdef int _vnodes
    cdef list _nodes           # insertion order; lookup_many indices refer to it
    cdef dict _node_points     # name -> list of its `vnodes` points, label order
    cdef _Table _table

    cdef list _points_of(self, str node)
    cdef int _rebuild(self) except -1
