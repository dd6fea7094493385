/*
 * kernel_avx512.c - the AVX-512 fp32 kernel. Compiled with -mavx512f
 * -mavx512bw (csrc/sources.py) and only called after bitnn_cpu_features()
 * reported AVX-512F and BW with OS support.
 *
 * Table lookups (docs/packing.md): one zmm accumulator holds 16 output rows;
 * for each group of 4 inputs, one vpermps picks each row's entry of the
 * group's 16-entry subset-sum table and one vaddps adds it, in increasing
 * group order: 64 weights per permute, and the same chain per row as the
 * scalar reference, so the results are equal bit for bit.
 */
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"


/* MB input rows (row i's chunk c at tp[i * kc + c]) x RB blocks of 16 output
 * rows from block b0 (MB, RB <= 4): accumulator a<i><r> (BITNN_EACH,
 * kernel_common.h) lane l = row 16 (b0 + r) + l. The 4-bit indices of 8
 * groups sit in one 32-bit lane; a shift brings group g down and vpermps reads
 * the 16 rows' entries of group g's table (a memory operand) at once. */
#define F32_ZERO(i, r) __m512 a##i##r = _mm512_setzero_ps();
#define F32_STORE(i, r) \
    if (BITNN_LIVE(i, r)) tstore(a##i##r, b0 + (r), n0, n1, bias, z + (i) * ldz);

/* z rows [n0, n1) of block blk for input row i: acc + bias bit (+0.0 or
 * +1.0; acc is never -0.0, so adding +0.0 is the reference's add). */
ALWAYS_INLINE void tstore(__m512 acc, size_t blk, size_t n0, size_t n1, const uint64_t *bias,
                          float *z)
{
    const __mmask16 bb = _cvtu32_mask16(bias_bits_block(bias, blk, n1));
    const __m512 v = _mm512_add_ps(acc, _mm512_maskz_mov_ps(bb, _mm512_set1_ps(1.0f)));
    _mm512_mask_storeu_ps(z + 16 * blk, _cvtu32_mask16(rows_in_block(blk, n0, n1)), v);
}

ALWAYS_INLINE void run_blocks(const void *const *tp, size_t kc, const uint32_t *tiles,
                              size_t nb, size_t b0, const int RB, const int MB, size_t n0, size_t n1,
                              const uint64_t *bias, float *z, size_t ldz)
{
    BITNN_EACH(F32_ZERO)
    const uint32_t *tb[4] = {NULL, NULL, NULL, NULL};
    for (int r = 0; r < RB; r++) tb[r] = tiles + (b0 + r) * kc * 16;
    for (size_t c = 0; c < kc; c++) {
        const __m512i zero = _mm512_setzero_si512();
        const __m512i i0 = _mm512_loadu_si512(tb[0] + 16 * c);
        const __m512i i1 = RB > 1 ? _mm512_loadu_si512(tb[1] + 16 * c) : zero;
        const __m512i i2 = RB > 2 ? _mm512_loadu_si512(tb[2] + 16 * c) : zero;
        const __m512i i3 = RB > 3 ? _mm512_loadu_si512(tb[3] + 16 * c) : zero;
        const float *t0 = (const float *)tp[c];
        const float *t1 = MB > 1 ? (const float *)tp[kc + c] : NULL;
        const float *t2 = MB > 2 ? (const float *)tp[2 * kc + c] : NULL;
        const float *t3 = MB > 3 ? (const float *)tp[3 * kc + c] : NULL;
        if (MB == 1) prefetch_next_blocks(tiles, kc, nb, b0, RB, c);
#define F32_GROUP(g)                                                                      \
        do {                                                                              \
            const __m512i x0 = _mm512_srli_epi32(i0, 4 * (g)), x1 = _mm512_srli_epi32(i1, 4 * (g)); \
            const __m512i x2 = _mm512_srli_epi32(i2, 4 * (g)), x3 = _mm512_srli_epi32(i3, 4 * (g)); \
            BITNN_EACH(F32_ADD)                                                           \
        } while (0)
#define F32_ADD(i, r) \
        if (BITNN_LIVE(i, r)) \
            a##i##r = _mm512_add_ps(a##i##r, _mm512_permutexvar_ps(x##r, _mm512_loadu_ps(t##i + 16 * (g))));
        if (MB > 1) {
            /* 4 input rows: one group per iteration (unrolled, GCC 12
             * issues the later groups' permutes first and spills them) */
#pragma GCC unroll 1
            for (int g = 0; g < 8; g++) F32_GROUP(g);
        } else {
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) F32_GROUP(g);
        }
#undef F32_ADD
#undef F32_GROUP
    }
    BITNN_EACH(F32_STORE)
}

/* The blocks [b0, b1) for MB input rows: RB blocks at a time, then the rest. */
void bitnn_gemm_f32_avx512(const void *const *tp, size_t M, size_t kc,
                           const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias,
                           float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_AVX512);
#define F32_BLOCK(m, b, rb, mb) \
    run_blocks(tp + (m) * kc, kc, tiles, (n1 + 15) / 16, b, rb, mb, n0, n1, bias, z + (m) * ldz, ldz)
    BITNN_TILE_DRIVER(M, kc, n0, n1, 4, 4, F32_BLOCK);
#undef F32_BLOCK
}
#endif
