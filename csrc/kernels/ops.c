/*
 * ops.c - the binary normalized linear layer: raw binary GEMM through the
 * kernel table, then Normalize and the activation (docs/maths.md: Normalize, Layers).
 * Normalize and the activations are shared by every kernel, so only the GEMM
 * differs between instruction sets.
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "erf.h"
#include "kernels.h"

typedef struct {
    const float *x;
    size_t ldx, M, K;
    const uint64_t *w;
    size_t wpr, N;
    const uint64_t *bias;
    float *z;
    size_t ldz;
    bitnn_gemm_f32_fn f32; /* exactly one of f32 / q8 is set */
    bitnn_gemm_q8_fn q8;
    bitnn_gemm_q8t_fn q8t; /* int8 on the tiles (then tab8 holds the int8 tables) */
    bitnn_gemm_q8m_fn q8m; /* int8 on the tiles and q, for many rows */
    void (*tables_q8)(const int8_t *q, size_t K, uint8_t *tab);
    uint8_t *tab8;
    const uint32_t *tiles; /* fp32: the weights as tiles, and the tables of x */
    float *tab;
    size_t ldt, kc;
    const void **tp;       /* tables: chunk c of row m at tp[m * kc + c] */
    int8_t *q;             /* int8: quantized rows of x, ldq bytes each */
    size_t ldq;
    float *scale;          /* int8: one scale per row */
} gemm_job;

/* Rows [m0, m1) x outputs [n0, n1): the one place that calls a GEMM kernel. */
static void gemm_block(const gemm_job *j, size_t m0, size_t m1, size_t n0, size_t n1)
{
    if (j->q8m)
        j->q8m(j->q + m0 * j->ldq, j->ldq, m1 - m0, j->kc, j->tiles, n0, n1, j->scale + m0,
               j->bias, j->z + m0 * j->ldz, j->ldz);
    else if (j->q8t)
        j->q8t(j->tp + m0 * j->kc, m1 - m0, j->kc, j->tiles, n0, n1,
               j->scale + m0, j->bias, j->z + m0 * j->ldz, j->ldz);
    else if (j->q8)
        j->q8(j->q + m0 * j->ldq, j->ldq, m1 - m0, j->K, j->w, j->wpr, n0, n1, j->scale + m0,
              j->bias, j->z + m0 * j->ldz, j->ldz);
    else
        j->f32(j->tp + m0 * j->kc, m1 - m0, j->kc, j->tiles, n0, n1,
               j->bias, j->z + m0 * j->ldz, j->ldz);
}

static void gemm_rows_n(void *ctx, size_t n0, size_t n1)
{
    const gemm_job *j = ctx;
    gemm_block(j, 0, j->M, n0, n1);
}

static void gemm_rows_m(void *ctx, size_t m0, size_t m1)
{
    const gemm_job *j = ctx;
    gemm_block(j, m0, m1, 0, j->N);
}

static void table_rows(void *ctx, size_t m0, size_t m1)
{
    const gemm_job *j = ctx;
    for (size_t m = m0; m < m1; m++) {
        bitnn_build_tables(j->x + m * j->ldx, j->K, j->tab + m * j->ldt);
        for (size_t c = 0; c < j->kc; c++) j->tp[m * j->kc + c] = j->tab + m * j->ldt + 128 * c;
    }
}

/* ------------------------------------------------------ the fp32 operands */
void bitnn_pack_tiles(const uint64_t *w, size_t N, size_t K, uint32_t *tiles)
{
    const size_t kc = bitnn_tile_chunks(K), wpr = bitnn_words_per_row(K);
    for (size_t b = 0; b < (N + 15) / 16; b++)
        for (size_t c = 0; c < kc; c++)
            for (size_t r = 0; r < 16; r++) {
                const size_t n = 16 * b + r;
                tiles[(b * kc + c) * 16 + r] =
                    n < N ? (uint32_t)(w[n * wpr + c / 2] >> (32 * (c % 2))) : 0u;
            }
}

/* One group's table: entry s adds x_b for each set bit b of s, in increasing
 * b, starting from +0.0. A running sum that starts at +0.0 is never -0.0, so
 * adding +0.0 for a clear bit changes nothing: the selects below are the
 * definition of docs/packing.md, and vectorize. */
BITNN_INLINE void group_table(float x0, float x1, float x2, float x3, float *t)
{
    for (int s = 0; s < 16; s++) {
        float a = 0.0f;
        a += (s & 1) ? x0 : 0.0f;
        a += (s & 2) ? x1 : 0.0f;
        a += (s & 4) ? x2 : 0.0f;
        a += (s & 8) ? x3 : 0.0f;
        t[s] = a;
    }
}

BITNN_MULTIVERSION void bitnn_build_tables(const float *x, size_t K, float *tab)
{
    const size_t G = 8 * bitnn_tile_chunks(K);
    size_t g = 0;
    for (; 4 * g + 4 <= K; g++) {
        /* 4 KB ahead, a line per 16 inputs: the convolution's ring makes the
         * tables of a whole input map pixel by pixel, a stream the hardware
         * prefetcher left waiting on the loads (BCVNN fp32 on Zen 5: the
         * builder's samples 0.24 -> 0.20 of the GEMM's); a prefetch past the
         * end of the data does not fault */
        if (g % 4 == 0) __builtin_prefetch(x + 4 * g + 1024);
        group_table(x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3], tab + 16 * g);
    }
    for (; g < G; g++) {
        float v[4];
        for (size_t b = 0; b < 4; b++) v[b] = 4 * g + b < K ? x[4 * g + b] : 0.0f;
        group_table(v[0], v[1], v[2], v[3], tab + 16 * g);
    }
}

BITNN_MULTIVERSION void bitnn_build_tables_q8(const int8_t *q, size_t K, uint8_t *tab)
{
    /* q is zero-padded to whole 64-byte words (kernels.h), past every chunk */
    for (size_t c = 0; c < bitnn_tile_chunks(K); c++)
        for (int g = 0; g < 8; g++) {
            const int8_t *x = q + 32 * c + 4 * g;
            uint8_t *lo = tab + 256 * c + 128 * (g & 1) + 16 * (g >> 1), *hi = lo + 64;
            for (int s = 0; s < 16; s++) {
                const int e = 512 + ((s & 1) ? x[0] : 0) + ((s & 2) ? x[1] : 0) +
                              ((s & 4) ? x[2] : 0) + ((s & 8) ? x[3] : 0);
                lo[s] = (uint8_t)(e & 255);
                hi[s] = (uint8_t)(e >> 8);
            }
        }
}

