# XXH3-64 (seed 0, default secret) from our own C header, for any kernel that
# needs a stable 64-bit hash without the GIL: `from distsync._core._xxh3 cimport
# ds_xxh3_64`. Equal to xxhash.xxh3_64_intdigest(data[:len]) on every platform.
from libc.stdint cimport uint64_t


cdef extern from "_xxh3.h":
    uint64_t ds_xxh3_64(const void *data, size_t len) noexcept nogil
