# cython: language_level=3
"""Consistent hash ring, compiled kernel; ``_ring_py`` is its pure-Python twin.

The placement contract is the twin's module docstring: XXH3-64 (seed 0) of the
UTF-8 of ``f"{node}#{i}"`` for point ``i`` of ``node``; a key belongs to the
first point ``>= hash(key)`` in ``(point, node name)`` order, wrapping around.

Speed comes from three things:

* our own XXH3 (``_xxh3.h``), called straight from C, no Python per key;
* a direct index on the top ``bits`` of the hash: ``index[t]`` is the first
  point of bucket ``t``, so a search only bisects the one bucket the hash
  falls in, which holds less than one point on average;
* ``lookup_many`` gathers key pointers with the GIL, a chunk at a time, then
  hashes and searches that chunk without the GIL; chunks keep the key objects
  in cache between the two passes.
"""

cimport cython
from cpython.ref cimport PyObject
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport qsort

from distsync._core._xxh3 cimport ds_xxh3_64

import operator

import numpy as np

__all__ = ["HashRing", "DEFAULT_VNODES", "MAX_VNODES"]

#: Points per node unless told otherwise.
DEFAULT_VNODES = 150
#: Upper bound of ``vnodes``: guards against a typo allocating gigabytes.
MAX_VNODES = 65536

_EMPTY_RING = "the ring is empty: add a node before looking keys up"


cdef extern from "Python.h":
    # Borrowed-pointer versions of the usual calls, so the gather loop of
    # lookup_many does no reference counting behind our back. Each is
    # declared without an exception clause: callers check NULL themselves.
    bint _is_str "PyUnicode_Check"(PyObject *o)
    bint _is_bytes "PyBytes_Check"(PyObject *o)
    char *_bytes_data "PyBytes_AS_STRING"(PyObject *o)
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE"(PyObject *o)
    # Free for ASCII str (returns the inline buffer); otherwise encodes once
    # and caches the UTF-8 on the str object. NULL with an error set on lone
    # surrogates.
    const char *_utf8 "PyUnicode_AsUTF8AndSize"(PyObject *o, Py_ssize_t *size)
    # The inline-buffer case of the call above, without the call: a compact
    # ASCII str stores its characters (= its UTF-8) right after the header.
    bint _is_compact_ascii "PyUnicode_IS_COMPACT_ASCII"(PyObject *o)
    void *_str_data "PyUnicode_DATA"(PyObject *o)
    Py_ssize_t _str_len "PyUnicode_GET_LENGTH"(PyObject *o)
    PyObject **_seq_items "PySequence_Fast_ITEMS"(object o)
    void _incref "Py_INCREF"(PyObject *o)
    void _decref "Py_DECREF"(PyObject *o)
    void PyErr_Clear()
    bint PyErr_ExceptionMatches(object exc)


# Keys per lookup_many chunk: the chunk's key objects (~60 bytes each for
# short str) stay in L2 between the gather pass and the hash pass.
cdef enum:
    CHUNK = 2048
    # Below this many keys, releasing and retaking the GIL costs more than
    # the hashing it would let other threads overlap with.
    NOGIL_MIN = 256
    # Index bits: about 4 buckets per point, capped to keep the index at 4 MiB.
    INDEX_SLACK_BITS = 2
    INDEX_MAX_BITS = 20


def _xxh3_64(data):
    """XXH3-64 of ``data`` (seed 0) by our C header; test hook."""
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    cdef const unsigned char[::1] view = data if len(data) else b"\0"
    return ds_xxh3_64(&view[0], len(data))


cdef int _raise_encoding(str what) except -1:
    """Turn PyUnicode_AsUTF8AndSize's failure into a ValueError naming ``what``."""
    if PyErr_ExceptionMatches(UnicodeEncodeError):
        PyErr_Clear()
        raise ValueError(f"{what} is not encodable as UTF-8")
    # Anything else (MemoryError) is already set: propagate it as is.
    return -1


cdef inline int _key_bytes(object key, const char **data, Py_ssize_t *size, str what) except -1:
    """Point ``data``/``size`` at the bytes ``key`` is hashed as (borrowed)."""
    cdef PyObject *o = <PyObject *>key
    if _is_str(o):
        data[0] = _utf8(o, size)
        if data[0] == NULL:
            _raise_encoding(what)
    elif _is_bytes(o):
        data[0] = _bytes_data(o)
        size[0] = _bytes_size(o)
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(key).__name__}")
    return 0