bitnn_status bitnn_buf_reserve(bitnn_buf *b, size_t bytes)
{
    if (b->size >= bytes && b->p) return BITNN_OK;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) return BITNN_ENOMEM;
    free(b->p);
    b->p = p, b->size = bytes;
    return BITNN_OK;
}

void bitnn_buf_free(bitnn_buf *b)
{
    free(b->p);
    b->p = NULL, b->size = 0;
}

bitnn_status bitnn_weights_pack(bitnn_weights *wt)
{
    if (!wt || !wt->bits || wt->N == 0 || wt->K == 0) return BITNN_EINVAL;
    if (wt->tiles) return BITNN_OK;
    const size_t words = bitnn_tiles_words(wt->N, wt->K);
    void *p = NULL;
    if (posix_memalign(&p, 64, words * sizeof(uint32_t)) != 0) return BITNN_ENOMEM;
    bitnn_pack_tiles(wt->bits, wt->N, wt->K, p);
    wt->tiles = p;
    return BITNN_OK;
}

void bitnn_weights_release(bitnn_weights *wt)
{
    if (!wt) return;
    free(wt->tiles);
    wt->tiles = NULL;
}

static void quantize_rows(void *ctx, size_t m0, size_t m1)
{
    const gemm_job *j = ctx;
    for (size_t m = m0; m < m1; m++) {
        j->scale[m] = bitnn_quantize_row(j->x + m * j->ldx, j->K, j->q + m * j->ldq, j->ldq);
        if (j->tab8) {
            j->tables_q8(j->q + m * j->ldq, j->K, j->tab8 + m * j->ldt);
            for (size_t c = 0; c < j->kc; c++) j->tp[m * j->kc + c] = j->tab8 + m * j->ldt + 256 * c;
        }
    }
}

/* 16-lane vectors (GCC vector extensions, lowered per clone to what the CPU
 * has): elementwise IEEE operations, the same values as the scalar loops. */
typedef float bitnn_v16f __attribute__((vector_size(64)));
typedef int32_t bitnn_v16i __attribute__((vector_size(64)));
typedef int8_t bitnn_v16c __attribute__((vector_size(16)));

BITNN_MULTIVERSION float bitnn_absmax(const float *x, size_t n)
{
    /* 16 running maxima (a lane per i % 16); max is exact and |x| has no -0
     * or NaN here, so the grouping cannot change the result. For such
     * values the order of the bit patterns is the order of the numbers, so
     * the maxima are taken on the bits with |x| as x & 0x7fffffff. */
    bitnn_v16i m = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        bitnn_v16i v;
        memcpy(&v, x + i, sizeof v);
        v &= 0x7fffffff;
        const bitnn_v16i gt = v > m;
        m = (v & gt) | (m & ~gt);
    }
    int32_t a[16];
    memcpy(a, &m, sizeof a);
    for (int l = 0; i < n; i++, l++) {
        int32_t v;
        memcpy(&v, x + i, sizeof v);
        v &= 0x7fffffff;
        a[l] = v > a[l] ? v : a[l];
    }
    int32_t best = 0;
    for (int l = 0; l < 16; l++) best = a[l] > best ? a[l] : best;
    float r;
    memcpy(&r, &best, sizeof r);
    return r;
}

BITNN_INLINE int8_t quantize1(float x, float inv)
{
    const float magic = 12582912.0f;
    float v = (x * inv + magic) - magic;
    v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
    return (int8_t)(int)v;
}

/* The 16 bytes narrowed in a register, then stored: GCC otherwise folds the
 * narrowing into the store (vpmovdb to memory on AVX-512), which AMD cores
 * run as a slow multi-op store (on Zen 5 the fused relu + quantization
 * spent half its time on it). An empty asm that takes the value in a
 * vector register keeps the two apart, on every ISA. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define QUANT_IN_REGISTER(c) __asm__("" : "+x"(c))
#else
#define QUANT_IN_REGISTER(c) ((void)0)
#endif

/* quantize1 of 16 values in a vector, stored as 16 bytes at dst (a statement
 * macro: the values stay in registers). Adding and subtracting 1.5 * 2^23
 * rounds |v| <= 2^22 to an integer, half to even, in any fp32 unit (no
 * dependence on a rounding intrinsic). */
#define QUANTIZE16(dst, vin, inv)                                                                  \
    do {                                                                                           \
        const float magic_ = 12582912.0f;                                                          \
        const bitnn_v16f v_ = ((vin) * (inv) + magic_) - magic_;                                   \
        const bitnn_v16i hi_ = v_ > 127.0f, lo_ = v_ < -127.0f;                                    \
        bitnn_v16i b_ = (bitnn_v16i)v_;                                                            \
        const bitnn_v16i p127_ = (bitnn_v16i){0} + 0x42fe0000;          /* 127.0f */               \
        const bitnn_v16i m127_ = (bitnn_v16i){0} + (int32_t)0xc2fe0000; /* -127.0f */              \
        b_ = (b_ & ~hi_) | (p127_ & hi_);                                                          \
        b_ = (b_ & ~lo_) | (m127_ & lo_);                                                          \
        bitnn_v16c c_ =                                                                            \
            __builtin_convertvector(__builtin_convertvector((bitnn_v16f)b_, bitnn_v16i), bitnn_v16c); \
        QUANT_IN_REGISTER(c_);                                                                     \
        memcpy((dst), &c_, sizeof c_);                                                             \
    } while (0)

BITNN_MULTIVERSION void bitnn_quantize_with(const float *x, size_t K, float amax, int8_t *q, size_t ldq)
{
    if (!(amax > 0.0f)) {
        memset(q, 0, ldq);
        return;
    }
    const float inv = 127.0f / amax;
    size_t k = 0;
    for (; k + 16 <= K; k += 16) {
        bitnn_v16f v;
        memcpy(&v, x + k, sizeof v);
        QUANTIZE16(q + k, v, inv);
    }
    for (; k < K; k++) q[k] = quantize1(x[k], inv);
    memset(q + K, 0, ldq - K);
}

