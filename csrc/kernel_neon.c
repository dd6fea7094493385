/*
 * kernel_neon.c - NEON kernels for 64-bit ARM (NEON is part of the AArch64
 * baseline, so no extra flags are needed).
 *
 * Four 4-lane accumulators per (input row, output row): lanes k%16 in 0..3,
 * 4..7, 8..11 and 12..15, the 16-lane order of docs/packing.md. Each chunk's
 * 16 weight bits become lane masks with a bit test (vtst), and x AND mask is
 * added (+0.0 where the bit is 0).
 */
#if defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>
#include <string.h>

#include "kernel_common.h"


ALWAYS_INLINE float reduce16(const float32x4_t a[4])
{
    float32x4_t s8a = vaddq_f32(a[0], a[2]); /* a[j] + a[j+8], j = 0..3 */
    float32x4_t s8b = vaddq_f32(a[1], a[3]); /* a[j] + a[j+8], j = 4..7 */
    float32x4_t s4 = vaddq_f32(s8a, s8b);    /* + a[j+4]               */
    float32x2_t s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
    return vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);
}

ALWAYS_INLINE float32x4_t masked(float32x4_t xv, uint32x4_t bits, uint32x4_t sel)
{
    return vreinterpretq_f32_u32(vandq_u32(vtstq_u32(bits, sel), vreinterpretq_u32_f32(xv)));
}

ALWAYS_INLINE void block(const float *x, size_t ldx, size_t K, const uint64_t *w,
                         size_t wpr, size_t n, const int R, const int MB,
                         const uint64_t *bias, float *z, size_t ldz)
{
    static const uint32_t sel_init[16] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
                                          2048, 4096, 8192, 16384, 32768};
    uint32x4_t sel[4];
    for (int q = 0; q < 4; q++) sel[q] = vld1q_u32(sel_init + 4 * q);
    float32x4_t acc[2][4][4];
    const uint64_t *rows[4];
    for (int r = 0; r < R; r++) rows[r] = w + (n + r) * wpr;
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++)
            for (int q = 0; q < 4; q++) acc[i][r][q] = vdupq_n_f32(0.0f);

    const size_t chunks = (K + 15) / 16;
    float tail[2][16];
    for (size_t c = 0; c < chunks; c++) {
        float32x4_t xv[2][4];
        for (int i = 0; i < MB; i++) {
            const float *src = x + i * ldx + 16 * c;
            if (16 * c + 16 > K) {
                memset(tail[i], 0, sizeof tail[i]);
                memcpy(tail[i], src, (K - 16 * c) * sizeof(float));
                src = tail[i];
            }
            for (int q = 0; q < 4; q++) xv[i][q] = vld1q_f32(src + 4 * q);
        }
        for (int r = 0; r < R; r++) {
            uint32x4_t b = vdupq_n_u32(chunk16(rows[r], c));
            for (int i = 0; i < MB; i++)
                for (int q = 0; q < 4; q++)
                    acc[i][r][q] = vaddq_f32(acc[i][r][q], masked(xv[i][q], b, sel[q]));
        }
    }
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++)
            z[i * ldz + n + r] = reduce16(acc[i][r]) + bitnn_bias_value(bias, n + r);
}


void bitnn_gemm_f32_neon(const float *x, size_t ldx, size_t M, size_t K,
                         const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                         const uint64_t *bias, float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_NEON);
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
/* 16 weights a step: the two bytes of bits are duplicated over 8 lanes each,
 * vtst against (1, 2, ..., 128) makes a byte mask, the masked activations are
 * added pairwise into int16 lanes (vpadal), widened to int32 every 64 steps
 * (64 x 2 x 127 fits int16). */
ALWAYS_INLINE void q8_block(const int8_t *q, size_t ldq, const uint64_t *w, size_t wpr, size_t n,
                            const int R, const int MB, const float *scale, const uint64_t *bias,
                            float *z, size_t ldz)
{
    static const uint8_t sel_init[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t sel = vld1q_u8(sel_init);
    int32x4_t acc[2][4];
    int16x8_t a16[2][4];
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++) acc[i][r] = vdupq_n_s32(0), a16[i][r] = vdupq_n_s16(0);
    const size_t steps = 4 * wpr;
    for (size_t c = 0; c < steps; c++) {
        int8x16_t xv[2];
        for (int i = 0; i < MB; i++) xv[i] = vld1q_s8(q + i * ldq + 16 * c);
        for (int r = 0; r < R; r++) {
            const uint16_t bits = chunk16(w + (n + r) * wpr, c);
            const uint8x16_t m = vtstq_u8(vcombine_u8(vdup_n_u8((uint8_t)bits),
                                                      vdup_n_u8((uint8_t)(bits >> 8))), sel);
            for (int i = 0; i < MB; i++)
                a16[i][r] = vpadalq_s8(a16[i][r], vandq_s8(xv[i], vreinterpretq_s8_u8(m)));
        }
        if ((c & 63) == 63)
            for (int i = 0; i < MB; i++)
                for (int r = 0; r < R; r++)
                    acc[i][r] = vpadalq_s16(acc[i][r], a16[i][r]), a16[i][r] = vdupq_n_s16(0);
    }
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++) {
            const int32x4_t t = vpadalq_s16(acc[i][r], a16[i][r]);
            const int32_t s = vgetq_lane_s32(t, 0) + vgetq_lane_s32(t, 1) +
                              vgetq_lane_s32(t, 2) + vgetq_lane_s32(t, 3);
            z[i * ldz + n + r] = bitnn_q8_out(s, scale[i], bias, n + r);
        }
}

void bitnn_gemm_q8_neon(const int8_t *q, size_t ldq, size_t M, size_t K, const uint64_t *w,
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
