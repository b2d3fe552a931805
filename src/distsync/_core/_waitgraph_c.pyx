# cython: language_level=3
"""Wait-for graph with deadlock detection: the compiled twin of ``_waitgraph_py``.

Same API and the same answers as the pure-Python twin, whose module docstring
states the determinism rules (dense ids reused smallest-first, out-edges in
insertion order, searches in edge order). Here:

* names are interned to dense ``int32`` ids through a C hash table (one
  probe per lookup; the names list keeps the references), and each id slot
  holds two small vectors with inline storage for a few ids: ``out``
  (ordered, it decides which cycle is reported) and ``inn`` (unordered,
  swap-remove, used by removals only). ``out`` sits with the visit mark in
  a 32-byte ``HotRec``, so a search step costs one memory access;
* searches use preallocated scratch arrays and a visit *epoch*: slot ``i`` is
  marked iff ``_hot[i].mark == _epoch``, so starting a search is one
  increment instead of clearing an array -- what makes the incremental check
  O(path), not O(graph);
* nothing recurses: DFS, Tarjan and BFS run on explicit stacks.

Names are exact ``str``/``int`` objects only; their hashing and comparison
run no Python code, so no callback can re-enter the graph while raw buffers
are being walked.
"""

cimport cython
from cpython.long cimport PyLong_CheckExact
from cpython.object cimport Py_EQ, PyObject, PyObject_Hash, PyObject_RichCompareBool
from cpython.unicode cimport PyUnicode_CheckExact
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove, memset

__all__ = ["WaitForGraph"]

#: A node name: exactly a ``str`` or an ``int`` (subclasses are refused).
Node = str | int

# Largest number of id slots: ids are int32 and -1 means "none".
cdef int32_t _MAX_SLOTS = 0x7FFFFFF0
# A freed node gives its heap buffers back when they are bigger than this,
# so a former hub does not pin memory; small ones are kept for reuse.
cdef int32_t _KEEP_CAP = 16


# -- small id vectors ------------------------------------------------------

cdef inline int32_t *_sv_data(SmallVec *v) noexcept nogil:
    """Where ``v``'s ids live: inline up to SMALL_INLINE, else on the heap."""
    if v.cap > SMALL_INLINE:
        return v.d.ptr
    return &v.d.inl[0]


cdef inline int _sv_push(SmallVec *v, int32_t x) noexcept nogil:
    """Append ``x``; 0 on success, -1 when out of memory (``v`` unchanged)."""
    cdef int32_t cap = v.cap if v.cap > SMALL_INLINE else SMALL_INLINE
    cdef int32_t *data
    if v.len == cap:
        if v.cap > SMALL_INLINE:
            data = <int32_t *>realloc(v.d.ptr, <size_t>cap * 2 * sizeof(int32_t))
            if data == NULL:
                return -1
        else:
            # Spill: move the inline ids to a heap buffer of twice the size.
            data = <int32_t *>malloc(<size_t>cap * 2 * sizeof(int32_t))
            if data == NULL:
                return -1
            memcpy(data, &v.d.inl[0], <size_t>v.len * sizeof(int32_t))
        v.d.ptr = data
        v.cap = cap * 2
    _sv_data(v)[v.len] = x
    v.len += 1
    return 0


cdef inline void _sv_remove_ordered(SmallVec *v, int32_t x) noexcept nogil:
    """Remove ``x`` keeping the others' order (out-edge order is observable)."""
    cdef int32_t *data = _sv_data(v)
    cdef int32_t i
    for i in range(v.len):
        if data[i] == x:
            memmove(&data[i], &data[i + 1], <size_t>(v.len - i - 1) * sizeof(int32_t))
            v.len -= 1
            return


cdef inline void _sv_remove_unordered(SmallVec *v, int32_t x) noexcept nogil:
    """Remove ``x`` by moving the last entry into its place (O(1) after the find)."""
    cdef int32_t *data = _sv_data(v)
    cdef int32_t i
    for i in range(v.len):
        if data[i] == x:
            v.len -= 1
            data[i] = data[v.len]
            return


