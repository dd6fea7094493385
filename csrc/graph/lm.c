/*
 * lm.c - the binary language decoder (docs/maths.md, The language decoder):
 *
 *   x   = Normalize(Normalize(W_tok[:, t] + b_tok) + Normalize(W_pos[:, p] + b_pos))
 *   per block:  h = Normalize(x + BATL(x));  x = Normalize(h + FF2(FF1_gelu(h)))
 *   BATL: Q, K, V = BNFCL(D, linear)(x); per head softmax(QK^T/sqrt(hd), causal) V;
 *         heads merged; output BNFCL(D, linear)
 *   head: BNFCL(mlp_i, gelu)...; scores = Normalize(W_out h + b_out)
 *
 * The embedding is a gather of bits (token t's row of the transposed table),
 * never a matmul. A prompt goes through every layer as one batch of rows; the
 * head runs only for the last position (bitnn_lm_logprobs, which scores a
 * text, runs it for every scored position).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "erf.h"
#include "kernels.h"
#include "lm.h"
#include "model.h"
#include "tokenizer.h"

#define fail bitnn_format_fail
#define get_size bitnn_meta_size

static bitnn_status get_linear(const bnb_file *f, const char *prefix, size_t in, size_t out,
                               bitnn_lm_linear *L, char *err, size_t errlen)
{
    char name[128];
    const uint64_t ws[2] = {out, in}, bs[1] = {out};
    L->in = in, L->out = out;
    snprintf(name, sizeof name, "%s.weight", prefix);
    const uint64_t *bits;
    bitnn_status s = bitnn_model_bits(f, name, 2, ws, &bits, prefix, err, errlen);
    if (s != BITNN_OK) return s;
    snprintf(name, sizeof name, "%s.bias", prefix);
    s = bitnn_model_bits(f, name, 1, bs, &L->b, prefix, err, errlen);
    if (s != BITNN_OK) return s;
    L->w = (bitnn_weights){bits, out, in, NULL};
    return bitnn_weights_pack(&L->w);
}

static const char *const LM_KEYS[] = {"vocab_size", "max_len", "emb_dim", "num_heads",
                                       "num_blocks", "ff_dim", "mlp_units", NULL};

/* The header's "tokenizer", built (tokenizer.c checks the spec itself) and
 * checked against the model: ids below vocab_size, and for byte-level BPE
 * every byte a model token, so that any text encodes without loss. */
static bitnn_status build_tokenizer(const bjson *spec, bitnn_lm *m, char *err, size_t errlen)
{
    bitnn_status s = bitnn_tokenizer_build(spec, &m->tok, err, errlen); /* "tokenizer: ..." */
    if (s != BITNN_OK) return s;
    const size_t n = bitnn_tokenizer_vocab_size(m->tok);
    if (n > m->vocab)
        return fail(err, errlen, "tokenizer: the tokenizer has %zu tokens but the model's "
                    "lm.vocab_size is only %zu", n, m->vocab);
    if (bitnn_tokenizer_type(m->tok) == BITNN_TOKENIZER_BYTE_BPE) {
        const int missing = bitnn_tokenizer_missing_byte(m->tok);
        if (missing >= 0)
            return fail(err, errlen, "tokenizer: byte 0x%02x is not a model token, so text "
                        "containing it could not be encoded (a byte_bpe vocab of a model must "
                        "hold all 256 bytes)", missing);
    }
    return BITNN_OK;
}

