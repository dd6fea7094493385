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

/* The fp32 binary GEMM works on two derived forms of its operands
 * (docs/packing.md, "Summation order"):
 *
 * - tables: for each input row, group g (inputs 4g .. 4g+3, +0.0 past K) has a
 *   table of 16 subset sums, t[s] = (((0 + x0.s0) + x1.s1) + x2.s2) + x3.s3
 *   where x_b.s_b is x[4g+b] if bit b of s is set and +0.0 if not
 *   (bitnn_build_tables). A row has 8 * kc groups in kc chunks of 8 tables
 *   (128 floats); the kernels find chunk c of row m at tp[m * kc + c] (a
 *   void pointer: one array type serves both table kinds), so a
 *   convolution can point every tap of every position at its input pixels'
 *   tables (conv.c) instead of copying them per position.
 * - tiles: the weight bits regrouped in blocks of 16 output rows:
 *   tiles[(b * kc + c) * 16 + r] is the 32-bit word c (inputs 32c .. 32c+31,
 *   bit i = input 32c+i) of row 16b + r; rows past N are zero
 *   (bitnn_pack_tiles, once per weight matrix). Group g of row n is the 4-bit
 *   index (tiles[...c = g / 8...] >> 4 (g % 8)) & 15.
 *
 * Raw binary GEMM over output rows [n0, n1):
 *   z[m*ldz + n] = (...((0 + tab_m[0][s_0]) + tab_m[1][s_1]) + ... + tab_m[G-1][s_G-1]) + bias_bit(n)
 * for m < M, with s_g the index of group g of row n, G = 8 kc, added in
 * increasing g: one chain per (m, n). Every kernel follows this order exactly. */
typedef void (*bitnn_gemm_f32_fn)(const void *const *tp, size_t M, size_t kc,
                                  const uint32_t *tiles, size_t n0, size_t n1,
                                  const uint64_t *bias, float *z, size_t ldz);

/* 32-input chunks of a row of K inputs, and the size of the tiles of N rows. */
static inline size_t bitnn_tile_chunks(size_t K) { return (K + 31) / 32; }
static inline size_t bitnn_tiles_words(size_t N, size_t K)
{
    return (N + 15) / 16 * 16 * bitnn_tile_chunks(K);
}
/* Fill tiles (bitnn_tiles_words(N, K) words) from the packed rows w. */
void bitnn_pack_tiles(const uint64_t *w, size_t N, size_t K, uint32_t *tiles);
/* The subset-sum tables of one input row x[0..K) into tab[0 .. 128 kc). */
void bitnn_build_tables(const float *x, size_t K, float *tab);

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

/* Integer binary GEMM on the tiles (kernels.h above) with int8 tables: for
 * each input row m and 32-input chunk c, 256 bytes at tp[m * kc + c]: four
 * 64-byte tables, [A lo][A hi][B lo][B hi]; section j (16 bytes) of A holds
 * group 8c + 2j, of B group 8c + 2j + 1, entry s being e = 512 + the sum of
 * the group's q values that s selects, split e = lo + 256 hi
 * (bitnn_build_tables_q8). Same result as bitnn_gemm_q8_fn (exact sums, the
 * bitnn_q8_out epilogue): where a kernel set has one, linear layers use it. */
typedef void (*bitnn_gemm_q8t_fn)(const void *const *tp, size_t M, size_t kc,
                                  const uint32_t *tiles, size_t n0, size_t n1,
                                  const float *scale, const uint64_t *bias, float *z, size_t ldz);
void bitnn_build_tables_q8(const int8_t *q, size_t K, uint8_t *tab);

/* Integer binary GEMM of many input rows on the tiles and the quantized rows
 * (q, ldq as for bitnn_gemm_q8_fn, ldq a multiple of 64, and rows readable
 * up to 32 past the last one: gemm_operands pads them with zeros); n0 a
 * multiple of 16. Same result as bitnn_gemm_q8_fn (exact sums, the
 * bitnn_q8_out epilogue). Where a kernel set has one, GEMMs of at least
 * BITNN_Q8M_MIN_ROWS input rows use it. */
typedef void (*bitnn_gemm_q8m_fn)(const int8_t *q, size_t ldq, size_t M, size_t kc,
                                  const uint32_t *tiles, size_t n0, size_t n1,
                                  const float *scale, const uint64_t *bias, float *z, size_t ldz);
#define BITNN_Q8M_MIN_ROWS 16

/* Direct int8 'same' convolution, stride 1, odd f (BITNN_PRECISION_INT8):
 * output rows [y0, y1) of an image W wide, every output channel n < N,
 *   S = sum over taps (dy, dx) and channels c of xp[y + dy][x + dx][c] * W[n][dy][dx][c]
 *   z[(y * W + x) * N + n] = (float)S * scale + bias_bit(n)   (bitnn_q8_out)
 * xp: the quantized input map zero-padded by f / 2 on every side, rows of
 * Wp = W + f - 1 pixels of Cp int8 channels (Cp a multiple of 4, channels
 * past the layer's C zero). wx: the weights as bytes 0 or 1 for vpdpbusd,
 * byte 4r + i of the 64 at wx + ((b * f * f + t) * Cp / 4 + g) * 64 being
 * output channel 16b + r, tap t = dy * f + dx, input channel 4g + i (zero for
 * channels past C or rows past N; bitnn_conv_expand_q8, conv.c). The same
 * exact sums and epilogue as bitnn_gemm_q8_fn on the im2col rows. *zmax:
 * the largest value written (-inf for none), which a fused relu layer needs
 * (conv.h) and which costs the kernel one max per 16 values it stores. */
