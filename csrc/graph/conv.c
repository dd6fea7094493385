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
#include <stdatomic.h>
#include <math.h>
#include <stddef.h>
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
    size_t Cout, kc;
    const uint64_t *bias;
    float *z;
    const bitnn_kernel_set *ks;
    int tables;       /* table kernels (fp32, or int8 with gemm_q8t); else im2col rows */
    bitnn_gemm_q8m_fn q8m; /* int8 im2col rows on the tiles (AMX), else the direct kernel */
    int map;          /* C % 32 == 0: each input pixel's tables made once, in a ring */
    size_t ring_rows, row_bytes; /* the ring: input row y at (y % ring_rows) * row_bytes */
    const void *zero; /* the tables of 32 zero inputs: taps outside the image */
    size_t cb;        /* bytes per chunk of tables: 512 (fp32) or 256 (int8) */
    unsigned char *slots; /* per-thread scratch, slot_bytes each (conv_tiles) */
    size_t slot_bytes, n_slots;
    atomic_size_t next_slot;
    int failed;       /* set when a scratch allocation fails */
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

/* Chunk pointers of the positions of output row i into the ring of table
 * rows: tap (dy, dx) of position (i, jj) reads pixel (i + dy - pad,
 * jj + dx - pad), or the zero tables outside the image; its C / 32 chunks
 * follow each other. */
static void map_pointers(const conv_job *j, const unsigned char *ring, size_t i, const void **tp)
{
    const size_t f = j->f, pad = f / 2, cpp = j->C / 32, pb = cpp * j->cb, W = j->W;
    const unsigned char *row[BITNN_CONV_MAX_F]; /* f <= BITNN_CONV_MAX_F (bitnn_conv2d_raw) */
    for (size_t dy = 0; dy < f; dy++) {
        const size_t y = i + dy; /* pixel row y - pad */
        row[dy] = y >= pad && y - pad < j->H ? ring + ((y - pad) % j->ring_rows) * j->row_bytes : NULL;
    }
    for (size_t jj = 0; jj < W; jj++) {
        const int inner = jj >= pad && jj + pad < W; /* every column inside the image */
        for (size_t dy = 0; dy < f; dy++) {
            if (row[dy] && inner) {
                const unsigned char *px = row[dy] + (jj - pad) * pb;
                for (size_t t = 0; t < f * cpp; t++) *tp++ = px + t * j->cb;
                continue;
            }
            for (size_t dx = 0; dx < f; dx++) {
                const size_t x = jj + dx; /* pixel column x - pad */
                const int in = row[dy] && x >= pad && x - pad < W;
                const unsigned char *px = in ? row[dy] + (x - pad) * pb : NULL;
                for (size_t c = 0; c < cpp; c++) *tp++ = in ? px + c * j->cb : j->zero;
            }
        }
    }
}

/* The tables of K inputs at src (int8 values with qx, else floats) into t:
 * K / 32 chunks of cb bytes. */
static void make_tables(const conv_job *j, const void *src, size_t K, unsigned char *t)
{
    if (j->qx)
        j->ks->tables_q8(src, K, t);
    else
        bitnn_build_tables(src, K, (float *)t);
}

/* The table kernels' input map (the int8 copy, or the floats) and its bytes
 * per value. */
static const unsigned char *input_map(const conv_job *j, size_t *es)
{
    *es = j->qx ? 1 : sizeof(float);
    return j->qx ? (const unsigned char *)j->qx : (const unsigned char *)j->x;
}

/* Input rows [y0, y1) (those inside the image) into the ring: each pixel's
 * tables, C / 32 chunks of cb bytes. */
static void ring_fill(const conv_job *j, unsigned char *ring, size_t y0, size_t y1)
{
    size_t es;
    const unsigned char *src = input_map(j, &es);
    for (size_t y = y0; y < y1 && y < j->H; y++) {
        unsigned char *row = ring + (y % j->ring_rows) * j->row_bytes;
        for (size_t x = 0; x < j->W; x++)
            make_tables(j, src + (y * j->W + x) * j->C * es, j->C, row + x * (j->C / 32) * j->cb);
    }
}