float bitnn_quantize_row(const float *x, size_t K, int8_t *q, size_t ldq)
{
    const float amax = bitnn_absmax(x, K);
    bitnn_quantize_with(x, K, amax, q, ldq);
    return amax / 127.0f;
}

struct bitnn_gemm_ws {
    bitnn_buf q, scale, tab, tp; /* grown to the largest call seen */
};

bitnn_gemm_ws *bitnn_gemm_ws_new(void) { return calloc(1, sizeof(bitnn_gemm_ws)); }

/* The buffers of a workspace (a call's own, or one being freed). */
static void gemm_ws_release(bitnn_gemm_ws *ws)
{
    bitnn_buf_free(&ws->q), bitnn_buf_free(&ws->scale), bitnn_buf_free(&ws->tab);
    bitnn_buf_free(&ws->tp);
}

void bitnn_gemm_ws_free(bitnn_gemm_ws *ws)
{
    if (!ws) return;
    gemm_ws_release(ws);
    free(ws);
}

/* The operands of one GEMM call in ws: int8 rows and scales, tables and
 * their chunk pointers (filled in parallel over the rows). */
static bitnn_status gemm_operands(gemm_job *j, const bitnn_kernel_set *ks, bitnn_precision prec,
                                  bitnn_gemm_ws *ws, bitnn_pool *pool)
{
    const size_t M = j->M;
    const int tiled = prec == BITNN_PRECISION_FP32 || ks->gemm_q8t;
    if (tiled && bitnn_buf_reserve(&ws->tp, M * j->kc * sizeof *j->tp)) return BITNN_ENOMEM;
    j->tp = ws->tp.p;
    if (prec == BITNN_PRECISION_INT8) {
        j->ldq = 64 * j->wpr;
        /* the many-row kernel reads whole blocks of 32 rows: zero rows after M */
        const size_t pad = ks->gemm_q8m && M >= BITNN_Q8M_MIN_ROWS ? 32 : 0;
        if (bitnn_buf_reserve(&ws->q, (M + pad) * j->ldq) ||
            bitnn_buf_reserve(&ws->scale, M * sizeof(float)))
            return BITNN_ENOMEM;
        j->q = ws->q.p, j->scale = ws->scale.p;
        if (pad) {
            j->q8m = ks->gemm_q8m;
            memset(j->q + M * j->ldq, 0, pad * j->ldq);
        } else if (ks->gemm_q8t) {
            j->q8t = ks->gemm_q8t, j->tables_q8 = ks->tables_q8, j->ldt = 256 * j->kc;
            if (bitnn_buf_reserve(&ws->tab, M * j->ldt)) return BITNN_ENOMEM;
            j->tab8 = ws->tab.p;
        } else {
            j->q8 = ks->gemm_q8;
        }
        bitnn_parallel_for(pool, M, 16, quantize_rows, j);
    } else {
        j->f32 = ks->gemm_f32, j->ldt = 128 * j->kc;
        if (bitnn_buf_reserve(&ws->tab, M * j->ldt * sizeof(float))) return BITNN_ENOMEM;
        j->tab = ws->tab.p;
        bitnn_parallel_for(pool, M, 4, table_rows, j);
    }
    return BITNN_OK;
}

bitnn_status bitnn_binary_gemm_w(const float *x, size_t ldx, size_t M, const bitnn_weights *wt,
                                 const uint64_t *bias, float *z, size_t ldz, bitnn_precision prec,
                                 int isa, bitnn_pool *pool, bitnn_gemm_ws *ws)
{
    if (!wt) return BITNN_EINVAL;
    const size_t K = wt->K, N = wt->N;
    if (K == 0 || N == 0 || ldx < K || ldz < N || (unsigned)prec >= BITNN_PRECISION_COUNT)
        return BITNN_EINVAL;
    if (M == 0) return BITNN_OK;
    if (!x || !wt->bits || !z) return BITNN_EINVAL;
    if (!bitnn_isa_supported(isa)) return BITNN_EUNSUPPORTED;
    const bitnn_kernel_set *ks = bitnn_kernels_for(isa);
    gemm_job j = {x, ldx, M, K, wt->bits, bitnn_words_per_row(K), N, bias, z, ldz};
    j.kc = bitnn_tile_chunks(K);
    /* Weights not packed at load (a raw call) are packed for this call, and
     * a call without a workspace gets one for itself. */
    bitnn_weights tmp = *wt;
    bitnn_gemm_ws own = {{0}};
    bitnn_status s = BITNN_OK;
    if ((prec == BITNN_PRECISION_FP32 || ks->gemm_q8t) && !tmp.tiles) s = bitnn_weights_pack(&tmp);
    j.tiles = tmp.tiles;
    if (s == BITNN_OK) s = gemm_operands(&j, ks, prec, ws ? ws : &own, pool);
    if (s == BITNN_OK) {
        const size_t threads = (size_t)bitnn_pool_size(pool);
        /* Split over whichever axis gives every thread a fair share; each
         * z[m,n] is always computed whole by one thread, so the split never
         * changes it. */
        if (M >= 4 * threads && N < 64 * threads)
            bitnn_parallel_for(pool, M, j.q8m ? 32 : 4, gemm_rows_m, &j);
        else
            bitnn_parallel_for(pool, N, 16, gemm_rows_n, &j);
    }
    gemm_ws_release(&own);
    if (!wt->tiles) bitnn_weights_release(&tmp);
    return s;
}

/* Several GEMMs of the same rows x in one parallel loop: the outputs of all of
 * them in one index space (matrix i's rows at off[i], rounded up to whole
 * blocks of 16 so that no block is split between matrices). */
typedef struct {
    gemm_job j[BITNN_GEMM_MANY_MAX];
    size_t off[BITNN_GEMM_MANY_MAX + 1], n;
} gemm_many_job;

static void gemm_many_rows(void *ctx, size_t a, size_t b)
{
    const gemm_many_job *g = ctx;
    for (size_t i = 0; i < g->n; i++) {
        const size_t lo = a > g->off[i] ? a : g->off[i], hi = b < g->off[i + 1] ? b : g->off[i + 1];
        if (lo >= hi) continue;
        const size_t n0 = lo - g->off[i], n1 = hi - g->off[i] < g->j[i].N ? hi - g->off[i] : g->j[i].N;
        if (n0 < n1) gemm_block(&g->j[i], 0, g->j[i].M, n0, n1);
    }
}