typedef void (*bitnn_conv_q8_fn)(const int8_t *xp, size_t Wp, size_t Cp, size_t f, size_t W,
                                 const uint8_t *wx, size_t N, size_t y0, size_t y1, float scale,
                                 const uint64_t *bias, float *z, float *zmax);

/* int8 attention scores (docs/packing.md, int8 mode step 4): for each of nb
 * blocks of 16 keys, S[16 b + l] = sum_e q[e] * k_l[e], exactly in int32. q:
 * the query's hdp int8 values (hdp a multiple of 4, zero past head_dim); kt:
 * the nb blocks one after the other, block b at kt + 16 b hdp, each
 * [hdp / 4][16][4] bytes (dimensions 4g .. 4g+3 of key l in lane l of group
 * g). Integer sums are exact: any order gives the same S (|S| <= 127 * 128 *
 * hdp < 2^31: the loader caps emb_dim, and so hdp, at 65,536). */
typedef void (*bitnn_attn_q8_fn)(const int8_t *q, size_t hdp, const int8_t *kt, size_t nb,
                                 int32_t *S);

typedef struct {
    bitnn_gemm_f32_fn gemm_f32;   /* BITNN_PRECISION_FP32 */
    bitnn_gemm_q8_fn gemm_q8;     /* BITNN_PRECISION_INT8 */
    bitnn_gemm_q8t_fn gemm_q8t;   /* BITNN_PRECISION_INT8 on tiles, or NULL */
    void (*tables_q8)(const int8_t *q, size_t K, uint8_t *tab); /* with gemm_q8t: its
                                     tables, the same bytes as bitnn_build_tables_q8 */
    bitnn_gemm_q8m_fn gemm_q8m;   /* BITNN_PRECISION_INT8, many rows (AMX), or NULL */
    bitnn_conv_q8_fn conv_q8;     /* BITNN_PRECISION_INT8 convolutions (VNNI), or NULL */
    bitnn_attn_q8_fn attn_q8;     /* int8 attention scores (VNNI), or NULL: lm.c's own */
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
float bitnn_max(const float *x, size_t n); /* -inf for n = 0 */

/* The statistics that bitnn_normalize_act uses for one row of N values: the
 * same mean and 1 / sqrt(var + eps), bit for bit, for any pool. */
bitnn_status bitnn_normalize_stats(const float *z, size_t N, float eps, bitnn_pool *pool,
                                   double *mean, double *inv);
/* z[i] = act((float)((z[i] - mean) * inv)) for i < n with given statistics:
 * bitnn_normalize_act's values, elementwise (any split of the work gives the
 * same bits); act is linear, relu or gelu (not softmax). */
bitnn_status bitnn_normalize_apply(float *z, size_t n, double mean, double inv, bitnn_act act,
                                   bitnn_pool *pool);
/* q[i] = the int8 of relu((float)((z[i] - mean) * inv)) (bitnn_normalize_act's
 * relu value) quantized with amax by bitnn_quantize_with: the two steps fused,
 * the same bits. */
void bitnn_relu_quantize(const float *z, size_t n, double mean, double inv, float amax, int8_t *q);

/* A buffer kept between calls (a graph's state owns its buffers): grown to
 * at least `bytes` (64-byte aligned, contents not kept) or ENOMEM. */
typedef struct {
    void *p;
    size_t size;
} bitnn_buf;
bitnn_status bitnn_buf_reserve(bitnn_buf *b, size_t bytes);
void bitnn_buf_free(bitnn_buf *b);

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

/* 8 partial sums (value n into sum n % 8 of its run) added pairwise, the one
 * documented combination (docs/arithmetic.md): Normalize's statistics and
 * attention's softmax total. */
BITNN_INLINE double bitnn_combine8(const double a[8])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

static inline float bitnn_bias_value(const uint64_t *bias, size_t n)
{
    return bias ? (float)((bias[n >> 6] >> (n & 63)) & 1u) : 0.0f;
}

void bitnn_gemm_f32_ref(const void *const *tp, size_t M, size_t kc,
    const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_f32_avx2(const void *const *tp, size_t M, size_t kc,
    const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_f32_avx512(const void *const *tp, size_t M, size_t kc,
    const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias, float *z, size_t ldz);
void bitnn_gemm_f32_neon(const void *const *tp, size_t M, size_t kc,
    const uint32_t *tiles, size_t n0, size_t n1, const uint64_t *bias, float *z, size_t ldz);

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
void bitnn_gemm_q8t_avx512vbmi(const void *const *tp, size_t M, size_t kc,
                               const uint32_t *tiles, size_t n0, size_t n1, const float *scale,
                               const uint64_t *bias, float *z, size_t ldz);
void bitnn_build_tables_q8_avx512vbmi(const int8_t *q, size_t K, uint8_t *tab);
void bitnn_gemm_q8m_amx(const int8_t *q, size_t ldq, size_t M, size_t kc, const uint32_t *tiles,
                        size_t n0, size_t n1, const float *scale, const uint64_t *bias, float *z,
                        size_t ldz);
void bitnn_conv_q8_avx512vnni(const int8_t *xp, size_t Wp, size_t Cp, size_t f, size_t W,
                              const uint8_t *wx, size_t N, size_t y0, size_t y1, float scale,
                              const uint64_t *bias, float *z, float *zmax);
void bitnn_attn_q8_avx512vnni(const int8_t *q, size_t hdp, const int8_t *kt, size_t nb,
                              int32_t *S);
/* Ask the OS for the AMX tile state (Linux: arch_prctl); 1 if granted. */
int bitnn_amx_request(void);
void bitnn_gemm_q8_neon(const int8_t *q, size_t ldq, size_t M, size_t K, const uint64_t *w,
                        size_t wpr, size_t n0, size_t n1, const float *scale,
                        const uint64_t *bias, float *z, size_t ldz);

#endif