bitnn_status bitnn_lm_build(const bnb_file *f, bitnn_lm **out, char *err, size_t errlen)
{
    *out = NULL;
    const bjson *meta = bnb_meta(f);
    float eps;
    bitnn_status s = bitnn_model_common(f, "lm", &eps, err, errlen);
    if (s != BITNN_OK) return s;
    const bjson *lm = bjson_get(meta, "lm");
    if ((s = bitnn_meta_object(lm, "lm", LM_KEYS, err, errlen))) return s;
    bitnn_lm *m = calloc(1, sizeof *m);
    if (!m) return BITNN_ENOMEM;
    m->eps = eps;
    const bjson *mlp = bjson_get(lm, "mlp_units");
    if ((s = bitnn_meta_int(lm, "lm", "vocab_size", 2, 1u << 24, &m->vocab, err, errlen)) ||
        (s = bitnn_meta_int(lm, "lm", "max_len", 1, 1u << 20, &m->max_len, err, errlen)) ||
        (s = bitnn_meta_int(lm, "lm", "emb_dim", 1, 1u << 16, &m->dim, err, errlen)) ||
        (s = bitnn_meta_int(lm, "lm", "num_heads", 1, 1u << 12, &m->heads, err, errlen)) ||
        (s = bitnn_meta_int(lm, "lm", "num_blocks", 0, 1u << 12, &m->blocks, err, errlen)) ||
        (s = bitnn_meta_int(lm, "lm", "ff_dim", 1, 1u << 20, &m->ff_dim, err, errlen)))
        ;
    else if (m->dim % m->heads != 0)
        s = fail(err, errlen, "lm.emb_dim %zu is not divisible by lm.num_heads %zu", m->dim, m->heads);
    else if (!mlp || mlp->type != BJSON_ARRAY || mlp->count > 64)
        s = fail(err, errlen, "lm.mlp_units must be an array of at most 64 widths (possibly empty)");
    if (s != BITNN_OK) {
        free(m);
        return s;
    }
    m->head_dim = m->dim / m->heads;
    m->block = calloc(m->blocks ? m->blocks : 1, sizeof *m->block);
    m->n_head = mlp->count;
    m->head = calloc(m->n_head ? m->n_head : 1, sizeof *m->head);
    if (!m->block || !m->head) {
        bitnn_lm_free(m);
        return BITNN_ENOMEM;
    }
    const uint64_t tw[2] = {m->vocab, m->dim}, pw[2] = {m->max_len, m->dim}, db[1] = {m->dim};
    s = bitnn_model_bits(f, "embed.token.weight", 2, tw, &m->tok_w, "token embedding", err, errlen);
    if (s == BITNN_OK)
        s = bitnn_model_bits(f, "embed.token.bias", 1, db, &m->tok_b, "token embedding", err, errlen);
    if (s == BITNN_OK)
        s = bitnn_model_bits(f, "embed.position.weight", 2, pw, &m->pos_w, "position embedding",
                             err, errlen);
    if (s == BITNN_OK)
        s = bitnn_model_bits(f, "embed.position.bias", 1, db, &m->pos_b, "position embedding", err,
                             errlen);
    char prefix[96];
    for (size_t i = 0; i < m->blocks && s == BITNN_OK; i++) {
        bitnn_lm_block *B = &m->block[i];
        const char *names[4] = {"q", "k", "v", "out"};
        bitnn_lm_linear *lins[4] = {&B->q, &B->k, &B->v, &B->o};
        for (int j = 0; j < 4 && s == BITNN_OK; j++) {
            snprintf(prefix, sizeof prefix, "blocks.%zu.attn.%s", i, names[j]);
            s = get_linear(f, prefix, m->dim, m->dim, lins[j], err, errlen);
        }
        snprintf(prefix, sizeof prefix, "blocks.%zu.ff1", i);
        if (s == BITNN_OK) s = get_linear(f, prefix, m->dim, m->ff_dim, &B->ff1, err, errlen);
        snprintf(prefix, sizeof prefix, "blocks.%zu.ff2", i);
        if (s == BITNN_OK) s = get_linear(f, prefix, m->ff_dim, m->dim, &B->ff2, err, errlen);
    }
    size_t width = m->dim;
    for (size_t i = 0; i < m->n_head && s == BITNN_OK; i++) {
        long long units;
        if (!bjson_get_int(&mlp->items[i], 1, 1 << 24, &units)) {
            s = fail(err, errlen, "lm.mlp_units[%zu] must be an integer from 1 to %d", i, 1 << 24);
            break;
        }
        snprintf(prefix, sizeof prefix, "head.%zu", i);
        s = get_linear(f, prefix, width, (size_t)units, &m->head[i], err, errlen);
        width = (size_t)units;
    }
    if (s == BITNN_OK) s = get_linear(f, "output", width, m->vocab, &m->output, err, errlen);
    const bjson *tok = bjson_get(meta, "tokenizer");
    if (s == BITNN_OK && tok) s = build_tokenizer(tok, m, err, errlen);
    if (s != BITNN_OK) {
        bitnn_lm_free(m);
        return s;
    }
    *out = m;
    return BITNN_OK;
}

bitnn_tokenizer *bitnn_lm_take_tokenizer(bitnn_lm *m)
{
    bitnn_tokenizer *t = m ? m->tok : NULL;
    if (m) m->tok = NULL;
    return t;
}

void bitnn_lm_free(bitnn_lm *m)
{
    if (!m) return;
    bitnn_tokenizer_free(m->tok);
    for (size_t i = 0; m->block && i < m->blocks; i++) {
        bitnn_lm_block *B = &m->block[i];
        bitnn_lm_linear *lins[6] = {&B->q, &B->k, &B->v, &B->o, &B->ff1, &B->ff2};
        for (int j = 0; j < 6; j++) bitnn_weights_release(&lins[j]->w);
    }
    for (size_t i = 0; m->head && i < m->n_head; i++) bitnn_weights_release(&m->head[i].w);
    bitnn_weights_release(&m->output.w);
    free(m->block);
    free(m->head);
    free(m);
}

/* ------------------------------------------------------------------ state */
bitnn_status bitnn_lm_state_new(const bitnn_lm *m, size_t ctx, bitnn_lm_state **out)
{
    *out = NULL;
    if (!m || ctx == 0 || ctx > m->max_len) return BITNN_EINVAL;
    bitnn_lm_state *s = calloc(1, sizeof *s);
    if (!s) return BITNN_ENOMEM;
    s->ctx = ctx;
    const size_t D = m->dim, nb = m->blocks ? m->blocks : 1;
    size_t widest = m->dim;
    for (size_t i = 0; i < m->n_head; i++)
        if (m->head[i].out > widest) widest = m->head[i].out;
    s->ldk = (ctx + 15) / 16 * 16;
    /* Both modes' caches: only the one in use is ever touched (and resident). */
    s->k = calloc(nb * D * s->ldk, sizeof(float)); /* zeros: lanes past a row's keys */
    s->v = malloc(nb * ctx * D * sizeof(float));
    const size_t hdp = (m->head_dim + 3) / 4 * 4; /* int8 rows: whole 4-byte lanes */
    s->k8 = calloc(nb * m->heads * hdp * s->ldk, 1);
    s->v8 = calloc(nb * m->heads * hdp * ctx + 64, 1); /* + 64: ws_block4_q8 reads 64 bytes */
    s->ks = calloc(nb * m->heads * s->ldk, sizeof(float));
    s->vs = malloc(nb * m->heads * ctx * sizeof(float));
    s->qrow = malloc(m->head_dim ? m->head_dim : 1);
    s->x = malloc(ctx * D * sizeof(float));
    s->q = malloc(ctx * D * sizeof(float));
    s->att = malloc(ctx * D * sizeof(float));
    s->h = malloc(ctx * D * sizeof(float));
    s->t = malloc(ctx * D * sizeof(float));
    s->f = malloc(ctx * m->ff_dim * sizeof(float));
    s->hv0 = malloc(widest * sizeof(float));
    s->hv1 = malloc(widest * sizeof(float));
    s->ws = bitnn_gemm_ws_new();
    if (!s->k || !s->v || !s->k8 || !s->v8 || !s->ks || !s->vs || !s->qrow || !s->x || !s->q || !s->att || !s->h || !s->t || !s->f || !s->hv0 ||
        !s->hv1 || !s->ws) {
        bitnn_lm_state_free(s);
        return BITNN_ENOMEM;
    }
    *out = s;
    return BITNN_OK;
}