/* The table kernels on positions [p0, p1) of an input without whole chunks of
 * 32 channels: im2col rows turned into tables in buf (a tile's worth). */
static void tile_tables(conv_job *j, size_t p0, size_t p1, void *rows, void *buf, const void **tp)
{
    size_t es;
    const unsigned char *src = input_map(j, &es);
    im2col(j, src, es, p0, p1, rows);
    for (size_t p = 0; p < p1 - p0; p++) {
        unsigned char *t = (unsigned char *)buf + p * j->kc * j->cb;
        make_tables(j, (const unsigned char *)rows + p * j->ld * es, j->K, t);
        for (size_t c = 0; c < j->kc; c++) tp[p * j->kc + c] = t + j->cb * c;
    }
}

/* The scratch of one conv_tiles call, carved from its slot (64-byte pieces):
 * im2col rows (gemm_q8m reads whole blocks of 32 rows: 32 more), tables,
 * chunk pointers (with the ring: also one map per ring slot arrangement, see
 * conv_tiles) and the row scales. */
static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

static size_t slot_bytes(const conv_job *j)
{
    const size_t es = j->qx ? 1 : sizeof(float);
    return (j->map ? round64(j->ring_rows * j->row_bytes)
                   : round64((j->tile + (j->q8m ? 32 : 0)) * j->ld * es)) +
           (j->tables && !j->map ? round64(j->tile * j->kc * j->cb) : 0) +
           (j->tables ? (1 + (j->map ? j->ring_rows : 0)) * round64(j->tile * j->kc * sizeof(void *))
                      : 0) +
           (j->qx ? round64(j->tile * sizeof(float)) : 0);
}

