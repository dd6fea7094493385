/*
 * conv.c - binary normalized convolution (BNCVL, docs/maths.md), max-pool and
 * global average pooling on NHWC activations of one image.
 *
 * The convolution is im2col + the binary GEMM of the kernel table: each output
 * position becomes a row of K = f*f*C_in inputs ordered (dy, dx, c), the order
 * of the packed weight rows [C_out, kh, kw, C_in]. Positions are processed in
 * tiles whose im2col rows fit in L2; tiles are shared out between threads, and
 * every output value is computed whole by one thread, so results do not depend
 * on the thread count. Out-of-image taps ('same' padding) contribute 0.0.
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "kernels.h"

#define TILE_BYTES (256u * 1024u)

typedef struct {
    const float *x;
    const int8_t *qx; /* int8: the quantized input map (one scale for the image) */
    float scale;
    size_t H, W, C, f, K, ld, tile; /* ld: elements per im2col row */
    const bitnn_weights *w;
    size_t Cout, kc, ldt; /* fp32: the tables of a tile's rows, ldt floats each */
    const uint64_t *bias;
    float *z;
    bitnn_gemm_f32_fn gemm;
    bitnn_gemm_q8_fn gemm_q8;
    int failed; /* set when a scratch allocation fails */
} conv_job;

/* im2col rows for positions [p0, p1) into buf (rows of ld elements of `es`
 * bytes from src; elements K..ld are zero). The taps of one kernel row that
 * fall inside the image are contiguous in NHWC, so each kernel row is one
 * copy plus zero fill at the edges. */
static void im2col(const conv_job *j, const void *src, size_t es, size_t p0, size_t p1, void *buf)
{
    const size_t f = j->f, pad = f / 2, C = j->C, W = j->W;
    for (size_t p = p0; p < p1; p++) {
        const size_t i = p / W, jj = p % W;
        /* kernel columns dx in [dx0, dx1) land inside the image */
        const size_t dx0 = jj < pad ? pad - jj : 0;
        const size_t dx1 = jj + f - pad > W ? W + pad - jj : f;
        unsigned char *row = (unsigned char *)buf + (p - p0) * j->ld * es;
        for (size_t dy = 0; dy < f; dy++, row += f * C * es) {
            const size_t yy = i + dy; /* image row yy - pad */
            if (yy < pad || yy - pad >= j->H) {
                memset(row, 0, f * C * es);
                continue;
            }
            if (dx0) memset(row, 0, dx0 * C * es);
            memcpy(row + dx0 * C * es,
                   (const unsigned char *)src + ((yy - pad) * W + (jj + dx0 - pad)) * C * es,
                   (dx1 - dx0) * C * es);
            if (dx1 < f) memset(row + dx1 * C * es, 0, (f - dx1) * C * es);
        }
        if (j->ld > j->K) memset(row, 0, (j->ld - j->K) * es);
    }
}

static void conv_tiles(void *ctx, size_t t0, size_t t1)
{
    conv_job *j = ctx;
    const size_t P = j->H * j->W, wpr = bitnn_words_per_row(j->K);
    const size_t es = j->qx ? 1 : sizeof(float);
    void *buf = malloc(j->tile * j->ld * es), *tab = NULL;
    float *scale = j->qx ? malloc(j->tile * sizeof(float)) : NULL;
    if (!j->qx && posix_memalign(&tab, 64, j->tile * j->ldt * sizeof(float)) != 0) tab = NULL;
    if (!buf || (j->qx ? !scale : !tab)) {
        j->failed = 1; /* benign race: every writer stores 1 */
        free(buf), free(scale), free(tab);
        return;
    }
    for (size_t r = 0; scale && r < j->tile; r++) scale[r] = j->scale;
    for (size_t t = t0; t < t1; t++) {
        const size_t p0 = t * j->tile, p1 = p0 + j->tile < P ? p0 + j->tile : P;
        if (j->qx) {
            im2col(j, j->qx, 1, p0, p1, buf);
            j->gemm_q8(buf, j->ld, p1 - p0, j->K, j->w->bits, wpr, 0, j->Cout, scale, j->bias,
                       j->z + p0 * j->Cout, j->Cout);
        } else {
            im2col(j, j->x, sizeof(float), p0, p1, buf);
            for (size_t p = 0; p < p1 - p0; p++)
                bitnn_build_tables((const float *)buf + p * j->ld, j->K, (float *)tab + p * j->ldt);
            j->gemm(tab, j->ldt, p1 - p0, j->kc, j->w->tiles, 0, j->Cout, j->bias,
                    j->z + p0 * j->Cout, j->Cout);
        }
    }
    free(buf), free(scale), free(tab);
}

/* Quantizing an input map: the maxima of fixed chunks (max is exact, so the
 * split never changes amax), then each chunk quantized with the map's amax. */
#define QUANT_CHUNK 16384

typedef struct {
    const float *x;
    size_t n, chunks;
    float *part;
    int8_t *q;
    float amax;
    int phase;
} quant_job;

