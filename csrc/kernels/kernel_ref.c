/*
 * kernel_ref.c - the scalar reference kernels. Always compiled, with the
 * baseline flags of the target. Every SIMD kernel must produce exactly the
 * same bits as these (docs/packing.md, "Summation order").
 */
#include "kernel_common.h"

void bitnn_gemm_f32_ref(const void *const *tp, size_t M, size_t kc,
                        const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias,
                        float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_REF);
    for (size_t m = 0; m < M; m++) {
        for (size_t n = n0; n < n1; n++) {
            float acc = 0.0f;
            for (size_t g = 0; g < 8 * kc; g++)
                acc += ((const float *)tp[m * kc + g / 8])[16 * (g % 8) + tile_index(tiles, kc, n, g)];
            z[m * ldz + n] = acc + bitnn_bias_value(bias, n);
        }
    }
}

void bitnn_gemm_q8_ref(const int8_t *q, size_t ldq, size_t M, size_t K, const uint64_t *w,
                       size_t wpr, size_t n0, size_t n1, const float *scale,
                       const uint64_t *bias, float *z, size_t ldz)
{
    for (size_t m = 0; m < M; m++) {
        const int8_t *qm = q + m * ldq;
        for (size_t n = n0; n < n1; n++) {
            const uint64_t *row = w + n * wpr;
            int32_t s = 0;
            for (size_t k = 0; k < K; k++)
                if ((row[k >> 6] >> (k & 63)) & 1u) s += qm[k];
            z[m * ldz + n] = bitnn_q8_out(s, scale[m], bias, n);
        }
    }
}