void bitnn_lm_state_free(bitnn_lm_state *s)
{
    if (!s) return;
    free(s->k), free(s->v), free(s->k8), free(s->v8), free(s->ks), free(s->vs), free(s->qrow), free(s->x), free(s->q), free(s->att), free(s->h), free(s->t);
    free(s->f), free(s->hv0), free(s->hv1);
    bitnn_buf_free(&s->widened);
    bitnn_gemm_ws_free(s->ws);
    free(s);
}

void bitnn_lm_state_reset(bitnn_lm_state *s)
{
    if (s) s->pos = 0;
}

/* -------------------------------------------------------------- attention */
typedef struct {
    const bitnn_lm *m;
    const float *q;         /* [n][D] rows for positions p0.. */
    const void *k, *v;      /* this block's keys, per head [keys/16][hd][16] (16 keys side
                               by side per dimension; int8: [keys/16][hdp/4][16][4]), and
                               values, per head [keys][ldv] (one contiguous stream); f32,
                               or int8 when vq8 */
    size_t kst, vst, ldv;   /* elements per head of k and v, and per value row */
    const float *ks, *vs;   /* int8 mode: the scale of each key [H][ldk] and value [H][ctx] */
    float *out;             /* [n][D] */
    size_t n, p0, ldk, ctx, hdp; /* hdp: head_dim rounded up to 4 (int8 rows) */
    int q8;                 /* int8 mode: int8 keys, integer scores, ks and vs applied */
    int vq8;                /* v holds int8 values (else f32: fp32 mode, or widened) */
    bitnn_attn_q8_fn dot_q8;/* int8 mode: the scores' integer dot products */
    int failed;             /* a scratch allocation failed */
} attn_job;

typedef float bitnn_v16f_keys __attribute__((vector_size(64)));
typedef float bitnn_v8f_att __attribute__((vector_size(32)));
typedef double bitnn_v8d_att __attribute__((vector_size(64)));
typedef int32_t bitnn_v8i_att __attribute__((vector_size(32)));
typedef float bitnn_v16f_store __attribute__((vector_size(64), aligned(4), may_alias));

/* A cache value as f32: as stored, or an int8 value converted (exactly). Q8
 * is a compile-time constant at every call, so each mode gets its own loop. */
BITNN_INLINE float cache1(const void *c, size_t i, const int Q8)
{
    return Q8 ? (float)((const int8_t *)c)[i] : ((const float *)c)[i];
}

/* int8 caches are read 64 bytes (16 int32 lanes of 4 bytes) at a time; byte k
 * of every lane, sign-extended and converted (exactly) to f32, with shifts
 * and a conversion the compiler emits for any vector width (a generic 16-lane
 * int8 -> f32 conversion it scalarizes). */
typedef int32_t bitnn_v16i_keys __attribute__((vector_size(64)));
typedef uint32_t bitnn_v16u_keys __attribute__((vector_size(64)));

#define byte_k(w, k) \
    __builtin_convertvector((bitnn_v16i_keys)((bitnn_v16u_keys)(w) << (24 - 8 * (k))) >> 24, \
                            bitnn_v16f_keys)

/* SZ outputs from e0 kept in registers over the loop on t (a compile-time
 * size, so the accumulators are SZ / 16 independent vectors). */
BITNN_INLINE void ws_block(const float *w, size_t T, const void *v, size_t ld, float *out,
                           const int SZ, const int Q8)
{
    float acc[64] = {0};
    for (size_t t = 0; t < T; t++)
        for (int l = 0; l < SZ; l++) acc[l] += w[t] * cache1(v, t * ld + l, Q8);
    memcpy(out, acc, (size_t)SZ * sizeof(float));
}

/* out[0..n) = sum_t w[t] * v[t*ld + 0..n), each output summed in increasing
 * t from 0.0f, up to 64 outputs (independent add chains) per pass over t. */
BITNN_INLINE void weighted_sum(const float *w, size_t T, const void *v, size_t ld, size_t n,
                               float *out, const int Q8)
{
    const size_t es = Q8 ? 1 : sizeof(float); /* bytes per cached value */
    size_t e0 = 0;
#define WS(SZ) ws_block(w, T, (const char *)v + e0 * es, ld, out + e0, SZ, Q8), e0 += SZ
    while (e0 + 64 <= n) WS(64);
    if (n - e0 >= 48) WS(48);
    if (n - e0 >= 32) WS(32);
    if (n - e0 >= 16) WS(16);
#undef WS
    for (; e0 < n; e0++) {
        float acc = 0.0f;
        for (size_t t = 0; t < T; t++) acc += w[t] * cache1(v, t * ld + e0, Q8);
        out[e0] = acc;
    }
}

