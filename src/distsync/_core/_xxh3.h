/*
 * XXH3-64 (seed 0, default secret), written for distsync from the public
 * xxHash specification (doc/xxhash_spec.md of the xxHash project).
 *
 * One entry point:
 *
 *     static inline uint64_t ds_xxh3_64(const void *data, size_t len);
 *
 * It returns the same value as XXH3_64bits(data, len) of the reference
 * library (and xxhash.xxh3_64_intdigest in Python) on every platform: all
 * multi-byte reads are little-endian by definition of the algorithm, so they
 * go through ds_xxh3_read64/32, which byte-swap on big-endian hosts. Reads use
 * memcpy so that unaligned input is safe on strict-alignment CPUs.
 *
 * Portable C99. Where the compiler has a 128-bit integer (GCC, Clang on
 * 64-bit targets) the 64x64->128 multiply uses it; elsewhere a 32-bit-limb
 * fallback computes the same product. Define DS_XXH3_NO_INT128 to force the
 * fallback (the tests do, to check it). No SIMD: the ring hashes short keys,
 * where the scalar paths are what runs anyway.
 *
 * Ring placement and WAL checksums depend on these values: any change here is
 * a change of the on-disk and on-the-wire format.
 */
#ifndef DISTSYNC_XXH3_H
#define DISTSYNC_XXH3_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* --- constants (from the specification) -------------------------------- */

#define DS_XXH_PRIME32_1 0x9E3779B1U
#define DS_XXH_PRIME32_2 0x85EBCA77U
#define DS_XXH_PRIME32_3 0xC2B2AE3DU
#define DS_XXH_PRIME64_1 0x9E3779B185EBCA87ULL
#define DS_XXH_PRIME64_2 0xC2B2AE3D27D4EB4FULL
#define DS_XXH_PRIME64_3 0x165667B19E3779F9ULL
#define DS_XXH_PRIME64_4 0x85EBCA77C2B2AE63ULL
#define DS_XXH_PRIME64_5 0x27D4EB2F165667C5ULL
#define DS_XXH_PRIME_MX1 0x165667919E3779F9ULL
#define DS_XXH_PRIME_MX2 0x9FB21C651E98DF25ULL

/* The default 192-byte secret. Read as little-endian words at byte offsets
 * that are often not multiples of 8 (3, 11, 119, 121), hence the byte array. */
#define DS_XXH3_SECRET_SIZE 192
static const uint8_t ds_xxh3_secret[DS_XXH3_SECRET_SIZE] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

/* Long inputs: 64-byte stripes, 8 lanes of 8 bytes, 16 stripes per block
 * ((secret size - 64) / 8), the secret advancing 8 bytes per stripe. */
#define DS_XXH3_STRIPE_LEN 64
#define DS_XXH3_SECRET_CONSUME_RATE 8
#define DS_XXH3_ACC_NB 8
#define DS_XXH3_STRIPES_PER_BLOCK ((DS_XXH3_SECRET_SIZE - DS_XXH3_STRIPE_LEN) / 8)
#define DS_XXH3_BLOCK_LEN (DS_XXH3_STRIPE_LEN * DS_XXH3_STRIPES_PER_BLOCK)
/* Offsets into the secret that the specification fixes. */
#define DS_XXH3_MIDSIZE_START 3   /* 129..240: chunks 8.. start 3 bytes in */
#define DS_XXH3_MIDSIZE_LAST 119  /* 129..240: last 16 bytes (136 - 17) */
#define DS_XXH3_LAST_STRIPE 121   /* long: last stripe (192 - 64 - 7) */
#define DS_XXH3_MERGE_START 11    /* long: final merge */

/* --- portable primitives ------------------------------------------------ */

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define DS_XXH3_BIG_ENDIAN 1
#else
/* GCC and Clang define __BYTE_ORDER__; MSVC targets are all little-endian. */
#define DS_XXH3_BIG_ENDIAN 0
#endif

static inline uint32_t ds_xxh3_bswap32(uint32_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap32(x);
#else
    return ((x << 24) & 0xff000000U) | ((x << 8) & 0x00ff0000U) |
           ((x >> 8) & 0x0000ff00U) | ((x >> 24) & 0x000000ffU);
#endif
}

