# Declarations of the compiled MESI line table (see _mesi_c.pyx for the
# layout and its invariants).

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t


# Line states. INVALID is 0: a free slot has state 0, and "absent" and
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
    # No slot: an empty bucket, a missed lookup, a full table.
    NIL = -1


# One cache line. key and value are borrowed: the lists _keys/_values own
# them (so the garbage collector sees them). 32 bytes, two per cache line.
ctypedef struct Line:
    PyObject* key
    PyObject* value
    # When the line was last used; its entry in the use queue with this
    # stamp is its place in LRU order.
    uint64_t stamp
    # The low 32 bits of the key's hash: its home bucket, and a cheap
    # inequality test before comparing keys.
    uint32_t tag
    uint8_t state

# One entry of the use queue: "slot was used at stamp". Valid while the slot
# holds a line whose stamp is still this one.
ctypedef struct Use:
    uint64_t stamp
    int32_t slot


@cython.final
cdef class LineTable:
    cdef Line* _lines
    # The index: open addressing, linear probing, no tombstones; a bucket
    # holds a slot or NIL (4 bytes, so 2 * 100k buckets fit in 1 MiB).
    cdef int32_t* _buckets
    cdef Use* _queue
    cdef int32_t* _free
    # slot -> key / value; they own the references, None in free slots.
    cdef list _keys
    cdef list _values
    # Queue of (key, value) write-backs, drained by pop_write_backs().
    cdef list _pending
    cdef readonly Py_ssize_t capacity
    # Slots allocated; valid lines; slots handed out ever; free slots.
    cdef Py_ssize_t _alloc
    cdef Py_ssize_t _size
    cdef Py_ssize_t _used
    cdef Py_ssize_t _nfree
    # Buckets - 1 (a power of two minus one).
    cdef size_t _mask
    # Use queue: entries [_qhead, _qtail) of _qcap.
    cdef Py_ssize_t _qhead
    cdef Py_ssize_t _qtail
    cdef Py_ssize_t _qcap
    # The next stamp; _clock - 1 is the stamp of the most recently used line.
    cdef uint64_t _clock
    cdef uint64_t _hits
    cdef uint64_t _misses
    cdef uint64_t _invalidations
    cdef uint64_t _evictions
    cdef uint64_t _write_backs

    cdef inline void _push(self, int32_t s) noexcept nogil
    cdef inline void _touch(self, int32_t s) noexcept nogil
    cdef void _compact(self) noexcept nogil
    cdef int32_t _lru(self) noexcept nogil
    cdef int32_t _find(self, PyObject* key, Py_hash_t h) except -2
    cdef void _index_add(self, int32_t s) noexcept nogil
    cdef void _index_del(self, int32_t s) noexcept nogil
    cdef int _grow(self) except -1
    cdef int _release(self, int32_t s) except -1
    cdef int _insert(self, object key, Py_hash_t h, object value, uint8_t state) except -1
    cdef int32_t _lookup(self, object key) except -2
    cdef int _fill(self, object key, object value, int ev) except -1