/* Value e of a dot16 into partial sum e % 8 (a switch, not pointers: the
 * named partial sums p0..p7 stay in registers), and their combination. */
#define PARTIAL_ADD(e, t)                 \
    switch ((e) % 8) {                    \
    case 0: p0 += (t); break;             \
    case 1: p1 += (t); break;             \
    case 2: p2 += (t); break;             \
    case 3: p3 += (t); break;             \
    case 4: p4 += (t); break;             \
    case 5: p5 += (t); break;             \
    case 6: p6 += (t); break;             \
    default: p7 += (t); break;            \
    }
#define PARTIAL_COMBINE() (((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)))

/* q . k for the 16 keys of one block of one head (kt: [hd][16]), one lane per
 * key: 8 partial sums per key (value e into e % 8, products rounded then
 * added), combined ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7))
 * (docs/arithmetic.md). */
BITNN_INLINE void dot16(const float *q, const float *kt, size_t hd, float *out)
{
    bitnn_v16f_keys p0 = {0}, p1 = {0}, p2 = {0}, p3 = {0}, p4 = {0}, p5 = {0}, p6 = {0}, p7 = {0};
#define KEY(k, pk) memcpy(&kv, kt + 16 * (e + (k)), sizeof kv), pk += q[e + (k)] * kv
    size_t e = 0;
    bitnn_v16f_keys kv;
    for (; e + 8 <= hd; e += 8) { /* named partial sums: they stay in registers */
        KEY(0, p0); KEY(1, p1); KEY(2, p2); KEY(3, p3); KEY(4, p4); KEY(5, p5); KEY(6, p6); KEY(7, p7);
    }
#undef KEY
    for (; e < hd; e++) {
        memcpy(&kv, kt + 16 * e, sizeof kv);
        PARTIAL_ADD(e, q[e] * kv);
    }
    const bitnn_v16f_keys r = PARTIAL_COMBINE();
    memcpy(out, &r, sizeof r);
}

/* int8 mode's integer scores (bitnn_attn_q8_fn) where the kernel set has no
 * kernel of its own: byte k of every 32-bit lane of a 64-byte group,
 * sign-extended, times the query's value 4g + k, in int32 (exact). */
BITNN_MULTIVERSION static void attn_q8_generic(const int8_t *q, size_t hdp, const int8_t *kt,
                                               size_t nb, int32_t *S)
{
    for (size_t b = 0; b < nb; b++, kt += 16 * hdp) {
        bitnn_v16i_keys acc = {0};
        for (size_t g = 0; g < hdp / 4; g++) {
            bitnn_v16u_keys w;
            memcpy(&w, kt + 64 * g, sizeof w);
            for (int k = 0; k < 4; k++)
                acc += ((bitnn_v16i_keys)(w << (24 - 8 * k)) >> 24) * (int32_t)q[4 * g + k];
        }
        memcpy(S + 16 * b, &acc, sizeof acc);
    }
}

/* The softmax weights of one (row, head) item into sc[0 .. p] (p = the
 * row's position): scores q.k scaled, exp of the difference to their max,
 * divided by the sum (docs/arithmetic.md). In int8 mode the query is
 * quantized (into q8, hdp bytes), a score is the exact integer dot with the
 * key's int8 values (into S, p + 1 rounded up to 16) times the key's scale,
 * the query's scale joins the 1 / sqrt(hd) scaling, and each weight is
 * multiplied by its value's scale last (docs/packing.md). */
