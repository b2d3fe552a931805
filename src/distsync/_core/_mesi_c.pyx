# cython: language_level=3
"""MESI cache-line table of a near-cache agent (compiled twin of ``_mesi_py``).

The protocol, the events and the write-back queue are described in
:mod:`distsync._core._mesi_py`; this module has the same public API and
behaviour. A table of 100k lines does not fit in the L1/L2 caches, so the
layout is built to touch as few cache lines per operation as possible:

* ``_lines``: one 32-byte :c:type:`Line` per slot (key, value, stamp, hash
  tag, state);
* ``_buckets``: an open-addressing index of 4-byte slot numbers (linear
  probing, load <= 1/2, backward-shift deletion) from the key's hash to its
  slot; a probe compares the key object's identity first, then the hash tag,
  then equality. 100k lines need 1 MiB of buckets, which stays in L2;
* ``_queue``: the *use queue*, an append-only log of ``(stamp, slot)``. Each
  use of a line gives it a new stamp from ``_clock`` and appends one entry;
  the entry whose stamp equals the line's current stamp is its place in LRU
  order, older entries of the slot are stale and skipped. The oldest valid
  entry is the LRU line. When the queue fills, it is compacted in place to
  its valid entries (at most ``_size``), so appends cost O(1) amortised and
  nothing is ever allocated on a hit.

A hit is therefore one read of the key's cached hash, one bucket, one
``Line`` and one sequential queue append (plus, amortised, one check of a
queue entry during compaction): no linked-list neighbours to
rewrite, no Python int to unbox, no allocation.

Invariants, between any two public calls:

* ``_size`` slots hold a valid line (state M/E/S), each in exactly one bucket
  and with exactly one valid queue entry; ``_keys[s]``/``_values[s]`` own the
  objects ``_lines[s].key``/``.value`` point to.
* The other ``_used - _size`` handed-out slots are on the ``_free`` stack with
  state I and None in ``_keys``/``_values``; ``_used <= _alloc <= capacity``.
* Valid queue entries are in increasing stamp order between ``_qhead`` and
  ``_qtail``, and ``_qcap >= 4 * _alloc + 2`` (room after any compaction).

Values are dropped (decref'd, which may run arbitrary ``__del__`` code) only
once the structure is consistent again, so a finalizer that calls back into
the table sees a valid table.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject, Py_XDECREF, Py_XINCREF
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t

from distsync._core._mesi_py import (
    ACTION_NAMES,
    EVENT_NAMES,
    IllegalTransition,
    STATE_NAMES,
    _code,
    _illegal,
    _ops_view,
)

from types import MappingProxyType

cdef extern from "Python.h":
    # Raw-pointer spellings of the C API, for the batch loop: borrowed
    # references with no incref/decref pair generated around them.
    PyObject* _list_get "PyList_GET_ITEM"(PyObject* lst, Py_ssize_t i) nogil
    void _list_set "PyList_SET_ITEM"(PyObject* lst, Py_ssize_t i, PyObject* o) nogil
    Py_ssize_t _list_size "PyList_GET_SIZE"(PyObject* lst) nogil
    Py_hash_t _hash "PyObject_Hash"(PyObject* o) except? -1
    int _richcmp "PyObject_RichCompareBool"(PyObject* a, PyObject* b, int op) except -1
    void* _type_of "Py_TYPE"(PyObject* o) nogil
    int Py_EQ
    bint _str_exact "PyUnicode_CheckExact"(PyObject* o) nogil
    bint _bytes_exact "PyBytes_CheckExact"(PyObject* o) nogil
    PyObject* PyErr_Occurred()

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define DS_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define DS_PREFETCH(p) ((void)0)
    #endif
    """
    # A hint to start loading the cache line at p; never faults.
    void _prefetch "DS_PREFETCH"(const void* p) nogil


# One op of a batch, as the validation pass leaves it for the main loop.
ctypedef struct KeyRef:
    Py_hash_t hash
    PyObject* key

