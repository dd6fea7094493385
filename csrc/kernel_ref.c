/*
 * kernel_ref.c - the scalar reference kernels. Always compiled, with the
 * baseline flags of the target. Every SIMD kernel must produce exactly the
 * same bits as these (docs/packing.md, "Summation order").
 */
#include "kernel_common.h"

/* The fixed pairwise reduction of the 16 lane accumulators. */
static float reduce16(float a[16])
{
    for (int j = 0; j < 8; j++) a[j] += a[j + 8];
    for (int j = 0; j < 4; j++) a[j] += a[j + 4];
    for (int j = 0; j < 2; j++) a[j] += a[j + 2];
    return a[0] + a[1];
}

void bitnn_gemm_f32_ref(const float *x, size_t ldx, size_t M, size_t K,
                        const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                        const uint64_t *bias, float *z, size_t ldz)
{
    BITNN_COUNT_CALL(BITNN_ISA_REF);
    for (size_t m = 0; m < M; m++) {
        const float *xm = x + m * ldx;
        for (size_t n = n0; n < n1; n++) {
            const uint64_t *row = w + n * wpr;
            float a[16] = {0};
            for (size_t k = 0; k < K; k++)
                if ((row[k >> 6] >> (k & 63)) & 1u) a[k & 15] += xm[k];
            z[m * ldz + n] = reduce16(a) + bitnn_bias_value(bias, n);
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