BITNN_INLINE void attn_weights(const attn_job *j, size_t r, size_t h, double scale, float *sc,
                               int8_t *q8, int32_t *S, const int Q8)
{
    const size_t D = j->m->dim, hd = j->m->head_dim, p = j->p0 + r;
    const float *qv = j->q + r * D + h * hd;
    float mx = -INFINITY;
    if (Q8) {
        scale *= (double)bitnn_quantize_row(qv, hd, q8, j->hdp);
        j->dot_q8(q8, j->hdp, (const int8_t *)j->k + h * j->kst, p / 16 + 1, S);
        for (size_t t0 = 0; t0 <= p; t0 += 16) {
            bitnn_v16i_keys si;
            bitnn_v16f_keys ks;
            memcpy(&si, S + t0, sizeof si);
            memcpy(&ks, j->ks + h * j->ldk + t0, sizeof ks);
            const bitnn_v16f_keys d = __builtin_convertvector(si, bitnn_v16f_keys) * ks;
            memcpy(sc + t0, &d, sizeof d);
        }
    } else
        for (size_t t0 = 0; t0 <= p; t0 += 16)
            dot16(qv, (const float *)j->k + h * j->kst + t0 * hd, hd, sc + t0);
    /* s_t = (f32)((f64) dot * scale) and their max, 8 lanes at a time (the max is
     * exact, so its grouping cannot change it) */
    bitnn_v8f_att m8 = {0};
    m8 -= INFINITY;
    size_t t = 0;
    for (; t + 8 <= p + 1; t += 8) { /* then the tail one at a time */
        bitnn_v8f_att x;
        memcpy(&x, sc + t, sizeof x);
        x = __builtin_convertvector(__builtin_convertvector(x, bitnn_v8d_att) * scale, bitnn_v8f_att);
        memcpy(sc + t, &x, sizeof x);
        const bitnn_v8i_att gt = x > m8;
        m8 = (bitnn_v8f_att)(((bitnn_v8i_att)x & gt) | ((bitnn_v8i_att)m8 & ~gt));
    }
    for (int l = 0; l < 8; l++)
        if (m8[l] > mx) mx = m8[l];
    for (; t <= p; t++) {
        sc[t] = (float)(sc[t] * scale);
        if (sc[t] > mx) mx = sc[t];
    }
    /* e_t = exp32(max(s_t - mx, -87)) (erf.h), 16 at a time; T = the (f64) e_t in
     * 8 partial sums (e_t into t % 8, each in increasing t), combined as
     * Normalize combines its 8 (docs/arithmetic.md) */
    bitnn_v8d_att part = {0};
    for (t = 0; t + 16 <= p + 1; t += 16) {
        bitnn_v16f_keys x;
        memcpy(&x, sc + t, sizeof x);
        x -= mx;
        memcpy(sc + t, &x, sizeof x);
        bitnn_expf16_neg(sc + t, sc + t);
        bitnn_v8f_att lo, hi;
        memcpy(&lo, sc + t, sizeof lo);
        memcpy(&hi, sc + t + 8, sizeof hi);
        part += __builtin_convertvector(lo, bitnn_v8d_att);
        part += __builtin_convertvector(hi, bitnn_v8d_att);
    }
    double a8[8];
    for (int l = 0; l < 8; l++) a8[l] = part[l];
    if (t <= p) { /* the last keys through a zero-padded copy */
        float y[16] = {0};
        const size_t m = p + 1 - t;
        for (size_t l = 0; l < m; l++) y[l] = sc[t + l] - mx;
        bitnn_expf16_neg(y, y);
        for (size_t l = 0; l < m; l++) {
            sc[t + l] = y[l];
            a8[l % 8] += (double)y[l];
        }
    }
    const double total = bitnn_combine8(a8);
    const float inv = (float)(1.0 / total);
    for (t = 0; t <= p; t++) sc[t] *= inv;
    if (Q8)
        for (t = 0; t <= p; t++) sc[t] *= j->vs[h * j->ctx + t];
}

/* 4 heads' weighted sums of SZ values each, over the same keys: each output
 * is still one chain in increasing t (weighted_sum), but 4 x SZ / 16
 * independent chains overlap instead of SZ / 16 (a chain waits 4 cycles per
 * key). */
BITNN_INLINE void ws_block4(float *const *w, size_t T, const float *const *v, size_t ld,
                            float *const *out, size_t e0, const int SZ)
{
    bitnn_v16f_keys acc[4][4] = {{{0}}}; /* constant indices: registers */
    for (size_t t = 0; t < T; t++)
        for (int i = 0; i < 4; i++) {
            const float wi = w[i][t];
            for (int k = 0; k < SZ / 16; k++) {
                bitnn_v16f_keys x;
                memcpy(&x, v[i] + t * ld + e0 + 16 * k, sizeof x);
                acc[i][k] += wi * x;
            }
        }
    for (int i = 0; i < 4; i++) /* stores through an unaligned vector type: taking the
                                   accumulators' address would keep them in memory */
        for (int k = 0; k < SZ / 16; k++) *(bitnn_v16f_store *)(out[i] + e0 + 16 * k) = acc[i][k];
}

/* ws_block4 on int8 values (rows of ld bytes, 4 consecutive values per int32
 * lane): 64 outputs e0 .. e0+63 per pass, the accumulator of byte k holding
 * outputs e0 + 4l + k; each output is the same chain in increasing t. Reads
 * up to 64 bytes from e0 of every row (the cache has 64 bytes of slack). */
BITNN_INLINE void ws_block4_q8(float *const *w, size_t T, const int8_t *const *v, size_t ld,
                               float *const *out, size_t e0, size_t n)
{
    bitnn_v16f_keys acc[4][4] = {{{0}}};
    for (size_t t = 0; t < T; t++)
        for (int i = 0; i < 4; i++) {
            const float wi = w[i][t];
            bitnn_v16i_keys x;
            memcpy(&x, v[i] + t * ld + e0, sizeof x);
            for (int k = 0; k < 4; k++) acc[i][k] += wi * byte_k(x, k);
        }
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 4; k++) {
            float a[16];
            *(bitnn_v16f_store *)a = acc[i][k]; /* not &acc: it would stay in memory */
            for (size_t l = 0; l < 16 && e0 + 4 * l + k < n; l++) out[i][e0 + 4 * l + k] = a[l];
        }
}

BITNN_INLINE void weighted_sum4(float *const *w, size_t T, const void *const *v, size_t ld,
                                size_t n, float *const *out, const int Q8)
{
    if (Q8) {
        for (size_t e0 = 0; e0 < n; e0 += 64) ws_block4_q8(w, T, (const int8_t *const *)v, ld, out, e0, n);
        return;
    }
    const float *const *vf = (const float *const *)v;
    size_t e0 = 0;
    for (; e0 + 64 <= n; e0 += 64) ws_block4(w, T, vf, ld, out, e0, 64);
    if (n - e0 >= 48) ws_block4(w, T, vf, ld, out, e0, 48), e0 += 48;
    if (n - e0 >= 32) ws_block4(w, T, vf, ld, out, e0, 32), e0 += 32;
    if (n - e0 >= 16) ws_block4(w, T, vf, ld, out, e0, 16), e0 += 16;
    for (int i = 0; i < 4 && e0 < n; i++) weighted_sum(w[i], T, vf[i] + e0, ld, n - e0, out[i] + e0, 0);
}