static void conv_tiles(void *ctx, size_t t0, size_t t1)
{
    conv_job *j = ctx;
    const size_t P = j->H * j->W, wpr = bitnn_words_per_row(j->K);
    const size_t es = j->qx ? 1 : sizeof(float);
    /* each call of the parallel loop (at most one per thread) claims a slot */
    const size_t slot = atomic_fetch_add(&j->next_slot, 1);
    if (slot >= j->n_slots) {
        j->failed = 1; /* cannot happen: one call per thread; benign race */
        return;
    }
    unsigned char *at = j->slots + slot * j->slot_bytes;
    void *rows = NULL, *buf = NULL;
    const void **tp = NULL, **maps = NULL;
    float *scale = NULL;
    unsigned char *ring = NULL;
    if (j->map) ring = at, at += round64(j->ring_rows * j->row_bytes);
    else rows = at, at += round64((j->tile + (j->q8m ? 32 : 0)) * j->ld * es);
    if (j->tables && !j->map) buf = at, at += round64(j->tile * j->kc * j->cb);
    const size_t map_bytes = round64(j->tile * j->kc * sizeof *tp);
    if (j->tables) tp = (const void **)(void *)at, at += map_bytes;
    if (j->tables && j->map) maps = (const void **)(void *)at, at += j->ring_rows * map_bytes;
    if (j->qx) scale = (float *)(void *)at;
    /* The chunk pointers of an output row whose f input rows are all inside
     * the image depend only on the ring slots those rows occupy, that is on
     * i % ring_rows: such a row's map is made once per call and kept. */
    int kept[BITNN_CONV_MAX_F] = {0};

    for (size_t r = 0; scale && r < j->tile; r++) scale[r] = j->scale;
    size_t made = 0; /* the map: input rows below it are in the ring */
    for (size_t t = t0; t < t1; t++) {
        const size_t p0 = t * j->tile, p1 = p0 + j->tile < P ? p0 + j->tile : P;
        float *z = j->z + p0 * j->Cout;
        if (!j->tables) { /* int8 without table kernels: im2col + a row kernel */
            im2col(j, j->qx, 1, p0, p1, rows);
            if (j->q8m) { /* it reads up to 32 rows past the tile's: keep them defined */
                memset((unsigned char *)rows + (p1 - p0) * j->ld, 0, 32 * j->ld);
                j->q8m(rows, j->ld, p1 - p0, j->kc, j->w->tiles, 0, j->Cout, scale, j->bias, z,
                       j->Cout);
            }
            else
                j->ks->gemm_q8(rows, j->ld, p1 - p0, j->K, j->w->bits, wpr, 0, j->Cout, scale,
                               j->bias, z, j->Cout);
            continue;
        }
        const void **use = tp;
        if (j->map) {
            /* a tile is one output row i: it reads input rows [lo, hi); the
             * previous tile of this call (row i - 1) left those below `made` */
            const size_t i = p0 / j->W, pad = j->f / 2;
            const size_t lo = i > pad ? i - pad : 0, hi = i + pad + 1 < j->H ? i + pad + 1 : j->H;
            ring_fill(j, ring, t > t0 && made > lo ? made : lo, hi);
            made = hi;
            if (i >= pad && i + pad < j->H) {
                const size_t k = i % j->ring_rows;
                use = (const void **)(void *)((unsigned char *)maps + k * map_bytes);
                if (!kept[k]) map_pointers(j, ring, i, use), kept[k] = 1;
            } else {
                map_pointers(j, ring, i, tp);
            }
        } else {
            tile_tables(j, p0, p1, rows, buf, tp);
        }
        if (j->qx)
            j->ks->gemm_q8t(use, p1 - p0, j->kc, j->w->tiles, 0, j->Cout,
                            scale, j->bias, z, j->Cout);
        else
            j->ks->gemm_f32(use, p1 - p0, j->kc, j->w->tiles, 0, j->Cout,
                            j->bias, z, j->Cout);
    }
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

/* ------------------------------------------------ int8, direct (conv_q8) */
static size_t conv_q8_channels(size_t C) { return (C + 3) / 4 * 4; }

size_t bitnn_conv_q8_bytes(size_t N, size_t f, size_t C)
{
    return (N + 15) / 16 * 16 * f * f * conv_q8_channels(C);
}

void bitnn_conv_expand_q8(const uint64_t *bits, size_t N, size_t f, size_t C, uint8_t *wx)
{
    const size_t T = f * f, Cp = conv_q8_channels(C), wpr = bitnn_words_per_row(T * C);
    memset(wx, 0, bitnn_conv_q8_bytes(N, f, C));
    for (size_t n = 0; n < N; n++) {
        const uint64_t *row = bits + n * wpr;
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) {
                const size_t k = t * C + c;
                wx[(((n / 16) * T + t) * (Cp / 4) + c / 4) * 64 + 4 * (n % 16) + c % 4] =
                    (uint8_t)((row[k >> 6] >> (k & 63)) & 1u);
            }
    }
}

typedef struct {
    const float *x;
    size_t H, W, C, Cp, f, Wp;
    float amax;
    int8_t *xp;
    const uint8_t *wx;
    size_t N;
    bitnn_conv_q8_fn conv;
    const uint64_t *bias;
    float *z;
    _Atomic uint32_t zmax; /* the bits of the largest z so far (the calls race) */
} direct_job;

static void atomic_max_float(_Atomic uint32_t *a, float v)
{
    uint32_t old = atomic_load(a), nv;
    memcpy(&nv, &v, sizeof nv);
    for (;;) {
        float o;
        memcpy(&o, &old, sizeof o);
        if (!(v > o) || atomic_compare_exchange_weak(a, &old, nv)) return;
    }
}

int bitnn_conv_direct_q8(bitnn_precision prec, int isa)
{
    if (prec != BITNN_PRECISION_INT8 || !bitnn_isa_supported(isa)) return 0;
    const bitnn_kernel_set *ks = bitnn_kernels_for(isa);
    return ks->conv_q8 && !ks->gemm_q8m; /* AMX: gemm_q8m on im2col rows */
}

