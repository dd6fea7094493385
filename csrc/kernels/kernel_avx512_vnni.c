/*
 * kernel_avx512_vnni.c - the int8 kernel for AVX-512 with VNNI (no GFNI or
 * VBMI needed: Cascade Lake and later). Compiled with -mavx512f -mavx512bw
 * -mavx512vnni (setup.py) and only called after bitnn_cpu_features()
 * reported all three with OS support. The GEMM body is kernel_q8_avx512.h;
 * the direct convolution (bitnn_conv_q8_fn) is below.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <math.h>

#include "kernel_common.h"

#define Q8_CONSTANTS const __m512i ones = _mm512_set1_epi8(1);
#define Q8_EXPAND(word) _mm512_maskz_mov_epi8(_load_mask64((__mmask64 *)(word)), ones)
#define Q8_LOADX(p) _mm512_loadu_si512(p)
#define Q8_NAME(x) vnni_##x
#define Q8_KERNEL bitnn_gemm_q8_avx512vnni
#include "kernel_q8_avx512.h"

/* ------------------------------------------------------ direct convolution */
/* MB positions (x .. x+MB-1 of one output row) x NB blocks of 16 output
 * channels: for each tap and group of 4 input channels, NB loads of 64 weight
 * bytes and MB broadcasts of a position's 4 activations feed MB * NB vpdpbusd
 * (weights as the unsigned operand, activations signed). a: the first tap of
 * position x in the padded map; w: block b0's weights. */
ALWAYS_INLINE void conv_block(const int8_t *a, size_t Wp, size_t Cp, size_t f, const uint8_t *w,
                              size_t bstride, const int NB, const int MB, size_t b0, size_t N,
                              float scale, const uint64_t *bias, float *z, __m512 *mx)
{
    __m512i acc[12][4];
    for (int i = 0; i < MB; i++)
        for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_si512();
    /* the f taps of a kernel row are f neighbouring pixels: f * Cp / 4
     * groups of 4 contiguous bytes, in the order of the weights */
    const size_t G = f * Cp / 4;
    for (size_t dy = 0; dy < f; dy++) {
        const int8_t *at = a + dy * Wp * Cp;
        for (size_t g = 0; g < G; g++, w += 64) {
            __m512i b[4];
            for (int j = 0; j < NB; j++) b[j] = _mm512_loadu_si512(w + j * bstride);
            for (int i = 0; i < MB; i++) {
                int32_t v;
                memcpy(&v, at + i * Cp + 4 * g, sizeof v);
                const __m512i av = _mm512_set1_epi32(v);
                for (int j = 0; j < NB; j++) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], b[j], av);
            }
        }
    }
    const __m512 sc = _mm512_set1_ps(scale);
    for (int j = 0; j < NB; j++) {
        const size_t blk = b0 + j;
        const __mmask16 in = _cvtu32_mask16(rows_in_block(blk, 0, N));
        const __m512 bv = _mm512_maskz_mov_ps(_cvtu32_mask16(bias_bits_block(bias, blk, N)),
                                              _mm512_set1_ps(1.0f));
        for (int i = 0; i < MB; i++) { /* bitnn_q8_out: (float)S * scale + bias bit */
            const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][j]), sc), bv);
            _mm512_mask_storeu_ps(z + i * N + 16 * blk, in, v);
            *mx = _mm512_mask_max_ps(*mx, in, *mx, v); /* the lanes stored */
        }
    }
}

/* One output row, blocks [b0, b0 + NB): MB positions at a time, then the
 * last W % MB together. */
#define CONV_CALL(NB, MB) \
    conv_block(a + x * Cp, Wp, Cp, f, w, bstride, NB, MB, b0, N, scale, bias, zr + x * N, &mx)
#define CONV_TAIL(NB, MB) \
    case MB: CONV_CALL(NB, MB); break
#define CONV_ROW(NB, MBMAX, ...)                                    \
    do {                                                            \
        size_t x = 0;                                               \
        for (; x + (MBMAX) <= W; x += (MBMAX)) CONV_CALL(NB, MBMAX); \
        switch (W - x) {                                            \
            __VA_ARGS__                                             \
        default: break;                                             \
        }                                                           \
    } while (0)

