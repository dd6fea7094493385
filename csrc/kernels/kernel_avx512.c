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


/* MB input rows (row i's chunk c at tp[i * kc + c]) x RB blocks of 16 output rows from
 * block b0: acc[i][r] lane l = row 16 (b0 + r) + l. The 4-bit indices of 8
 * groups sit in one 32-bit lane; a shift brings group g down and vpermps
 * reads the 16 rows' entries of group g's table (a memory operand) at once. */
ALWAYS_INLINE void tblock(const void *const *tp, size_t kc, const uint32_t *tiles,
                          size_t b0, const int RB, const int MB, __m512 acc[4][4])
{
    const uint32_t *tb[4];
    for (int r = 0; r < RB; r++) tb[r] = tiles + (b0 + r) * kc * 16;
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < RB; r++) acc[i][r] = _mm512_setzero_ps();
    for (size_t c = 0; c < kc; c++) {
        __m512i idx[4];
        for (int r = 0; r < RB; r++) idx[r] = _mm512_loadu_si512(tb[r] + 16 * c);
        const float *t[4];
        for (int i = 0; i < MB; i++) t[i] = (const float *)tp[i * kc + c];
#define BITNN_GROUP(g)                                                                      \
        for (int r = 0; r < RB; r++) {                                                      \
            const __m512i ix = (g) ? _mm512_srli_epi32(idx[r], 4 * (g)) : idx[r];            \
            for (int i = 0; i < MB; i++)                                                    \
                acc[i][r] = _mm512_add_ps(acc[i][r],                                        \
                                          _mm512_permutexvar_ps(ix, _mm512_loadu_ps(t[i] + 16 * (g)))); \
        }
        BITNN_GROUP(0) BITNN_GROUP(1) BITNN_GROUP(2) BITNN_GROUP(3)
        BITNN_GROUP(4) BITNN_GROUP(5) BITNN_GROUP(6) BITNN_GROUP(7)
#undef BITNN_GROUP
    }
}

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
                              size_t b0, const int RB, const int MB, size_t n0, size_t n1,
                              const uint64_t *bias, float *z, size_t ldz)
{
    __m512 acc[4][4];
    tblock(tp, kc, tiles, b0, RB, MB, acc);
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < RB; r++) tstore(acc[i][r], b0 + r, n0, n1, bias, z + i * ldz);
}

/* The blocks [b0, b1) for MB input rows: RB blocks at a time, then the rest. */
void bitnn_gemm_f32_avx512(const void *const *tp, size_t M, size_t kc,
                           const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias,
                           float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_AVX512);
#define F32_BLOCK(m, b, rb, mb) \
    run_blocks(tp + (m) * kc, kc, tiles, b, rb, mb, n0, n1, bias, z + (m) * ldz, ldz)
    BITNN_TILE_DRIVER(M, kc, n0, n1, 4, 4, F32_BLOCK);
#undef F32_BLOCK
}
#endif