int8_t *bitnn_conv_q8_map(bitnn_conv_ws *ws, size_t H, size_t W, size_t C, size_t f)
{
    const size_t pad = f / 2, Wp = W + f - 1, Cp = conv_q8_channels(C);
    if (bitnn_buf_reserve(&ws->q, (H + f - 1) * Wp * Cp) != BITNN_OK) return NULL;
    int8_t *xp = ws->q.p;
    memset(xp, 0, pad * Wp * Cp);
    memset(xp + (pad + H) * Wp * Cp, 0, (f - 1 - pad) * Wp * Cp);
    for (size_t r = pad; r < pad + H; r++) {
        memset(xp + r * Wp * Cp, 0, pad * Cp);
        memset(xp + (r * Wp + pad + W) * Cp, 0, (Wp - pad - W) * Cp);
    }
    return xp;
}

/* Image rows [r0, r1) into the padded map: the quantizer of every int8 path,
 * with amax of the whole map. */
static void direct_quantize_rows(void *ctx, size_t r0, size_t r1)
{
    const direct_job *j = ctx;
    const size_t pad = j->f / 2, Cp = j->Cp, C = j->C;
    for (size_t r = r0; r < r1; r++) {
        int8_t *row = j->xp + ((r + pad) * j->Wp + pad) * Cp;
        const float *src = j->x + r * j->W * C;
        if (Cp == C) {
            bitnn_quantize_with(src, j->W * C, j->amax, row, j->W * C);
            continue;
        }
        /* C not a multiple of 4: runs of pixels quantized together, then
         * spread out to Cp channels (a call per pixel costs more than the
         * convolution of a 3-channel image) */
        int8_t run[4096];
        const size_t per = sizeof run / C;
        for (size_t p0 = 0; p0 < j->W; p0 += per) {
            const size_t n = j->W - p0 < per ? j->W - p0 : per;
            bitnn_quantize_with(src + p0 * C, n * C, j->amax, run, n * C);
            for (size_t px = 0; px < n; px++) /* a loop: memcpy of C bytes is a call */
                for (size_t c = 0; c < C; c++) row[(p0 + px) * Cp + c] = run[px * C + c];
        }
    }
}

static void direct_rows(void *ctx, size_t y0, size_t y1)
{
    direct_job *j = ctx;
    float mx;
    j->conv(j->xp, j->Wp, j->Cp, j->f, j->W, j->wx, j->N, y0, y1, j->amax / 127.0f, j->bias,
            j->z, &mx);
    atomic_max_float(&j->zmax, mx);
}

/* The direct kernel on the padded map in ws->q; the weights as bytes are the
 * caller's (made on their first use) or this call's (in ws->wx). */
static bitnn_status direct_run(direct_job *d, const bitnn_weights *w, bitnn_pool *pool,
                               bitnn_conv_ws *ws, bitnn_buf *wx, float *zmax)
{
    bitnn_buf *wb = wx ? wx : &ws->wx;
    if (!wx || !wx->p) {
        if (bitnn_buf_reserve(wb, bitnn_conv_q8_bytes(d->N, d->f, d->C)) != BITNN_OK)
            return BITNN_ENOMEM;
        bitnn_conv_expand_q8(w->bits, d->N, d->f, d->C, wb->p);
    }
    d->wx = wb->p;
    d->xp = ws->q.p;
    const float ninf = -INFINITY;
    uint32_t bits;
    memcpy(&bits, &ninf, sizeof bits);
    atomic_init(&d->zmax, bits);
    bitnn_parallel_for(pool, d->H, 1, direct_rows, d);
    if (zmax) {
        bits = atomic_load(&d->zmax);
        memcpy(zmax, &bits, sizeof *zmax);
    }
    return BITNN_OK;
}