void bitnn_conv_q8_avx512vnni(const int8_t *xp, size_t Wp, size_t Cp, size_t f, size_t W,
                              const uint8_t *wx, size_t N, size_t y0, size_t y1, float scale,
                              const uint64_t *bias, float *z, float *zmax)
{
    const size_t nbk = (N + 15) / 16, bstride = f * f * Cp / 4 * 64;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (size_t y = y0; y < y1; y++) {
        const int8_t *a = xp + y * Wp * Cp;
        float *zr = z + y * W * N;
        /* 4 blocks a pass (64 channels), then what is left: 24 accumulators
         * where the row is wide enough */
        for (size_t b0 = 0; b0 < nbk;) {
            const uint8_t *w = wx + b0 * bstride;
            const size_t nb = nbk - b0 >= 4 ? 4 : nbk - b0;
            if (nb == 4)
                CONV_ROW(4, 6, CONV_TAIL(4, 1); CONV_TAIL(4, 2); CONV_TAIL(4, 3); CONV_TAIL(4, 4);
                         CONV_TAIL(4, 5););
            else if (nb == 3)
                CONV_ROW(3, 8, CONV_TAIL(3, 1); CONV_TAIL(3, 2); CONV_TAIL(3, 3); CONV_TAIL(3, 4);
                         CONV_TAIL(3, 5); CONV_TAIL(3, 6); CONV_TAIL(3, 7););
            else if (nb == 2)
                CONV_ROW(2, 12, CONV_TAIL(2, 1); CONV_TAIL(2, 2); CONV_TAIL(2, 3); CONV_TAIL(2, 4);
                         CONV_TAIL(2, 5); CONV_TAIL(2, 6); CONV_TAIL(2, 7); CONV_TAIL(2, 8);
                         CONV_TAIL(2, 9); CONV_TAIL(2, 10); CONV_TAIL(2, 11););
            else
                CONV_ROW(1, 12, CONV_TAIL(1, 1); CONV_TAIL(1, 2); CONV_TAIL(1, 3); CONV_TAIL(1, 4);
                         CONV_TAIL(1, 5); CONV_TAIL(1, 6); CONV_TAIL(1, 7); CONV_TAIL(1, 8);
                         CONV_TAIL(1, 9); CONV_TAIL(1, 10); CONV_TAIL(1, 11););
            b0 += nb;
        }
    }
    *zmax = _mm512_reduce_max_ps(mx);
}

/* ---------------------------------------------- int8 attention scores */
/* NB blocks of 16 keys at once (independent vpdpbusd chains; one chain per
 * block would wait on the instruction's latency): the keys are the unsigned
 * operand, flipped to k + 128 (xor 0x80), the query's 4 values of a group
 * broadcast as the signed one; 128 * sum(q) is taken off at the end (the
 * lanes wrap around, not saturate, so the result is exact wherever S fits).
 * The blocks ATTN_PF_BLOCKS ahead are prefetched: at long context a token's
 * keys come from L3 or memory. */
#define ATTN_PF_BLOCKS 4
ALWAYS_INLINE void attn_blocks(const int8_t *q, size_t hdp, const int8_t *kt, __m512i corr,
                               int32_t *S, const int NB)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i acc[4];
    for (int j = 0; j < NB; j++) acc[j] = _mm512_setzero_si512();
    const size_t bs = 16 * hdp;
    for (size_t g = 0; g < hdp / 4; g++) {
        int32_t v;
        memcpy(&v, q + 4 * g, sizeof v);
        const __m512i qv = _mm512_set1_epi32(v);
        for (int j = 0; j < NB; j++) {
            __builtin_prefetch(kt + (j + ATTN_PF_BLOCKS) * bs + 64 * g);
            acc[j] = _mm512_dpbusd_epi32(
                acc[j], _mm512_xor_si512(_mm512_loadu_si512(kt + j * bs + 64 * g), flip), qv);
        }
    }
    for (int j = 0; j < NB; j++) _mm512_storeu_si512(S + 16 * j, _mm512_sub_epi32(acc[j], corr));
}

void bitnn_attn_q8_avx512vnni(const int8_t *q, size_t hdp, const int8_t *kt, size_t nb,
                              int32_t *S)
{
    int32_t qsum = 0;
    for (size_t e = 0; e < hdp; e++) qsum += q[e];
    const __m512i corr = _mm512_set1_epi32(128 * qsum);
    size_t b = 0;
    for (; b + 4 <= nb; b += 4) attn_blocks(q, hdp, kt + b * 16 * hdp, corr, S + 16 * b, 4);
    for (; b < nb; b++) attn_blocks(q, hdp, kt + b * 16 * hdp, corr, S + 16 * b, 1);
}
#endif