cdef str _check_node(object node, str what):
    if not isinstance(node, str):
        raise TypeError(f"{what} must be str, not {type(node).__name__}")
    try:
        node.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {node!r} is not encodable as UTF-8") from None
    return node


cdef Py_ssize_t _check_count(object value, str what) except? -1:
    # bool is an int subclass, but True vnodes/replicas is always a mistake.
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not bool")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None
    # Clamp huge ints so the range checks of the callers see them as huge
    # instead of overflowing Py_ssize_t.
    if number > (1 << 40):
        return 1 << 40
    if number < -(1 << 40):
        return -(1 << 40)
    return number


cdef object _as_key_list(object keys):
    if type(keys) is list or type(keys) is tuple:
        return keys
    if isinstance(keys, (list, tuple)):
        return list(keys)
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        # Iterable, but surely not meant as one key per character.
        raise TypeError(f"keys must be an iterable of str or bytes, not {type(keys).__name__}")
    try:
        return list(keys)
    except TypeError:
        raise TypeError(
            f"keys must be an iterable of str or bytes, not {type(keys).__name__}"
        ) from None


# -- the sorted table --------------------------------------------------------

cdef struct _Entry:
    uint64_t point
    Py_ssize_t rank    # position of the node's name in sorted(names): the tie-break
    Py_ssize_t owner   # position of the node in insertion order


cdef int _entry_cmp(const void *a, const void *b) noexcept nogil:
    cdef const _Entry *x = <const _Entry *>a
    cdef const _Entry *y = <const _Entry *>b
    if x.point != y.point:
        return -1 if x.point < y.point else 1
    # Equal points: the smaller node name first, as the twin's tuple sort.
    if x.rank != y.rank:
        return -1 if x.rank < y.rank else 1
    return 0


@cython.final
cdef class _Table:
    """An immutable snapshot of the sorted ring (internal)."""

    def __cinit__(self):
        self.points = NULL
        self.owners = NULL
        self.index = NULL
        self.count = 0
        self.shift = 63
        self.names = ()

    def __dealloc__(self):
        PyMem_Free(self.points)
        PyMem_Free(self.owners)
        PyMem_Free(self.index)

    cdef Py_ssize_t position(self, uint64_t h) noexcept nogil:
        """First i with points[i] >= h, or count (the sentinel) if none.

        Only call with count > 0. Points in [index[t], index[t+1]) all lie in
        bucket t = h >> shift, and every point before index[t] is below
        h's bucket, so the answer is in [index[t], index[t+1]]: bisect there.
        """
        cdef uint64_t t = h >> self.shift
        cdef Py_ssize_t lo = self.index[t]
        cdef Py_ssize_t hi = self.index[t + 1]
        cdef Py_ssize_t mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.points[mid] < h:
                lo = mid + 1
            else:
                hi = mid
        return lo


cdef _Table _build_table(list nodes, dict node_points):
    """Sort every node's points into a fresh _Table."""
    cdef _Table table = _Table()
    cdef Py_ssize_t n_nodes = len(nodes)
    cdef Py_ssize_t count = 0, i, k, owner
    cdef int bits
    cdef uint64_t t, buckets
    cdef _Entry *entries = NULL
    table.names = tuple(nodes)
    for name in nodes:
        count += len(<list>node_points[name])
    table.count = count
    if count == 0:
        return table
    if count > <Py_ssize_t>0xFFFFFFFF:
        # The bucket index stores positions as uint32; 4G points is beyond
        # any real ring (and its memory) anyway.
        raise ValueError(f"the ring would have {count} points, more than 2**32 - 1")
    rank = {name: r for r, name in enumerate(sorted(nodes))}
    entries = <_Entry *>PyMem_Malloc(count * sizeof(_Entry))
    if entries == NULL:
        raise MemoryError()
    try:
        k = 0
        for owner in range(n_nodes):
            name = nodes[owner]
            r = rank[name]
            for p in <list>node_points[name]:
                entries[k].point = p
                entries[k].rank = r
                entries[k].owner = owner
                k += 1
        qsort(entries, count, sizeof(_Entry), _entry_cmp)

        # bits ~ log2(count) + slack: a handful of buckets per point.
        bits = 1
        while bits < INDEX_MAX_BITS and (<Py_ssize_t>1 << bits) < (count << INDEX_SLACK_BITS):
            bits += 1
        buckets = (<uint64_t>1) << bits
        table.shift = 64 - bits
        table.points = <uint64_t *>PyMem_Malloc(count * sizeof(uint64_t))
        table.owners = <Py_ssize_t *>PyMem_Malloc((count + 1) * sizeof(Py_ssize_t))
        table.index = <uint32_t *>PyMem_Malloc((buckets + 1) * sizeof(uint32_t))
        if table.points == NULL or table.owners == NULL or table.index == NULL:
            raise MemoryError()
        for i in range(count):
            table.points[i] = entries[i].point
            table.owners[i] = entries[i].owner
        # Sentinel: a hash above the last point wraps to the first point.
        table.owners[count] = entries[0].owner
        i = 0
        for t in range(buckets):
            while i < count and (table.points[i] >> table.shift) < t:
                i += 1
            table.index[t] = <uint32_t>i
        table.index[buckets] = <uint32_t>count
    finally:
        PyMem_Free(entries)
    return table