bitnn_status bitnn_binary_gemm_many_w(const float *x, size_t ldx, size_t M, size_t count,
                                      const bitnn_weights *const *wts,
                                      const uint64_t *const *biases, float *const *zs,
                                      const size_t *ldzs, bitnn_precision prec, int isa,
                                      bitnn_pool *pool, bitnn_gemm_ws *ws)
{
    if (!wts || !biases || !zs || !ldzs || count == 0 || count > BITNN_GEMM_MANY_MAX ||
        (unsigned)prec >= BITNN_PRECISION_COUNT)
        return BITNN_EINVAL;
    if (!bitnn_isa_supported(isa)) return BITNN_EUNSUPPORTED;
    const bitnn_kernel_set *ks = bitnn_kernels_for(isa);
    const int tiled = prec == BITNN_PRECISION_FP32 || ks->gemm_q8t;
    for (size_t i = 0; i < count; i++) {
        const bitnn_weights *wt = wts[i];
        if (!wt || !wt->bits || !zs[i] || wt->N == 0 || wt->K == 0 || wt->K != wts[0]->K ||
            ldx < wt->K || ldzs[i] < wt->N || (tiled && !wt->tiles))
            return BITNN_EINVAL;
    }
    if (M == 0) return BITNN_OK;
    if (!x) return BITNN_EINVAL;
    const size_t K = wts[0]->K;
    gemm_many_job g = {.n = count};
    gemm_job j = {x, ldx, M, K, wts[0]->bits, bitnn_words_per_row(K), wts[0]->N, biases[0],
                  zs[0], ldzs[0]};
    j.kc = bitnn_tile_chunks(K);
    j.tiles = wts[0]->tiles;
    bitnn_gemm_ws own = {{0}};
    bitnn_status s = gemm_operands(&j, ks, prec, ws ? ws : &own, pool);
    if (s == BITNN_OK) {
        g.off[0] = 0;
        for (size_t i = 0; i < count; i++) {
            g.j[i] = j; /* the shared operands: int8 rows, scales, tables */
            g.j[i].w = wts[i]->bits, g.j[i].N = wts[i]->N, g.j[i].tiles = wts[i]->tiles;
            g.j[i].bias = biases[i], g.j[i].z = zs[i], g.j[i].ldz = ldzs[i];
            g.off[i + 1] = g.off[i] + (wts[i]->N + 15) / 16 * 16;
        }
        bitnn_parallel_for(pool, g.off[count], 16, gemm_many_rows, &g);
    }
    gemm_ws_release(&own);
    return s;
}

bitnn_status bitnn_binary_gemm(const float *x, size_t ldx, size_t M, size_t K,
                               const uint64_t *w, size_t N, const uint64_t *bias,
                               float *z, size_t ldz, bitnn_precision prec, int isa,
                               bitnn_pool *pool)
{
    const bitnn_weights wt = {w, N, K, NULL};
    return bitnn_binary_gemm_w(x, ldx, M, &wt, bias, z, ldz, prec, isa, pool, NULL);
}

/* ------------------------------------------------------------- Normalize */
/* The sums of Normalize run over fixed chunks of NORM_CHUNK values (double
 * partial sums, combined in chunk order), whatever the number of threads:
 * a long row (the "chw" normalization of a whole feature map) can then be
 * shared out between threads and still give the same bits. */
#define NORM_CHUNK 4096

/* Within a chunk, 8 partial sums (value n goes to sum (n - n0) % 8), added
 * pairwise at the end (bitnn_combine8, kernels.h): independent adds that the
 * compiler can vectorize, instead of one chain that waits on every add. The
 * order is still fixed. */

/* The 8 partial sums live in one vector (GCC vector extensions: one zmm, two
 * ymm or four xmm per clone); lane l still adds the values n0 + l, n0 + l + 8,
 * ... in increasing order, exactly as the scalar statement would. */
typedef double bitnn_v8d __attribute__((vector_size(64)));
typedef float bitnn_v8f __attribute__((vector_size(32)));

/* 8 floats from z, widened (a macro, a GCC statement expression: a
 * vector-returning function would change the ABI of the clones without
 * AVX-512) */
#define WIDEN8(z)                                          \
    ({                                                     \
        bitnn_v8f f_;                                      \
        memcpy(&f_, (z), sizeof f_);                       \
        __builtin_convertvector(f_, bitnn_v8d);            \
    })
/* 16 floats from z widened into lo (z[0..8)) and hi (z[8..16)). GCC 12 makes
 * this one 64-byte load and two vcvtps2pd to zmm in the AVX-512 clone, where
 * WIDEN8 becomes two ymm conversions, an extract and an insert per 8 values
 * (measured: the sums of Normalize 1.3x faster). */
typedef double bitnn_v16d __attribute__((vector_size(128)));
#define WIDEN16(z, lo, hi)                                                          \
    do {                                                                            \
        bitnn_v16f f_;                                                            \
        memcpy(&f_, (z), sizeof f_);                                                \
        const bitnn_v16d d_ = __builtin_convertvector(f_, bitnn_v16d);          \
        (lo) = __builtin_shufflevector(d_, d_, 0, 1, 2, 3, 4, 5, 6, 7);             \
        (hi) = __builtin_shufflevector(d_, d_, 8, 9, 10, 11, 12, 13, 14, 15);       \
    } while (0)
#define LOAD8(dst, z) ((dst) = WIDEN8(z))

/* The vector's lanes into a[8] (after the loop: the accumulator stays in a
 * register while it runs; a memcpy of its address would keep it in memory). */
#define STORE8(a, v)                                        \
    do {                                                    \
        for (int l_ = 0; l_ < 8; l_++) (a)[l_] = (v)[l_];   \
    } while (0)

BITNN_INLINE double sum_range(const float *z, size_t n0, size_t n1)
{
    bitnn_v8d v = {0}, lo, hi;
    size_t n = n0;
    for (; n + 16 <= n1; n += 16) { /* lane l: value n + l, then n + 8 + l */
        WIDEN16(z + n, lo, hi);
        v += lo;
        v += hi;
    }
    for (; n + 8 <= n1; n += 8) {
        bitnn_v8d x;
        LOAD8(x, z + n);
        v += x;
    }
    double a[8];
    STORE8(a, v);
    for (int l = 0; n < n1; n++, l++) a[l] += z[n];
    return bitnn_combine8(a);
}