# How far ahead the batch loop prefetches the bucket, then the line, of a
# coming op: far enough to hide a memory access behind the work of the ops in
# between, near enough that the lines are still cached when used.
cdef enum:
    _PF_BUCKET = 16
    _PF_LINE = 8


__all__ = [
    "LineTable",
    "IllegalTransition",
    "transition",
    "TRANSITIONS",
    "STATE_NAMES",
    "EVENT_NAMES",
    "ACTION_NAMES",
    "INVALID",
    "SHARED",
    "EXCLUSIVE",
    "MODIFIED",
    "NONE",
    "FETCH",
    "INVALIDATE_OTHERS",
    "WRITE_BACK",
    "LOCAL_READ",
    "LOCAL_WRITE",
    "FILL_EXCLUSIVE",
    "FILL_SHARED",
    "UPGRADE",
    "REMOTE_READ",
    "INVALIDATE",
    "REMOTE_WRITE",
    "EVICT",
    "FLUSH",
    "CLEAN",
    "OP_GET",
    "OP_PUT",
]

INVALID = ST_I
SHARED = ST_S
EXCLUSIVE = ST_E
MODIFIED = ST_M

NONE = ACT_NONE
FETCH = ACT_FETCH
INVALIDATE_OTHERS = ACT_INVALIDATE_OTHERS
WRITE_BACK = ACT_WRITE_BACK

LOCAL_READ = EV_LOCAL_READ
LOCAL_WRITE = EV_LOCAL_WRITE
FILL_EXCLUSIVE = EV_FILL_EXCLUSIVE
FILL_SHARED = EV_FILL_SHARED
UPGRADE = EV_UPGRADE
REMOTE_READ = EV_REMOTE_READ
INVALIDATE = EV_INVALIDATE
REMOTE_WRITE = EV_INVALIDATE
EVICT = EV_EVICT
FLUSH = EV_FLUSH
CLEAN = EV_CLEAN

cdef enum:
    _OP_GET = 0
    _OP_PUT = 1
OP_GET = _OP_GET
OP_PUT = _OP_PUT

# The protocol: _NEXT[event][state] and _ACT[event][state], columns in state
# order I, S, E, M; ILLEGAL marks a pair the protocol forbids. The same
# table as _ROWS in the Python twin (a test checks both against a table
# written from the protocol).
cdef uint8_t _NEXT[N_EVENTS][N_STATES]
cdef uint8_t _ACT[N_EVENTS][N_STATES]

cdef void _row(int ev, int n0, int a0, int n1, int a1, int n2, int a2, int n3, int a3) noexcept:
    _NEXT[ev][0] = n0
    _ACT[ev][0] = a0
    _NEXT[ev][1] = n1
    _ACT[ev][1] = a1
    _NEXT[ev][2] = n2
    _ACT[ev][2] = a2
    _NEXT[ev][3] = n3
    _ACT[ev][3] = a3

#                     I                  S                          E                M
_row(EV_LOCAL_READ, ST_I, ACT_FETCH, ST_S, ACT_NONE, ST_E, ACT_NONE, ST_M, ACT_NONE)
_row(EV_LOCAL_WRITE, ST_I, ACT_FETCH, ST_S, ACT_INVALIDATE_OTHERS, ST_M, ACT_NONE, ST_M, ACT_NONE)
# A fill answers a fetch, which only an Invalid line makes.
_row(EV_FILL_EXCLUSIVE, ST_E, ACT_NONE, ILLEGAL, ILLEGAL, ILLEGAL, ILLEGAL, ILLEGAL, ILLEGAL)
_row(EV_FILL_SHARED, ST_S, ACT_NONE, ILLEGAL, ILLEGAL, ILLEGAL, ILLEGAL, ILLEGAL, ILLEGAL)
# An upgrade answers INVALIDATE_OTHERS, which only a Shared line asks for.
_row(EV_UPGRADE, ILLEGAL, ILLEGAL, ST_E, ACT_NONE, ILLEGAL, ILLEGAL, ILLEGAL, ILLEGAL)
# Home-driven events may race with our own eviction: on I they are no-ops.
_row(EV_REMOTE_READ, ST_I, ACT_NONE, ST_S, ACT_NONE, ST_S, ACT_NONE, ST_S, ACT_WRITE_BACK)
_row(EV_INVALIDATE, ST_I, ACT_NONE, ST_I, ACT_NONE, ST_I, ACT_NONE, ST_I, ACT_WRITE_BACK)
_row(EV_EVICT, ST_I, ACT_NONE, ST_I, ACT_NONE, ST_I, ACT_NONE, ST_I, ACT_WRITE_BACK)
_row(EV_FLUSH, ST_I, ACT_NONE, ST_S, ACT_NONE, ST_E, ACT_NONE, ST_E, ACT_WRITE_BACK)
_row(EV_CLEAN, ST_I, ACT_NONE, ST_S, ACT_NONE, ST_E, ACT_NONE, ST_E, ACT_NONE)