static inline uint64_t ds_xxh3_bswap64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap64(x);
#else
    return ((uint64_t)ds_xxh3_bswap32((uint32_t)x) << 32) |
           (uint64_t)ds_xxh3_bswap32((uint32_t)(x >> 32));
#endif
}

/* Little-endian loads of possibly unaligned bytes. */
static inline uint32_t ds_xxh3_read32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
#if DS_XXH3_BIG_ENDIAN
    v = ds_xxh3_bswap32(v);
#endif
    return v;
}

static inline uint64_t ds_xxh3_read64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if DS_XXH3_BIG_ENDIAN
    v = ds_xxh3_bswap64(v);
#endif
    return v;
}

static inline uint64_t ds_xxh3_rotl64(uint64_t x, unsigned r) {
    /* r is a constant in 1..63 at every call site, so no UB on shift by 64. */
    return (x << r) | (x >> (64 - r));
}

/* The full 128-bit product of a and b, folded: low half xor high half. */
static inline uint64_t ds_xxh3_mul128_fold64(uint64_t a, uint64_t b) {
#if defined(__SIZEOF_INT128__) && !defined(DS_XXH3_NO_INT128)
    __uint128_t product = (__uint128_t)a * (__uint128_t)b;
    return (uint64_t)product ^ (uint64_t)(product >> 64);
#else
    /* Schoolbook multiplication on 32-bit limbs. Each partial product fits in
     * 64 bits, and so does the middle sum: (2^32-1) + 2*(2^32-1) < 2^64. */
    uint64_t a_lo = a & 0xFFFFFFFFULL, a_hi = a >> 32;
    uint64_t b_lo = b & 0xFFFFFFFFULL, b_hi = b >> 32;
    uint64_t lo_lo = a_lo * b_lo;
    uint64_t hi_lo = a_hi * b_lo;
    uint64_t lo_hi = a_lo * b_hi;
    uint64_t hi_hi = a_hi * b_hi;
    uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFULL) + lo_hi;
    uint64_t upper = (hi_lo >> 32) + (cross >> 32) + hi_hi;
    uint64_t lower = (cross << 32) | (lo_lo & 0xFFFFFFFFULL);
    return lower ^ upper;
#endif
}

/* XXH3's own final mix, used by the 9..16 and the 17+ paths. */
static inline uint64_t ds_xxh3_avalanche(uint64_t h) {
    h ^= h >> 37;
    h *= DS_XXH_PRIME_MX1;
    h ^= h >> 32;
    return h;
}

/* XXH64's final mix, used by the 0..3 paths. */
static inline uint64_t ds_xxh3_avalanche_xxh64(uint64_t h) {
    h ^= h >> 33;
    h *= DS_XXH_PRIME64_2;
    h ^= h >> 29;
    h *= DS_XXH_PRIME64_3;
    h ^= h >> 32;
    return h;
}

/* Mix 16 bytes of input with 16 bytes of secret (seed 0). */
static inline uint64_t ds_xxh3_mix16(const uint8_t *p, const uint8_t *secret) {
    return ds_xxh3_mul128_fold64(ds_xxh3_read64(p) ^ ds_xxh3_read64(secret),
                                 ds_xxh3_read64(p + 8) ^ ds_xxh3_read64(secret + 8));
}

/* --- 0..16 bytes -------------------------------------------------------- */

static inline uint64_t ds_xxh3_len_0(void) {
    const uint8_t *s = ds_xxh3_secret;
    return ds_xxh3_avalanche_xxh64(ds_xxh3_read64(s + 56) ^ ds_xxh3_read64(s + 64));
}

static inline uint64_t ds_xxh3_len_1to3(const uint8_t *p, size_t len) {
    const uint8_t *s = ds_xxh3_secret;
    /* first byte, middle (or last) byte, last byte and the length, packed so
     * that every byte of a 1..3 byte input lands in a distinct position. */
    uint32_t combined = ((uint32_t)p[0] << 16) | ((uint32_t)p[len >> 1] << 24) |
                        (uint32_t)p[len - 1] | ((uint32_t)len << 8);
    uint64_t bitflip = (uint64_t)(ds_xxh3_read32(s) ^ ds_xxh3_read32(s + 4));
    return ds_xxh3_avalanche_xxh64((uint64_t)combined ^ bitflip);
}

