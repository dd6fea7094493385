/*
 * kernel_neon.c - NEON kernels for 64-bit ARM (NEON is part of the AArch64
 * baseline, so no extra flags are needed).
 *
 * fp32: the table lookups of docs/packing.md (tbl over a table's bytes) on
 * 4 output rows per register; int8: widening adds of bit-selected bytes.
 */
#if defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>
#include <string.h>

#include "kernel_common.h"


/* The 4 float entries of a 16-entry table (64 bytes) for 4 lanes of 4-bit
 * indices: tbl over the table's bytes at 4 idx + 0..3. */
ALWAYS_INLINE float32x4_t lookup(const float *t, uint32x4_t idx)
{
    const uint8x16x4_t tb = vld1q_u8_x4((const uint8_t *)t);
    const uint32x4_t bytes = vmlaq_n_u32(vdupq_n_u32(0x03020100u), idx, 0x04040404u);
    return vreinterpretq_f32_u8(vqtbl4q_u8(tb, vreinterpretq_u8_u32(bytes)));
}

/* MB input rows x one block of 16 output rows (four 4-lane quarters), the
 * chain of docs/packing.md. */
ALWAYS_INLINE void run_block(const void *const *tp, size_t kc, const uint32_t *tiles,
                             size_t blk, const int MB, size_t n0, size_t n1, const uint64_t *bias,
                             float *z, size_t ldz)
{
    float32x4_t acc[4][4];
    const uint32_t *tile = tiles + blk * kc * 16;
    const uint32x4_t nib = vdupq_n_u32(15u);
    for (int i = 0; i < MB; i++)
        for (int h = 0; h < 4; h++) acc[i][h] = vdupq_n_f32(0.0f);
    for (size_t c = 0; c < kc; c++) {
        uint32x4_t v[4];
        for (int h = 0; h < 4; h++) v[h] = vld1q_u32(tile + 16 * c + 4 * h);
        for (int g = 0; g < 8; g++) {
            for (int h = 0; h < 4; h++) {
                const uint32x4_t ix = vandq_u32(v[h], nib);
                for (int i = 0; i < MB; i++)
                    acc[i][h] = vaddq_f32(acc[i][h], lookup((const float *)tp[i * kc + c] + 16 * g, ix));
                v[h] = vshrq_n_u32(v[h], 4);
            }
        }
    }
    const uint32_t bb = bias_bits_block(bias, blk, n1), in = rows_in_block(blk, n0, n1);
    for (int i = 0; i < MB; i++) {
        float v[16];
        for (int h = 0; h < 4; h++) vst1q_f32(v + 4 * h, acc[i][h]);
        store_rows16(v, bb, in, z + i * ldz + 16 * blk);
    }
}

void bitnn_gemm_f32_neon(const void *const *tp, size_t M, size_t kc,
                         const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias,
                         float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_NEON);
    /* one block a pass (rb is always 1 here) */
#define F32_BLOCK(m, b, rb, mb) \
    run_block(tp + (m) * kc, kc, tiles, b, mb, n0, n1, bias, z + (m) * ldz, ldz)
    BITNN_TILE_DRIVER(M, kc, n0, n1, 1, 1, F32_BLOCK);
#undef F32_BLOCK
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
#define Q8_BLOCK(m, n, r, mb) \
    q8_block(q + (m) * ldq, ldq, w, wpr, n, r, mb, scale + (m), bias, z + (m) * ldz, ldz)
    BITNN_ROW_DRIVER(M, wpr, n0, n1, 4, 2, 4, Q8_BLOCK);
#undef Q8_BLOCK
}
#endif
