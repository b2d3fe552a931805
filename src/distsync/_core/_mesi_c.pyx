# cython: language_level=3
"""MESI cache-line table of a near-cache agent (compiled twin of ``_mesi_py``).

The protocol, the events and the write-back queue are described in
:mod:`distsync._core._mesi_py`; this module has the same public API and
behaviour, with the table kept in C arrays:

* ``_index``: a dict from key (exact str/bytes, whose hash is cached in the
  object) to a slot number, stored as a Python int created once per slot;
* ``_prev``/``_next``: an intrusive doubly linked LRU list over slots
  (``_head`` least, ``_tail`` most recently used); free slots chain through
  ``_next`` from ``_free``;
* ``_state``: one byte per slot, ``ST_I`` for a free slot;
* ``_keys``/``_values``: lists indexed by slot.

Invariants, between any two public calls: ``_size`` slots are valid (state
M/E/S), each one in ``_index`` under its key and on the LRU list exactly
once; the other ``_used - _size`` handed-out slots are on the free list with
state I and None in ``_keys``/``_values``; ``_used <= _alloc <= capacity``.

A hit (``get`` of a resident key) is one dict lookup, a few stores into the
linked-list arrays and one incref of the returned value: it allocates
nothing. Values are dropped (decref'd, which may run arbitrary ``__del__``
code) only after the structure is consistent again, so a finalizer that
calls back into the table sees a valid table.
"""

