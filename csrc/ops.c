/*
 * ops.c - the binary normalized linear layer: raw binary GEMM through the
 * kernel table, then Normalize and the activation (PAPER.md §2, §3).
 * Normalize and the activations are shared by every kernel, so only the GEMM
 * differs between instruction sets.
 */
#include <math.h>

#include "kernels.h"

typedef struct {
    const float *x;
    size_t ldx, M, K;
    const uint64_t *w;
    size_t wpr, N;
    const uint64_t *bias;
    float *z;
    size_t ldz;
    bitnn_gemm_f32_fn fn;
} gemm_job;

static void gemm_rows_n(void *ctx, size_t n0, size_t n1)
{
    const gemm_job *j = ctx;
    j->fn(j->x, j->ldx, j->M, j->K, j->w, j->wpr, n0, n1, j->bias, j->z, j->ldz);
}

static void gemm_rows_m(void *ctx, size_t m0, size_t m1)
{
    const gemm_job *j = ctx;
    j->fn(j->x + m0 * j->ldx, j->ldx, m1 - m0, j->K, j->w, j->wpr, 0, j->N, j->bias,
          j->z + m0 * j->ldz, j->ldz);
}

bitnn_status bitnn_binary_gemm(const float *x, size_t ldx, size_t M, size_t K,
                               const uint64_t *w, size_t N, const uint64_t *bias,
                               float *z, size_t ldz, int isa, bitnn_pool *pool)
{
    if (K == 0 || N == 0 || ldx < K || ldz < N) return BITNN_EINVAL;
    if (M == 0) return BITNN_OK;
    if (!x || !w || !z) return BITNN_EINVAL;
    if (!bitnn_isa_supported(isa)) return BITNN_EUNSUPPORTED;
    gemm_job j = {x, ldx, M, K, w, bitnn_words_per_row(K), N, bias, z, ldz,
                  bitnn_kernels_for(isa)->gemm_f32};
    const size_t threads = (size_t)bitnn_pool_size(pool);
    /* Split over whichever axis gives every thread a fair share; each z[m,n]
     * is always computed whole by one thread, so the split never changes it. */
    if (M >= 4 * threads && N < 64 * threads)
        bitnn_parallel_for(pool, M, 4, gemm_rows_m, &j);
    else
        bitnn_parallel_for(pool, N, 8, gemm_rows_n, &j);
    return BITNN_OK;
}

/* ------------------------------------------------------------- Normalize */
typedef struct {
    float *z;
    size_t ldz, N;
    float eps;
    bitnn_act act;
} norm_job;

static void normalize_row(float *z, size_t N, double eps, bitnn_act act)
{
    double sum = 0.0;
    for (size_t n = 0; n < N; n++) sum += z[n];
    const double mean = sum / (double)N;
    double ss = 0.0;
    for (size_t n = 0; n < N; n++) {
        const double d = z[n] - mean;
        ss += d * d;
    }
    const double inv = 1.0 / sqrt(ss / (double)N + eps);
    switch (act) {
    case BITNN_ACT_LINEAR:
        for (size_t n = 0; n < N; n++) z[n] = (float)((z[n] - mean) * inv);
        break;
    case BITNN_ACT_RELU:
        for (size_t n = 0; n < N; n++) {
            const float v = (float)((z[n] - mean) * inv);
            z[n] = v > 0.0f ? v : 0.0f;
        }
        break;
    case BITNN_ACT_GELU:
        for (size_t n = 0; n < N; n++) {
            const double v = (float)((z[n] - mean) * inv);
            z[n] = (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)));
        }
        break;
    case BITNN_ACT_SOFTMAX: {
        float mx = -INFINITY;
        for (size_t n = 0; n < N; n++) {
            z[n] = (float)((z[n] - mean) * inv);
            if (z[n] > mx) mx = z[n];
        }
        double total = 0.0;
        for (size_t n = 0; n < N; n++) {
            z[n] = (float)exp((double)z[n] - mx);
            total += z[n];
        }
        const double scale = 1.0 / total;
        for (size_t n = 0; n < N; n++) z[n] = (float)(z[n] * scale);
        break;
    }
    default: break;
    }
}

static void normalize_rows(void *ctx, size_t m0, size_t m1)
{
    const norm_job *j = ctx;
    for (size_t m = m0; m < m1; m++) normalize_row(j->z + m * j->ldz, j->N, j->eps, j->act);
}

bitnn_status bitnn_normalize_act(float *z, size_t ldz, size_t M, size_t N, float eps,
                                 bitnn_act act, bitnn_pool *pool)
{
    if (N == 0 || ldz < N || !(eps > 0.0f) || isinf(eps) || (unsigned)act >= BITNN_ACT_COUNT)
        return BITNN_EINVAL;
    if (M == 0) return BITNN_OK;
    if (!z) return BITNN_EINVAL;
    norm_job j = {z, ldz, N, eps, act};
    bitnn_parallel_for(pool, M, 1, normalize_rows, &j);
    return BITNN_OK;
}

bitnn_status bitnn_linear(const float *x, size_t ldx, size_t M, size_t K, const uint64_t *w,
                          size_t N, const uint64_t *bias, float eps, bitnn_act act, float *y,
                          size_t ldy, int isa, bitnn_pool *pool)
{
    if (!(eps > 0.0f) || isinf(eps) || (unsigned)act >= BITNN_ACT_COUNT) return BITNN_EINVAL;
    bitnn_status s = bitnn_binary_gemm(x, ldx, M, K, w, N, bias, y, ldy, isa, pool);
    if (s != BITNN_OK) return s;
    return bitnn_normalize_act(y, ldy, M, N, eps, act, pool);
}