bitnn_status bitnn_conv2d_q8_map(const bitnn_weights *w, size_t H, size_t W, size_t C, size_t f,
                                 const uint64_t *bias, float *z, float amax, int isa,
                                 bitnn_pool *pool, bitnn_conv_ws *ws, bitnn_buf *wx, float *zmax)
{
    if (!w || !w->bits || !z || !ws || !ws->q.p || H == 0 || W == 0 || C == 0 || w->N == 0 ||
        f % 2 == 0 || w->K != f * f * C || !(amax >= 0.0f) ||
        !bitnn_conv_direct_q8(BITNN_PRECISION_INT8, isa) ||
        ws->q.size < (H + f - 1) * (W + f - 1) * conv_q8_channels(C))
        return BITNN_EINVAL;
    direct_job d = {NULL, H, W, C, conv_q8_channels(C), f, W + f - 1, amax, NULL, NULL, w->N,
                    bitnn_kernels_for(isa)->conv_q8, bias, z, 0};
    return direct_run(&d, w, pool, ws, wx, zmax);
}

/* ------------------------------ relu + Normalize written as int8 (fused) */
typedef struct {
    const float *z;
    size_t W, C, Wp, pad;
    double mean, inv;
    float amax;
    int8_t *xp;
} relu_q8_job;

/* Image rows [r0, r1): relu of the normalized values, quantized, into the
 * padded map. */
static void relu_q8_rows(void *ctx, size_t r0, size_t r1)
{
    const relu_q8_job *j = ctx;
    const size_t row = j->W * j->C;
    for (size_t r = r0; r < r1; r++)
        bitnn_relu_quantize(j->z + r * row, row, j->mean, j->inv, j->amax,
                            j->xp + ((r + j->pad) * j->Wp + j->pad) * j->C);
}

bitnn_status bitnn_conv_relu_q8_map(const float *z, size_t H, size_t W, size_t C, double mean,
                                    double inv, float amax, size_t k, size_t f, bitnn_conv_ws *ws,
                                    bitnn_buf *scratch, bitnn_pool *pool)
{
    if (!z || !ws || C % 4 || k == 0 || H % k || W % k || f % 2 == 0 || (k > 1 && !scratch))
        return BITNN_EINVAL;
    const size_t Ho = H / k, Wo = W / k;
    if (k > 1) { /* the raw sums max-pooled first: a k x k-th of the values to convert */
        if (bitnn_buf_reserve(scratch, Ho * Wo * C * sizeof(float)) != BITNN_OK) return BITNN_ENOMEM;
        bitnn_maxpool2d(z, H, W, C, k, scratch->p, pool);
        z = scratch->p;
    }
    relu_q8_job j = {z, Wo, C, Wo + f - 1, f / 2, mean, inv, amax, NULL};
    j.xp = bitnn_conv_q8_map(ws, Ho, Wo, C, f);
    if (!j.xp) return BITNN_ENOMEM;
    bitnn_parallel_for(pool, Ho, 1, relu_q8_rows, &j);
    return BITNN_OK;
}