cdef void _place(_Table table, const char **data, Py_ssize_t *size, Py_ssize_t m,
                 Py_ssize_t *out) noexcept nogil:
    """out[j] = owner of the key data[j][:size[j]], for j < m."""
    cdef Py_ssize_t j
    for j in range(m):
        out[j] = table.owners[table.position(ds_xxh3_64(data[j], <size_t>size[j]))]


cdef object _lookup_many_in(_Table table, object keys):
    """lookup_many on one snapshot: the caller holds ``table`` alive."""
    cdef object seq = _as_key_list(keys)
    # Only the caller's list can change under us (the copy made for
    # another iterable is ours alone; a tuple is immutable).
    cdef bint is_list = seq is keys and type(seq) is list
    cdef Py_ssize_t n = len(seq)
    cdef const char *data[CHUNK]
    cdef Py_ssize_t size[CHUNK]
    cdef PyObject *held[CHUNK]
    cdef PyObject **items
    cdef PyObject *o
    cdef Py_ssize_t base, j, m, nheld = 0
    cdef const char *one
    cdef Py_ssize_t one_size
    if table.count == 0:
        # Cold path. Report a bad key before the empty ring, as the twin.
        for j, k in enumerate(seq):
            _key_bytes(k, &one, &one_size, f"keys[{j}]")
        raise LookupError(_EMPTY_RING)
    result = np.empty(n, dtype=np.intp)
    if n == 0:
        return result
    cdef Py_ssize_t[::1] out = result
    base = 0
    try:
        while base < n:
            # A list may be changed by another thread while we are in
            # nogil: fetch its item array afresh for each chunk.
            if is_list and len(seq) < n:
                raise RuntimeError("keys changed size during lookup_many")
            items = _seq_items(seq)
            m = min(<Py_ssize_t>CHUNK, n - base)
            # Pass 1, with the GIL: type-check each key and take a pointer
            # to its bytes. For a list we hold a reference to each key of
            # the chunk so that another thread replacing list items while
            # we hash cannot free a buffer we point into (a tuple holds
            # its items for us).
            for j in range(m):
                o = items[base + j]
                if _is_str(o) and _is_compact_ascii(o):
                    data[j] = <const char *>_str_data(o)
                    size[j] = _str_len(o)
                elif _is_str(o):
                    data[j] = _utf8(o, &size[j])
                    if data[j] == NULL:
                        _raise_encoding(f"keys[{base + j}]")
                elif _is_bytes(o):
                    data[j] = _bytes_data(o)
                    size[j] = _bytes_size(o)
                else:
                    raise TypeError(
                        f"keys[{base + j}] must be str or bytes, not "
                        f"{type(<object>o).__name__}"
                    )
                if is_list:
                    _incref(o)
                    held[nheld] = o
                    nheld += 1
            # Pass 2: hash and search; no Python objects are touched.
            if m >= NOGIL_MIN:
                with nogil:
                    _place(table, data, size, m, &out[base])
            else:
                _place(table, data, size, m, &out[base])
            while nheld:
                nheld -= 1
                _decref(held[nheld])
            base += m
    finally:
        while nheld:
            nheld -= 1
            _decref(held[nheld])
    return result


