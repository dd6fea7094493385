/*
 * bitnn.h - the public C interface of the bitnn core.
 *
 * Binary normalized layers (see ../docs/packing.md for the bit convention and
 * the exact order of every floating-point sum). Everything the Cython binding
 * calls is declared here; the kernels' private table lives in kernels.h.
 *
 * Conventions:
 *  - every function that can fail returns a bitnn_status (0 = success) and
 *    never aborts; arguments are checked before any memory is touched;
 *  - shapes are size_t; matrices are row-major with an explicit leading
 *    dimension (elements between the starts of consecutive rows);
 *  - packed binary matrices are rows of 64-bit little-endian words, bit k%64
 *    of word k/64 is element k, padding bits zero.
 */
#ifndef BITNN_H
#define BITNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version has one home, bitnn/_version.py; every build passes it in as
 * -DBITNN_VERSION_STRING="x.y.z" (setup.py and tests/c/ via csrc/sources.py). */
#ifndef BITNN_VERSION_STRING
#error "BITNN_VERSION_STRING is not defined: build with setup.py or csrc/sources.py flags"
#endif

/* ------------------------------------------------------------------ status */
typedef enum {
    BITNN_OK = 0,
    BITNN_EINVAL = 1,       /* bad argument (shape, pointer, value) */
    BITNN_ENOMEM = 2,       /* allocation failed */
    BITNN_EUNSUPPORTED = 3, /* kernel not compiled in or not runnable here */
    BITNN_EENV = 4,         /* an environment variable holds a bad value */
    BITNN_ESYS = 5,         /* an OS call failed (threads, files) */
    BITNN_EFORMAT = 6       /* a model file is malformed (message says why) */
} bitnn_status;

const char *bitnn_status_str(bitnn_status s);

/* ------------------------------------------------------------ CPU features */
enum {
    BITNN_CPU_SSE42 = 1u << 0,
    BITNN_CPU_AVX = 1u << 1,
    BITNN_CPU_AVX2 = 1u << 2,
    BITNN_CPU_FMA = 1u << 3,
    BITNN_CPU_AVX512F = 1u << 4,
    BITNN_CPU_AVX512BW = 1u << 5,
    BITNN_CPU_AVX512VL = 1u << 6,
    BITNN_CPU_AVX512DQ = 1u << 7,
    BITNN_CPU_AVX512VNNI = 1u << 8,
    BITNN_CPU_AVX512VPOPCNTDQ = 1u << 9,
    BITNN_CPU_NEON = 1u << 10,
    BITNN_CPU_DOTPROD = 1u << 11,
    BITNN_CPU_AVX512VBMI = 1u << 12,
    BITNN_CPU_GFNI = 1u << 13,     /* with AVX-512 (zmm) state */
    BITNN_CPU_AMXINT8 = 1u << 14   /* AMX-TILE + AMX-INT8, tile state enabled and granted */
};

/* Features usable by this process: cpuid AND the OS's saved register state
 * (xgetbv) on x86; fixed per build on ARM. Computed once. */
uint32_t bitnn_cpu_features(void);
/* Name of feature bit i (0..31), or NULL. */
const char *bitnn_cpu_feature_name(int bit);

/* ----------------------------------------------------------------- kernels */
/* An instruction set a kernel is written for. */
typedef enum {
    BITNN_ISA_REF = 0,    /* portable C, always compiled: the reference */
    BITNN_ISA_AVX2 = 1,
    BITNN_ISA_AVX512 = 2,
    BITNN_ISA_NEON = 3,
    BITNN_ISA_COUNT = 4
} bitnn_isa;

const char *bitnn_isa_name(int isa);           /* "ref", "avx2", ... */
int bitnn_isa_from_name(const char *name);     /* -1 if unknown */
int bitnn_isa_compiled(int isa);               /* built into this library */
int bitnn_isa_supported(int isa);              /* compiled AND runnable here */
/* The kernel used when none is asked for: BITNN_KERNEL if set (validated),
 * else the best supported one. On a bad BITNN_KERNEL returns BITNN_EENV or
 * BITNN_EUNSUPPORTED and writes a message into msg. */
bitnn_status bitnn_isa_default(int *isa, char *msg, size_t msg_len);
/* How many times isa's GEMM kernel has been entered in this process (each
 * thread's share of a call counts once): lets tests see the kernel that ran. */
uint64_t bitnn_kernel_calls(int isa);

/* ------------------------------------------------------------- thread pool */
typedef struct bitnn_pool bitnn_pool;

/* A pool that runs work on n threads in total (the caller is one of them;
 * n - 1 workers are started). n >= 1. */
bitnn_status bitnn_pool_create(int n, bitnn_pool **out);
void bitnn_pool_destroy(bitnn_pool *pool);
int bitnn_pool_size(const bitnn_pool *pool);
/* Distinct threads of the pool (the caller included) that have run a
 * non-empty share of some job since the pool was created: lets tests see
 * that work really is shared out. */
int bitnn_pool_threads_used(const bitnn_pool *pool);

/* Run fn(ctx, begin, end) over [0, n) split into contiguous ranges, one per
 * thread (ranges may be empty). Blocks until all are done. pool may be NULL
 * (runs on the caller). Calls from several threads on one pool serialize. */
typedef void (*bitnn_range_fn)(void *ctx, size_t begin, size_t end);
void bitnn_parallel_for(bitnn_pool *pool, size_t n, size_t grain,
                        bitnn_range_fn fn, void *ctx);