bitnn_status bitnn_conv2d_raw(const float *x, size_t H, size_t W, size_t C,
                              const bitnn_weights *w, size_t f, const uint64_t *bias, float *z,
                              bitnn_precision prec, int isa, bitnn_pool *pool, bitnn_conv_ws *ws,
                              bitnn_buf *wx, float *zmax)
{
    if (!x || !w || !w->bits || !z || H == 0 || W == 0 || C == 0 || w->N == 0 || f == 0 ||
        f % 2 == 0 || f > BITNN_CONV_MAX_F || w->K != f * f * C ||
        (unsigned)prec >= BITNN_PRECISION_COUNT ||
        (prec == BITNN_PRECISION_FP32 && !w->tiles))
        return BITNN_EINVAL;
    if (!bitnn_isa_supported(isa)) return BITNN_EUNSUPPORTED;
    const bitnn_kernel_set *ks = bitnn_kernels_for(isa);
    const size_t Cout = w->N, kc = bitnn_tile_chunks(f * f * C);
    conv_job j = {x, NULL, 0.0f, H, W, C, f, f * f * C, f * f * C, 0, w, Cout, kc, bias, z, ks};
    /* int8: im2col rows through the many-row kernel where there is one (AMX:
     * tables cost more than its multiply-adds), else tables where there are
     * table kernels, else im2col rows through the direct kernel */
    if (prec == BITNN_PRECISION_INT8 && ks->gemm_q8m && w->tiles) j.q8m = ks->gemm_q8m;
    j.tables = prec == BITNN_PRECISION_FP32 || (ks->gemm_q8t && !j.q8m);
    j.cb = prec == BITNN_PRECISION_FP32 ? 128 * sizeof(float) : 256;
    if (j.tables && !w->tiles) return BITNN_EINVAL;
    bitnn_conv_ws own = {{0}}, *cw = ws ? ws : &own; /* own: this call's buffers */
    if (bitnn_conv_direct_q8(prec, isa)) {
        /* The direct kernel: the input quantized into a zero-padded map. */
        direct_job d = {x, H, W, C, conv_q8_channels(C), f, W + f - 1, 0.0f, NULL, NULL, Cout,
                        ks->conv_q8, bias, z, 0};
        const size_t n = H * W * C, chunks = (n + QUANT_CHUNK - 1) / QUANT_CHUNK;
        quant_job q = {x, n, chunks, malloc(chunks * sizeof(float)), NULL, 0.0f, 0};
        d.xp = q.part ? bitnn_conv_q8_map(cw, H, W, C, f) : NULL;
        bitnn_status s = d.xp ? BITNN_OK : BITNN_ENOMEM;
        if (s == BITNN_OK) {
            bitnn_parallel_for(pool, q.chunks, 1, quantize_chunks, &q); /* chunk maxima */
            for (size_t c = 0; c < q.chunks; c++) d.amax = q.part[c] > d.amax ? q.part[c] : d.amax;
            bitnn_parallel_for(pool, H, 8, direct_quantize_rows, &d);
            s = direct_run(&d, w, pool, cw, wx, zmax);
        }
        free(q.part);
        bitnn_conv_ws_free(&own);
        return s;
    }
    int8_t *qx = NULL;
    if (prec == BITNN_PRECISION_INT8) {
        /* One scale for the whole input map: quantize it once, then gather
         * int8 im2col rows (a quarter of the fp32 traffic). */
        const size_t n = H * W * C;
        if (bitnn_buf_reserve(&cw->q, n) != BITNN_OK) {
            bitnn_conv_ws_free(&own);
            return BITNN_ENOMEM;
        }
        qx = cw->q.p;
        quant_job q = {x, n, (n + QUANT_CHUNK - 1) / QUANT_CHUNK, NULL, qx, 0.0f, 0};
        q.part = malloc(q.chunks * sizeof(float));
        if (!q.part) {
            bitnn_conv_ws_free(&own);
            return BITNN_ENOMEM;
        }
        bitnn_parallel_for(pool, q.chunks, 1, quantize_chunks, &q); /* chunk maxima */
        for (size_t c = 0; c < q.chunks; c++) q.amax = q.part[c] > q.amax ? q.part[c] : q.amax;
        q.phase = 1;
        bitnn_parallel_for(pool, q.chunks, 1, quantize_chunks, &q);
        free(q.part);
        j.qx = qx, j.scale = q.amax / 127.0f, j.ld = 64 * bitnn_words_per_row(j.K);
    }
    /* With whole chunks of 32 channels per pixel, the tables are made once per
     * input pixel and every tap of every position points at them: a tile is
     * one output row, and each thread keeps the tables of the f input rows
     * it reads in a ring (in cache: a whole map of tables is 4 times the
     * map's floats, and writing it out cost more than making it). */
    const int8_t zero_q[32] = {0};
    const float zero_x[32] = {0};
    unsigned char zero_t[512] __attribute__((aligned(64)));
    if (j.tables && C % 32 == 0) {
        if (qx)
            ks->tables_q8(zero_q, 32, zero_t);
        else
            bitnn_build_tables(zero_x, 32, (float *)zero_t);
        j.map = 1, j.zero = zero_t;
        /* an output row reads at most min(f, H) consecutive input rows:
         * distinct modulo ring_rows, and a new row only replaces one that
         * no later output row of this thread reads */
        j.ring_rows = f < H ? f : H, j.row_bytes = W * (C / 32) * j.cb;
    }
    const size_t P = H * W;
    const size_t threads = (size_t)bitnn_pool_size(pool);
    /* a row's im2col copy, or its tables (16 entries per 4 inputs) */
    size_t tile = j.map ? W : TILE_BYTES / (!j.tables ? j.ld : j.kc * j.cb);
    if (tile < 16 && !j.map) tile = 16;
    /* Enough tiles for every thread to get some work on small images. */
    if (!j.map && threads > 1 && P / tile < 4 * threads) {
        size_t t = P / (4 * threads);
        if (t < 4) t = 4;
        if (t < tile) tile = t;
    }
    j.tile = tile;
    j.n_slots = threads, j.slot_bytes = slot_bytes(&j);
    if (bitnn_buf_reserve(&cw->rows, j.n_slots * j.slot_bytes) != BITNN_OK) {
        bitnn_conv_ws_free(&own);
        return BITNN_ENOMEM;
    }
    j.slots = cw->rows.p;
    atomic_init(&j.next_slot, 0);
    bitnn_parallel_for(pool, (P + tile - 1) / tile, 1, conv_tiles, &j);
    bitnn_conv_ws_free(&own);
    if (j.failed) return BITNN_ENOMEM;
    if (zmax) *zmax = bitnn_max(z, P * Cout);
    return BITNN_OK;
}

