/*
 * kernel_avx2.c - AVX2 kernels. Compiled with -mavx2 (setup.py) and only
 * called after bitnn_cpu_features() reported AVX2 with OS support.
 *
 * fp32: the table lookups of docs/packing.md on 8 output rows per register;
 * int8: 32 weights expanded to bytes and multiplied with vpmaddubsw.
 */
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"


/* MB input rows x one block of 16 output rows (two 8-lane halves): for each
 * group of 4 inputs, the 16-entry table is two 8-entry halves; vpermps reads
 * both with the low 3 bits of each row's index and bit 3 (moved to the sign)
 * chooses between them, then one add: the chain of docs/packing.md. */
ALWAYS_INLINE void tblock(const void *const *tp, size_t kc, const uint32_t *tile,
                          const int MB, __m256 acc[4][2])
{
    for (int i = 0; i < MB; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (size_t c = 0; c < kc; c++) {
        const __m256i v[2] = {_mm256_loadu_si256((const __m256i *)(tile + 16 * c)),
                              _mm256_loadu_si256((const __m256i *)(tile + 16 * c + 8))};
        for (int g = 0; g < 8; g++)
            for (int h = 0; h < 2; h++) {
                const __m256i ix = _mm256_srli_epi32(v[h], 4 * g);
                const __m256 hi_sel = _mm256_castsi256_ps(_mm256_slli_epi32(ix, 28));
                for (int i = 0; i < MB; i++) {
                    const float *tg = (const float *)tp[i * kc + c] + 16 * g;
                    const __m256 e = _mm256_blendv_ps(
                        _mm256_permutevar8x32_ps(_mm256_loadu_ps(tg), ix),
                        _mm256_permutevar8x32_ps(_mm256_loadu_ps(tg + 8), ix), hi_sel);
                    acc[i][h] = _mm256_add_ps(acc[i][h], e);
                }
            }
    }
}

ALWAYS_INLINE void run_block(const void *const *tp, size_t kc, const uint32_t *tiles,
                             size_t blk, const int MB, size_t n0, size_t n1, const uint64_t *bias,
                             float *z, size_t ldz)
{
    __m256 acc[4][2];
    tblock(tp, kc, tiles + blk * kc * 16, MB, acc);
    const uint32_t bb = bias_bits_block(bias, blk, n1), in = rows_in_block(blk, n0, n1);
    for (int i = 0; i < MB; i++) {
        float v[16];
        _mm256_storeu_ps(v, acc[i][0]);
        _mm256_storeu_ps(v + 8, acc[i][1]);
        store_rows16(v, bb, in, z + i * ldz + 16 * blk);
    }
}

void bitnn_gemm_f32_avx2(const void *const *tp, size_t M, size_t kc,
                         const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias,
                         float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_AVX2);
    /* one block a pass (rb is always 1 here) */
#define F32_BLOCK(m, b, rb, mb) \
    run_block(tp + (m) * kc, kc, tiles, b, mb, n0, n1, bias, z + (m) * ldz, ldz)
    BITNN_TILE_DRIVER(M, kc, n0, n1, 1, 1, F32_BLOCK);
#undef F32_BLOCK
}

/* ------------------------------------------------------------------ int8 */
/* 32 weight bits -> 32 bytes of 0 or 1: broadcast, replicate byte i of the
 * bits into bytes 8i..8i+7 (vpshufb), keep bit (j % 8) of byte j, clamp to 1. */
ALWAYS_INLINE __m256i expand32(uint32_t bits)
{
    const __m256i rep = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                         2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), rep), sel);
    return _mm256_min_epu8(v, _mm256_set1_epi8(1));
}

ALWAYS_INLINE int32_t hsum8(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* R output rows from n, MB input rows: 32 weights a step, products summed
 * with maddubs (u8 weights x s8 activations, pairs fit int16) + madd. */
ALWAYS_INLINE void q8_block(const int8_t *q, size_t ldq, const uint64_t *w, size_t wpr, size_t n,
                            const int R, const int MB, const float *scale, const uint64_t *bias,
                            float *z, size_t ldz)
{
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i acc[2][4];
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++) acc[i][r] = _mm256_setzero_si256();
    const size_t steps = 2 * wpr;
    for (size_t c = 0; c < steps; c++) {
        __m256i xv[2];
        for (int i = 0; i < MB; i++) xv[i] = _mm256_loadu_si256((const __m256i *)(q + i * ldq + 32 * c));
        for (int r = 0; r < R; r++) {
            uint32_t bits;
            memcpy(&bits, (const unsigned char *)(w + (n + r) * wpr) + 4 * c, sizeof bits);
            const __m256i we = expand32(bits);
            for (int i = 0; i < MB; i++)
                acc[i][r] = _mm256_add_epi32(acc[i][r], _mm256_madd_epi16(_mm256_maddubs_epi16(we, xv[i]), ones16));
        }
    }
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++)
            z[i * ldz + n + r] = bitnn_q8_out(hsum8(acc[i][r]), scale[i], bias, n + r);
}

void bitnn_gemm_q8_avx2(const int8_t *q, size_t ldq, size_t M, size_t K, const uint64_t *w,
                        size_t wpr, size_t n0, size_t n1, const float *scale,
                        const uint64_t *bias, float *z, size_t ldz)
{
    (void)K;
#define Q8_BLOCK(m, n, r, mb) \
    q8_block(q + (m) * ldq, ldq, w, wpr, n, r, mb, scale + (m), bias, z + (m) * ldz, ldz)
    BITNN_ROW_DRIVER(M, wpr, n0, n1, 4, 2, 4, Q8_BLOCK);
#undef Q8_BLOCK
}
#endif