/* Threads this process may use: sched affinity and cgroup CPU quota. */
int bitnn_available_cpus(void);
/* BITNN_NUM_THREADS if set (validated, 1..1024), else bitnn_available_cpus(). */
bitnn_status bitnn_default_threads(int *n, char *msg, size_t msg_len);

/* --------------------------------------------------------- the linear op */
typedef enum {
    BITNN_ACT_LINEAR = 0,
    BITNN_ACT_RELU = 1,
    BITNN_ACT_GELU = 2,   /* exact: 0.5 v (1 + erf(v / sqrt 2)) */
    BITNN_ACT_SOFTMAX = 3,
    BITNN_ACT_COUNT = 4
} bitnn_act;

static inline size_t bitnn_words_per_row(size_t k) { return (k + 63) / 64; }

/* The numeric mode of the binary GEMM (docs/packing.md):
 *  FP32: fp32 activations, the fixed summation order; every kernel gives the
 *        same bits as the reference.
 *  INT8: each row of activations is quantized to int8 with one symmetric
 *        scale (amax / 127), the sums over {0,1} weights are exact int32, then
 *        z = (float)sum * scale + b. Every kernel gives the same bits as the
 *        reference; the result differs from FP32 by the quantization. */
typedef enum {
    BITNN_PRECISION_FP32 = 0,
    BITNN_PRECISION_INT8 = 1,
    BITNN_PRECISION_COUNT = 2
} bitnn_precision;

/* z[m*ldz + n] = sum_{k: W[n,k]=1} x[m*ldx + k] + b[n]   (raw, no Normalize)
 * for m < M, n < N. bias may be NULL (b = 0). K >= 1, N >= 1, M >= 0.
 * The summation order is the one in docs/packing.md, for every isa. */
bitnn_status bitnn_binary_gemm(const float *x, size_t ldx, size_t M, size_t K,
                               const uint64_t *w, size_t N, const uint64_t *bias,
                               float *z, size_t ldz, bitnn_precision prec, int isa,
                               bitnn_pool *pool);

/* A binary weight matrix of N rows of K inputs as the kernels use it: the
 * packed rows of the file (bits: N rows of ceil(K/64) words, not owned) and,
 * for the fp32 mode, the same bits regrouped for the table kernels (tiles,
 * docs/packing.md), made once by bitnn_weights_pack and freed by
 * bitnn_weights_release. A model packs its layers at load; the raw calls
 * (bitnn_binary_gemm, bitnn_linear) pack for the call. */
typedef struct {
    const uint64_t *bits;
    size_t N, K;
    uint32_t *tiles; /* owned; NULL until packed */
} bitnn_weights;

bitnn_status bitnn_weights_pack(bitnn_weights *wt);
void bitnn_weights_release(bitnn_weights *wt);

/* The buffers of the binary GEMM (quantized rows, tables), kept between
 * calls by a graph's state: one workspace serves one call at a time. */
typedef struct bitnn_gemm_ws bitnn_gemm_ws;
bitnn_gemm_ws *bitnn_gemm_ws_new(void); /* NULL when out of memory */
void bitnn_gemm_ws_free(bitnn_gemm_ws *ws);

/* bitnn_binary_gemm and bitnn_linear on a bitnn_weights; ws may be NULL
 * (buffers for this call). */
bitnn_status bitnn_binary_gemm_w(const float *x, size_t ldx, size_t M, const bitnn_weights *wt,
                                 const uint64_t *bias, float *z, size_t ldz, bitnn_precision prec,
                                 int isa, bitnn_pool *pool, bitnn_gemm_ws *ws);
bitnn_status bitnn_linear_w(const float *x, size_t ldx, size_t M, const bitnn_weights *wt,
                            const uint64_t *bias, float eps, bitnn_act act, float *y, size_t ldy,
                            bitnn_precision prec, int isa, bitnn_pool *pool, bitnn_gemm_ws *ws);

/* Up to BITNN_GEMM_MANY_MAX binary GEMMs of the same input rows (the same K):
 * z_i = x W_i^T + b_i for each i, with the input's int8 rows or tables made
 * once and the outputs of all of them shared out between threads in one
 * parallel loop (a decoder block's query, key and value projections). Each
 * z_i equals bitnn_binary_gemm_w's. The weights must be packed
 * (bitnn_weights_pack) where the mode's kernel reads tiles. */
#define BITNN_GEMM_MANY_MAX 4
bitnn_status bitnn_binary_gemm_many_w(const float *x, size_t ldx, size_t M, size_t count,
                                      const bitnn_weights *const *wts,
                                      const uint64_t *const *biases, float *const *zs,
                                      const size_t *ldzs, bitnn_precision prec, int isa,
                                      bitnn_pool *pool, bitnn_gemm_ws *ws);

/* Normalize each row of z (M rows of N values, leading dimension ldz) in
 * place, then apply act: y = act((z - mean) / sqrt(var + eps)). eps > 0. */
bitnn_status bitnn_normalize_act(float *z, size_t ldz, size_t M, size_t N,
                                 float eps, bitnn_act act, bitnn_pool *pool);

/* The fused binary normalized linear layer (BNFCL, docs/maths.md):
 * y = act(Normalize(W_b x + b_b)), y is M x N with leading dimension ldy. */
bitnn_status bitnn_linear(const float *x, size_t ldx, size_t M, size_t K,
                          const uint64_t *w, size_t N, const uint64_t *bias,
                          float eps, bitnn_act act, float *y, size_t ldy,
                          bitnn_precision prec, int isa, bitnn_pool *pool);

#ifdef __cplusplus
}
#endif
#endif /* BITNN_H */