BITNN_INLINE double sq_dev_range(const float *z, size_t n0, size_t n1, double mean)
{
    bitnn_v8d v = {0}, lo, hi;
    size_t n = n0;
    for (; n + 16 <= n1; n += 16) {
        WIDEN16(z + n, lo, hi);
        lo -= mean, hi -= mean;
        v += lo * lo;
        v += hi * hi;
    }
    for (; n + 8 <= n1; n += 8) {
        bitnn_v8d d;
        LOAD8(d, z + n);
        d -= mean;
        v += d * d;
    }
    double a[8];
    STORE8(a, v);
    for (int l = 0; n < n1; n++, l++) {
        const double d = z[n] - mean;
        a[l] += d * d;
    }
    return bitnn_combine8(a);
}

/* sum_range and sq_dev_range of 4 whole chunks at once (from z[n0], NORM_CHUNK
 * values each): 4 independent add chains instead of one that waits on every
 * add; each chunk's operations are those of the one-chunk functions, so the
 * bits are the same. */
/* out[i] = bitnn_combine8 of the lanes of vi (a macro: the vectors stay in
 * registers, and no vector crosses a call in the clones without AVX-512) */
#define COMBINE4(out, v0, v1, v2, v3)                                  \
    do {                                                               \
        double a_[8];                                                  \
        STORE8(a_, v0);                                                \
        (out)[0] = bitnn_combine8(a_);                                 \
        STORE8(a_, v1);                                                \
        (out)[1] = bitnn_combine8(a_);                                 \
        STORE8(a_, v2);                                                \
        (out)[2] = bitnn_combine8(a_);                                 \
        STORE8(a_, v3);                                                \
        (out)[3] = bitnn_combine8(a_);                                 \
    } while (0)

BITNN_INLINE void sum_chunks4(const float *z, size_t n0, double out[4])
{
    bitnn_v8d v0 = {0}, v1 = {0}, v2 = {0}, v3 = {0}, l0, h0, l1, h1, l2, h2, l3, h3;
    const float *z0 = z + n0;
    for (size_t n = 0; n < NORM_CHUNK; n += 16) {
        WIDEN16(z0 + n, l0, h0);
        WIDEN16(z0 + NORM_CHUNK + n, l1, h1);
        WIDEN16(z0 + 2 * NORM_CHUNK + n, l2, h2);
        WIDEN16(z0 + 3 * NORM_CHUNK + n, l3, h3);
        v0 += l0, v1 += l1, v2 += l2, v3 += l3;
        v0 += h0, v1 += h1, v2 += h2, v3 += h3;
    }
    COMBINE4(out, v0, v1, v2, v3);
}

BITNN_INLINE void sq_dev_chunks4(const float *z, size_t n0, double mean, double out[4])
{
    bitnn_v8d v0 = {0}, v1 = {0}, v2 = {0}, v3 = {0}, l0, h0, l1, h1, l2, h2, l3, h3;
    const float *z0 = z + n0;
    for (size_t n = 0; n < NORM_CHUNK; n += 16) {
        WIDEN16(z0 + n, l0, h0);
        WIDEN16(z0 + NORM_CHUNK + n, l1, h1);
        WIDEN16(z0 + 2 * NORM_CHUNK + n, l2, h2);
        WIDEN16(z0 + 3 * NORM_CHUNK + n, l3, h3);
        l0 -= mean, l1 -= mean, l2 -= mean, l3 -= mean;
        h0 -= mean, h1 -= mean, h2 -= mean, h3 -= mean;
        v0 += l0 * l0, v1 += l1 * l1, v2 += l2 * l2, v3 += l3 * l3;
        v0 += h0 * h0, v1 += h1 * h1, v2 += h2 * h2, v3 += h3 * h3;
    }
    COMBINE4(out, v0, v1, v2, v3);
}

/* The sums of chunks [c0, c1) of a row of N values into part[c - c0]: the
 * values (squares 0: sum_range) or their squared deviations from mean
 * (squares 1: sq_dev_range). */
BITNN_INLINE void chunk_sums(const float *z, size_t N, size_t c0, size_t c1, int squares,
                             double mean, double *part)
{
    size_t c = c0;
    for (; c + 4 <= c1 && (c + 4) * NORM_CHUNK <= N; c += 4) {
        if (squares)
            sq_dev_chunks4(z, c * NORM_CHUNK, mean, part + (c - c0));
        else
            sum_chunks4(z, c * NORM_CHUNK, part + (c - c0));
    }
    for (; c < c1; c++) {
        const size_t n0 = c * NORM_CHUNK, n1 = n0 + NORM_CHUNK < N ? n0 + NORM_CHUNK : N;
        part[c - c0] = squares ? sq_dev_range(z, n0, n1, mean) : sum_range(z, n0, n1);
    }
}

/* Normalize + act of z[n0, n1) given the row's statistics. Softmax is split:
 * act_range writes exp(v - max) and returns their sum; scale_range divides. */
BITNN_INLINE double act_range(float *z, size_t n0, size_t n1, double mean, double inv, bitnn_act act,
                        float mx)
{
    double total = 0.0;
    switch (act) {
    case BITNN_ACT_LINEAR:
        for (size_t n = n0; n < n1; n++) z[n] = (float)((z[n] - mean) * inv);
        break;
    case BITNN_ACT_RELU:
        for (size_t n = n0; n < n1; n++) {
            const float v = (float)((z[n] - mean) * inv);
            z[n] = v > 0.0f ? v : 0.0f;
        }
        break;
    case BITNN_ACT_GELU: {
        /* 16 at a time (erf.h); the last partial group through a padded copy,
         * so every value takes the same operations */
        size_t n = n0;
        for (; n + 16 <= n1; n += 16) {
            /* in registers from load to store: the values once went through a
             * stack buffer written as two halves and read back whole, a load
             * that store forwarding cannot serve, so every 16 values waited for
             * the previous 16 (3.2 ns a value on Zen 5, 1.2 now; 32 values as
             * two interleaved chains measured no faster). Explicit vector
             * conversions: with scalar (float) casts in an 8-iteration loop
             * GCC 12 -O3 dropped the rounding to f32. */
            bitnn_gelu_v16f f, g;
            memcpy(&f, z + n, sizeof f);
            const bitnn_v16d d = (__builtin_convertvector(f, bitnn_v16d) - mean) * inv;
            BITNN_GELU16(g, __builtin_convertvector(d, bitnn_gelu_v16f));
            memcpy(z + n, &g, sizeof g);
        }
        if (n < n1) { /* the last values through a zero-padded copy */
            const size_t m = n1 - n;
            float v[16] = {0};
            for (size_t i = 0; i < m; i++) v[i] = (float)((z[n + i] - mean) * inv);
            bitnn_gelu16(v, v);
            memcpy(z + n, v, m * sizeof *v);
        }
        break;
    }
    case BITNN_ACT_SOFTMAX:
        for (size_t n = n0; n < n1; n++) {
            const float v = (float)((z[n] - mean) * inv);
            z[n] = (float)exp((double)v - mx);
            total += z[n];
        }
        break;
    default: break;
    }
    return total;
}