/* (row, head) items [i0, i1): the heads of a row 4 at a time where they can. */
BITNN_INLINE void attn_range(attn_job *j, size_t i0, size_t i1, float *sc, size_t cap,
                             int8_t *q8, int32_t *S, const int Q8, const int VQ8)
{
    const size_t D = j->m->dim, hd = j->m->head_dim, H = j->m->heads, ldv = j->ldv;
    const size_t vsz = VQ8 ? 1 : sizeof(float);
    const double scale = 1.0 / sqrt((double)hd);
    for (size_t it = i0; it < i1;) {
        const size_t r = it / H, h = it % H, p = j->p0 + r;
        const size_t nh = h + 4 <= H && it + 4 <= i1 ? 4 : 1;
        if (Q8 && VQ8 && it + nh < i1) { /* decode: the next heads' first keys and values */
            const size_t r2 = (it + nh) / H, h2 = (it + nh) % H, kb = (j->p0 + r2) / 16 + 1;
            const size_t nk = (kb < 2 ? kb : 2) * 16 * j->hdp;
            for (size_t i = 0; i < 4 && h2 + i < H; i++) {
                const char *kp = (const char *)j->k + (h2 + i) * j->kst;
                const char *vp = (const char *)j->v + (h2 + i) * j->vst;
                for (size_t o = 0; o < nk; o += 64) __builtin_prefetch(kp + o), __builtin_prefetch(vp + o);
            }
        }
        float *w[4];
        const void *v[4];
        float *out[4];
        for (size_t i = 0; i < nh; i++) {
            w[i] = sc + i * cap;
            attn_weights(j, r, h + i, scale, w[i], q8, S, Q8);
            v[i] = (const char *)j->v + (h + i) * j->vst * vsz;
            out[i] = j->out + r * D + (h + i) * hd;
        }
        if (nh == 4) weighted_sum4(w, p + 1, v, ldv, hd, out, VQ8);
        else weighted_sum(w[0], p + 1, v[0], ldv, hd, out[0], VQ8);
        it += nh;
    }
}

BITNN_MULTIVERSION static void attn_items(void *ctx, size_t i0, size_t i1)
{
    attn_job *j = ctx;
    const size_t cap = j->p0 + j->n + 16;
    /* 4 heads' weights, then one head's integer scores and its int8 query */
    float *sc = malloc(5 * cap * sizeof(float) + j->hdp);
    if (!sc) {
        j->failed = 1; /* benign race: every writer stores 1 */
        return;
    }
    int32_t *S = (int32_t *)(sc + 4 * cap);
    int8_t *q8 = (int8_t *)(S + cap);
    if (!j->q8) attn_range(j, i0, i1, sc, cap, NULL, NULL, 0, 0);
    else if (j->vq8) attn_range(j, i0, i1, sc, cap, q8, S, 1, 1);
    else attn_range(j, i0, i1, sc, cap, q8, S, 1, 0);
    free(sc);
}

/* int8 mode, many rows: each head's int8 values of positions [0, P) widened
 * once to f32 (exact) for all the rows, instead of once per row and key; the
 * weighted sums then read them as the fp32 mode reads its cache: the same
 * products, the same bits. */
typedef struct {
    const attn_job *j; /* the int8 caches */
    float *vf;         /* per head: [P][hd] */
    size_t P;
} widen_job;

BITNN_MULTIVERSION static void widen_heads(void *ctx, size_t h0, size_t h1)
{
    const widen_job *w = ctx;
    const attn_job *j = w->j;
    const size_t hd = j->m->head_dim, hdp = j->hdp;
    for (size_t h = h0; h < h1; h++) {
        const int8_t *v8 = (const int8_t *)j->v + h * j->vst;
        float *vf = w->vf + h * w->P * hd;
        for (size_t t = 0; t < w->P; t++)
            for (size_t e = 0; e < hd; e++) vf[t * hd + e] = (float)v8[t * hdp + e];
    }
}

/* Rows [0, n) of this block's keys (kt) and values (vt), [n][D], into the caches
 * at positions p0..: in int8 mode each (position, head) quantized with its own
 * scale (docs/packing.md). */
static void cache_append(const bitnn_lm *m, bitnn_lm_state *s, size_t b, const float *kt,
                         const float *vt, size_t n, size_t p0)
{
    const size_t D = m->dim, hd = m->head_dim, H = m->heads, kb = s->ldk / 16;
    for (size_t i = 0; i < n; i++) {
        const size_t t = p0 + i;
        for (size_t h = 0; h < H; h++) {
            const float *ksrc = kt + i * D + h * hd, *vsrc = vt + i * D + h * hd;
            if (m->precision == BITNN_PRECISION_INT8) {
                const size_t hdp = (hd + 3) / 4 * 4;
                int8_t *kd = s->k8 + ((b * H + h) * kb + t / 16) * hdp * 16 + (t % 16) * 4;
                s->ks[(b * H + h) * s->ldk + t] = bitnn_quantize_row(ksrc, hd, s->qrow, hd);
                for (size_t e = 0; e < hd; e++) kd[(e / 4) * 64 + e % 4] = s->qrow[e];
                s->vs[(b * H + h) * s->ctx + t] =
                    bitnn_quantize_row(vsrc, hd, s->v8 + ((b * H + h) * s->ctx + t) * hdp, hdp);
            } else {
                float *kd = s->k + ((b * H + h) * kb + t / 16) * hd * 16 + t % 16;
                for (size_t e = 0; e < hd; e++) kd[16 * e] = ksrc[e];
                memcpy(s->v + ((b * H + h) * s->ctx + t) * hd, vsrc, hd * sizeof(float));
            }
        }
    }
}