static void quantize_chunks(void *ctx, size_t c0, size_t c1)
{
    quant_job *j = ctx;
    for (size_t c = c0; c < c1; c++) {
        const size_t i0 = c * QUANT_CHUNK, len = i0 + QUANT_CHUNK < j->n ? QUANT_CHUNK : j->n - i0;
        if (j->phase == 0)
            j->part[c] = bitnn_absmax(j->x + i0, len);
        else
            bitnn_quantize_with(j->x + i0, len, j->amax, j->q + i0, len);
    }
}

bitnn_status bitnn_conv2d_raw(const float *x, size_t H, size_t W, size_t C,
                              const bitnn_weights *w, size_t f, const uint64_t *bias, float *z,
                              bitnn_precision prec, int isa, bitnn_pool *pool)
{
    if (!x || !w || !w->bits || !z || H == 0 || W == 0 || C == 0 || w->N == 0 || f == 0 ||
        f % 2 == 0 || w->K != f * f * C || (unsigned)prec >= BITNN_PRECISION_COUNT ||
        (prec == BITNN_PRECISION_FP32 && !w->tiles))
        return BITNN_EINVAL;
    if (!bitnn_isa_supported(isa)) return BITNN_EUNSUPPORTED;
    const bitnn_kernel_set *ks = bitnn_kernels_for(isa);
    const size_t Cout = w->N, kc = bitnn_tile_chunks(f * f * C);
    conv_job j = {x, NULL, 0.0f, H, W, C, f, f * f * C, f * f * C, 0, w, Cout, kc, 128 * kc, bias,
                  z, ks->gemm_f32, ks->gemm_q8, 0};
    int8_t *qx = NULL;
    if (prec == BITNN_PRECISION_INT8) {
        /* One scale for the whole input map: quantize it once, then gather
         * int8 im2col rows (a quarter of the fp32 traffic). */
        const size_t n = H * W * C;
        qx = malloc(n);
        quant_job q = {x, n, (n + QUANT_CHUNK - 1) / QUANT_CHUNK, NULL, qx, 0.0f, 0};
        q.part = malloc(q.chunks * sizeof(float));
        if (!qx || !q.part) {
            free(qx), free(q.part);
            return BITNN_ENOMEM;
        }
        bitnn_parallel_for(pool, q.chunks, 1, quantize_chunks, &q); /* chunk maxima */
        for (size_t c = 0; c < q.chunks; c++) q.amax = q.part[c] > q.amax ? q.part[c] : q.amax;
        q.phase = 1;
        bitnn_parallel_for(pool, q.chunks, 1, quantize_chunks, &q);
        free(q.part);
        j.qx = qx, j.scale = q.amax / 127.0f, j.ld = 64 * bitnn_words_per_row(j.K);
    }
    const size_t P = H * W;
    /* fp32: a row's tables (16 floats per 4 inputs) are what a tile holds */
    size_t tile = TILE_BYTES / (qx ? j.ld : j.ldt * sizeof(float));
    if (tile < 16) tile = 16;
    /* Enough tiles for every thread to get some work on small images. */
    const size_t threads = (size_t)bitnn_pool_size(pool);
    if (threads > 1 && P / tile < 4 * threads) {
        size_t t = P / (4 * threads);
        if (t < 4) t = 4;
        if (t < tile) tile = t;
    }
    j.tile = tile;
    bitnn_parallel_for(pool, (P + tile - 1) / tile, 1, conv_tiles, &j);
    free(qx);
    return j.failed ? BITNN_ENOMEM : BITNN_OK;
}

typedef struct {
    const float *x;
    size_t H, W, C, k;
    float *y;
} pool_job;

/* Output rows [i0, i1) of the max-pool. */
BITNN_MULTIVERSION static void maxpool_rows(void *ctx, size_t i0, size_t i1)
{
    const pool_job *j = ctx;
    const size_t k = j->k, W = j->W, C = j->C, Wo = W / k;
    for (size_t i = i0; i < i1; i++)
        for (size_t jj = 0; jj < Wo; jj++) {
            float *out = j->y + (i * Wo + jj) * C;
            memcpy(out, j->x + ((i * k) * W + jj * k) * C, C * sizeof(float));
            for (size_t dy = 0; dy < k; dy++)
                for (size_t dx = 0; dx < k; dx++) {
                    const float *in = j->x + ((i * k + dy) * W + jj * k + dx) * C;
                    for (size_t c = 0; c < C; c++) /* this form vectorizes to maxps */
                        out[c] = in[c] > out[c] ? in[c] : out[c];
                }
        }
}

void bitnn_maxpool2d(const float *x, size_t H, size_t W, size_t C, size_t k, float *y,
                     bitnn_pool *pool)
{
    pool_job j = {x, H, W, C, k, y};
    bitnn_parallel_for(pool, H / k, 1, maxpool_rows, &j);
}

BITNN_MULTIVERSION void bitnn_global_avgpool(const float *x, size_t H, size_t W, size_t C, float *y, double *acc)
{
    for (size_t c = 0; c < C; c++) acc[c] = 0.0;
    for (size_t p = 0; p < H * W; p++)
        for (size_t c = 0; c < C; c++) acc[c] += x[p * C + c];
    for (size_t c = 0; c < C; c++) y[c] = (float)(acc[c] / (double)(H * W));
}