/* Row statistics computed chunk by chunk; `partial` has one slot per chunk. */
typedef struct {
    float *z;
    size_t ldz, N;
    double eps;
    bitnn_act act;
    /* single-row parallel mode */
    double *partial;
    double mean, inv, scale;
    float mx;
    int phase;
} norm_job;

BITNN_INLINE float norm_value_max(const float *z, size_t N, double mean, double inv)
{
    /* max of the normalized values, computed as (float) of each, like act_range */
    float mx = -INFINITY;
    for (size_t n = 0; n < N; n++) {
        const float v = (float)((z[n] - mean) * inv);
        if (v > mx) mx = v;
    }
    return mx;
}

/* mean and 1 / sqrt(var + eps) of one row, chunk by chunk in order. */
BITNN_INLINE void row_stats(const float *z, size_t N, double eps, double *mean_out,
                            double *inv_out)
{
    const size_t chunks = (N + NORM_CHUNK - 1) / NORM_CHUNK;
    double sum = 0.0, part[4];
    for (size_t c = 0; c < chunks; c += 4) { /* 4 chunks at a time, added in order */
        const size_t c1 = c + 4 < chunks ? c + 4 : chunks;
        chunk_sums(z, N, c, c1, 0, 0.0, part);
        for (size_t i = 0; i < c1 - c; i++) sum += part[i];
    }
    const double mean = sum / (double)N;
    double ss = 0.0;
    for (size_t c = 0; c < chunks; c += 4) {
        const size_t c1 = c + 4 < chunks ? c + 4 : chunks;
        chunk_sums(z, N, c, c1, 1, mean, part);
        for (size_t i = 0; i < c1 - c; i++) ss += part[i];
    }
    *mean_out = mean;
    *inv_out = 1.0 / sqrt(ss / (double)N + eps);
}

BITNN_MULTIVERSION static void row_stats_v(const float *z, size_t N, double eps, double *mean,
                                           double *inv)
{
    row_stats(z, N, eps, mean, inv);
}

/* Elements [n0, n1) of one row through act (not softmax, whose total is a
 * sum in a fixed order): elementwise, so any split gives the same bits. */
BITNN_MULTIVERSION static void act_elems(void *ctx, size_t n0, size_t n1)
{
    const norm_job *j = ctx;
    act_range(j->z, n0, n1, j->mean, j->inv, j->act, 0.0f);
}

BITNN_MULTIVERSION static void normalize_row(float *z, size_t N, double eps, bitnn_act act)
{
    double mean, inv;
    row_stats(z, N, eps, &mean, &inv);
    const float mx = act == BITNN_ACT_SOFTMAX ? norm_value_max(z, N, mean, inv) : 0.0f;
    double total = 0.0;
    for (size_t c0 = 0; c0 < N; c0 += NORM_CHUNK)
        total += act_range(z, c0, c0 + NORM_CHUNK < N ? c0 + NORM_CHUNK : N, mean, inv, act, mx);
    if (act == BITNN_ACT_SOFTMAX) {
        const double scale = 1.0 / total;
        for (size_t n = 0; n < N; n++) z[n] = (float)(z[n] * scale);
    }
}

/* Short rows (a convolution's channels at each position) 8 at a time: the
 * statistics of row_stats with one vector lane per row, so that the
 * per-row fixed cost (the 8-way combine, the divisions, the square root) is
 * paid once per 8 rows. Each lane does exactly the scalar operations of
 * row_stats on its row (one chunk: N <= NORM_CHUNK), so the bits are the same. */
#define SHORT_ROW 256
typedef double bitnn_v8d_rows __attribute__((vector_size(64)));

BITNN_MULTIVERSION static void normalize_8rows(float *z, size_t ldz, size_t N, double eps,
                                               bitnn_act act)
{
    float zt[SHORT_ROW][8]; /* zt[n][r] = z[r][n] */
    for (size_t r = 0; r < 8; r++)
        for (size_t n = 0; n < N; n++) zt[n][r] = z[r * ldz + n];
    /* a0..a7: the partial sums of values n % 8 == 0..7 (named, so that they
     * stay in registers), then the tail into the lanes it belongs to */
    bitnn_v8d_rows a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0}, v;
    size_t n = 0;
    for (; n + 8 <= N; n += 8) {
        LOAD8(v, zt[n]), a0 += v;
        LOAD8(v, zt[n + 1]), a1 += v;
        LOAD8(v, zt[n + 2]), a2 += v;
        LOAD8(v, zt[n + 3]), a3 += v;
        LOAD8(v, zt[n + 4]), a4 += v;
        LOAD8(v, zt[n + 5]), a5 += v;
        LOAD8(v, zt[n + 6]), a6 += v;
        LOAD8(v, zt[n + 7]), a7 += v;
    }
    /* the tail by a switch, not pointers: the sums stay in registers */
#define LANE(k, x) do { switch (k) { case 0: a0 += x; break; case 1: a1 += x; break; \
    case 2: a2 += x; break; case 3: a3 += x; break; case 4: a4 += x; break; case 5: a5 += x; break; \
    case 6: a6 += x; break; default: a7 += x; break; } } while (0)
    for (size_t t = n; t < N; t++) {
        LOAD8(v, zt[t]);
        LANE(t % 8, v);
    }
    const bitnn_v8d_rows zero = {0};
    const bitnn_v8d_rows sum = zero + (((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)));
    const bitnn_v8d_rows mean = sum / (double)N;
    bitnn_v8d_rows b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}, b4 = {0}, b5 = {0}, b6 = {0}, b7 = {0};