/* ---------------------------------------------------------------- forward */
/* One binary normalized linear layer of the model, in its numeric mode. */
static bitnn_status lin(const bitnn_lm *m, bitnn_gemm_ws *ws, const bitnn_lm_linear *L,
                        const float *x, size_t M, float *y, bitnn_act act, int isa,
                        bitnn_pool *pool)
{
    return bitnn_linear_w(x, L->in, M, &L->w, L->b, m->eps, act, y, L->out, m->precision, isa,
                          pool, ws);
}

static void add_rows(float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

static float bit_at(const uint64_t *row, size_t d) { return (float)((row[d >> 6] >> (d & 63)) & 1u); }

bitnn_status bitnn_lm_forward(const bitnn_lm *m, bitnn_lm_state *s, const int32_t *ids, size_t n,
                              float *scores, int isa, bitnn_pool *pool)
{
    if (!m || !s || (!ids && n)) return BITNN_EINVAL;
    if (n == 0) return scores ? BITNN_EINVAL : BITNN_OK;
    if (s->pos >= s->ctx || n > s->ctx - s->pos) return BITNN_EINVAL;
    if (s->pos == 0) s->cache_precision = m->precision;
    else if (s->cache_precision != m->precision) return BITNN_EINVAL; /* the cache is the other mode's */
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= m->vocab) return BITNN_EINVAL;
    const size_t D = m->dim, p0 = s->pos, wpr = bitnn_words_per_row(D);
    const float eps = m->eps;
    bitnn_status st;

    /* Embedding: Normalize(tok) + Normalize(pos), then Normalize. */
    for (size_t i = 0; i < n; i++) {
        const uint64_t *tr = m->tok_w + (size_t)ids[i] * wpr, *pr = m->pos_w + (p0 + i) * wpr;
        float *xe = s->x + i * D, *pe = s->t + i * D;
        for (size_t d = 0; d < D; d++) {
            xe[d] = bit_at(tr, d) + bit_at(m->tok_b, d);
            pe[d] = bit_at(pr, d) + bit_at(m->pos_b, d);
        }
    }
    if ((st = bitnn_normalize_act(s->x, D, n, D, eps, BITNN_ACT_LINEAR, pool)) ||
        (st = bitnn_normalize_act(s->t, D, n, D, eps, BITNN_ACT_LINEAR, pool)))
        return st;
    add_rows(s->x, s->t, n * D);
    if ((st = bitnn_normalize_act(s->x, D, n, D, eps, BITNN_ACT_LINEAR, pool))) return st;

    for (size_t b = 0; b < m->blocks; b++) {
        const bitnn_lm_block *B = &m->block[b];
        /* query, key and value from the same rows: one GEMM call (the rows'
         * int8 copy or tables made once, one parallel loop), then each
         * projection's Normalize */
        const bitnn_weights *qkv_w[3] = {&B->q.w, &B->k.w, &B->v.w};
        const uint64_t *qkv_b[3] = {B->q.b, B->k.b, B->v.b};
        float *const qkv_z[3] = {s->q, s->t, s->att};
        const size_t qkv_ld[3] = {D, D, D};
        if ((st = bitnn_binary_gemm_many_w(s->x, D, n, 3, qkv_w, qkv_b, qkv_z, qkv_ld,
                                           m->precision, isa, pool, s->ws)) ||
            (st = bitnn_normalize_act(s->q, D, n, D, eps, BITNN_ACT_LINEAR, pool)) ||
            (st = bitnn_normalize_act(s->t, D, n, D, eps, BITNN_ACT_LINEAR, pool)) ||
            (st = bitnn_normalize_act(s->att, D, n, D, eps, BITNN_ACT_LINEAR, pool)))
            return st;
        cache_append(m, s, b, s->t, s->att, n, p0);
        const int q8 = m->precision == BITNN_PRECISION_INT8;
        const size_t hd = m->head_dim, hdp = (hd + 3) / 4 * 4, sat = b * m->heads;
        attn_job aj = {.m = m, .q = s->q, .ks = s->ks + sat * s->ldk, .vs = s->vs + sat * s->ctx,
                       .out = s->att, .n = n, .p0 = p0, .ldk = s->ldk, .ctx = s->ctx,
                       .hdp = hdp, .q8 = q8, .vq8 = q8};
        if (q8) {
            const bitnn_attn_q8_fn dq = bitnn_kernels_for(isa)->attn_q8;
            aj.dot_q8 = dq ? dq : attn_q8_generic;
            aj.k = s->k8 + sat * s->ldk * hdp, aj.kst = s->ldk * hdp;
            aj.v = s->v8 + sat * s->ctx * hdp, aj.vst = s->ctx * hdp, aj.ldv = hdp;
        } else {
            aj.k = s->k + sat * s->ldk * hd, aj.kst = s->ldk * hd;
            aj.v = s->v + sat * s->ctx * hd, aj.vst = s->ctx * hd, aj.ldv = hd;
        }
        if (q8 && n >= 8) { /* a prompt: widen each head's int8 values once */
            widen_job wj = {&aj, NULL, p0 + n};
            const size_t vfn = m->heads * wj.P * hd;
            if ((st = bitnn_buf_reserve(&s->widened, vfn * sizeof(float)))) return st;
            wj.vf = s->widened.p;
            bitnn_parallel_for(pool, m->heads, 1, widen_heads, &wj);
            aj.v = wj.vf, aj.vst = wj.P * hd, aj.ldv = hd, aj.vq8 = 0;
        }
        bitnn_parallel_for(pool, n * m->heads, 1, attn_items, &aj);
        if (aj.failed) return BITNN_ENOMEM;
        /* h = Normalize(x + O(att)) */
        if ((st = lin(m, s->ws, &B->o, s->att, n, s->h, BITNN_ACT_LINEAR, isa, pool))) return st;
        add_rows(s->h, s->x, n * D);
        if ((st = bitnn_normalize_act(s->h, D, n, D, eps, BITNN_ACT_LINEAR, pool))) return st;
        /* x = Normalize(h + FF2(FF1(h))) */
        if ((st = lin(m, s->ws, &B->ff1, s->h, n, s->f, BITNN_ACT_GELU, isa, pool)) ||
            (st = lin(m, s->ws, &B->ff2, s->f, n, s->x, BITNN_ACT_LINEAR, isa, pool)))
            return st;
        add_rows(s->x, s->h, n * D);
        if ((st = bitnn_normalize_act(s->x, D, n, D, eps, BITNN_ACT_LINEAR, pool))) return st;
    }
    s->pos += n;
    if (!scores) return BITNN_OK;

    /* Head and output for the last position only. */
    const float *cur = s->x + (n - 1) * D;
    float *bufs[2] = {s->hv0, s->hv1};
    for (size_t i = 0; i < m->n_head; i++) {
        if ((st = lin(m, s->ws, &m->head[i], cur, 1, bufs[i & 1], BITNN_ACT_GELU, isa, pool))) return st;
        cur = bufs[i & 1];
    }
    return lin(m, s->ws, &m->output, cur, 1, scores, BITNN_ACT_LINEAR, isa, pool);
}