void bitnn_conv_ws_free(bitnn_conv_ws *ws)
{
    if (!ws) return;
    bitnn_buf_free(&ws->wx), bitnn_buf_free(&ws->q), bitnn_buf_free(&ws->rows);
}

typedef struct {
    const float *x;
    size_t H, W, C, k;
    float *y;
} pool_job;

typedef float bitnn_v16f_pool __attribute__((vector_size(64)));
typedef int32_t bitnn_v16i_pool __attribute__((vector_size(64)));

/* Output rows [i0, i1) of the max-pool. A window's maximum, per channel: m =
 * in > m ? in : m over the window's pixels in row order from the first (a tie
 * keeps the earlier value, which only tells +0.0 from -0.0); 16 channels at a
 * time in a register where C allows, else one by one. */
BITNN_MULTIVERSION static void maxpool_rows(void *ctx, size_t i0, size_t i1)
{
    const pool_job *j = ctx;
    const size_t k = j->k, W = j->W, C = j->C, Wo = W / k;
    for (size_t i = i0; i < i1; i++)
        for (size_t jj = 0; jj < Wo; jj++) {
            float *out = j->y + (i * Wo + jj) * C;
            const float *px = j->x + (i * k * W + jj * k) * C; /* the window's first pixel */
            size_t c = 0;
            for (; c + 16 <= C; c += 16) {
                bitnn_v16f_pool m, v;
                memcpy(&m, px + c, sizeof m);
                for (size_t dy = 0; dy < k; dy++)
                    for (size_t dx = 0; dx < k; dx++) {
                        memcpy(&v, px + (dy * W + dx) * C + c, sizeof v);
                        const bitnn_v16i_pool gt = v > m;
                        m = (bitnn_v16f_pool)(((bitnn_v16i_pool)v & gt) |
                                              ((bitnn_v16i_pool)m & ~gt));
                    }
                memcpy(out + c, &m, sizeof m);
            }
            for (; c < C; c++) {
                float m = px[c];
                for (size_t dy = 0; dy < k; dy++)
                    for (size_t dx = 0; dx < k; dx++) {
                        const float v = px[(dy * W + dx) * C + c];
                        m = v > m ? v : m;
                    }
                out[c] = m;
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