#define SQ(k, bk) LOAD8(v, zt[n + (k)]), v -= mean, bk += v * v
    for (n = 0; n + 8 <= N; n += 8) {
        SQ(0, b0); SQ(1, b1); SQ(2, b2); SQ(3, b3); SQ(4, b4); SQ(5, b5); SQ(6, b6); SQ(7, b7);
    }
#undef SQ
#undef LANE
#define LANE(k, x) do { switch (k) { case 0: b0 += x; break; case 1: b1 += x; break; \
    case 2: b2 += x; break; case 3: b3 += x; break; case 4: b4 += x; break; case 5: b5 += x; break; \
    case 6: b6 += x; break; default: b7 += x; break; } } while (0)
    for (size_t t = n; t < N; t++) {
        LOAD8(v, zt[t]);
        v -= mean;
        LANE(t % 8, v * v);
    }
#undef LANE
    const bitnn_v8d_rows ss = zero + (((b0 + b4) + (b2 + b6)) + ((b1 + b5) + (b3 + b7)));
    const bitnn_v8d_rows var = ss / (double)N + eps;
    for (size_t r = 0; r < 8; r++)
        act_range(z + r * ldz, 0, N, mean[r], 1.0 / sqrt(var[r]), act, 0.0f);
}

/* Rows of one chunk (N <= NORM_CHUNK) 4 at a time: row_stats's sums for
 * the 4 rows in one loop, so that 4 independent add chains overlap (one
 * row's 8-lane chain waits on every add); each row's operations are the
 * scalar statement's, so the bits are the same. */
BITNN_MULTIVERSION static void normalize_4rows(float *z, size_t ldz, size_t N, double eps,
                                               bitnn_act act)
{
    bitnn_v8d s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    size_t n = 0;
    for (; n + 8 <= N; n += 8) {
        s0 += WIDEN8(z + n), s1 += WIDEN8(z + ldz + n);
        s2 += WIDEN8(z + 2 * ldz + n), s3 += WIDEN8(z + 3 * ldz + n);
    }
    double a[4][8], mean[4], inv[4];
    STORE8(a[0], s0);
    STORE8(a[1], s1);
    STORE8(a[2], s2);
    STORE8(a[3], s3);
    for (int r = 0; r < 4; r++) {
        for (size_t t = n, l = 0; t < N; t++, l++) a[r][l] += z[r * ldz + t];
        mean[r] = (0.0 + bitnn_combine8(a[r])) / (double)N;
    }
    bitnn_v8d d0, d1, d2, d3;
    s0 = s1 = s2 = s3 = (bitnn_v8d){0};
    for (n = 0; n + 8 <= N; n += 8) {
        d0 = WIDEN8(z + n) - mean[0], d1 = WIDEN8(z + ldz + n) - mean[1];
        d2 = WIDEN8(z + 2 * ldz + n) - mean[2], d3 = WIDEN8(z + 3 * ldz + n) - mean[3];
        s0 += d0 * d0, s1 += d1 * d1, s2 += d2 * d2, s3 += d3 * d3;
    }
    STORE8(a[0], s0);
    STORE8(a[1], s1);
    STORE8(a[2], s2);
    STORE8(a[3], s3);
    for (int r = 0; r < 4; r++) {
        for (size_t t = n, l = 0; t < N; t++, l++) {
            const double d = z[r * ldz + t] - mean[r];
            a[r][l] += d * d;
        }
        inv[r] = 1.0 / sqrt((0.0 + bitnn_combine8(a[r])) / (double)N + eps);
    }
    for (int r = 0; r < 4; r++) act_range(z + r * ldz, 0, N, mean[r], inv[r], act, 0.0f);
}

static void normalize_rows(void *ctx, size_t m0, size_t m1)
{
    const norm_job *j = ctx;
    size_t m = m0;
    if (j->act != BITNN_ACT_SOFTMAX) {
        if (j->N <= SHORT_ROW)
            for (; m + 8 <= m1; m += 8) normalize_8rows(j->z + m * j->ldz, j->ldz, j->N, j->eps, j->act);
        else if (j->N <= NORM_CHUNK)
            for (; m + 4 <= m1; m += 4) normalize_4rows(j->z + m * j->ldz, j->ldz, j->N, j->eps, j->act);
    }
    for (; m < m1; m++) normalize_row(j->z + m * j->ldz, j->N, j->eps, j->act);
}

/* One long row, chunks shared out between threads; phases run in order. */
BITNN_MULTIVERSION static void normalize_chunks(void *ctx, size_t c0, size_t c1)
{
    norm_job *j = ctx;
    if (j->phase < 2) {
        chunk_sums(j->z, j->N, c0, c1, j->phase, j->mean, j->partial + c0);
        return;
    }
    for (size_t c = c0; c < c1; c++) {
        const size_t n0 = c * NORM_CHUNK, n1 = n0 + NORM_CHUNK < j->N ? n0 + NORM_CHUNK : j->N;
        switch (j->phase) {
        case 2: j->partial[c] = act_range(j->z, n0, n1, j->mean, j->inv, j->act, j->mx); break;
        default:
            for (size_t n = n0; n < n1; n++) j->z[n] = (float)(j->z[n] * j->scale);
            break;
        }
    }
}

static double ordered_sum(const double *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += v[i];
    return s;
}

bitnn_status bitnn_normalize_stats(const float *z, size_t N, float eps, bitnn_pool *pool,
                                   double *mean, double *inv)
{
    if (!z || N == 0 || !(eps > 0.0f) || isinf(eps) || !mean || !inv) return BITNN_EINVAL;
    const size_t chunks = (N + NORM_CHUNK - 1) / NORM_CHUNK;
    if (chunks >= 4 && bitnn_pool_size(pool) > 1) { /* bitnn_normalize_act's phases 0 and 1 */
        norm_job j = {(float *)z, N, N, eps, BITNN_ACT_LINEAR, malloc(chunks * sizeof(double)),
                      0, 0, 0, 0, 0};
        if (!j.partial) return BITNN_ENOMEM;
        bitnn_parallel_for(pool, chunks, 1, normalize_chunks, &j);
        j.mean = ordered_sum(j.partial, chunks) / (double)N;
        j.phase = 1;
        bitnn_parallel_for(pool, chunks, 1, normalize_chunks, &j);
        *mean = j.mean;
        *inv = 1.0 / sqrt(ordered_sum(j.partial, chunks) / (double)N + j.eps);
        free(j.partial);
        return BITNN_OK;
    }
    row_stats_v(z, N, eps, mean, inv);
    return BITNN_OK;
}

