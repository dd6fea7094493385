/*
 * kernel_avx512.c - AVX-512 kernels. Compiled with -mavx512f -mavx512bw
 * (setup.py) and only called after bitnn_cpu_features() reported AVX-512F and
 * BW with OS support.
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


/* Mask of chunk c's 16 weight bits, made in the vector unit: broadcast the
 * 16 bits to every 32-bit lane and test lane j against bit j. */
ALWAYS_INLINE __mmask16 mask16(const uint64_t *row, size_t c, __m512i lane_bits)
{
    return _mm512_test_epi32_mask(_mm512_set1_epi16((short)chunk16(row, c)), lane_bits);
}

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

/* The 16 accumulators of a 4 x 4 block (acc[i][r]: input row i, output row
 * r) reduced together with shuffles: every level is the same pairwise step as
 * reduce16 (j + 8, j + 4, j + 2, j + 1), applied to several accumulators at
 * once, so each result has exactly the reference's bits. */
ALWAYS_INLINE void reduce_store_4x4(__m512 acc[4][8], float *z, size_t ldz, size_t n,
                                    const uint64_t *bias)
{
    __m512 b8[8], c4[4], d2[2];
    for (int p = 0; p < 8; p++) { /* A = acc[p/2][2(p%2)], A' = acc[p/2][2(p%2)+1] */
        const __m512 a = acc[p / 2][2 * (p % 2)], a2 = acc[p / 2][2 * (p % 2) + 1];
        b8[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a, a2, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, a2, _MM_SHUFFLE(3, 2, 3, 2)));
    } /* b8[p] quarters: s8 of A (lanes 0-3, 4-7), s8 of A' (lanes 0-3, 4-7) */
    for (int u = 0; u < 4; u++) /* c4[u] quarter r: s4 of acc[u][r] */
        c4[u] = _mm512_add_ps(_mm512_shuffle_f32x4(b8[2 * u], b8[2 * u + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(b8[2 * u], b8[2 * u + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int v = 0; v < 2; v++) /* per quarter r: s2 of acc[2v][r] (0, 1), acc[2v+1][r] (2, 3) */
        d2[v] = _mm512_add_ps(_mm512_shuffle_ps(c4[2 * v], c4[2 * v + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(c4[2 * v], c4[2 * v + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* element 4r + i: s2[0] + s2[1] of acc[i][r] */
    __m512 e = _mm512_add_ps(_mm512_shuffle_ps(d2[0], d2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(d2[0], d2[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const float b0 = bitnn_bias_value(bias, n), b1 = bitnn_bias_value(bias, n + 1),
                b2 = bitnn_bias_value(bias, n + 2), b3 = bitnn_bias_value(bias, n + 3);
    e = _mm512_add_ps(e, _mm512_setr_ps(b0, b0, b0, b0, b1, b1, b1, b1, b2, b2, b2, b2, b3, b3,
                                        b3, b3));
    /* transpose to element 4i + r and store row i's four values */
    e = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7,
                                                11, 15), e);
    _mm_storeu_ps(z + n, _mm512_castps512_ps128(e));
    _mm_storeu_ps(z + ldz + n, _mm512_extractf32x4_ps(e, 1));
    _mm_storeu_ps(z + 2 * ldz + n, _mm512_extractf32x4_ps(e, 2));
    _mm_storeu_ps(z + 3 * ldz + n, _mm512_extractf32x4_ps(e, 3));
}

/* The same for one input row and 8 output rows (acc[0][r]): element r of the
 * stored vector is reduce16(acc[0][r]), bit for bit. */
ALWAYS_INLINE void reduce_store_1x8(__m512 acc[4][8], float *z, size_t n, const uint64_t *bias)
{
    __m512 b8[4], c4[2];
    for (int p = 0; p < 4; p++) /* quarters: s8 of row 2p (0-3, 4-7), s8 of row 2p+1 */
        b8[p] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[0][2 * p], acc[0][2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(acc[0][2 * p], acc[0][2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int u = 0; u < 2; u++) /* quarter q: s4 of row 4u + q */
        c4[u] = _mm512_add_ps(_mm512_shuffle_f32x4(b8[2 * u], b8[2 * u + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(b8[2 * u], b8[2 * u + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* quarter q: s2 of row q (0, 1), s2 of row 4 + q (2, 3) */
    const __m512 d = _mm512_add_ps(_mm512_shuffle_ps(c4[0], c4[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(c4[0], c4[1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* quarter q: element 0 = row q, element 1 = row 4 + q */
    __m512 e = _mm512_add_ps(_mm512_shuffle_ps(d, d, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(d, d, _MM_SHUFFLE(3, 1, 3, 1)));
    e = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0), e);
    __m256 out = _mm512_castps512_ps256(e);
    if (bias) {
        float b[8];
        for (int r = 0; r < 8; r++) b[r] = bitnn_bias_value(bias, n + r);
        out = _mm256_add_ps(out, _mm256_loadu_ps(b));
    }
    _mm256_storeu_ps(z + n, out);
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

    const __m512i lane_bits = _mm512_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                                4096, 8192, 16384, 32768);
    const size_t full = K / 16;
    for (size_t c = 0; c < full; c++) {
        __m512 xv[4];
        /* One input row streams many weight rows: fetch the next R rows a
         * cache line (32 chunks of 16 bits) ahead of time. */
        if (MB == 1 && (c & 31) == 0)
            for (int r = 0; r < R; r++)
                _mm_prefetch((const char *)(rows[r] + R * wpr) + 2 * c, _MM_HINT_T0);
        for (int i = 0; i < MB; i++) xv[i] = _mm512_loadu_ps(x + i * ldx + 16 * c);
        for (int r = 0; r < R; r++) {
            __mmask16 k = mask16(rows[r], c, lane_bits);
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
    if (R == 4 && MB == 4) {
        reduce_store_4x4(acc, z, ldz, n, bias);
        return;
    }
    if (R == 8 && MB == 1) {
        reduce_store_1x8(acc, z, n, bias);
        return;
    }
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++)
            z[i * ldz + n + r] = reduce16(acc[i][r]) + bitnn_bias_value(bias, n + r);
}


void bitnn_gemm_f32_avx512(const float *x, size_t ldx, size_t M, size_t K,
                           const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                           const uint64_t *bias, float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_AVX512);
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
