/*
 * kernel_avx512.c - AVX-512F kernels. Compiled with -mavx512f (setup.py) and
 * only called after bitnn_cpu_features() reported AVX-512F with OS support.
 *
 * One 16-lane zmm accumulator per (input row, output row): lane j holds the
 * sum of x[k] with k % 16 == j, added in increasing k through a masked add
 * whose mask is the 16 weight bits of that chunk. This is the order of
 * docs/packing.md, so the result equals the scalar reference bit for bit.
 */
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"


ALWAYS_INLINE float reduce16(__m512 a)
{
    __m256 lo = _mm512_castps512_ps256(a);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    __m256 s8 = _mm256_add_ps(lo, hi);                       /* a[j] + a[j+8] */
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8),       /* + a[j+4]      */
                           _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));       /* + a[j+2]      */
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));   /* a[0] + a[1]   */
    return _mm_cvtss_f32(s1);
}

/* R output rows starting at n, MB input rows starting at x. */
ALWAYS_INLINE void block(const float *x, size_t ldx, size_t K, const uint64_t *w,
                         size_t wpr, size_t n, const int R, const int MB,
                         const uint64_t *bias, float *z, size_t ldz)
{
    __m512 acc[4][8];
    const uint64_t *rows[8];
    for (int r = 0; r < R; r++) rows[r] = w + (n + r) * wpr;
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++) acc[i][r] = _mm512_setzero_ps();

    const size_t full = K / 16;
    for (size_t c = 0; c < full; c++) {
        __m512 xv[4];
        for (int i = 0; i < MB; i++) xv[i] = _mm512_loadu_ps(x + i * ldx + 16 * c);
        for (int r = 0; r < R; r++) {
            __mmask16 k = _cvtu32_mask16(chunk16(rows[r], c));
            for (int i = 0; i < MB; i++)
                acc[i][r] = _mm512_mask_add_ps(acc[i][r], k, acc[i][r], xv[i]);
        }
    }
    if (K % 16) {
        /* Padding bits are zero, and the masked load keeps x's tail in bounds. */
        const __mmask16 tail = _cvtu32_mask16((1u << (K % 16)) - 1u);
        __m512 xv[4];
        for (int i = 0; i < MB; i++) xv[i] = _mm512_maskz_loadu_ps(tail, x + i * ldx + 16 * full);
        for (int r = 0; r < R; r++) {
            __mmask16 k = _cvtu32_mask16(chunk16(rows[r], full));
            for (int i = 0; i < MB; i++)
                acc[i][r] = _mm512_mask_add_ps(acc[i][r], k, acc[i][r], xv[i]);
        }
    }
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++)
            z[i * ldz + n + r] = reduce16(acc[i][r]) + bitnn_bias_value(bias, n + r);
}


void bitnn_gemm_f32_avx512(const float *x, size_t ldx, size_t M, size_t K,
                           const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                           const uint64_t *bias, float *z, size_t ldz)
{
    size_t slab = SLAB_BYTES / (wpr * 8);
    if (slab < 8) slab = 8;
    for (size_t s0 = n0; s0 < n1; s0 += slab) {
        const size_t s1 = (n1 - s0 > slab) ? s0 + slab : n1;
        size_t m = 0;
        for (; m + 4 <= M; m += 4) {
            const float *xm = x + m * ldx;
            float *zm = z + m * ldz;
            size_t n = s0;
            for (; n + 4 <= s1; n += 4) block(xm, ldx, K, w, wpr, n, 4, 4, bias, zm, ldz);
            for (; n < s1; n++) block(xm, ldx, K, w, wpr, n, 1, 4, bias, zm, ldz);
        }
        for (; m < M; m++) {
            const float *xm = x + m * ldx;
            float *zm = z + m * ldz;
            size_t n = s0;
            for (; n + 8 <= s1; n += 8) block(xm, ldx, K, w, wpr, n, 8, 1, bias, zm, ldz);
            for (; n < s1; n++) block(xm, ldx, K, w, wpr, n, 1, 1, bias, zm, ldz);
        }
    }
}
#endif