cdef inline void _sv_release(SmallVec *v) noexcept nogil:
    """Empty ``v``; give its heap buffer back if it grew past ``_KEEP_CAP``."""
    v.len = 0
    if v.cap > _KEEP_CAP:
        free(v.d.ptr)
        v.cap = 0


cdef inline void _sv_free(SmallVec *v) noexcept nogil:
    if v.cap > SMALL_INLINE:
        free(v.d.ptr)
    v.len = 0
    v.cap = 0


# -- the free-id min-heap ----------------------------------------------------
# Reusing the smallest free id makes ids a function of the call sequence
# alone, whatever order a removal frees nodes in.

cdef inline void _heap_push(int32_t *heap, int32_t *n, int32_t x) noexcept nogil:
    cdef int32_t i = n[0]
    cdef int32_t parent
    n[0] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= x:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = x


cdef inline int32_t _heap_pop(int32_t *heap, int32_t *n) noexcept nogil:
    cdef int32_t top = heap[0]
    cdef int32_t last
    cdef int32_t i = 0
    cdef int32_t c
    n[0] -= 1
    last = heap[n[0]]
    while True:
        c = 2 * i + 1
        if c >= n[0]:
            break
        if c + 1 < n[0] and heap[c + 1] < heap[c]:
            c += 1
        if heap[c] >= last:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = last
    return top


# -- argument checks ---------------------------------------------------------

cdef inline int _check_node(object name, str arg) except -1:
    """Refuse anything but an exact ``str`` or ``int``, naming the argument."""
    if PyUnicode_CheckExact(name) or PyLong_CheckExact(name):
        return 0
    raise TypeError(f"{arg} must be a str or int, not {type(name).__name__}")


cdef list _check_holders(object holders):
    """``holders`` as a fresh list of valid names, or ``TypeError``.

    A copy, so that nothing the caller does to its own list can change what
    we walk. A ``str``/``bytes`` is refused rather than split into
    characters, and a ``set``/``frozenset`` because the order of its strs
    changes with the hash seed of each process: edge order decides which
    cycle is reported, and every replica must report the same one.
    """
    cdef list items
    cdef type t = type(holders)
    if t is list or t is tuple:  # the usual case: skip the checks below
        items = list(holders)
    elif isinstance(holders, (str, bytes, bytearray)):
        raise TypeError(f"holders must be an iterable of ids, not {t.__name__}")
    elif isinstance(holders, (set, frozenset)):
        raise TypeError(
            f"holders must be an ordered iterable of ids, not {t.__name__} "
            "(set order differs between processes)"
        )
    else:
        try:
            items = list(holders)
        except TypeError:
            raise TypeError(f"holders must be an iterable of ids, not {t.__name__}") from None
    for h in items:
        _check_node(h, "holders item")
    return items


def _name_key(name):
    """Sort key of names: ints first, by value, then strs, by code points."""
    return (isinstance(name, str), name)


cdef inline bint _name_lt(object a, object b) except -1:
    """``_name_key(a) < _name_key(b)`` without building tuples."""
    cdef bint a_str = PyUnicode_CheckExact(a)
    cdef bint b_str = PyUnicode_CheckExact(b)
    if a_str != b_str:
        return b_str
    return a < b


cdef inline void *_realloc_or_raise(void *p, size_t size) except NULL:
    """``realloc``, raising MemoryError on failure (``p`` is then left as it was)."""
    cdef void *q = realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q