cimport cython
from cpython.mem cimport PyMem_Realloc, PyMem_Free
from cpython.ref cimport PyObject, Py_XDECREF, Py_XINCREF
from libc.stdint cimport int32_t, uint8_t, uint64_t

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
    PyObject* _dict_get "PyDict_GetItemWithError"(PyObject* d, PyObject* key)
    Py_ssize_t _long_as_ssize "PyLong_AsSsize_t"(PyObject* o)
    bint _str_exact "PyUnicode_CheckExact"(PyObject* o) nogil
    bint _bytes_exact "PyBytes_CheckExact"(PyObject* o) nogil
    PyObject* PyErr_Occurred()


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
        self._index = {}
        self._keys = []
        self._values = []
        self._slot_ints = []
        self._pending = []
        self._prev = NULL
        self._next = NULL
        self._state = NULL
        self._head = NIL
        self._tail = NIL
        self._free = NIL
        self._size = 0
        self._used = 0
        self._alloc = 0

    def __dealloc__(self):
        PyMem_Free(self._prev)
        PyMem_Free(self._next)
        PyMem_Free(self._state)

    # -- the intrusive LRU list ----------------------------------------------

    cdef inline void _unlink(self, int32_t s) noexcept nogil:
        cdef int32_t p = self._prev[s]
        cdef int32_t n = self._next[s]
        if p != NIL:
            self._next[p] = n
        else:
            self._head = n
        if n != NIL:
            self._prev[n] = p
        else:
            self._tail = p

    cdef inline void _push_mru(self, int32_t s) noexcept nogil:
        self._prev[s] = self._tail
        self._next[s] = NIL
        if self._tail != NIL:
            self._next[self._tail] = s
        else:
            self._head = s
        self._tail = s

    cdef inline void _touch(self, int32_t s) noexcept nogil:
        # Already most recently used: the common case of a hot key, no stores.
        if s != self._tail:
            self._unlink(s)
            self._push_mru(s)

    # -- slots -------------------------------------------------------------------

    cdef int _grow(self) except -1:
        # Slots are allocated by doubling, so a big capacity costs memory
        # only as lines arrive. _alloc moves only once every array has grown:
        # a failed realloc leaves the old (still valid) arrays in place.
        cdef Py_ssize_t new = self._alloc * 2 if self._alloc else 64
        cdef Py_ssize_t i
        cdef void* p
        if new > self.capacity:
            new = self.capacity
        p = PyMem_Realloc(self._prev, new * sizeof(int32_t))
        if p == NULL:
            raise MemoryError()
        self._prev = <int32_t*>p
        p = PyMem_Realloc(self._next, new * sizeof(int32_t))
        if p == NULL:
            raise MemoryError()
        self._next = <int32_t*>p
        p = PyMem_Realloc(self._state, new * sizeof(uint8_t))
        if p == NULL:
            raise MemoryError()
        self._state = <uint8_t*>p
        for i in range(self._alloc, new):
            self._state[i] = ST_I
        self._keys.extend([None] * (new - self._alloc))
        self._values.extend([None] * (new - self._alloc))
        self._slot_ints.extend(range(self._alloc, new))
        self._alloc = new
        return 0

    cdef int32_t _take_slot(self) except -2:
        # A detached slot for a new line, or NIL when the table is full (the
        # caller then evicts the LRU line itself, to control when the victim's
        # value is dropped).
        cdef int32_t s
        if self._free != NIL:
            s = self._free
            self._free = self._next[s]
            return s
        if self._used == self._alloc:
            if self._alloc == self.capacity:
                return NIL
            self._grow()
        s = <int32_t>self._used
        self._used += 1
        return s

    cdef int _release(self, int32_t s) except -1:
        # Drop the valid line in slot s and put the slot on the free list.
        # The caller has queued any write-back. old_key/old_value keep the
        # line's objects alive until the structure is consistent again.
        cdef object old_key = self._keys[s]
        cdef object old_value = self._values[s]
        del self._index[old_key]
        self._unlink(s)
        self._state[s] = ST_I
        self._keys[s] = None
        self._values[s] = None
        self._next[s] = self._free
        self._free = s
        self._size -= 1
        return 0

    cdef int _insert(self, object key, object value, uint8_t state) except -1:
        # Precondition: key is absent. Make room first (evicting the LRU line
        # if full), so the table never holds more than capacity lines.
        cdef object old_key = None
        cdef object old_value = None
        cdef int32_t s = self._take_slot()
        if s == NIL:
            s = self._head
            old_key = self._keys[s]
            old_value = self._values[s]
            if self._state[s] == ST_M:
                # Queued before anything changes: if the append fails, the
                # line is still here and nothing is lost.
                self._pending.append((old_key, old_value))
                self._write_backs += 1
            del self._index[old_key]
            self._unlink(s)
            self._state[s] = ST_I
            self._size -= 1
            self._evictions += 1
        # Slot s is now detached: on no list, state I.
        try:
            self._index[key] = self._slot_ints[s]
        except BaseException:
            self._keys[s] = None
            self._values[s] = None
            self._next[s] = self._free
            self._free = s
            raise
        self._keys[s] = key
        self._values[s] = value
        self._state[s] = state
        self._push_mru(s)
        self._size += 1
        return 0

    cdef int32_t _lookup(self, object key) except -2:
        # The slot of key, or NIL. The key is exact str/bytes: no Python code
        # runs in the lookup, and the dict holds only our slot ints.
        cdef PyObject* o = _dict_get(<PyObject*>self._index, <PyObject*>key)
        if o == NULL:
            if PyErr_Occurred() != NULL:
                return -2
            return NIL
        return <int32_t>_long_as_ssize(o)

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
        s = self._lookup(key)
        if s == NIL:
            self._misses += 1
            return default
        self._touch(s)
        self._hits += 1
        return <object>_list_get(<PyObject*>self._values, s)

    def peek(self, key, default=None):
        """The value of ``key`` without touching LRU order or counters.

        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        cdef int32_t s = self._lookup(key)
        if s == NIL:
            return default
        return <object>_list_get(<PyObject*>self._values, s)

    def state(self, key):
        """The line's state; ``INVALID`` when absent.

        :raises TypeError: ``key`` is not str or bytes.
        """
        _check_key(key)
        cdef int32_t s = self._lookup(key)
        return ST_I if s == NIL else self._state[s]

    def keys(self):
        """The valid keys from least to most recently used."""
        cdef list out = []
        cdef int32_t s = self._head
        while s != NIL:
            out.append(self._keys[s])
            s = self._next[s]
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
        cdef int32_t s = self._lookup(key)
        if s != NIL:
            raise _illegal(self._state[s], ev, key)
        self._insert(key, value, ST_E if ev == EV_FILL_EXCLUSIVE else ST_S)
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
        if self._state[s] == ST_S:
            return ACT_INVALIDATE_OTHERS
        self._state[s] = ST_M
        self._touch(s)
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
        st = ST_I if s == NIL else self._state[s]
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
            self._state[s] = nxt
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
        cdef PyObject* o
        cdef PyObject* v
        cdef PyObject* old
        cdef int32_t s
        cdef uint64_t hits = 0
        if not isinstance(keys, list):
            raise TypeError(f"keys must be a list, not {type(keys).__name__}")
        if not isinstance(values, list):
            raise TypeError(f"values must be a list, not {type(values).__name__}")
        if len(keys) != n:
            raise ValueError(f"keys has {len(keys)} items, ops has {n}")
        if len(values) != n:
            raise ValueError(f"values has {len(values)} items, ops has {n}")
        # Validate the whole batch first, so a bad one changes nothing.
        for i in range(n):
            if codes[i] > _OP_PUT:
                raise ValueError(f"ops[{i}] is {codes[i]}, not OP_GET (0) or OP_PUT (1)")
            k = _list_get(<PyObject*>keys, i)
            if not (_str_exact(k) or _bytes_exact(k)):
                raise TypeError(
                    f"keys[{i}] must be str or bytes, not {type(<object>k).__name__}"
                )
        try:
            for i in range(n):
                # A value's __del__ (run when a put drops the old value) could
                # shrink or rewrite the caller's lists: re-check what we read.
                if i >= _list_size(<PyObject*>keys) or i >= _list_size(<PyObject*>values):
                    raise RuntimeError("keys or values changed size during run()")
                k = _list_get(<PyObject*>keys, i)
                if not (_str_exact(k) or _bytes_exact(k)):
                    raise RuntimeError("keys changed during run()")
                o = _dict_get(<PyObject*>self._index, k)
                if o == NULL:
                    if PyErr_Occurred() != NULL:
                        raise RuntimeError("dict lookup failed")  # unreachable: exact str/bytes
                    if codes[i] == _OP_GET:
                        self._misses += 1
                    else:
                        self._insert(<object>k, <object>_list_get(<PyObject*>values, i), ST_M)
                    continue
                s = <int32_t>_long_as_ssize(o)
                self._touch(s)
                if codes[i] == _OP_GET:
                    hits += 1
                    continue
                self._state[s] = ST_M
                # Store the new value, then drop the old one: the line is
                # consistent before any finalizer can run.
                v = _list_get(<PyObject*>values, i)
                Py_XINCREF(v)
                old = _list_get(<PyObject*>self._values, s)
                _list_set(<PyObject*>self._values, s, v)
                Py_XDECREF(old)
        finally:
            self._hits += hits
        return hits
