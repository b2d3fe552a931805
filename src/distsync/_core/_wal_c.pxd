# The compiled WAL kernel: fields and C-level methods of the cdef class.
# The on-disk format and the invariants are documented in _wal_py.py (the
# twin); this module must read and write exactly the same bytes.
cimport cython
from libc.stdint cimport int64_t, uint32_t, uint64_t


# Verdict on one block, filled by check_block() without the GIL.
cdef struct BlockCheck:
    int64_t count         # records in the block; -1 when the header is unusable
    int64_t good          # leading intact records
    bint valid_after_bad  # an intact record follows the first bad one


cdef uint64_t record_checksum_c(uint64_t seq, const unsigned char *p, size_t n) noexcept nogil
cdef int64_t block_count(const unsigned char *b, size_t size) noexcept nogil
cdef const unsigned char *frame_payload(const unsigned char *b, size_t size, uint32_t n,
                                        uint32_t i, uint64_t seq, size_t *plen) noexcept nogil
cdef void check_block(uint64_t key, const unsigned char *b, size_t size,
                      BlockCheck *out) noexcept nogil


@cython.final
cdef class Wal:
    cdef str _path
    cdef str _data_file
    cdef bint _sync
    cdef bint _readonly
    cdef object _lock       # threading.Lock: serializes every use of the env
    cdef object _env        # lmdb.Environment, None once closed
    cdef object _log        # the "log" sub-database
    cdef object _meta       # the "meta" sub-database
    # Cached bounds of the writer (readers re-read them in each transaction).
    cdef uint64_t _first
    cdef uint64_t _last
    # Readers only: first bad record of a torn tail seen at open (0: none).
    cdef uint64_t _torn

    cdef object _write(self, fn)
    cdef object _read_txn(self)
    cdef int _check_open(self) except -1
    cdef uint64_t _read_first(self, txn) except? 0
    cdef tuple _bounds(self, txn)
    cdef tuple _block_at(self, cur, uint64_t seq)
    cdef bytes _record(self, block, uint64_t key, uint64_t seq)
    cdef int _recover(self) except -1
    cdef object _corrupt(self, uint64_t seq)
    cdef object _damaged(self, uint64_t seq)
