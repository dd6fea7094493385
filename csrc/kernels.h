/*
 * kernels.h - private: the table of compute kernels, indexed by instruction
 * set (bitnn_isa) and numeric mode (bitnn_precision, bitnn.h). A new numeric
 * mode is a new member of bitnn_kernel_set, not a new dispatch path; the
 * tiling over threads, the quantization of the activations and the epilogue
 * are shared (ops.c), each ISA file supplies only its inner blocks.
 */
#ifndef BITNN_KERNELS_H
#define BITNN_KERNELS_H

#include <stdatomic.h>

#include "bitnn.h"

/* Raw binary GEMM over output rows [n0, n1):
 *   z[m*ldz + n] = sum_{k: W[n,k]=1} x[m*ldx + k] + bias_bit(n)
 * for m < M. w holds all N rows (wpr words each); bias is NULL or ceil(N/64)
 * words. Must follow the summation order of docs/packing.md exactly. */
typedef void (*bitnn_gemm_f32_fn)(const float *x, size_t ldx, size_t M, size_t K,
                                  const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                                  const uint64_t *bias, float *z, size_t ldz);

/* Integer binary GEMM over output rows [n0, n1) (BITNN_PRECISION_INT8):
 *   S = sum_{k: W[n,k]=1} q[m*ldq + k]          (exact, int32)
 *   z[m*ldz + n] = (float)S * scale[m] + bias_bit(n)   (fp32, in this order)
 * q holds M rows of int8 activations, each zero-padded to ldq = 64 * wpr bytes
 * (kernels read whole 64-bit weight words and the bytes under them). Integer
 * sums are exact, so any order gives the same bits; the epilogue is the one of
 * bitnn_q8_out (kernel_common.h). */
typedef void (*bitnn_gemm_q8_fn)(const int8_t *q, size_t ldq, size_t M, size_t K,
                                 const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                                 const float *scale, const uint64_t *bias, float *z, size_t ldz);

typedef struct {
    bitnn_gemm_f32_fn gemm_f32; /* BITNN_PRECISION_FP32 */
    bitnn_gemm_q8_fn gemm_q8;   /* BITNN_PRECISION_INT8 */
} bitnn_kernel_set;

/* Calls of each isa's fp32 GEMM since the library was loaded: every kernel counts
 * itself on entry, so a test can see which kernel really ran (a table entry
 * pointing at the wrong function shows up). Read with bitnn_kernel_calls(). */
extern atomic_ullong bitnn_kernel_call_count[BITNN_ISA_COUNT];
#define BITNN_COUNT_CALL(isa) \
    atomic_fetch_add_explicit(&bitnn_kernel_call_count[isa], 1, memory_order_relaxed)

/* NULL entries where an isa is not compiled into this build. The int8 entry
 * of an isa may be a kernel of a lower isa where this CPU lacks an extension
 * (AVX-512 without VNNI uses the AVX2 int8 kernel). */
const bitnn_kernel_set *bitnn_kernels_for(int isa);

/* Name of the int8 kernel that bitnn_kernels_for(isa) uses ("avx512-gfni",
 * "avx512-vnni", or the isa's name). */
const char *bitnn_q8_kernel_name(int isa);

/* Quantize x[0..K) to int8 with one symmetric scale: amax = max |x|,
 * q = round_half_even(x * (127 / amax)) in fp32, bytes K..ldq zeroed; returns
 * amax / 127 (0 when x is all zero). Shared by every caller so that every
 * kernel sees the same q. */
float bitnn_quantize_row(const float *x, size_t K, int8_t *q, size_t ldq);
/* The same with amax given (a scale shared by several rows). */
void bitnn_quantize_with(const float *x, size_t K, float amax, int8_t *q, size_t ldq);
float bitnn_absmax(const float *x, size_t n);

/* Shared code that is not a table kernel (Normalize, quantization, pooling)
 * gets one clone per x86 vector width, chosen by the loader (ifunc) from the
 * CPU. Its arithmetic is elementwise IEEE operations in a fixed order (no
 * -ffast-math, no FMA contraction), so every clone gives the same bits; the
 * wider clones only vectorize the same loops. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(BITNN_NO_CLONES)
#define BITNN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BITNN_MULTIVERSION
#endif
#define BITNN_INLINE static inline __attribute__((always_inline))

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

void bitnn_gemm_q8_ref(const int8_t *q, size_t ldq, size_t M, size_t K, const uint64_t *w,
                       size_t wpr, size_t n0, size_t n1, const float *scale,
                       const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_q8_avx2(const int8_t *q, size_t ldq, size_t M, size_t K, const uint64_t *w,
                        size_t wpr, size_t n0, size_t n1, const float *scale,
                        const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_q8_avx512vnni(const int8_t *q, size_t ldq, size_t M, size_t K,
                              const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                              const float *scale, const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_q8_avx512gfni(const int8_t *q, size_t ldq, size_t M, size_t K,
                              const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                              const float *scale, const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_q8_neon(const int8_t *q, size_t ldq, size_t M, size_t K, const uint64_t *w,
                        size_t wpr, size_t n0, size_t n1, const float *scale,
                        const uint64_t *bias, float *z, size_t ldz);

#endif