@cython.final
cdef class HashRing:
    """A consistent hash ring of named nodes with ``vnodes`` points each.

    :param nodes: initial node names (``str``, distinct), in order; this order
        is :attr:`nodes` and the meaning of :meth:`lookup_many`'s indices.
    :param vnodes: points per node, ``1 <= vnodes <= MAX_VNODES``.
    :raises TypeError: a node is not a ``str``, ``nodes`` is not an iterable,
        ``vnodes`` is not an int.
    :raises ValueError: a duplicate node, a node name that is not valid
        Unicode, ``vnodes`` out of range.

    Threads: lookups may run while another thread adds or removes nodes; each
    call sees the ring wholly before or wholly after a change (changes swap in
    a new immutable table). Changes themselves must not race each other.
    """

    def __cinit__(self):
        # A valid empty ring even if __init__ never runs (HashRing.__new__):
        # the C code reads _table without None checks.
        self._vnodes = DEFAULT_VNODES
        self._nodes = []
        self._node_points = {}
        self._table = _build_table(self._nodes, self._node_points)

    def __init__(self, nodes=(), vnodes=DEFAULT_VNODES):
        cdef Py_ssize_t v = _check_count(vnodes, "vnodes")
        if not 1 <= v <= MAX_VNODES:
            raise ValueError(
                f"vnodes must be between 1 and {MAX_VNODES}, not {operator.index(vnodes)}"
            )
        if isinstance(nodes, (str, bytes)):
            raise TypeError(f"nodes must be an iterable of str, not {type(nodes).__name__}")
        try:
            initial = list(nodes)
        except TypeError:
            raise TypeError(
                f"nodes must be an iterable of str, not {type(nodes).__name__}"
            ) from None
        # Validate everything before touching self: a failed call changes nothing.
        checked = []
        seen = set()
        for i, node in enumerate(initial):
            node = _check_node(node, f"nodes[{i}]")
            if node in seen:
                raise ValueError(f"nodes[{i}]: node {node!r} is listed twice")
            seen.add(node)
            checked.append(node)
        self._vnodes = <int>v
        self._node_points = {node: self._points_of(node) for node in checked}
        self._nodes = checked
        self._rebuild()

    cdef list _points_of(self, str node):
        cdef bytes label
        cdef list out = []
        for i in range(self._vnodes):
            label = f"{node}#{i}".encode("utf-8")
            out.append(ds_xxh3_64(<const char *>label, len(label)))
        return out

    cdef int _rebuild(self) except -1:
        # Swap, never mutate: a running lookup_many keeps the old snapshot.
        self._table = _build_table(self._nodes, self._node_points)
        return 0

    @property
    def nodes(self):
        """Node names in insertion order (a copy); :meth:`lookup_many` indexes it."""
        return list(self._nodes)

    @property
    def vnodes(self):
        """Points per node."""
        return self._vnodes

    def __len__(self):
        return len(self._nodes)

    def __contains__(self, node):
        return isinstance(node, str) and node in self._node_points

    def __repr__(self):
        return f"HashRing({self._nodes!r}, vnodes={self._vnodes})"

    def __reduce__(self):
        # Nodes and vnodes define the ring: pickle those, rebuild on load.
        return (HashRing, (list(self._nodes), self._vnodes))

    def add_node(self, node):
        """Add ``node`` (at the end of :attr:`nodes`) with ``vnodes`` points.

        Only keys that now map to ``node`` move.

        :raises TypeError: ``node`` is not a ``str``.
        :raises ValueError: ``node`` is already in the ring or not valid Unicode.
        """
        node = _check_node(node, "node")
        if node in self._node_points:
            raise ValueError(f"node {node!r} is already in the ring")
        self._node_points[node] = self._points_of(node)
        self._nodes.append(node)
        try:
            self._rebuild()
        except BaseException:
            # Leave the ring as it was if the table could not be built.
            del self._node_points[node]
            self._nodes.pop()
            raise

    def remove_node(self, node):
        """Remove ``node``; later nodes shift down one place in :attr:`nodes`.

        Only the keys ``node`` owned move.

        :raises TypeError: ``node`` is not a ``str``.
        :raises ValueError: ``node`` is not in the ring.
        """
        if not isinstance(node, str):
            raise TypeError(f"node must be str, not {type(node).__name__}")
        if node not in self._node_points:
            raise ValueError(f"node {node!r} is not in the ring")
        points = self._node_points.pop(node)
        at = self._nodes.index(node)
        del self._nodes[at]
        try:
            self._rebuild()
        except BaseException:
            self._nodes.insert(at, node)
            self._node_points[node] = points
            raise

    def lookup(self, key):
        """The node that owns ``key``.

        :param key: ``str`` (hashed as UTF-8) or ``bytes``.
        :raises TypeError: ``key`` is neither.
        :raises ValueError: ``key`` is a ``str`` that is not valid Unicode.
        :raises LookupError: the ring is empty.
        """
        cdef const char *data
        cdef Py_ssize_t size
        cdef _Table table = self._table
        _key_bytes(key, &data, &size, "key")
        if table.count == 0:
            raise LookupError(_EMPTY_RING)
        return table.names[table.owners[table.position(ds_xxh3_64(data, <size_t>size))]]

    def lookup_many(self, keys):
        """Owners of many keys at once, as indices into :attr:`nodes`.

        The hashing and searching run without the GIL.

        :param keys: a list or tuple (or other iterable) of ``str``/``bytes``.
        :returns: an ``intp`` array, ``result[i]`` the owner of ``keys[i]``.
        :raises TypeError: ``keys`` is not an iterable, or ``keys[i]`` is not
            ``str``/``bytes`` (the message names ``i``).
        :raises ValueError: ``keys[i]`` is not valid Unicode.
        :raises LookupError: the ring is empty.
        :raises RuntimeError: another thread shrank the ``keys`` list meanwhile.
        """
        # One snapshot for the whole call, whatever happens to self.
        return _lookup_many_in(self._table, keys)

    def preference_list(self, key, n):
        """``n`` distinct nodes for ``key``: its owner, then clockwise successors.

        The replicas of a key live on these nodes; the first is
        :meth:`lookup`'s answer.

        :raises TypeError: bad ``key`` type, ``n`` not an int.
        :raises ValueError: ``n < 1`` or ``n`` larger than the number of nodes.
        :raises LookupError: the ring is empty.
        """
        cdef const char *data
        cdef Py_ssize_t size, want, start, step, owner
        cdef _Table table = self._table
        cdef Py_ssize_t n_nodes = len(table.names)
        _key_bytes(key, &data, &size, "key")
        want = _check_count(n, "n")
        if want < 1:
            raise ValueError(f"n must be >= 1, not {operator.index(n)}")
        if table.count == 0:
            raise LookupError(_EMPTY_RING)
        if want > n_nodes:
            raise ValueError(f"n={operator.index(n)} exceeds the {n_nodes} nodes in the ring")
        start = table.position(ds_xxh3_64(data, <size_t>size))
        seen = bytearray(n_nodes)
        cdef unsigned char[::1] seen_v = seen
        out = []
        # Every node has >= 1 point, so one lap finds `want` <= n_nodes nodes.
        for step in range(table.count):
            owner = table.owners[(start + step) % table.count]
            if not seen_v[owner]:
                seen_v[owner] = 1
                out.append(table.names[owner])
                if len(out) == want:
                    break
        return out

    def balance(self, sample_keys=None):
        """Each node's share of the ring, in :attr:`nodes` order; shares sum to 1.

        Without ``sample_keys``: the fraction of the 2**64 hash space each node
        owns (the arcs ending at its points), i.e. the share of uniformly
        random keys it would get. With ``sample_keys``: the fraction of those
        keys that map to each node.

        :returns: ``{node: share}`` with every node (0.0 if it owns nothing);
            ``{}`` for an empty ring without ``sample_keys``.
        :raises TypeError, ValueError: as :meth:`lookup_many` for bad keys.
        :raises ValueError: ``sample_keys`` is empty.
        :raises LookupError: ``sample_keys`` given and the ring is empty.
        """
        cdef _Table table = self._table
        cdef Py_ssize_t i
        names = table.names
        if sample_keys is not None:
            owners = _lookup_many_in(table, sample_keys)
            if len(owners) == 0:
                raise ValueError("sample_keys is empty")
            counts = np.bincount(owners, minlength=len(names))
            return {name: int(c) / len(owners) for name, c in zip(names, counts, strict=True)}
        arcs = [0] * len(names)
        for i in range(table.count):
            # Point i owns (points[i-1], points[i]]; the first point's arc
            # wraps through 2**64 (with a single point: the whole ring).
            # Python ints, so the sums are exact and equal to the twin's.
            if i == 0:
                prev = table.points[table.count - 1] - (1 << 64)
            else:
                prev = table.points[i - 1]
            arcs[table.owners[i]] += table.points[i] - prev
        return {name: arc / (1 << 64) for name, arc in zip(names, arcs, strict=True)}
