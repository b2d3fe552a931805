"""Append-only log over LMDB with per-record checksums (the compiled kernel).

Same API, behaviour, errors and on-disk format as the pure-Python twin
``_wal_py`` (whose module docstring documents the format and the recovery
rules). What is compiled here is the per-record work: building a block
(length, XXH3 checksum and copy of each record, one pass, no intermediate
objects), locating and verifying a frame for ``read``/``scan``, and verifying
every frame on open without the GIL. The LMDB calls go through the ``lmdb``
package, one per block, so their Python cost is paid per batch, not per record.

The file check before LMDB maps the file (``preflight``), the LMDB flags
(``open_env``), the translation of LMDB errors and the argument checks are
imported from the twin: they run once per open or per call, and one copy of
the meta-page parser and of the flags cannot drift from the other.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from distsync._core._xxh3 cimport ds_xxh3_64

import threading
from os import PathLike, fspath
from os.path import exists, join

import lmdb

from distsync._core._wal_py import (
    BLOCK_BYTES,
    DEFAULT_MAP_SIZE,
    FORMAT,
    MAX_MAP_SIZE,
    MAX_RECORD,
    ReadTxn,
    _check_int,
    open_env,
    preflight,
    storage_error,
)
from distsync.errors import CorruptLogError, StorageError

__all__ = ["Wal", "BLOCK_BYTES", "MAX_RECORD", "record_checksum", "encode_block"]

cdef enum:
    MAGIC = 0x31575344      # b"DSW1" as a little-endian u32
    HEADER_SIZE = 8         # u32 magic, u32 count
    FRAME_SIZE = 12         # u32 length, u64 checksum

cdef object _threading_Lock = threading.Lock


# --- little-endian loads and stores (the format is LE on every host; the
# compiler turns these into plain moves on LE machines) -----------------------

cdef inline uint32_t ld32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t ld64(const unsigned char *p) noexcept nogil:
    return (<uint64_t>ld32(p)) | (<uint64_t>ld32(p + 4) << 32)


cdef inline void st32(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


cdef inline void st64(unsigned char *p, uint64_t v) noexcept nogil:
    st32(p, <uint32_t>(v & 0xFFFFFFFFu))
    st32(p + 4, <uint32_t>(v >> 32))


cdef inline bytes key_of(uint64_t seq):
    # 8-byte big-endian: LMDB compares keys as bytes, so this order is numeric.
    cdef unsigned char k[8]
    cdef int i
    for i in range(8):
        k[i] = (seq >> (56 - 8 * i)) & 0xFF
    return PyBytes_FromStringAndSize(<char *>k, 8)


cdef inline uint64_t seq_of_key(const unsigned char *k) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | k[i]
    return v


cdef uint64_t record_checksum_c(uint64_t seq, const unsigned char *p, size_t n) noexcept nogil:
    # xxh3(le64(seq) || le64(xxh3(payload))): binds the payload to its slot
    # without copying it next to the sequence number.
    cdef unsigned char buf[16]
    st64(buf, seq)
    st64(buf + 8, ds_xxh3_64(p, n))
    return ds_xxh3_64(buf, 16)


def record_checksum(seq, payload):
    """The checksum stored with record ``seq`` (equal to the twin's)."""
    cdef Py_buffer view
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        return record_checksum_c(seq, <const unsigned char *>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)


cdef int64_t block_count(const unsigned char *b, size_t size) noexcept nogil:
    """Records in the block, or -1 when magic, count or table do not fit."""
    cdef uint32_t n
    if size < HEADER_SIZE or ld32(b) != MAGIC:
        return -1
    n = ld32(b + 4)
    if n == 0 or HEADER_SIZE + 4 * <size_t>n > size:
        return -1
    return n


cdef const unsigned char *frame_payload(const unsigned char *b, size_t size, uint32_t n,
                                        uint32_t i, uint64_t seq, size_t *plen) noexcept nogil:
    """Payload of frame ``i`` if intact (extent, length field, checksum), else NULL."""
    cdef size_t start = ld32(b + HEADER_SIZE + 4 * <size_t>i)
    cdef size_t end = ld32(b + HEADER_SIZE + 4 * (<size_t>i + 1)) if i + 1 < n else size
    cdef size_t length
    if start < HEADER_SIZE + 4 * <size_t>n or end > size or end < start or end - start < FRAME_SIZE:
        return NULL
    length = ld32(b + start)
    if length != end - start - FRAME_SIZE:
        return NULL
    if ld64(b + start + 4) != record_checksum_c(seq, b + start + FRAME_SIZE, length):
        return NULL
    plen[0] = length
    return b + start + FRAME_SIZE


cdef void check_block(uint64_t key, const unsigned char *b, size_t size,
                      BlockCheck *out) noexcept nogil:
    """Verify every frame of a block (see ``_check_block`` in the twin)."""
    cdef int64_t n = block_count(b, size)
    cdef int64_t i
    cdef size_t plen
    out.count = n
    out.good = 0
    out.valid_after_bad = False
    if n < 0:
        return
    while out.good < n and frame_payload(b, size, <uint32_t>n, <uint32_t>out.good,
                                         key + <uint64_t>out.good, &plen) != NULL:
        out.good += 1
    for i in range(out.good + 1, n):
        if frame_payload(b, size, <uint32_t>n, <uint32_t>i, key + <uint64_t>i, &plen) != NULL:
            out.valid_after_bad = True
            return


cdef object slice_block(const unsigned char *b, size_t size, uint32_t lo, uint32_t hi):
    """A new block with records ``[lo, hi)`` of a block, frames copied as they are;
    None when its header or table cannot be trusted for that range (the block
    may have been damaged since open: never read outside it)."""
    cdef int64_t n_old = block_count(b, size)
    cdef uint32_t n, i
    cdef size_t start, end, table_end, o, prev
    cdef bytes out
    cdef unsigned char *w
    if n_old < 0 or lo >= hi or hi > n_old:
        return None
    n = hi - lo
    start = ld32(b + HEADER_SIZE + 4 * <size_t>lo)
    end = ld32(b + HEADER_SIZE + 4 * <size_t>hi) if hi < n_old else size
    if start < HEADER_SIZE + 4 * <size_t>n_old or start > end or end > size:
        return None
    prev = start
    for i in range(lo, hi):
        o = ld32(b + HEADER_SIZE + 4 * <size_t>i)
        if o < prev or o > end:
            return None
        prev = o
    table_end = HEADER_SIZE + 4 * <size_t>n
    out = PyBytes_FromStringAndSize(NULL, table_end + (end - start))
    w = <unsigned char *>PyBytes_AS_STRING(out)
    st32(w, MAGIC)
    st32(w + 4, n)
    for i in range(n):
        st32(w + HEADER_SIZE + 4 * <size_t>i,
             <uint32_t>(ld32(b + HEADER_SIZE + 4 * <size_t>(lo + i)) - start + table_end))
    memcpy(w + table_end, b + start, end - start)
    return out


cdef bytes encode_block_c(uint64_t first, list payloads, Py_ssize_t lo, Py_ssize_t hi,
                          size_t frames):
    """One block of ``payloads[lo:hi]`` (all bytes) as records ``first, first + 1, ...``.

    ``frames`` is the byte size of their frames, computed by the caller's
    validation pass, so the block is allocated once and filled in place.
    """
    cdef Py_ssize_t n = hi - lo, i
    cdef size_t pos = HEADER_SIZE + 4 * <size_t>n
    cdef bytes out = PyBytes_FromStringAndSize(NULL, pos + frames)
    cdef unsigned char *b = <unsigned char *>PyBytes_AS_STRING(out)
    cdef object p
    cdef const unsigned char *data
    cdef size_t length
    st32(b, MAGIC)
    st32(b + 4, <uint32_t>n)
    for i in range(n):
        p = <object>PyList_GET_ITEM(payloads, lo + i)
        data = <const unsigned char *>PyBytes_AS_STRING(p)
        length = <size_t>PyBytes_GET_SIZE(p)
        st32(b + HEADER_SIZE + 4 * <size_t>i, <uint32_t>pos)
        st32(b + pos, <uint32_t>length)
        st64(b + pos + 4, record_checksum_c(first + <uint64_t>i, data, length))
        memcpy(b + pos + FRAME_SIZE, data, length)
        pos += FRAME_SIZE + length
    return out


def encode_block(first_seq, payloads):
    """One block holding ``payloads`` (list of bytes) from ``first_seq`` (as the twin's)."""
    cdef list ps = [bytes(p) for p in payloads]
    cdef size_t frames = 0
    for p in ps:
        frames += FRAME_SIZE + len(p)
    return encode_block_c(first_seq, ps, 0, len(ps), frames)


cdef bytes first_value(uint64_t first):
    # le64(first) || le64(xxh3(be64(first))), the twin's meta record.
    cdef unsigned char buf[16]
    cdef bytes k = key_of(first)
    st64(buf, first)
    st64(buf + 8, ds_xxh3_64(PyBytes_AS_STRING(k), 8))
    return PyBytes_FromStringAndSize(<char *>buf, 16)


cdef inline uint64_t block_key(cur) except? 0:
    cdef Py_buffer view
    PyObject_GetBuffer(cur.key(), &view, PyBUF_SIMPLE)
    try:
        if view.len != 8:
            return 0
        return seq_of_key(<const unsigned char *>view.buf)
    finally:
        PyBuffer_Release(&view)


cdef class Wal:
    """An append-only log of byte records numbered 1, 2, 3, ... stored in LMDB.

    See the twin (``distsync._core._wal_py.Wal``) for the full contract; this
    class has the same constructor, methods, errors and files.

    :param path: directory of the LMDB environment (created if missing).
    :param sync: True: every append/truncation is durable when it returns.
        False: no fsync; consistent after a process crash only.
    :param map_size: initial LMDB map size; doubled whenever it is full.
    :param readonly: open for reading only.
    :raises CorruptLogError: damage in the middle of the log, or a file damaged
        beyond what recovery can cut off.
    :raises StorageError: LMDB failed otherwise.
    """

    def __init__(self, path, sync=True, *, map_size=DEFAULT_MAP_SIZE, readonly=False):
        if not isinstance(path, (str, PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        if not isinstance(sync, bool):
            raise TypeError(f"sync must be a bool, not {type(sync).__name__}")
        if not isinstance(readonly, bool):
            raise TypeError(f"readonly must be a bool, not {type(readonly).__name__}")
        _check_int("map_size", map_size)
        if not 4096 <= map_size <= MAX_MAP_SIZE:
            raise ValueError(f"map_size must be in [4096, {MAX_MAP_SIZE}], got {map_size}")
        self._path = fspath(path)
        self._data_file = join(self._path, "data.mdb")
        self._sync = sync
        self._readonly = readonly
        self._lock = _threading_Lock()
        self._env = None
        self._first = 1
        self._last = 0
        self._torn = 0
        if readonly and not exists(self._data_file):
            raise FileNotFoundError(f"no log at {self._path} (readonly=True needs one)")
        preflight(self._data_file, repair=not readonly)
        self._env = open_env(self._path, self._data_file, map_size, sync, readonly)
        try:
            self._open_dbs()
            self._recover()
        except BaseException:
            self._env.close()
            self._env = None
            raise

    # -- opening ------------------------------------------------------------------

    def _open_dbs(self):
        if self._readonly:
            with self._read_txn() as txn:
                if txn.get(b"meta") is None or txn.get(b"log") is None:
                    raise CorruptLogError(
                        f"{self._data_file}: not a distsync log (no meta database)",
                        self._data_file,
                        0,
                    )
            try:
                self._log = self._env.open_db(b"log", create=False)
                self._meta = self._env.open_db(b"meta", create=False)
            except lmdb.Error as exc:
                raise storage_error(exc, self._data_file) from exc
            return
        env = self._env
        data_file = self._data_file

        def init(txn):
            # Inside the write retry loop: creating the sub-databases of a new
            # log needs pages, which a tiny initial map may not have.
            log = env.open_db(b"log", txn=txn)
            meta = env.open_db(b"meta", txn=txn)
            if txn.get(b"format", db=meta) is None:
                if txn.stat(log)["entries"] or txn.stat(meta)["entries"]:
                    raise CorruptLogError(
                        f"{data_file}: not a distsync log (no format marker)", data_file, 0
                    )
                txn.put(b"format", FORMAT, db=meta)
                txn.put(b"first", first_value(1), db=meta)
            return log, meta

        self._log, self._meta = self._write(init)

    cdef uint64_t _read_first(self, txn) except? 0:
        cdef Py_buffer view
        cdef const unsigned char *p
        cdef uint64_t first
        fmt = txn.get(b"format", db=self._meta)
        raw = txn.get(b"first", db=self._meta)
        if fmt is None or bytes(fmt) != FORMAT or raw is None or len(raw) != 16:
            raise CorruptLogError(
                f"{self._data_file}: not a distsync log or its meta record is damaged",
                self._data_file,
                0,
            )
        PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE)
        try:
            p = <const unsigned char *>view.buf
            first = ld64(p)
            good = first >= 1 and bytes(raw[8:]) == first_value(first)[8:]
        finally:
            PyBuffer_Release(&view)
        if not good:
            raise CorruptLogError(
                f"{self._data_file}: the first_seq record fails its checksum",
                self._data_file,
                0,
            )
        return first

    cdef int _recover(self) except -1:
        """Verify every record; cut a torn tail; refuse damage in the middle."""
        cdef uint64_t first = 0, expected = 0, key, bad_seq = 0
        cdef BlockCheck chk
        cdef Py_buffer view
        cdef object cut_key = None  # raw key of the block holding the first bad record
        cdef int64_t keep = 0
        cdef bint key_ok
        cdef Wal wal = self
        with self._read_txn() as txn:
            first = self._read_first(txn)
            expected = first
            for raw_key, block in txn.cursor(db=self._log):
                raw_key = bytes(raw_key)
                key_ok = len(raw_key) == 8
                key = seq_of_key(<const unsigned char *>PyBytes_AS_STRING(raw_key)) if key_ok else 0
                PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
                try:
                    with nogil:
                        check_block(key, <const unsigned char *>view.buf, <size_t>view.len, &chk)
                finally:
                    PyBuffer_Release(&view)
                if cut_key is not None:
                    # Past the first bad record: any intact record now means the
                    # damage is not a tail.
                    if chk.good or chk.valid_after_bad:
                        raise self._corrupt(bad_seq)
                    continue
                if not key_ok or key != expected:
                    # A gap, an overlap or a damaged key: records are missing
                    # before this block. Only a tail if nothing here is intact.
                    if chk.good or chk.valid_after_bad:
                        raise self._corrupt(expected)
                    cut_key, keep, bad_seq = raw_key, 0, expected
                    continue
                if chk.good == chk.count:
                    expected = key + <uint64_t>chk.count
                    continue
                if chk.valid_after_bad:
                    raise self._corrupt(key + <uint64_t>chk.good)
                cut_key, keep, bad_seq = raw_key, chk.good, key + <uint64_t>chk.good
        self._first = first
        if cut_key is None:
            self._last = expected - 1
            return 0
        self._last = bad_seq - 1
        if self._readonly:
            self._torn = bad_seq  # serve the valid prefix; the writer repairs
            return 0
        log = self._log

        def repair(txn):
            # Keep the intact head of the first bad block, drop it and
            # everything after it otherwise.
            cdef Py_buffer v
            cur = txn.cursor(db=log)
            if keep:
                block = txn.get(cut_key, db=log)
                PyObject_GetBuffer(block, &v, PyBUF_SIMPLE)
                try:
                    new = slice_block(<const unsigned char *>v.buf, <size_t>v.len, 0, <uint32_t>keep)
                finally:
                    PyBuffer_Release(&v)
                if new is None:
                    raise wal._damaged(bad_seq - <uint64_t>keep)
                txn.put(cut_key, new, db=log)
                cur.set_range(cut_key)
                cur.next()
            else:
                cur.set_range(cut_key)
            if cur.key():
                while cur.delete():
                    pass

        self._write(repair)
        return 0

    cdef object _corrupt(self, uint64_t seq):
        return CorruptLogError(
            f"{self._data_file}: record {seq} is damaged and valid records follow it; "
            "the log is corrupt (not a torn tail) and cannot be served",
            self._data_file,
            seq,
        )

    cdef object _damaged(self, uint64_t seq):
        return CorruptLogError(
            f"{self._data_file}: record {seq} fails its checksum", self._data_file, seq
        )

    # -- transactions ---------------------------------------------------------------

    cdef int _check_open(self) except -1:
        if self._env is None:
            raise ValueError("operation on a closed Wal")
        return 0

    cdef object _read_txn(self):
        """A read transaction (LMDB errors translated, see ``ReadTxn``); adopts a map
        grown by the writer in another process."""
        try:
            try:
                txn = self._env.begin(buffers=True)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)
                txn = self._env.begin(buffers=True)
        except lmdb.Error as exc:
            raise storage_error(exc, self._data_file) from exc
        return ReadTxn(txn, self._data_file)

    cdef object _write(self, fn):
        """Run ``fn(txn)`` in one write transaction and commit it (durably when sync).

        ``fn`` must not change ``self``: on "map full" the transaction is
        aborted, the map doubled and ``fn`` run again from scratch.
        """
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._env.set_mapsize(2 * self._env.info()["map_size"])
            except lmdb.Error as exc:
                raise storage_error(exc, self._data_file) from exc

    cdef tuple _bounds(self, txn):
        """``(first_seq, last_seq)``: cached for the writer, read afresh by readers."""
        cdef uint64_t first, key, last
        cdef Py_buffer view
        cdef int64_t n
        if not self._readonly:
            return self._first, self._last
        first = self._read_first(txn)
        cur = txn.cursor(db=self._log)
        if not cur.last():
            return first, first - 1
        key = block_key(cur)
        PyObject_GetBuffer(cur.value(), &view, PyBUF_SIMPLE)
        try:
            n = block_count(<const unsigned char *>view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        if n < 0:
            raise self._corrupt(key)
        last = key + <uint64_t>n - 1
        if self._torn and self._torn <= last:
            # This reader found a torn tail at open and cannot repair it: keep
            # serving the prefix until the writer has replaced the bad record.
            k, block = self._block_at(cur, self._torn)
            try:
                self._record(block, k, self._torn)
            except CorruptLogError:
                return first, self._torn - 1
            self._torn = 0
        return first, last

    cdef tuple _block_at(self, cur, uint64_t seq):
        """``(key, block)`` of the block holding ``seq`` (which must be in the log)."""
        if cur.set_range(key_of(seq)):
            if block_key(cur) == seq:
                return seq, cur.value()
            found = cur.prev()  # the block before the first one starting after seq
        else:
            found = cur.last()  # seq lies in the last block
        if not found:
            raise self._damaged(seq)
        return block_key(cur), cur.value()

    cdef bytes _record(self, block, uint64_t key, uint64_t seq):
        """Record ``seq`` of ``block`` (starting at ``key``) as bytes, checksum verified."""
        cdef Py_buffer view
        cdef const unsigned char *p = NULL
        cdef const unsigned char *b
        cdef size_t plen = 0
        cdef int64_t n
        PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
        try:
            b = <const unsigned char *>view.buf
            n = block_count(b, <size_t>view.len)
            if n >= 0 and seq - key < <uint64_t>n:
                p = frame_payload(b, <size_t>view.len, <uint32_t>n, <uint32_t>(seq - key), seq, &plen)
            if p == NULL:
                raise self._damaged(seq)
            return PyBytes_FromStringAndSize(<const char *>p, plen)
        finally:
            PyBuffer_Release(&view)

    # -- public API ---------------------------------------------------------------------

    @property
    def path(self):
        """The directory of the LMDB environment."""
        return self._path

    @property
    def first_seq(self):
        """First record still in the log (``last_seq + 1`` when the log is empty)."""
        with self._lock:
            self._check_open()
            if not self._readonly:
                return self._first
            with self._read_txn() as txn:
                return self._bounds(txn)[0]

    @property
    def last_seq(self):
        """Last record appended (0 for a new log; kept across ``truncate_prefix``)."""
        with self._lock:
            self._check_open()
            if not self._readonly:
                return self._last
            with self._read_txn() as txn:
                return self._bounds(txn)[1]

    def append(self, records):
        """Append a batch of records in one transaction with one durable commit.

        :param records: a sequence of bytes-like objects; they get sequence
            numbers ``last_seq + 1, ...``.
        :returns: the new ``last_seq`` (unchanged for an empty batch).
        :raises TypeError: ``records`` is not a sequence of bytes-like objects.
        :raises ValueError: a record is larger than ``MAX_RECORD``; the Wal is
            read-only or closed.
        """
        cdef list payloads
        cdef Py_ssize_t i, n, lo
        cdef size_t size, frame, block_bytes, max_record
        cdef uint64_t start
        if isinstance(records, (bytes, bytearray, memoryview, str)):
            raise TypeError(
                f"records must be a sequence of bytes-like objects, not {type(records).__name__}"
            )
        if type(records) is list:
            payloads = list(<list>records)
        else:
            try:
                payloads = list(records)
            except TypeError:
                raise TypeError(
                    "records must be a sequence of bytes-like objects, "
                    f"not {type(records).__name__}"
                ) from None
        n = PyList_GET_SIZE(payloads)
        # Module globals read once (BLOCK_BYTES may be patched by tests).
        block_bytes = <size_t>BLOCK_BYTES
        max_record = <size_t>MAX_RECORD
        # Validation pass: everything becomes bytes (zero-copy for bytes), and
        # the block boundaries are fixed here so encoding allocates once each.
        bounds = []
        lo = 0
        size = 0
        for i in range(n):
            r = <object>PyList_GET_ITEM(payloads, i)
            if not PyBytes_Check(r):
                try:
                    r = memoryview(r).tobytes()
                except TypeError:
                    raise TypeError(
                        f"records[{i}] must be bytes-like, not {type(r).__name__}"
                    ) from None
                payloads[i] = r
            if <size_t>PyBytes_GET_SIZE(r) > max_record:
                raise ValueError(
                    f"records[{i}] is {PyBytes_GET_SIZE(r)} bytes; the limit is {MAX_RECORD}"
                )
            frame = FRAME_SIZE + <size_t>PyBytes_GET_SIZE(r)
            if size and size + frame > block_bytes:
                bounds.append((lo, i, size))
                lo, size = i, 0
            size += frame
        if n:
            bounds.append((lo, n, size))
        with self._lock:
            self._check_open()
            if self._readonly:
                raise ValueError("append on a read-only Wal")
            if n == 0:
                return self._last
            start = self._last + 1
            blocks = [
                (key_of(start + <uint64_t>b_lo), encode_block_c(start + <uint64_t>b_lo, payloads, b_lo, b_hi, b_size))
                for b_lo, b_hi, b_size in bounds
            ]
            log = self._log
            data_file = self._data_file

            def put(txn):
                for key, block in blocks:
                    if not txn.put(key, block, db=log, append=True):
                        raise StorageError(f"{data_file}: block {key.hex()} already exists")

            self._write(put)
            self._last = start + <uint64_t>n - 1
            return self._last

    def read(self, seq):
        """The record numbered ``seq``.

        :raises TypeError: ``seq`` is not an int.
        :raises ValueError: ``seq`` is negative; the Wal is closed.
        :raises IndexError: ``seq`` is outside ``[first_seq, last_seq]``.
        :raises CorruptLogError: the record fails its checksum.
        """
        _check_int("seq", seq)
        with self._lock:
            self._check_open()
            with self._read_txn() as txn:
                first, last = self._bounds(txn)
                if not first <= seq <= last:
                    raise IndexError(f"seq {seq} is outside the log [{first}, {last}]")
                key, block = self._block_at(txn.cursor(db=self._log), seq)
                return self._record(block, key, seq)

    def scan(self, from_seq=None):
        """Iterate ``(seq, record)`` from ``from_seq`` (default ``first_seq``) to the end.

        Each block is read in its own short read transaction, so records
        appended during the iteration are included and a writer is never held
        up; a concurrent truncation that removes the next record ends it.

        :raises TypeError: ``from_seq`` is not an int or None.
        :raises ValueError: ``from_seq`` is negative; the Wal is closed.
        :raises IndexError: ``from_seq`` is outside ``[first_seq, last_seq + 1]``.
        :raises CorruptLogError: (while iterating) a record fails its checksum.
        """
        if from_seq is not None:
            _check_int("from_seq", from_seq)
        with self._lock:
            self._check_open()
            with self._read_txn() as txn:
                first, last = self._bounds(txn)
        start = first if from_seq is None else from_seq
        if not first <= start <= last + 1:
            raise IndexError(f"from_seq {start} is outside the log [{first}, {last + 1}]")
        return self._scan(start)

    def _scan(self, seq):
        while True:
            out = self._scan_block(seq)
            if out is None:
                return
            yield from out
            seq = out[len(out) - 1][0] + 1  # (wraparound is off: no out[-1])

    def _scan_block(self, uint64_t seq):
        """The records from ``seq`` to the end of its block, or None past the end."""
        cdef Py_buffer view
        cdef const unsigned char *b
        cdef const unsigned char *p
        cdef size_t plen
        cdef int64_t n
        cdef uint64_t key, i, stop, first, last
        cdef list out = []
        with self._lock:
            if self._env is None:
                return None
            with self._read_txn() as txn:
                first, last = self._bounds(txn)
                if seq < first or seq > last:
                    return None
                key, block = self._block_at(txn.cursor(db=self._log), seq)
                PyObject_GetBuffer(block, &view, PyBUF_SIMPLE)
                try:
                    b = <const unsigned char *>view.buf
                    n = block_count(b, <size_t>view.len)
                    if n < 0:
                        raise self._damaged(seq)
                    stop = min(<uint64_t>n, last - key + 1)
                    for i in range(seq - key, stop):
                        p = frame_payload(b, <size_t>view.len, <uint32_t>n, <uint32_t>i, key + i, &plen)
                        if p == NULL:
                            if out:
                                break  # yield the good ones first, fail on the next round
                            raise self._damaged(key + i)
                        out.append((key + i, PyBytes_FromStringAndSize(<const char *>p, plen)))
                finally:
                    PyBuffer_Release(&view)
        return out

    def truncate_prefix(self, upto):
        """Drop records ``<= upto`` (compaction), durably; ``first_seq`` becomes ``upto + 1``.

        ``upto < first_seq`` is a no-op; ``upto == last_seq`` empties the log
        (``last_seq`` is kept, so the next append continues after it).

        :raises TypeError: ``upto`` is not an int.
        :raises ValueError: ``upto`` is negative or beyond ``last_seq``; read-only or closed.
        """
        cdef Wal wal = self
        _check_int("upto", upto)
        with self._lock:
            self._check_open()
            if self._readonly:
                raise ValueError("truncate_prefix on a read-only Wal")
            if upto > self._last:
                raise ValueError(f"upto {upto} is beyond last_seq {self._last}")
            if upto < self._first:
                return
            new_first = upto + 1
            log = self._log
            meta = self._meta

            def cut(txn):
                cdef Py_buffer v
                cdef int64_t n
                cur = txn.cursor(db=log)
                cur.first()
                # Delete whole blocks that end at or before upto; the block that
                # straddles upto is re-keyed at upto + 1 so the first block
                # always starts at first_seq.
                while cur.key():
                    key = block_key(cur)
                    PyObject_GetBuffer(cur.value(), &v, PyBUF_SIMPLE)
                    try:
                        n = block_count(<const unsigned char *>v.buf, <size_t>v.len)
                        if n < 0:
                            raise wal._damaged(key)
                        if key + n - 1 <= upto:
                            new = None
                        elif key <= upto:
                            new = slice_block(<const unsigned char *>v.buf, <size_t>v.len,
                                              <uint32_t>(upto + 1 - key), <uint32_t>n)
                            if new is None:
                                raise wal._damaged(key)
                        else:
                            break
                    finally:
                        PyBuffer_Release(&v)
                    cur.delete()
                    if new is not None:
                        txn.put(key_of(new_first), new, db=log)
                        break
                txn.put(b"first", first_value(new_first), db=meta)

            self._write(cut)
            self._first = new_first

    def truncate_suffix(self, from_seq):
        """Drop records ``>= from_seq`` (Raft log conflict), durably.

        The next append continues at ``from_seq``. ``from_seq == last_seq + 1``
        is a no-op.

        :raises TypeError: ``from_seq`` is not an int.
        :raises ValueError: ``from_seq`` is outside ``[first_seq, last_seq + 1]``
            or negative; read-only or closed.
        """
        cdef uint64_t cut_at
        cdef Wal wal = self
        _check_int("from_seq", from_seq)
        with self._lock:
            self._check_open()
            if self._readonly:
                raise ValueError("truncate_suffix on a read-only Wal")
            if not self._first <= from_seq <= self._last + 1:
                raise ValueError(
                    f"from_seq {from_seq} is outside [{self._first}, {self._last + 1}]"
                )
            if from_seq == self._last + 1:
                return
            log = self._log
            cut_at = from_seq

            def cut(txn):
                cdef Py_buffer v
                cur = txn.cursor(db=log)
                key, block = wal._block_at(cur, cut_at)
                if key < cut_at:
                    # Keep the head of the straddling block, then step past it.
                    PyObject_GetBuffer(block, &v, PyBUF_SIMPLE)
                    try:
                        new = slice_block(<const unsigned char *>v.buf, <size_t>v.len,
                                          0, <uint32_t>(cut_at - key))
                    finally:
                        PyBuffer_Release(&v)
                    if new is None:
                        raise wal._damaged(key)
                    txn.put(key_of(key), new, db=log)
                    cur.set_range(key_of(cut_at))
                if cur.key():
                    while cur.delete():
                        pass

            self._write(cut)
            self._last = cut_at - 1

    def sync(self):
        """Force everything committed so far to disk (useful with ``sync=False``)."""
        with self._lock:
            self._check_open()
            try:
                self._env.sync(True)
            except lmdb.Error as exc:
                raise storage_error(exc, self._data_file) from exc

    def close(self):
        """Close the log; further calls raise ValueError. Idempotent."""
        with self._lock:
            if self._env is not None:
                self._env.close()
                self._env = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def __repr__(self):
        state = "closed" if self._env is None else f"[{self._first}, {self._last}]"
        return f"Wal({self._path!r}, {state})"
