/*
 * kernel_avx2.c - AVX2 kernels. Compiled with -mavx2 (setup.py) and only
 * called after bitnn_cpu_features() reported AVX2 with OS support.
 *
 * Two 8-lane accumulators per (input row, output row): lanes k%16 in 0..7 and
 * in 8..15, so the order is the 16-lane order of docs/packing.md. AVX2 has no
 * mask registers: the 16 weight bits of a chunk become two lane masks by
 * broadcast + AND + compare, and x AND mask is added (+0.0 where the bit is 0).
 */
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"


ALWAYS_INLINE float reduce16(__m256 lo, __m256 hi)
{
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

ALWAYS_INLINE void block(const float *x, size_t ldx, size_t K, const uint64_t *w,
                         size_t wpr, size_t n, const int R, const int MB,
                         const uint64_t *bias, float *z, size_t ldz)
{
    const __m256i sel_lo = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i sel_hi = _mm256_setr_epi32(256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
    __m256 lo[2][4], hi[2][4];
    const uint64_t *rows[4];
    for (int r = 0; r < R; r++) rows[r] = w + (n + r) * wpr;
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++) lo[i][r] = hi[i][r] = _mm256_setzero_ps();

    const size_t chunks = (K + 15) / 16;
    float tail[2][16];
    for (size_t c = 0; c < chunks; c++) {
        __m256 xl[2], xh[2];
        if (16 * c + 16 <= K) {
            for (int i = 0; i < MB; i++) {
                xl[i] = _mm256_loadu_ps(x + i * ldx + 16 * c);
                xh[i] = _mm256_loadu_ps(x + i * ldx + 16 * c + 8);
            }
        } else {
            /* Last partial chunk: copy into a zero-padded buffer (padding bits of
             * w are zero, so the extra lanes add +0.0). */
            for (int i = 0; i < MB; i++) {
                memset(tail[i], 0, sizeof tail[i]);
                memcpy(tail[i], x + i * ldx + 16 * c, (K - 16 * c) * sizeof(float));
                xl[i] = _mm256_loadu_ps(tail[i]);
                xh[i] = _mm256_loadu_ps(tail[i] + 8);
            }
        }
        for (int r = 0; r < R; r++) {
            __m256i b = _mm256_set1_epi32(chunk16(rows[r], c));
            __m256 ml = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, sel_lo), sel_lo));
            __m256 mh = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, sel_hi), sel_hi));
            for (int i = 0; i < MB; i++) {
                lo[i][r] = _mm256_add_ps(lo[i][r], _mm256_and_ps(ml, xl[i]));
                hi[i][r] = _mm256_add_ps(hi[i][r], _mm256_and_ps(mh, xh[i]));
            }
        }
    }
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++)
            z[i * ldz + n + r] = reduce16(lo[i][r], hi[i][r]) + bitnn_bias_value(bias, n + r);
}


void bitnn_gemm_f32_avx2(const float *x, size_t ldx, size_t M, size_t K,
                         const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                         const uint64_t *bias, float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_AVX2);
    size_t slab = SLAB_BYTES / (wpr * 8);
    if (slab < 4) slab = 4;
    for (size_t s0 = n0; s0 < n1; s0 += slab) {
        const size_t s1 = (n1 - s0 > slab) ? s0 + slab : n1;
        size_t m = 0;
        for (; m + 2 <= M; m += 2) {
            size_t n = s0;
            for (; n + 2 <= s1; n += 2) block(x + m * ldx, ldx, K, w, wpr, n, 2, 2, bias, z + m * ldz, ldz);
            for (; n < s1; n++) block(x + m * ldx, ldx, K, w, wpr, n, 1, 2, bias, z + m * ldz, ldz);
        }
        for (; m < M; m++) {
            size_t n = s0;
            for (; n + 4 <= s1; n += 4) block(x + m * ldx, ldx, K, w, wpr, n, 4, 1, bias, z + m * ldz, ldz);
            for (; n < s1; n++) block(x + m * ldx, ldx, K, w, wpr, n, 1, 1, bias, z + m * ldz, ldz);
        }
    }
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
    size_t slab = SLAB_BYTES / (wpr * 8);
    if (slab < 4) slab = 4;
    for (size_t s0 = n0; s0 < n1; s0 += slab) {
        const size_t s1 = (n1 - s0 > slab) ? s0 + slab : n1;
        size_t m = 0;
        for (; m + 2 <= M; m += 2) {
            size_t n = s0;
            for (; n + 4 <= s1; n += 4) q8_block(q + m * ldq, ldq, w, wpr, n, 4, 2, scale + m, bias, z + m * ldz, ldz);
            for (; n < s1; n++) q8_block(q + m * ldq, ldq, w, wpr, n, 1, 2, scale + m, bias, z + m * ldz, ldz);
        }
        for (; m < M; m++) {
            size_t n = s0;
            for (; n + 4 <= s1; n += 4) q8_block(q + m * ldq, ldq, w, wpr, n, 4, 1, scale + m, bias, z + m * ldz, ldz);
            for (; n < s1; n++) q8_block(q + m * ldq, ldq, w, wpr, n, 1, 1, scale + m, bias, z + m * ldz, ldz);
        }
    }
}
#endif
