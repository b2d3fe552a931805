# Declarations of the compiled MESI line table (see _mesi_c.pyx).

cimport cython
from libc.stdint cimport int32_t, uint8_t, uint64_t


# Line states. INVALID is 0: a slot with state 0 is free, and "absent" and
# "invalid" read the same.
cdef enum LineState:
    ST_I = 0
    ST_S = 1
    ST_E = 2
    ST_M = 3

# What the driver must do after an event.
cdef enum LineAction:
    ACT_NONE = 0
    ACT_FETCH = 1
    ACT_INVALIDATE_OTHERS = 2
    ACT_WRITE_BACK = 3

# Protocol events (rows of the transition table).
cdef enum LineEvent:
    EV_LOCAL_READ = 0
    EV_LOCAL_WRITE = 1
    EV_FILL_EXCLUSIVE = 2
    EV_FILL_SHARED = 3
    EV_UPGRADE = 4
    EV_REMOTE_READ = 5
    EV_INVALIDATE = 6
    EV_EVICT = 7
    EV_FLUSH = 8
    EV_CLEAN = 9
    N_EVENTS = 10

cdef enum:
    N_STATES = 4
    # A cell of the table the protocol forbids.
    ILLEGAL = 0xFF
    # End of the LRU list / free list.
    NIL = -1


@cython.final
cdef class LineTable:
    # key (exact str/bytes) -> slot, a Python int from _slot_ints.
    cdef dict _index
    # slot -> key / value; None in free slots.
    cdef list _keys
    cdef list _values
    # slot -> the cached Python int for the slot (no int allocated per fill).
    cdef list _slot_ints
    # Intrusive doubly linked LRU list over slots: _head is the least,
    # _tail the most recently used. Free slots chain through _next.
    cdef int32_t* _prev
    cdef int32_t* _next
    cdef uint8_t* _state
    cdef int32_t _head
    cdef int32_t _tail
    cdef int32_t _free
    # Slots in use (valid lines), slots ever handed out, slots allocated.
    cdef Py_ssize_t _size
    cdef Py_ssize_t _used
    cdef Py_ssize_t _alloc
    cdef readonly Py_ssize_t capacity
    # Queue of (key, value) write-backs, drained by pop_write_backs().
    cdef list _pending
    cdef uint64_t _hits
    cdef uint64_t _misses
    cdef uint64_t _invalidations
    cdef uint64_t _evictions
    cdef uint64_t _write_backs

    cdef inline void _unlink(self, int32_t s) noexcept nogil
    cdef inline void _push_mru(self, int32_t s) noexcept nogil
    cdef inline void _touch(self, int32_t s) noexcept nogil
    cdef int _grow(self) except -1
    cdef int32_t _take_slot(self) except -2
    cdef int _release(self, int32_t s) except -1
    cdef int _insert(self, object key, object value, uint8_t state) except -1
    cdef int32_t _lookup(self, object key) except -2
    cdef int _fill(self, object key, object value, int ev) except -1