static inline uint64_t ds_xxh3_len_4to8(const uint8_t *p, size_t len) {
    const uint8_t *s = ds_xxh3_secret;
    /* First and last 4 bytes (they overlap when len < 8). */
    uint32_t first = ds_xxh3_read32(p);
    uint32_t last = ds_xxh3_read32(p + len - 4);
    uint64_t bitflip = ds_xxh3_read64(s + 8) ^ ds_xxh3_read64(s + 16);
    uint64_t h = ((uint64_t)last | ((uint64_t)first << 32)) ^ bitflip;
    /* "rrmxmx": a stronger mix than avalanche, since only 2 words went in. */
    h ^= ds_xxh3_rotl64(h, 49) ^ ds_xxh3_rotl64(h, 24);
    h *= DS_XXH_PRIME_MX2;
    h ^= (h >> 35) + (uint64_t)len;
    h *= DS_XXH_PRIME_MX2;
    h ^= h >> 28;
    return h;
}

static inline uint64_t ds_xxh3_len_9to16(const uint8_t *p, size_t len) {
    const uint8_t *s = ds_xxh3_secret;
    uint64_t bitflip1 = ds_xxh3_read64(s + 24) ^ ds_xxh3_read64(s + 32);
    uint64_t bitflip2 = ds_xxh3_read64(s + 40) ^ ds_xxh3_read64(s + 48);
    /* First and last 8 bytes (overlapping when len < 16). */
    uint64_t lo = ds_xxh3_read64(p) ^ bitflip1;
    uint64_t hi = ds_xxh3_read64(p + len - 8) ^ bitflip2;
    uint64_t acc = (uint64_t)len + ds_xxh3_bswap64(lo) + hi + ds_xxh3_mul128_fold64(lo, hi);
    return ds_xxh3_avalanche(acc);
}

/* --- 17..240 bytes ------------------------------------------------------ */

static inline uint64_t ds_xxh3_len_17to128(const uint8_t *p, size_t len) {
    const uint8_t *s = ds_xxh3_secret;
    uint64_t acc = (uint64_t)len * DS_XXH_PRIME64_1;
    /* Pairs of 16-byte chunks walking in from both ends; round i uses
     * secret[32i .. 32i+32). The chunks overlap when len is not a multiple of
     * 32, which is how every byte gets covered. Addition commutes, so the
     * order of rounds does not change the result. */
    if (len > 32) {
        if (len > 64) {
            if (len > 96) {
                acc += ds_xxh3_mix16(p + 48, s + 96);
                acc += ds_xxh3_mix16(p + len - 64, s + 112);
            }
            acc += ds_xxh3_mix16(p + 32, s + 64);
            acc += ds_xxh3_mix16(p + len - 48, s + 80);
        }
        acc += ds_xxh3_mix16(p + 16, s + 32);
        acc += ds_xxh3_mix16(p + len - 32, s + 48);
    }
    acc += ds_xxh3_mix16(p, s);
    acc += ds_xxh3_mix16(p + len - 16, s + 16);
    return ds_xxh3_avalanche(acc);
}

static inline uint64_t ds_xxh3_len_129to240(const uint8_t *p, size_t len) {
    const uint8_t *s = ds_xxh3_secret;
    uint64_t acc = (uint64_t)len * DS_XXH_PRIME64_1;
    size_t chunks = len / 16;
    size_t i;
    /* The first 128 bytes use secret[0..128) ... */
    for (i = 0; i < 8; i++) {
        acc += ds_xxh3_mix16(p + 16 * i, s + 16 * i);
    }
    acc = ds_xxh3_avalanche(acc);
    /* ... the rest restarts the secret 3 bytes in, so no chunk meets the same
     * secret bytes as its counterpart in the first 128 ... */
    for (i = 8; i < chunks; i++) {
        acc += ds_xxh3_mix16(p + 16 * i, s + 16 * (i - 8) + DS_XXH3_MIDSIZE_START);
    }
    /* ... and the last 16 bytes (maybe overlapping) always go in. */
    acc += ds_xxh3_mix16(p + len - 16, s + DS_XXH3_MIDSIZE_LAST);
    return ds_xxh3_avalanche(acc);
}

/* --- 241+ bytes: stripes, blocks, scramble, merge ----------------------- */