/* ------------------------------------------------------ log-probabilities */
typedef struct {
    const float *scores; /* [rows][vocab] */
    const int32_t *targets; /* [rows] */
    double *logp;        /* [rows] */
    size_t vocab;
} logsoftmax_job;

/* log softmax(scores_r)[target_r] in double, one row per item (one thread
 * computes a row whole, in a fixed order: the same bits for any thread count). */
static void logsoftmax_rows(void *ctx, size_t r0, size_t r1)
{
    const logsoftmax_job *j = ctx;
    for (size_t r = r0; r < r1; r++) {
        const float *sc = j->scores + r * j->vocab;
        double mx = sc[0];
        for (size_t v = 1; v < j->vocab; v++)
            if (sc[v] > mx) mx = sc[v];
        double total = 0.0;
        for (size_t v = 0; v < j->vocab; v++) total += exp((double)sc[v] - mx);
        j->logp[r] = ((double)sc[j->targets[r]] - mx) - log(total);
    }
}

/* Rows of the head computed at once: bounds the scratch to about 4 MB of
 * scores for any vocabulary (rows are independent, so the bits do not depend
 * on it). */
#define LOGPROB_SCORE_FLOATS ((size_t)1 << 20)

bitnn_status bitnn_lm_logprobs(const bitnn_lm *m, bitnn_lm_state *s, const int32_t *ids, size_t n,
                               size_t first, double *logp, int isa, bitnn_pool *pool)
{
    if (!m || !s || !ids || !logp || n == 0 || first >= n) return BITNN_EINVAL;
    if (ids[n] < 0 || (size_t)ids[n] >= m->vocab) return BITNN_EINVAL;
    /* The trunk for all n rows; s->x then holds their final hidden states. */
    bitnn_status st = bitnn_lm_forward(m, s, ids, n, NULL, isa, pool);
    if (st != BITNN_OK) return st;

    const size_t D = m->dim, V = m->vocab, rows = n - first;
    size_t widest = D;
    for (size_t i = 0; i < m->n_head; i++)
        if (m->head[i].out > widest) widest = m->head[i].out;
    size_t chunk = LOGPROB_SCORE_FLOATS / V;
    if (chunk == 0) chunk = 1;
    if (chunk > rows) chunk = rows;
    float *buf0 = malloc(chunk * widest * sizeof(float));
    float *buf1 = malloc(chunk * widest * sizeof(float));
    float *scores = malloc(chunk * V * sizeof(float));
    if (!buf0 || !buf1 || !scores) {
        st = BITNN_ENOMEM;
        goto done;
    }
    for (size_t r0 = first; r0 < n; r0 += chunk) {
        const size_t R = n - r0 < chunk ? n - r0 : chunk;
        const float *cur = s->x + r0 * D;
        float *bufs[2] = {buf0, buf1};
        for (size_t i = 0; i < m->n_head; i++) {
            if ((st = lin(m, s->ws, &m->head[i], cur, R, bufs[i & 1], BITNN_ACT_GELU, isa, pool)))
                goto done;
            cur = bufs[i & 1];
        }
        if ((st = lin(m, s->ws, &m->output, cur, R, scores, BITNN_ACT_LINEAR, isa, pool))) goto done;
        /* row r predicts ids[r + 1] */
        logsoftmax_job lj = {scores, ids + r0 + 1, logp + (r0 - first), V};
        bitnn_parallel_for(pool, R, 1, logsoftmax_rows, &lj);
    }
done:
    free(buf0), free(buf1), free(scores);
    return st;
}