bitnn_status bitnn_normalize_apply(float *z, size_t n, double mean, double inv, bitnn_act act,
                                   bitnn_pool *pool)
{
    if ((!z && n) || (unsigned)act >= BITNN_ACT_COUNT || act == BITNN_ACT_SOFTMAX)
        return BITNN_EINVAL;
    norm_job j = {z, n, n, 0.0, act, NULL, mean, inv, 0, 0, 0};
    bitnn_parallel_for(pool, n, 256, act_elems, &j);
    return BITNN_OK;
}

BITNN_MULTIVERSION float bitnn_max(const float *x, size_t n)
{
    /* 16 running maxima, a compare and a select on the bits per 16 values
     * (max is exact: any grouping gives the same value) */
    bitnn_v16f m = (bitnn_v16f){0} - INFINITY;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        bitnn_v16f v;
        memcpy(&v, x + i, sizeof v);
        const bitnn_v16i gt = v > m;
        m = (bitnn_v16f)(((bitnn_v16i)v & gt) | ((bitnn_v16i)m & ~gt));
    }
    float r = -INFINITY;
    for (int l = 0; l < 16; l++) r = m[l] > r ? m[l] : r;
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

BITNN_MULTIVERSION void bitnn_relu_quantize(const float *z, size_t n, double mean, double inv,
                                            float amax, int8_t *q)
{
    /* the relu values of act_range quantized as bitnn_quantize_with does,
     * 16 at a time in registers */
    if (!(amax > 0.0f)) {
        memset(q, 0, n);
        return;
    }
    const float qinv = 127.0f / amax;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        bitnn_v16f f;
        memcpy(&f, z + i, sizeof f);
        const bitnn_v16d d = (__builtin_convertvector(f, bitnn_v16d) - mean) * inv;
        const bitnn_v16f v = __builtin_convertvector(d, bitnn_v16f);
        const bitnn_v16f y = (bitnn_v16f)((bitnn_v16i)v & (v > 0.0f)); /* v > 0 ? v : +0.0 */
        QUANTIZE16(q + i, y, qinv);
    }
    for (; i < n; i++) { /* act_range's BITNN_ACT_RELU case */
        const float v = (float)((z[i] - mean) * inv);
        q[i] = quantize1(v > 0.0f ? v : 0.0f, qinv);
    }
}

bitnn_status bitnn_normalize_act(float *z, size_t ldz, size_t M, size_t N, float eps,
                                 bitnn_act act, bitnn_pool *pool)
{
    if (N == 0 || ldz < N || !(eps > 0.0f) || isinf(eps) || (unsigned)act >= BITNN_ACT_COUNT)
        return BITNN_EINVAL;
    if (M == 0) return BITNN_OK;
    if (!z) return BITNN_EINVAL;
    norm_job j = {z, ldz, N, eps, act, NULL, 0, 0, 0, 0, 0};
    const size_t chunks = (N + NORM_CHUNK - 1) / NORM_CHUNK;
    if (M == 1 && chunks >= 4 && bitnn_pool_size(pool) > 1) {
        j.partial = malloc(chunks * sizeof(double));
        if (!j.partial) return BITNN_ENOMEM;
        j.phase = 0;
        bitnn_parallel_for(pool, chunks, 1, normalize_chunks, &j);
        j.mean = ordered_sum(j.partial, chunks) / (double)N;
        j.phase = 1;
        bitnn_parallel_for(pool, chunks, 1, normalize_chunks, &j);
        j.inv = 1.0 / sqrt(ordered_sum(j.partial, chunks) / (double)N + j.eps);
        if (act == BITNN_ACT_SOFTMAX) j.mx = norm_value_max(z, N, j.mean, j.inv);
        j.phase = 2;
        bitnn_parallel_for(pool, chunks, 1, normalize_chunks, &j);
        if (act == BITNN_ACT_SOFTMAX) {
            j.scale = 1.0 / ordered_sum(j.partial, chunks);
            j.phase = 3;
            bitnn_parallel_for(pool, chunks, 1, normalize_chunks, &j);
        }
        free(j.partial);
        return BITNN_OK;
    }
    if (M == 1 && N >= 2048 && act != BITNN_ACT_SOFTMAX && bitnn_pool_size(pool) > 1) {
        /* One shorter row (a token's gelu layer): statistics on the caller,
         * the activation (erf) shared out. */
        row_stats_v(z, N, j.eps, &j.mean, &j.inv);
        return bitnn_normalize_apply(z, N, j.mean, j.inv, act, pool);
    }
    bitnn_parallel_for(pool, M, 8, normalize_rows, &j);
    return BITNN_OK;
}

bitnn_status bitnn_linear_w(const float *x, size_t ldx, size_t M, const bitnn_weights *wt,
                            const uint64_t *bias, float eps, bitnn_act act, float *y, size_t ldy,
                            bitnn_precision prec, int isa, bitnn_pool *pool, bitnn_gemm_ws *ws)
{
    if (!(eps > 0.0f) || isinf(eps) || (unsigned)act >= BITNN_ACT_COUNT) return BITNN_EINVAL;
    bitnn_status s = bitnn_binary_gemm_w(x, ldx, M, wt, bias, y, ldy, prec, isa, pool, ws);
    if (s != BITNN_OK) return s;
    return bitnn_normalize_act(y, ldy, M, wt->N, eps, act, pool);
}

bitnn_status bitnn_linear(const float *x, size_t ldx, size_t M, size_t K, const uint64_t *w,
                          size_t N, const uint64_t *bias, float eps, bitnn_act act, float *y,
                          size_t ldy, bitnn_precision prec, int isa, bitnn_pool *pool)
{
    const bitnn_weights wt = {w, N, K, NULL};
    return bitnn_linear_w(x, ldx, M, &wt, bias, eps, act, y, ldy, prec, isa, pool, NULL);
}