static inline void ds_xxh3_accumulate_512(uint64_t *acc, const uint8_t *p, const uint8_t *secret) {
    size_t i;
    for (i = 0; i < DS_XXH3_ACC_NB; i++) {
        uint64_t data = ds_xxh3_read64(p + 8 * i);
        uint64_t key = data ^ ds_xxh3_read64(secret + 8 * i);
        /* The raw lane goes to the neighbour accumulator, so no input bit is
         * lost when the 32x32 product below happens to be zero. */
        acc[i ^ 1] += data;
        acc[i] += (key & 0xFFFFFFFFULL) * (key >> 32);
    }
}

static inline void ds_xxh3_scramble(uint64_t *acc, const uint8_t *secret) {
    size_t i;
    for (i = 0; i < DS_XXH3_ACC_NB; i++) {
        uint64_t a = acc[i];
        a ^= a >> 47;
        a ^= ds_xxh3_read64(secret + 8 * i);
        a *= DS_XXH_PRIME32_1;
        acc[i] = a;
    }
}

static inline uint64_t ds_xxh3_len_long(const uint8_t *p, size_t len) {
    const uint8_t *s = ds_xxh3_secret;
    uint64_t acc[DS_XXH3_ACC_NB] = {
        DS_XXH_PRIME32_3, DS_XXH_PRIME64_1, DS_XXH_PRIME64_2, DS_XXH_PRIME64_3,
        DS_XXH_PRIME64_4, DS_XXH_PRIME32_2, DS_XXH_PRIME64_5, DS_XXH_PRIME32_1,
    };
    /* Full blocks, except that the final block is never processed here even
     * when full: it is the "last block" below, whose last stripe is special. */
    size_t blocks = (len - 1) / DS_XXH3_BLOCK_LEN;
    size_t b, n, stripes;
    uint64_t result;
    for (b = 0; b < blocks; b++) {
        const uint8_t *block = p + b * DS_XXH3_BLOCK_LEN;
        for (n = 0; n < DS_XXH3_STRIPES_PER_BLOCK; n++) {
            ds_xxh3_accumulate_512(acc, block + n * DS_XXH3_STRIPE_LEN,
                                   s + n * DS_XXH3_SECRET_CONSUME_RATE);
        }
        ds_xxh3_scramble(acc, s + DS_XXH3_SECRET_SIZE - DS_XXH3_STRIPE_LEN);
    }
    /* Last block (1..1024 bytes): its full stripes but the last one ... */
    stripes = ((len - 1) - DS_XXH3_BLOCK_LEN * blocks) / DS_XXH3_STRIPE_LEN;
    for (n = 0; n < stripes; n++) {
        ds_xxh3_accumulate_512(acc, p + blocks * DS_XXH3_BLOCK_LEN + n * DS_XXH3_STRIPE_LEN,
                               s + n * DS_XXH3_SECRET_CONSUME_RATE);
    }
    /* ... then the final 64 bytes of input as one stripe (it may overlap the
     * stripes already consumed; len > 240 guarantees 64 bytes exist). */
    ds_xxh3_accumulate_512(acc, p + len - DS_XXH3_STRIPE_LEN, s + DS_XXH3_LAST_STRIPE);
    /* Merge the 8 accumulators pairwise into one word. */
    result = (uint64_t)len * DS_XXH_PRIME64_1;
    for (n = 0; n < 4; n++) {
        const uint8_t *k = s + DS_XXH3_MERGE_START + 16 * n;
        result += ds_xxh3_mul128_fold64(acc[2 * n] ^ ds_xxh3_read64(k),
                                        acc[2 * n + 1] ^ ds_xxh3_read64(k + 8));
    }
    return ds_xxh3_avalanche(result);
}

/* --- entry point -------------------------------------------------------- */

/* XXH3_64bits of data[0:len] with seed 0 and the default secret. data may be
 * NULL when len is 0. Never fails, never allocates, needs no GIL. */
static inline uint64_t ds_xxh3_64(const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    if (len <= 16) {
        if (len > 8) return ds_xxh3_len_9to16(p, len);
        if (len >= 4) return ds_xxh3_len_4to8(p, len);
        if (len > 0) return ds_xxh3_len_1to3(p, len);
        return ds_xxh3_len_0();
    }
    if (len <= 128) return ds_xxh3_len_17to128(p, len);
    if (len <= 240) return ds_xxh3_len_129to240(p, len);
    return ds_xxh3_len_long(p, len);
}

#endif /* DISTSYNC_XXH3_H */
