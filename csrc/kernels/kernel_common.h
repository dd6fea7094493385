/*
 * kernel_common.h - plain-C helpers shared by the per-ISA kernel files
 * (no intrinsics here: each kernel file includes it under its own flags).
 */
#ifndef BITNN_KERNEL_COMMON_H
#define BITNN_KERNEL_COMMON_H

#include <string.h>

#include "kernels.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Output rows are processed in slabs whose bits fit in L2, so that a batch
 * of input rows streams the weights once per slab instead of once per row. */
#define SLAB_BYTES (128u * 1024u)

/* The tiling of the table kernels, shared by every ISA (each supplies only
 * its inner block): output blocks of 16 rows in slabs whose tiles fit in L2;
 * in a slab, input rows 4 at a time over every block, RB4 blocks a pass
 * (then 2, then 1), then the remaining rows one at a time, RB1 blocks a
 * pass. BLOCK(m, b, rb, mb) computes input rows m .. m+mb-1 for the output
 * blocks b .. b+rb-1 and stores the rows of [n0, n1) among them; rb and mb
 * are constants at each use, so the ISA's block is compiled per shape. */
#define BITNN_TILE_PASS(m, b0, b1, RB, MB, BLOCK)                   \
    do {                                                            \
        size_t b_ = (b0);                                           \
        for (; b_ + (RB) <= (b1); b_ += (RB)) BLOCK(m, b_, RB, MB);  \
        if ((RB) >= 4 && b_ + 2 <= (b1)) {                          \
            BLOCK(m, b_, 2, MB);                                    \
            b_ += 2;                                                \
        }                                                           \
        for (; b_ < (b1); b_++) BLOCK(m, b_, 1, MB);                \
    } while (0)

#define BITNN_TILE_DRIVER(M, kc, n0, n1, RB4, RB1, BLOCK)                              \
    do {                                                                             \
        if ((n0) >= (n1)) break;                                                     \
        size_t slab_ = SLAB_BYTES / ((kc) * 64);                                     \
        if (slab_ < 1) slab_ = 1;                                                    \
        const size_t bend_ = ((n1) + 15) / 16;                                       \
        for (size_t s0_ = (n0) / 16; s0_ < bend_; s0_ += slab_) {                    \
            const size_t s1_ = bend_ - s0_ > slab_ ? s0_ + slab_ : bend_;            \
            size_t m_ = 0;                                                           \
            for (; m_ + 4 <= (M); m_ += 4) BITNN_TILE_PASS(m_, s0_, s1_, RB4, 4, BLOCK); \
            for (; m_ < (M); m_++) BITNN_TILE_PASS(m_, s0_, s1_, RB1, 1, BLOCK);     \
        }                                                                            \
    } while (0)

/* The accumulators of a table kernel's block of MB <= 4 input rows x RB <= 4
 * blocks of 16 output rows are named variables (a<i><r>), not an array: GCC 12
 * kept [4][4] arrays of vectors on the stack. X(i, r) for every pair; the
 * pairs outside MB x RB are dead code (BITNN_LIVE). */
#define BITNN_EACH_I(X, r) X(0, r) X(1, r) X(2, r) X(3, r)
#define BITNN_EACH(X) BITNN_EACH_I(X, 0) BITNN_EACH_I(X, 1) BITNN_EACH_I(X, 2) BITNN_EACH_I(X, 3)
#define BITNN_LIVE(i, r) ((i) < MB && (r) < RB)

/* One input row (decode) streams the tiles from L3 or memory once, RB blocks
 * of 16 rows at a time (RB * kc * 64 bytes: 6 KB at K = 768), too short for
 * the hardware prefetcher to get ahead: while chunk c of blocks [b0, b0 + RB)
 * runs, fetch chunk c of the next RB blocks (RB lines), if they exist (nb
 * blocks in all). */
ALWAYS_INLINE void prefetch_next_blocks(const uint32_t *tiles, size_t kc, size_t nb, size_t b0,
                                        int RB, size_t c)
{
    if (b0 + 2 * (size_t)RB > nb) return;
    const char *next = (const char *)(tiles + (b0 + RB) * kc * 16) + 64 * (size_t)RB * c;
    for (int r = 0; r < RB; r++) __builtin_prefetch(next + 64 * r, 0, 3);
}

/* The 16 weight bits of chunk c (elements 16c .. 16c+15) of a packed row. */
ALWAYS_INLINE uint16_t chunk16(const uint64_t *row, size_t c)
{
    uint16_t v;
    memcpy(&v, (const unsigned char *)row + 2 * c, sizeof v);
    return v;
}