#: ``(state, event) -> (next_state, action)`` for every allowed pair. Read-only.
cdef dict _table_as_dict():
    cdef int ev, st
    cdef dict out = {}
    for ev in range(N_EVENTS):
        for st in range(N_STATES):
            if _NEXT[ev][st] != ILLEGAL:
                out[(st, ev)] = (_NEXT[ev][st], _ACT[ev][st])
    return out


TRANSITIONS = MappingProxyType(_table_as_dict())


def transition(state, event):
    """The protocol's answer to ``event`` in ``state``.

    :param state: one of ``INVALID``, ``SHARED``, ``EXCLUSIVE``, ``MODIFIED``.
    :param event: one of the event constants (``LOCAL_READ`` ... ``CLEAN``).
    :returns: ``(next_state, action)``.
    :raises TypeError: ``state`` or ``event`` is not an int.
    :raises ValueError: ``state`` or ``event`` is out of range.
    :raises IllegalTransition: the protocol forbids ``event`` in ``state``.
    """
    cdef int st = _code(state, "state", N_STATES)
    cdef int ev = _code(event, "event", N_EVENTS)
    if _NEXT[ev][st] == ILLEGAL:
        raise _illegal(st, ev)
    return (_NEXT[ev][st], _ACT[ev][st])


cdef inline int _check_key(object key) except -1:
    # Exact str/bytes only (see the Python twin): their hash is cached and
    # their comparison runs no Python code in the middle of an update.
    if not (_str_exact(<PyObject*>key) or _bytes_exact(<PyObject*>key)):
        raise TypeError(f"key must be str or bytes, not {type(key).__name__}")
    return 0