@cython.final
cdef class WaitForGraph:
    """A directed wait-for graph over client ids, with cycle (deadlock) detection.

    Edge ``w -> h`` means *w waits for h*. Node names are exactly ``str`` or
    ``int`` (subclasses such as ``bool`` or enums are refused); ``"1"`` and
    ``1`` are different nodes. A node exists while it has at least one edge,
    in or out, which keeps memory bounded by the live waits however many
    clients come and go.

    Every result is deterministic. The cycles reported by
    :meth:`would_close_cycle` and :meth:`find_cycles` depend only on each
    waiter's ordered list of holders (:meth:`waits_of`), not on ids or on the
    history of calls; :meth:`nodes` and :meth:`edges` list in id order, which
    depends on the sequence of calls. Both twins give identical answers.
    """

    def __cinit__(self):
        self._names = []
        self._table = NULL
        self._tmask = -1
        self._tcount = 0
        self._tshift = 64
        self._table_resize(64)
        self._hot = NULL
        self._inn = NULL
        self._nslots = 0
        self._cap = 0
        self._heap = NULL
        self._nfree = 0
        self._nedges = 0
        self._epoch = 0
        self._s_node = NULL
        self._s_edge = NULL
        self._s_index = NULL
        self._s_low = NULL
        self._s_comp = NULL
        self._s_stack = NULL

    def __init__(self):
        """Create an empty graph."""

    def __dealloc__(self):
        self._free_all()

    cdef void _free_all(self) noexcept:
        cdef int32_t i
        if self._hot != NULL and self._inn != NULL:
            for i in range(self._nslots):
                _sv_free(&self._hot[i].out)
                _sv_free(&self._inn[i])
        free(self._hot)
        free(self._inn)
        free(self._heap)
        free(self._table)
        self._table = NULL
        self._tmask = -1
        self._tcount = 0
        free(self._s_node)
        free(self._s_edge)
        free(self._s_index)
        free(self._s_low)
        free(self._s_comp)
        free(self._s_stack)
        self._hot = NULL
        self._inn = NULL
        self._heap = NULL
        self._s_node = NULL
        self._s_edge = NULL
        self._s_index = NULL
        self._s_low = NULL
        self._s_comp = NULL
        self._s_stack = NULL
        self._nslots = 0
        self._cap = 0
        self._nfree = 0

    # -- storage -------------------------------------------------------------

    cdef int _grow(self) except -1:
        """Double the slot capacity of every per-slot array."""
        cdef int32_t ncap
        if self._cap >= _MAX_SLOTS:
            raise OverflowError("WaitForGraph cannot hold more than 2**31 - 16 nodes")
        ncap = self._cap * 2 if self._cap else 64
        if ncap > _MAX_SLOTS or ncap < 0:
            ncap = _MAX_SLOTS
        # Each realloc either succeeds or leaves its array as it was; _cap is
        # raised only when all succeeded, so a failure leaves a valid graph
        # (some arrays merely larger than needed).
        self._hot = <HotRec *>_realloc_or_raise(self._hot, <size_t>ncap * sizeof(HotRec))
        self._inn = <SmallVec *>_realloc_or_raise(self._inn, <size_t>ncap * sizeof(SmallVec))
        self._heap = <int32_t *>_realloc_or_raise(self._heap, <size_t>ncap * sizeof(int32_t))
        self._s_node = <int32_t *>_realloc_or_raise(self._s_node, <size_t>ncap * sizeof(int32_t))
        self._s_edge = <int32_t *>_realloc_or_raise(self._s_edge, <size_t>ncap * sizeof(int32_t))
        self._s_index = <int32_t *>_realloc_or_raise(self._s_index, <size_t>ncap * sizeof(int32_t))
        self._s_low = <int32_t *>_realloc_or_raise(self._s_low, <size_t>ncap * sizeof(int32_t))
        self._s_comp = <int32_t *>_realloc_or_raise(self._s_comp, <size_t>ncap * sizeof(int32_t))
        self._s_stack = <int32_t *>_realloc_or_raise(self._s_stack, <size_t>ncap * sizeof(int32_t))
        # New slots: empty inline vectors, unmarked (0 is never a live epoch).
        memset(&self._hot[self._cap], 0, <size_t>(ncap - self._cap) * sizeof(HotRec))
        memset(&self._inn[self._cap], 0, <size_t>(ncap - self._cap) * sizeof(SmallVec))
        self._cap = ncap
        return 0

    # -- the name table ------------------------------------------------------
    # Linear probing from a Fibonacci hash of the Python hash (Python hashes
    # ints to themselves, so consecutive ids would otherwise cluster), load
    # kept <= 1/2, deletion by backward shift (no tombstones, so probe chains
    # never lengthen under churn). Exact str/int only: hashing and equality
    # run no Python code and cannot fail (str hashes are cached).

    cdef Py_ssize_t _find(self, object name, Py_hash_t h) noexcept:
        """The table index holding ``name``, or of the empty entry ending its probe."""
        cdef Py_ssize_t i = <Py_ssize_t>((<uint64_t>h * <uint64_t>0x9E3779B97F4A7C15) >> self._tshift)
        cdef NameEntry *e
        cdef PyObject *key = <PyObject *>name
        while True:
            e = &self._table[i]
            if e.key == NULL or e.key == key:
                return i
            if e.hash == h and PyObject_RichCompareBool(<object>e.key, name, Py_EQ) == 1:
                return i
            i = (i + 1) & self._tmask

    cdef int32_t _lookup(self, object name) noexcept:
        """The id of ``name``, or -1."""
        cdef Py_ssize_t i = self._find(name, PyObject_Hash(name))
        if self._table[i].key == NULL:
            return -1
        return self._table[i].id

    cdef int _table_insert(self, object name, int32_t i) except -1:
        """Map ``name`` (absent) to ``i``; the caller keeps ``name`` alive in _names."""
        cdef Py_hash_t h = PyObject_Hash(name)
        cdef Py_ssize_t j
        if (self._tcount + 1) * 2 > self._tmask + 1:
            self._table_resize((self._tmask + 1) * 2)
        j = self._find(name, h)
        self._table[j].key = <PyObject *>name
        self._table[j].hash = h
        self._table[j].id = i
        self._tcount += 1
        return 0

    cdef void _table_delete(self, object name) noexcept:
        """Unmap ``name`` (present), shifting later entries of its cluster back."""
        cdef Py_ssize_t i = self._find(name, PyObject_Hash(name))
        cdef Py_ssize_t j = i, home
        cdef NameEntry *t = self._table
        cdef Py_ssize_t mask = self._tmask
        if t[i].key == NULL:
            return
        while True:
            j = (j + 1) & mask
            if t[j].key == NULL:
                break
            home = <Py_ssize_t>((<uint64_t>t[j].hash * <uint64_t>0x9E3779B97F4A7C15) >> self._tshift)
            # Entry j may fill the hole at i unless its home lies cyclically
            # in (i, j]: then moving it before its home would hide it.
            if (i <= j and i < home <= j) or (i > j and (home > i or home <= j)):
                continue
            t[i] = t[j]
            i = j
        t[i].key = NULL
        self._tcount -= 1

    cdef int _table_resize(self, Py_ssize_t size) except -1:
        """Rehash into a table of ``size`` (a power of two) entries."""
        cdef NameEntry *old = self._table
        cdef Py_ssize_t oldsize = self._tmask + 1, k, j
        cdef NameEntry *t = <NameEntry *>calloc(<size_t>size, sizeof(NameEntry))
        cdef int shift = 64
        if t == NULL:
            raise MemoryError()
        while (<Py_ssize_t>1 << (64 - shift)) < size:
            shift -= 1
        self._table = t
        self._tmask = size - 1
        self._tshift = shift
        for k in range(oldsize):
            if old[k].key != NULL:
                j = self._find(<object>old[k].key, old[k].hash)
                t[j] = old[k]
        free(old)
        return 0

    cdef int32_t _intern(self, object name) except -1:
        """The id of ``name``, allocating the smallest free id if it is new."""
        cdef int32_t i = self._lookup(name)
        if i >= 0:
            return i
        if self._nfree:
            i = _heap_pop(self._heap, &self._nfree)
            self._names[i] = name
        else:
            if self._nslots == self._cap:
                self._grow()
            i = self._nslots
            self._names.append(name)
            self._nslots += 1
        try:
            self._table_insert(name, i)
        except BaseException:
            # No memory for the table: give the id back.
            self._names[i] = None
            _heap_push(self._heap, &self._nfree, i)
            raise
        return i

    cdef int _release_if_isolated(self, int32_t i) except -1:
        """Free id ``i`` if its node has no edge left (ids track live nodes)."""
        if self._hot[i].out.len or self._inn[i].len:
            return 0
        name = self._names[i]
        if name is None:
            return 0
        self._table_delete(name)  # before _names drops the reference
        self._names[i] = None
        _heap_push(self._heap, &self._nfree, i)
        _sv_release(&self._hot[i].out)
        _sv_release(&self._inn[i])
        return 0

    cdef uint32_t _next_epoch(self) noexcept nogil:
        """Start a search: every slot becomes unmarked."""
        cdef int32_t i
        self._epoch += 1
        if self._epoch == 0:
            # Wrapped after 2**32 searches: clear once, then carry on.
            for i in range(self._cap):
                self._hot[i].mark = 0
            self._epoch = 1
        return self._epoch

    # -- mutation ------------------------------------------------------------

    def add_wait(self, waiter, holders):
        """Add the edges ``waiter -> h`` for each ``h`` in ``holders``.

        Existing edges and duplicates in ``holders`` are ignored. New edges
        are appended to ``waiter``'s edge order in the order of ``holders``.
        The waiter is interned first, then the holders in order. With no
        holders nothing changes (a node exists only with an edge).

        A self-wait (``waiter`` in ``holders``) is stored as a self-loop: the
        graph records what it is told, and :meth:`find_cycles` then reports
        ``[waiter]``. Callers that refuse deadlocks call
        :meth:`would_close_cycle` first, which reports it as ``[waiter]``.

        :param waiter: the client that waits.
        :param holders: the clients it waits for, in order (any iterable but
            ``str``/``bytes`` and ``set``/``frozenset``).
        :raises TypeError: if ``waiter`` or an item of ``holders`` is not a
            ``str``/``int``, or ``holders`` is not an iterable; the graph is
            then unchanged.
        """
        cdef list items
        cdef int32_t w, h = -1, t
        cdef uint32_t ep
        cdef int32_t *data
        _check_node(waiter, "waiter")
        items = _check_holders(holders)
        if not items:
            return
        w = self._intern(waiter)
        # Mark w's current holders so each duplicate is found in O(1).
        ep = self._next_epoch()
        data = _sv_data(&self._hot[w].out)
        for t in range(self._hot[w].out.len):
            self._hot[data[t]].mark = ep
        try:
            for name in items:
                h = self._intern(name)  # may move _hot/_inn: no pointers kept
                if self._hot[h].mark == ep:
                    continue
                if _sv_push(&self._inn[h], w) < 0:
                    raise MemoryError()
                if _sv_push(&self._hot[w].out, h) < 0:
                    self._inn[h].len -= 1
                    raise MemoryError()
                self._hot[h].mark = ep
                self._nedges += 1
        except BaseException:
            # Out of memory part-way: drop what was interned but got no edge.
            if h >= 0:
                self._release_if_isolated(h)
            self._release_if_isolated(w)
            raise

    def remove_waiter(self, waiter):
        """Remove every out-edge of ``waiter`` (its wait ended).

        Edges into ``waiter`` stay. Nodes left without any edge are dropped.
        An unknown ``waiter`` is a no-op, so replaying a removal is harmless.

        :param waiter: the client whose wait ended.
        :raises TypeError: if ``waiter`` is not a ``str``/``int``.
        """
        cdef int32_t w, h, t, k
        cdef int32_t *data
        _check_node(waiter, "waiter")
        w = self._lookup(waiter)
        if w < 0:
            return
        k = self._hot[w].out.len
        if k == 0:
            return
        data = _sv_data(&self._hot[w].out)
        for t in range(k):
            _sv_remove_unordered(&self._inn[data[t]], w)
        self._hot[w].out.len = 0
        self._nedges -= k
        # data still holds the ids (inline or heap). Releasing another node
        # never touches w's vectors, nor moves _hot; w itself (present here
        # if it had a self-loop) goes last.
        for t in range(k):
            h = data[t]
            if h != w:
                self._release_if_isolated(h)
        self._release_if_isolated(w)

    def remove_node(self, node):
        """Remove ``node`` and every edge touching it (the client is gone).

        Neighbours left without any edge are dropped too. An unknown ``node``
        is a no-op.

        :param node: the client to forget.
        :raises TypeError: if ``node`` is not a ``str``/``int``.
        """
        cdef int32_t n, x, t, nin, nout
        cdef bint self_loop = False
        cdef int32_t *ins
        cdef int32_t *outs
        _check_node(node, "node")
        n = self._lookup(node)
        if n < 0:
            return
        nin = self._inn[n].len
        nout = self._hot[n].out.len
        ins = _sv_data(&self._inn[n])
        outs = _sv_data(&self._hot[n].out)
        for t in range(nin):
            x = ins[t]
            if x == n:
                self_loop = True  # handled with n's own vectors below
            else:
                _sv_remove_ordered(&self._hot[x].out, n)
        for t in range(nout):
            x = outs[t]
            if x != n:
                _sv_remove_unordered(&self._inn[x], n)
        self._nedges -= nin + nout - (1 if self_loop else 0)
        self._inn[n].len = 0
        self._hot[n].out.len = 0
        # The buffers still hold the neighbour ids (see remove_waiter).
        for t in range(nin):
            x = ins[t]
            if x != n:
                self._release_if_isolated(x)
        for t in range(nout):
            x = outs[t]
            if x != n:
                self._release_if_isolated(x)
        self._release_if_isolated(n)

    def clear(self):
        """Remove every node and edge, and release all ids."""
        self._free_all()
        self._table_resize(64)
        self._names = []
        self._nedges = 0
        self._epoch = 0

    # -- queries -------------------------------------------------------------

    cdef int32_t _search(self, int32_t h, int32_t w) noexcept nogil:
        """DFS from ``h`` for ``w`` over unmarked nodes, marking as it goes.

        Returns the depth of the path ``h ->* y`` (``y -> w`` an edge) left in
        ``_s_node[0:depth]``, or 0 if ``w`` is not reachable. The stack holds
        the current path only (node, next edge), so it is the cycle when ``w``
        turns up; its depth is bounded by the marked nodes, hence by _cap.
        """
        cdef int32_t *stack_node = self._s_node
        cdef int32_t *stack_edge = self._s_edge
        cdef HotRec *hot = self._hot
        cdef uint32_t ep = self._epoch
        cdef int32_t top = 1, v, i, x
        hot[h].mark = ep
        stack_node[0] = h
        stack_edge[0] = 0
        while top:
            v = stack_node[top - 1]
            i = stack_edge[top - 1]
            if i < hot[v].out.len:
                stack_edge[top - 1] = i + 1
                x = _sv_data(&hot[v].out)[i]
                if x == w:
                    return top
                if hot[x].mark != ep:
                    hot[x].mark = ep
                    stack_node[top] = x
                    stack_edge[top] = 0
                    top += 1
            else:
                top -= 1
        return 0

    cdef list _path_names(self, const int32_t *ids, int32_t n):
        cdef list names = self._names
        cdef list result = [None] * n
        cdef int32_t t
        for t in range(n):
            result[t] = names[ids[t]]
        return result

    def would_close_cycle(self, waiter, holders):
        """The cycle that adding ``waiter -> holders`` would close, or ``None``.

        The graph is not modified. Only the new edges are searched from: for
        each holder ``h`` in order, a depth-first search (out-edges in edge
        order, nodes already searched for this call skipped) looks for a path
        ``h ->* waiter``. The first one found gives the cycle
        ``[waiter, h, ..., y]`` where ``y -> waiter`` is an existing edge. A
        holder equal to ``waiter`` gives ``[waiter]`` when its turn comes.

        :param waiter: the client that would wait.
        :param holders: the clients it would wait for.
        :returns: the cycle as a list of names starting at ``waiter``, or
            ``None`` if the new edges close no cycle.
        :raises TypeError: as for :meth:`add_wait`.
        """
        cdef list items
        cdef int32_t w, h, depth
        cdef bint started = False
        _check_node(waiter, "waiter")
        items = _check_holders(holders)
        w = self._lookup(waiter)
        for name in items:
            h = self._lookup(name)
            if h < 0:
                # An absent holder reaches nothing (it has no out-edge): only
                # a self-wait by an absent waiter closes a cycle here.
                if w < 0 and name == waiter:
                    return [waiter]
                continue
            if h == w:
                return [waiter]
            # Nothing reaches a waiter without in-edges (absent ones
            # included): the common case of a client nobody waits for costs
            # no search. A holder without out-edges reaches nothing.
            if w < 0 or self._inn[w].len == 0 or self._hot[h].out.len == 0:
                continue
            if not started:
                # One epoch per call: holders share the visited set, so a
                # node searched from an earlier holder is not searched again.
                self._next_epoch()
                started = True
            elif self._hot[h].mark == self._epoch:
                continue
            depth = self._search(h, w)
            if depth:
                return [waiter] + self._path_names(self._s_node, depth)
        return None

    def find_cycles(self):
        """One cycle per strongly connected component that contains a cycle.

        A component contains a cycle when it has two or more nodes, or one
        node with a self-loop. For each such component let ``r`` be its
        smallest member by name (ints before strs; ints by value, strs by
        code points); the cycle reported is a shortest cycle through ``r`` --
        found by breadth-first search from ``r`` inside the component,
        out-edges in edge order, first parent wins -- as ``[r, ..., y]`` with
        ``y -> r``. The cycles are listed by ``r`` in the same name order. An
        acyclic graph gives ``[]``.

        The answer depends only on each waiter's ordered list of holders
        (:meth:`waits_of`), not on ids or history, so a replica rebuilt from
        :meth:`edges` reports the same cycles as one that lived through every
        call. Iterative throughout: a 100k-node chain or cycle is fine.

        :returns: the cycles, each a list of names.
        """
        cdef HotRec *hot = self._hot
        cdef int32_t *index = self._s_index
        cdef int32_t *low = self._s_low
        cdef int32_t *comp = self._s_comp
        cdef int32_t *call_node = self._s_node
        cdef int32_t *call_edge = self._s_edge
        cdef int32_t *tstack = self._s_stack
        cdef int32_t nslots = self._nslots
        cdef int32_t counter = 0, ncomp = 0, ttop = 0, ctop, s, v, u, x, i, j, r, m
        cdef list names = self._names
        cdef list roots = []
        if nslots == 0:
            return []
        # Tarjan's algorithm on explicit stacks. index == -1: unvisited;
        # comp == -1 while visited: still on Tarjan's stack (tstack).
        memset(index, 0xFF, <size_t>nslots * sizeof(int32_t))
        memset(comp, 0xFF, <size_t>nslots * sizeof(int32_t))
        for s in range(nslots):
            # A node without out-edges is a component on its own with no
            # cycle; it is still visited when reached from another node.
            if index[s] != -1 or hot[s].out.len == 0:
                continue
            index[s] = counter
            low[s] = counter
            counter += 1
            tstack[ttop] = s
            ttop += 1
            call_node[0] = s
            call_edge[0] = 0
            ctop = 1
            while ctop:
                v = call_node[ctop - 1]
                i = call_edge[ctop - 1]
                if i < hot[v].out.len:
                    call_edge[ctop - 1] = i + 1
                    x = _sv_data(&hot[v].out)[i]
                    if index[x] == -1:
                        index[x] = counter
                        low[x] = counter
                        counter += 1
                        tstack[ttop] = x
                        ttop += 1
                        call_node[ctop] = x
                        call_edge[ctop] = 0
                        ctop += 1
                    elif comp[x] == -1 and index[x] < low[v]:
                        low[v] = index[x]
                    continue
                # v is finished: pass its low-link up, and if it is a root,
                # pop its component off tstack.
                ctop -= 1
                if ctop:
                    u = call_node[ctop - 1]
                    if low[v] < low[u]:
                        low[u] = low[v]
                if low[v] != index[v]:
                    continue
                j = ttop - 1
                while tstack[j] != v:
                    j -= 1
                for m in range(j, ttop):
                    comp[tstack[m]] = ncomp
                ncomp += 1
                if ttop - j > 1:
                    # Cyclic: its root is the smallest member by name.
                    r = v
                    for m in range(j, ttop):
                        if _name_lt(names[tstack[m]], names[r]):
                            r = tstack[m]
                    roots.append(r)
                else:
                    for i in range(hot[v].out.len):
                        if _sv_data(&hot[v].out)[i] == v:
                            roots.append(v)
                            break
                ttop = j
        if not roots:
            return []
        roots.sort(key=lambda k: _name_key(names[k]))
        return [self._shortest_cycle(r) for r in roots]

    cdef list _shortest_cycle(self, int32_t r):
        """BFS from ``r`` within its component back to ``r``; the cycle as names.

        Uses _s_stack as the queue and _s_low as parent links (Tarjan is done
        with both), and the epoch marks as the visited set.
        """
        cdef HotRec *hot = self._hot
        cdef int32_t *comp = self._s_comp
        cdef int32_t *queue = self._s_stack
        cdef int32_t *parent = self._s_low
        cdef uint32_t ep = self._next_epoch()
        cdef int32_t c = comp[r], qhead = 0, qtail = 1, v, x, i, n
        queue[0] = r
        parent[r] = -1
        hot[r].mark = ep
        while qhead < qtail:
            v = queue[qhead]
            qhead += 1
            for i in range(hot[v].out.len):
                x = _sv_data(&hot[v].out)[i]
                if x == r:
                    # Walk the parent links back to r, into _s_node reversed.
                    n = 0
                    while v >= 0:
                        n += 1
                        v = parent[v]
                    v = queue[qhead - 1]
                    i = n
                    while v >= 0:
                        i -= 1
                        self._s_node[i] = v
                        v = parent[v]
                    return self._path_names(self._s_node, n)
                if comp[x] == c and hot[x].mark != ep:
                    hot[x].mark = ep
                    parent[x] = v
                    queue[qtail] = x
                    qtail += 1
        raise AssertionError("a cyclic component always has a cycle through its root")

    # -- introspection -------------------------------------------------------

    def __len__(self):
        """The number of nodes (clients with at least one edge)."""
        return self._tcount

    def __contains__(self, node):
        """Whether ``node`` is in the graph; any object may be asked about."""
        if not (PyUnicode_CheckExact(node) or PyLong_CheckExact(node)):
            return False
        return self._lookup(node) >= 0

    @property
    def num_edges(self):
        """The number of edges (self-loops count once)."""
        return self._nedges

    def waits_of(self, waiter):
        """The holders ``waiter`` waits for, in edge order (``[]`` if unknown).

        :raises TypeError: if ``waiter`` is not a ``str``/``int``.
        """
        cdef int32_t w
        _check_node(waiter, "waiter")
        w = self._lookup(waiter)
        if w < 0:
            return []
        return self._path_names(_sv_data(&self._hot[w].out), self._hot[w].out.len)

    def waiters_of(self, holder):
        """The clients waiting for ``holder``, in node order (``[]`` if unknown).

        :raises TypeError: if ``holder`` is not a ``str``/``int``.
        """
        cdef int32_t h, t
        cdef int32_t *data
        _check_node(holder, "holder")
        h = self._lookup(holder)
        if h < 0:
            return []
        data = _sv_data(&self._inn[h])
        ids = sorted([data[t] for t in range(self._inn[h].len)])
        return [self._names[i] for i in ids]

    def nodes(self):
        """Every node, in id order."""
        return [n for n in self._names if n is not None]

    def edges(self):
        """Every edge ``(waiter, holder)``: waiters in id order, then edge order."""
        cdef int32_t w, t
        cdef list names = self._names
        cdef list result = []
        cdef int32_t *data
        for w in range(self._nslots):
            data = _sv_data(&self._hot[w].out)
            for t in range(self._hot[w].out.len):
                result.append((names[w], names[data[t]]))
        return result

    def _set_epoch(self, uint32_t epoch):
        """Test hook: jump the search epoch (to exercise its wrap-around)."""
        self._epoch = epoch

    def _slots(self):
        """Id slots allocated (live + free); bounded by the peak node count."""
        return self._nslots

    def __repr__(self):
        return f"<WaitForGraph nodes={len(self)} edges={self._nedges}>"