/* The 4-bit table index of group g of output row n in the tiles (kernels.h). */
ALWAYS_INLINE unsigned tile_index(const uint32_t *tiles, size_t kc, size_t n, size_t g)
{
    return (tiles[((n / 16) * kc + g / 8) * 16 + n % 16] >> (4 * (g % 8))) & 15u;
}

/* The int8 epilogue, the same in every kernel: exact integer sum to fp32,
 * times the row's scale, plus the bias bit (two roundings, no FMA). */
ALWAYS_INLINE float bitnn_q8_out(int32_t s, float scale, const uint64_t *bias, size_t n)
{
    return (float)s * scale + bitnn_bias_value(bias, n);
}

/* 16 bias bits starting at bit n (0 where bias is NULL). Only for a block
 * of 16 rows that exist (n + 16 <= N): the word after bit n's word is then
 * read only when bit n + 15 lies in it. */
ALWAYS_INLINE uint32_t bias_bits16(const uint64_t *bias, size_t n)
{
    if (!bias) return 0;
    const size_t wi = n >> 6, sh = n & 63;
    uint64_t v = bias[wi] >> sh;
    if (sh > 48) v |= bias[wi + 1] << (64 - sh);
    return (uint32_t)(v & 0xffffu);
}

/* The tiling of the direct int8 kernels (the file's row-major bits): output
 * rows [n0, n1) in slabs whose bits fit in L2 (at least MINSLAB rows); input
 * rows MB at a time, then one at a time; output rows R at a time, then one.
 * BLOCK(m, n, r, mb) runs input rows m .. m+mb-1 on output rows n .. n+r-1. */
#define BITNN_ROW_DRIVER(M, wpr, n0, n1, MINSLAB, MB, R, BLOCK)                 \
    do {                                                                     \
        size_t slab_ = SLAB_BYTES / ((wpr) * 8);                             \
        if (slab_ < (MINSLAB)) slab_ = (MINSLAB);                            \
        for (size_t s0_ = (n0); s0_ < (n1); s0_ += slab_) {                  \
            const size_t s1_ = ((n1) - s0_ > slab_) ? s0_ + slab_ : (n1);    \
            size_t m_ = 0, n_;                                               \
            for (; m_ + (MB) <= (M); m_ += (MB)) {                           \
                for (n_ = s0_; n_ + (R) <= s1_; n_ += (R)) BLOCK(m_, n_, R, MB); \
                for (; n_ < s1_; n_++) BLOCK(m_, n_, 1, MB);                 \
            }                                                                \
            for (; m_ < (M); m_++) {                                         \
                for (n_ = s0_; n_ + (R) <= s1_; n_ += (R)) BLOCK(m_, n_, R, 1); \
                for (; n_ < s1_; n_++) BLOCK(m_, n_, 1, 1);                  \
            }                                                                \
        }                                                                    \
    } while (0)

/* Row i of a 16-row block's results v (MB rows of 16) into z: the rows of
 * [n0, n1) (bits of `in`), each plus its bias bit (bits of bb). */
ALWAYS_INLINE void store_rows16(const float *v, uint32_t bb, uint32_t in, float *z)
{
    for (int r = 0; r < 16; r++)
        if ((in >> r) & 1u) z[r] = v[r] + (float)((bb >> r) & 1u);
}

/* The bias bits of rows [16 blk, 16 blk + 16) below n1 (rows from n1 on may
 * not exist: their bits are not read). */
ALWAYS_INLINE uint32_t bias_bits_block(const uint64_t *bias, size_t blk, size_t n1)
{
    const size_t n = 16 * blk;
    if (!bias) return 0;
    if (n + 16 <= n1) return bias_bits16(bias, n);
    uint32_t v = 0;
    for (size_t r = 0; n + r < n1; r++) v |= (uint32_t)((bias[(n + r) >> 6] >> ((n + r) & 63)) & 1u) << r;
    return v;
}

/* Lanes r of block blk whose row 16 blk + r lies in [n0, n1). */
ALWAYS_INLINE uint32_t rows_in_block(size_t blk, size_t n0, size_t n1)
{
    const size_t b = 16 * blk;
    const size_t lo = n0 > b ? n0 - b : 0, hi = n1 < b + 16 ? n1 - b : 16;
    return hi > lo ? (uint32_t)(((1u << (hi - lo)) - 1u) << lo) : 0u;
}

#endif