@cython.final
@cython.no_gc_clear
cdef class LineTable:
    """The cache lines of one near-cache agent: MESI state, value, LRU order.

    Valid lines (M, E, S) hold a value; an Invalid line is absent. When a new
    line arrives in a full table, the least recently used line is evicted;
    if it was Modified its ``(key, value)`` joins the write-back queue
    (:meth:`pop_write_backs`). Reads that hit and local writes move a line to
    the most recently used end.

    Counters (also in :meth:`stats`): ``hits`` and ``misses`` count reads
    (:meth:`get`, ``LOCAL_READ``, batch gets); ``invalidations`` counts valid
    lines dropped by ``INVALIDATE``; ``evictions`` valid lines dropped for
    room or by ``EVICT``; ``write_backs`` the pairs queued for write-back.

    :param capacity: the most lines the table holds, an int in 1..2**31-1.
    :raises TypeError: ``capacity`` is not an int.
    :raises ValueError: ``capacity`` is out of range.
    """

    def __cinit__(self, capacity):
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if not 0 < capacity < 2**31:
            raise ValueError(f"capacity must be in 1..2**31-1, not {capacity}")
        self.capacity = capacity
        self._keys = []
        self._values = []
        self._pending = []
        self._lines = NULL
        self._buckets = NULL
        self._queue = NULL
        self._free = NULL
        self._alloc = 0
        self._size = 0
        self._used = 0
        self._nfree = 0
        self._mask = 0
        self._qhead = 0
        self._qtail = 0
        self._qcap = 0
        # Stamp 0 is a slot's initial stamp; every insertion stamps its line
        # with _push, so real stamps start at 1.
        self._clock = 1
        # The index always exists: lookups need no NULL check.
        self._grow()

    def __dealloc__(self):
        PyMem_Free(self._lines)
        PyMem_Free(self._buckets)
        PyMem_Free(self._queue)
        PyMem_Free(self._free)

    # -- LRU order: the use queue ----------------------------------------------

    cdef inline void _push(self, int32_t s) noexcept nogil:
        # Give line s a new stamp and log it: s is now most recently used,
        # and its previous queue entry (older stamp) is stale.
        if self._qtail == self._qcap:
            self._compact()
        self._lines[s].stamp = self._clock
        self._queue[self._qtail].stamp = self._clock
        self._queue[self._qtail].slot = s
        self._qtail += 1
        self._clock += 1

    cdef inline void _touch(self, int32_t s) noexcept nogil:
        # A hot key used twice in a row costs no queue entry.
        if self._lines[s].stamp != self._clock - 1:
            self._push(s)

    cdef void _compact(self) noexcept nogil:
        # Keep the valid entries (at most _size <= _alloc), in order, at the
        # front. _qcap >= 4 * _alloc + 2 leaves room for > 3 * _alloc appends
        # before the next compaction, which checks 4 * _alloc entries: O(1)
        # amortised per use. Each check reads a random Line, so the lines of
        # coming entries are prefetched (the checks are independent).
        cdef Py_ssize_t r
        cdef Py_ssize_t w = 0
        cdef Py_ssize_t end = self._qtail
        cdef Use u
        for r in range(self._qhead, end):
            if r + _PF_BUCKET < end:
                _prefetch(&self._lines[self._queue[r + _PF_BUCKET].slot])
            u = self._queue[r]
            if self._lines[u.slot].state != ST_I and self._lines[u.slot].stamp == u.stamp:
                self._queue[w] = u
                w += 1
        self._qhead = 0
        self._qtail = w

    cdef int32_t _lru(self) noexcept nogil:
        # The least recently used line: the oldest valid entry. Stale entries
        # in front of it are dropped for good.
        cdef Use u
        while self._qhead < self._qtail:
            u = self._queue[self._qhead]
            if self._lines[u.slot].state != ST_I and self._lines[u.slot].stamp == u.stamp:
                return u.slot
            self._qhead += 1
        return NIL

    # -- the index -----------------------------------------------------------

    cdef int32_t _find(self, PyObject* key, Py_hash_t h) except -2:
        # The slot holding key, or NIL. Keys are exact str/bytes: equality
        # runs no Python code; the type check keeps 'a' and b'a' (equal
        # hashes) apart without a BytesWarning.
        cdef uint32_t tag = <uint32_t>h
        cdef size_t i = tag & self._mask
        cdef int32_t s
        cdef Line* ln
        while True:
            s = self._buckets[i]
            if s == NIL:
                return NIL
            ln = &self._lines[s]
            if ln.key == key:
                return s
            if (
                ln.tag == tag
                and _type_of(ln.key) == _type_of(key)
                and _richcmp(ln.key, key, Py_EQ)
            ):
                return s
            i = (i + 1) & self._mask

    cdef void _index_add(self, int32_t s) noexcept nogil:
        cdef size_t i = self._lines[s].tag & self._mask
        while self._buckets[i] != NIL:
            i = (i + 1) & self._mask
        self._buckets[i] = s

    cdef void _index_del(self, int32_t s) noexcept nogil:
        # Backward-shift deletion: later entries of the probe run move into
        # the hole unless their home bucket lies cyclically in (hole, entry],
        # so every key stays reachable from its home without tombstones.
        cdef size_t mask = self._mask
        cdef size_t i = self._lines[s].tag & mask
        cdef size_t j, home
        cdef int32_t t
        while self._buckets[i] != s:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            t = self._buckets[j]
            if t == NIL:
                break
            home = self._lines[t].tag & mask
            if i <= j:
                if i < home <= j:
                    continue
            elif home > i or home <= j:
                continue
            self._buckets[i] = t
            i = j
        self._buckets[i] = NIL

    # -- slots ---------------------------------------------------------------

    cdef int _grow(self) except -1:
        # Slots are allocated by doubling, so a big capacity costs memory only
        # as lines arrive. Every step either succeeds or leaves the table as
        # it was (a bigger array than _alloc needs is harmless); _alloc moves
        # last.
        cdef Py_ssize_t new = self._alloc * 2 if self._alloc else 64
        cdef Py_ssize_t i
        cdef Py_ssize_t qcap
        cdef size_t nb = 8
        cdef size_t b
        cdef void* p
        cdef int32_t* buckets
        if new > self.capacity:
            new = self.capacity
        qcap = 4 * new + 2
        while nb < <size_t>(2 * new):
            nb <<= 1
        if len(self._keys) < new:
            self._keys.extend([None] * (new - len(self._keys)))
        if len(self._values) < new:
            self._values.extend([None] * (new - len(self._values)))
        p = PyMem_Realloc(self._lines, new * sizeof(Line))
        if p == NULL:
            raise MemoryError()
        self._lines = <Line*>p
        p = PyMem_Realloc(self._free, new * sizeof(int32_t))
        if p == NULL:
            raise MemoryError()
        self._free = <int32_t*>p
        p = PyMem_Realloc(self._queue, qcap * sizeof(Use))
        if p == NULL:
            raise MemoryError()
        self._queue = <Use*>p
        self._qcap = qcap
        buckets = <int32_t*>PyMem_Malloc(nb * sizeof(int32_t))
        if buckets == NULL:
            raise MemoryError()
        for b in range(nb):
            buckets[b] = NIL
        for i in range(self._alloc, new):
            self._lines[i].key = NULL
            self._lines[i].value = NULL
            self._lines[i].stamp = 0
            self._lines[i].tag = 0
            self._lines[i].state = ST_I
        # Rehash from the lines' tags: no key object is touched.
        PyMem_Free(self._buckets)
        self._buckets = buckets
        self._mask = nb - 1
        for i in range(self._used):
            if self._lines[i].state != ST_I:
                self._index_add(<int32_t>i)
        self._alloc = new
        return 0

    cdef int _release(self, int32_t s) except -1:
        # Drop the valid line in slot s and put the slot on the free stack.
        # The caller has queued any write-back. old_key/old_value keep the
        # objects alive until the structure is consistent again.
        cdef object old_key = self._keys[s]
        cdef object old_value = self._values[s]
        self._index_del(s)
        self._lines[s].state = ST_I
        self._lines[s].key = NULL
        self._lines[s].value = NULL
        self._keys[s] = None
        self._values[s] = None
        self._free[self._nfree] = s
        self._nfree += 1
        self._size -= 1
        return 0

    cdef int _insert(self, object key, Py_hash_t h, object value, uint8_t state) except -1:
        # Precondition: key (hash h) is absent. Make room first (evicting the
        # LRU line if full), so the table never holds more than capacity.
        cdef object old_key = None
        cdef object old_value = None
        cdef int32_t s
        if self._nfree:
            self._nfree -= 1
            s = self._free[self._nfree]
        else:
            if self._used == self._alloc and self._alloc < self.capacity:
                self._grow()
            if self._used < self._alloc:
                s = <int32_t>self._used
                self._used += 1
            else:
                s = self._lru()
                old_key = self._keys[s]
                old_value = self._values[s]
                if self._lines[s].state == ST_M:
                    # Queued before anything changes: if the append fails,
                    # the line is still here and nothing is lost.
                    self._pending.append((old_key, old_value))
                    self._write_backs += 1
                self._index_del(s)
                self._lines[s].state = ST_I
                self._size -= 1
                self._evictions += 1
        # Slot s is detached: state I, in no bucket. Nothing below can fail.
        self._lines[s].key = <PyObject*>key
        self._lines[s].value = <PyObject*>value
        self._lines[s].tag = <uint32_t>h
        self._lines[s].state = state
        self._index_add(s)
        self._push(s)
        self._size += 1
        self._keys[s] = key
        self._values[s] = value
        return 0

    cdef int32_t _lookup(self, object key) except -2:
        return self._find(<PyObject*>key, _hash(<PyObject*>key))

    # -- reading -----------------------------------------------------------

    @property
    def hits(self):
        """Reads served from a valid line."""
        return self._hits

    @property
    def misses(self):
        """Reads that found no valid line."""
        return self._misses

    @property
    def invalidations(self):
        """Valid lines dropped by ``INVALIDATE``."""
        return self._invalidations

    @property
    def evictions(self):
        """Valid lines dropped for room or by ``EVICT``."""
        return self._evictions

    @property
    def write_backs(self):
        """``(key, value)`` pairs queued for write-back, ever."""
        return self._write_backs

    def stats(self):
        """The counters as a dict (a snapshot)."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "invalidations": self._invalidations,
            "evictions": self._evictions,
            "write_backs": self._write_backs,
        }

    def __len__(self):
        return self._size

    def __contains__(self, key):
        _check_key(key)
        return self._lookup(key) != NIL

    def __repr__(self):
        return f"<LineTable {self._size}/{self.capacity} lines>"

    def get(self, key, default=None):
        """Read ``key``: its value on a hit (M/E/S), ``default`` on a miss.

        A hit moves the line to the most recently used end and counts in
        ``hits``; a miss counts in ``misses`` and changes nothing else (the
        driver fetches from home, then calls :meth:`fill`). A hit allocates
        nothing.

        :param key: a str or bytes.
        :param default: returned on a miss.
        :raises TypeError: ``key`` is not str or bytes.
        """
        cdef int32_t s
        _check_key(key)
        s = self._find(<PyObject*>key, _hash(<PyObject*>key))
        if s == NIL:
            self._misses += 1
            return default
        self._touch(s)
        self._hits += 1
        return <object>self._lines[s].value

    def peek(self, key, default=None):
        """The value of ``key`` without touching LRU order or counters.

        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        cdef int32_t s = self._lookup(key)
        if s == NIL:
            return default
        return <object>self._lines[s].value

    def state(self, key):
        """The line's state; ``INVALID`` when absent.

        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        cdef int32_t s = self._lookup(key)
        return ST_I if s == NIL else self._lines[s].state

    def keys(self):
        """The valid keys from least to most recently used."""
        cdef list out = []
        cdef Py_ssize_t r
        cdef Use u
        for r in range(self._qhead, self._qtail):
            u = self._queue[r]
            if self._lines[u.slot].state != ST_I and self._lines[u.slot].stamp == u.stamp:
                out.append(<object>self._lines[u.slot].key)
        return out

    def pop_write_backs(self):
        """Take the queued write-backs, oldest first, and empty the queue.

        Each is ``(key, value)`` of a Modified line that left M: evicted,
        invalidated, downgraded by ``REMOTE_READ`` or flushed. The driver
        sends them to the home nodes; a pair is queued exactly once.
        """
        cdef list out = self._pending
        self._pending = []
        return out

    # -- changing ------------------------------------------------------------

    def fill(self, key, value, exclusive):
        """Install the home's answer to a fetch: the line becomes E or S.

        Evicts the least recently used line if the table is full (an M victim
        is queued for write-back).

        :param exclusive: True for E (no other holder), False for S.
        :raises TypeError: ``key`` is not str or bytes, ``exclusive`` not bool.
        :raises IllegalTransition: the line is already valid.
        """
        _check_key(key)
        if not isinstance(exclusive, bool):
            raise TypeError(f"exclusive must be a bool, not {type(exclusive).__name__}")
        self._fill(key, value, EV_FILL_EXCLUSIVE if exclusive else EV_FILL_SHARED)

    cdef int _fill(self, object key, object value, int ev) except -1:
        cdef Py_hash_t h = _hash(<PyObject*>key)
        cdef int32_t s = self._find(<PyObject*>key, h)
        if s != NIL:
            raise _illegal(self._lines[s].state, ev, key)
        self._insert(key, h, value, ST_E if ev == EV_FILL_EXCLUSIVE else ST_S)
        return 0

    def write(self, key, value):
        """A local write of ``key``: what the protocol needs first.

        M/E: the value is stored, the line becomes M and most recently used;
        returns ``NONE``. S: returns ``INVALIDATE_OTHERS`` and changes nothing
        (retry after ``UPGRADE``). Absent/I: returns ``FETCH`` (a write miss;
        retry after ``FILL_EXCLUSIVE``).

        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        cdef int32_t s = self._lookup(key)
        if s == NIL:
            return ACT_FETCH
        if self._lines[s].state == ST_S:
            return ACT_INVALIDATE_OTHERS
        self._lines[s].state = ST_M
        self._touch(s)
        self._lines[s].value = <PyObject*>value
        # Last: the list drops the old value after storing the new one.
        self._values[s] = value
        return ACT_NONE

    def invalidate(self, key):
        """``apply(key, INVALIDATE)``: drop the line (an M line writes back)."""
        return self.apply(key, EV_INVALIDATE)

    def apply(self, key, event, value=None):
        """Feed one protocol event for ``key``; return the action to take.

        :param event: an event constant (see the module docstring).
        :param value: the new value, for ``LOCAL_WRITE`` and the fills;
            ignored by other events.
        :returns: ``NONE``, ``FETCH``, ``INVALIDATE_OTHERS`` or ``WRITE_BACK``;
            a ``WRITE_BACK`` has already queued ``(key, value)``.
        :raises TypeError: ``key`` is not str or bytes, ``event`` not an int.
        :raises ValueError: ``event`` is not an event code.
        :raises IllegalTransition: the protocol forbids ``event`` here.
        """
        _check_key(key)
        cdef int ev = _code(event, "event", N_EVENTS)
        cdef int32_t s
        cdef uint8_t st, nxt, act
        if ev == EV_LOCAL_WRITE:
            return self.write(key, value)
        if ev == EV_FILL_EXCLUSIVE or ev == EV_FILL_SHARED:
            self._fill(key, value, ev)
            return ACT_NONE
        s = self._lookup(key)
        if ev == EV_LOCAL_READ:
            if s == NIL:
                self._misses += 1
                return ACT_FETCH
            self._touch(s)
            self._hits += 1
            return ACT_NONE
        st = ST_I if s == NIL else self._lines[s].state
        nxt = _NEXT[ev][st]
        act = _ACT[ev][st]
        if nxt == ILLEGAL:
            raise _illegal(st, ev, key)
        if st == ST_I:
            return act
        if act == ACT_WRITE_BACK:
            self._pending.append((key, self._values[s]))
            self._write_backs += 1
        if nxt == ST_I:
            self._release(s)
            if ev == EV_INVALIDATE:
                self._invalidations += 1
            else:
                self._evictions += 1
        else:
            self._lines[s].state = nxt
        return act

    def run(self, ops, keys, values):
        """Apply a batch of gets and puts; return how many gets hit.

        ``ops[i]`` is ``OP_GET`` (a :meth:`get` of ``keys[i]``) or ``OP_PUT``
        (an owned write: ``keys[i]`` becomes Modified with ``values[i]``, the
        line filled if absent, evicting the LRU line if full; the caller
        asserts that the home granted it ownership, so no upgrade is asked).
        The whole batch is checked before any op runs: a malformed batch
        changes nothing.

        :param ops: a C-contiguous bytes-like of unsigned bytes (``bytes``,
            ``bytearray``, a ``uint8`` array).
        :param keys: a list of str/bytes, ``len(ops)`` long.
        :param values: a list, ``len(ops)`` long (entries of gets unused).
        :raises TypeError: ``ops`` is not bytes-like, ``keys``/``values`` not
            lists, a key not str/bytes.
        :raises ValueError: lengths differ, an op code is unknown, ``ops``
            is not 1-D contiguous unsigned bytes.
        """
        cdef const unsigned char[::1] codes = _ops_view(ops)
        cdef Py_ssize_t n = codes.shape[0]
        cdef Py_ssize_t i
        cdef PyObject* k
        cdef PyObject* v
        cdef PyObject* old
        cdef Py_hash_t h
        cdef int32_t s
        cdef uint64_t hits = 0
        cdef KeyRef* refs
        if not isinstance(keys, list):
            raise TypeError(f"keys must be a list, not {type(keys).__name__}")
        if not isinstance(values, list):
            raise TypeError(f"values must be a list, not {type(values).__name__}")
        if len(keys) != n:
            raise ValueError(f"keys has {len(keys)} items, ops has {n}")
        if len(values) != n:
            raise ValueError(f"values has {len(values)} items, ops has {n}")
        refs = <KeyRef*>PyMem_Malloc((n if n else 1) * sizeof(KeyRef))
        if refs == NULL:
            raise MemoryError()
        try:
            # Pass 1 checks the whole batch, so a bad one changes nothing, and
            # reads every key's (cached) hash once: pass 2 then never touches
            # a key object, only the index and the lines, which it prefetches.
            for i in range(n):
                if i + _PF_LINE < n:
                    _prefetch(_list_get(<PyObject*>keys, i + _PF_LINE))
                if codes[i] > _OP_PUT:
                    raise ValueError(f"ops[{i}] is {codes[i]}, not OP_GET (0) or OP_PUT (1)")
                k = _list_get(<PyObject*>keys, i)
                if not (_str_exact(k) or _bytes_exact(k)):
                    raise TypeError(
                        f"keys[{i}] must be str or bytes, not {type(<object>k).__name__}"
                    )
                refs[i].hash = _hash(k)
                refs[i].key = k
            for i in range(n):
                if i + _PF_BUCKET < n:
                    _prefetch(&self._buckets[<uint32_t>refs[i + _PF_BUCKET].hash & self._mask])
                if i + _PF_LINE < n:
                    s = self._buckets[<uint32_t>refs[i + _PF_LINE].hash & self._mask]
                    if s != NIL:
                        _prefetch(&self._lines[s])
                # A value's __del__ (run when a put drops the old value) could
                # rewrite the caller's lists. The list still holding the very
                # object pass 1 hashed proves it alive and its hash right.
                if i >= _list_size(<PyObject*>keys) or i >= _list_size(<PyObject*>values):
                    raise RuntimeError("keys or values changed size during run()")
                k = refs[i].key
                if _list_get(<PyObject*>keys, i) != k:
                    raise RuntimeError("keys changed during run()")
                h = refs[i].hash
                s = self._find(k, h)
                if s == NIL:
                    if codes[i] == _OP_GET:
                        self._misses += 1
                    else:
                        self._insert(<object>k, h, <object>_list_get(<PyObject*>values, i), ST_M)
                    continue
                self._touch(s)
                if codes[i] == _OP_GET:
                    hits += 1
                    continue
                # Owned write: store the new value, then drop the old one, so
                # the line is consistent before any finalizer can run.
                v = _list_get(<PyObject*>values, i)
                self._lines[s].state = ST_M
                self._lines[s].value = v
                Py_XINCREF(v)
                old = _list_get(<PyObject*>self._values, s)
                _list_set(<PyObject*>self._values, s, v)
                Py_XDECREF(old)
        finally:
            PyMem_Free(refs)
            self._hits += hits
        return hits
