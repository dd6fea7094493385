/*
 * kernels.h - private: the table of compute kernels, indexed by instruction
 * set and numeric mode. A new numeric mode (for example int8 activations with
 * VNNI dot products) is a new column of the table, not a new dispatch path.
 */
#ifndef BITNN_KERNELS_H
#define BITNN_KERNELS_H

#include "bitnn.h"

typedef enum {
    BITNN_MODE_F32 = 0, /* fp32 activations, binary weights */
    BITNN_MODE_COUNT = 1
} bitnn_mode;

/* Raw binary GEMM over output rows [n0, n1):
 *   z[m*ldz + n] = sum_{k: W[n,k]=1} x[m*ldx + k] + bias_bit(n)
 * for m < M. w holds all N rows (wpr words each); bias is NULL or ceil(N/64)
 * words. Must follow the summation order of docs/packing.md exactly. */
typedef void (*bitnn_gemm_f32_fn)(const float *x, size_t ldx, size_t M, size_t K,
                                  const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                                  const uint64_t *bias, float *z, size_t ldz);

typedef struct {
    bitnn_gemm_f32_fn gemm_f32; /* BITNN_MODE_F32 */
} bitnn_kernel_set;

/* NULL entries where an isa is not compiled into this build. */
const bitnn_kernel_set *bitnn_kernels_for(int isa);

static inline float bitnn_bias_value(const uint64_t *bias, size_t n)
{
    return bias ? (float)((bias[n >> 6] >> (n & 63)) & 1u) : 0.0f;
}

void bitnn_gemm_f32_ref(const float *x, size_t ldx, size_t M, size_t K,
                        const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                        const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_f32_avx2(const float *x, size_t ldx, size_t M, size_t K,
                         const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                         const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_f32_avx512(const float *x, size_t ldx, size_t M, size_t K,
                           const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                           const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_f32_neon(const float *x, size_t ldx, size_t M, size_t K,
                         const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                         const uint64_t *bias, float *z, size_t ldz);

#endif
