/*
 * lm.h - the binary language decoder (docs/maths.md: BEMB, BTFB blocks,
 * MLP head) built from a .bnb file, with a KV cache for generation.
 */
#ifndef BITNN_LM_H
#define BITNN_LM_H

#include "bitnn.h"
#include "bnb.h"
#include "kernels.h"
#include "tokenizer.h"

typedef struct {
    bitnn_weights w;           /* [out][in], packed for the kernels at build */
    const uint64_t *b;         /* [out] */
    size_t in, out;
} bitnn_lm_linear;

typedef struct {
    bitnn_lm_linear q, k, v, o; /* attention projections, D -> D */
    bitnn_lm_linear ff1, ff2;   /* D -> ff_dim (gelu), ff_dim -> D */
} bitnn_lm_block;

typedef struct {
    size_t vocab, max_len, dim, heads, head_dim, blocks, ff_dim;
    float eps;
    bitnn_precision precision;     /* numeric mode of every binary layer (set after build) */
    const uint64_t *tok_w, *tok_b; /* [vocab][dim] (row t = token t's column), [dim] */
    const uint64_t *pos_w, *pos_b; /* [max_len][dim], [dim] */
    bitnn_lm_block *block;         /* [blocks] */
    size_t n_head;                 /* MLP head layers (gelu) */
    bitnn_lm_linear *head;         /* [n_head] */
    bitnn_lm_linear output;        /* -> vocab */
    bitnn_tokenizer *tok;          /* built from the header's "tokenizer", or NULL */
} bitnn_lm;

/* Per-sequence state: the KV cache and scratch for up to `ctx` positions. */
typedef struct {
    size_t ctx;        /* capacity in positions, <= max_len */
    size_t pos;        /* tokens processed so far */
    size_t ldk;        /* ctx rounded up to 16 */
    float *k, *v;      /* fp32 mode: k: [blocks][heads][ldk / 16][head_dim][16] (16 keys
                          side by side), v: [blocks][heads][ctx][head_dim] */
    int8_t *k8, *v8;   /* int8 mode: the same layouts in int8 (docs/packing.md) ... */
    float *ks, *vs;    /* ... and the scale of each (position, head): [blocks][heads][ldk], [blocks][heads][ctx] */
    int8_t *qrow;      /* [head_dim]: a key being quantized */
    bitnn_buf widened; /* int8 mode, a prompt: one block's values as f32 */
    bitnn_precision cache_precision; /* the mode the cached positions were computed in */
    float *x, *q, *att, *h, *f, *t; /* scratch: [ctx][dim] (f: [ctx][ff_dim]) */
    float *hv0, *hv1;  /* head scratch: widest head layer */
    bitnn_gemm_ws *ws; /* the binary layers' buffers */
} bitnn_lm_state;

bitnn_status bitnn_lm_build(const bnb_file *f, bitnn_lm **out, char *err, size_t errlen);
void bitnn_lm_free(bitnn_lm *m);
/* Hand the model's tokenizer (NULL if the file has none) over to the caller,
 * who frees it with bitnn_tokenizer_free; the model keeps none. */
bitnn_tokenizer *bitnn_lm_take_tokenizer(bitnn_lm *m);

bitnn_status bitnn_lm_state_new(const bitnn_lm *m, size_t ctx, bitnn_lm_state **out);
void bitnn_lm_state_free(bitnn_lm_state *s);
void bitnn_lm_state_reset(bitnn_lm_state *s);

/* Process ids[0..n) at positions s->pos .. s->pos + n - 1 (one batched pass:
 * M = n rows through every layer), append to the KV cache, and write the
 * final layer's normalized scores (before the softmax) for the LAST position
 * into scores[vocab] (may be NULL to skip the head). Fails with EINVAL if a
 * token id is out of range or the context would exceed s->ctx. */
bitnn_status bitnn_lm_forward(const bitnn_lm *m, bitnn_lm_state *s, const int32_t *ids, size_t n,
                              float *scores, int isa, bitnn_pool *pool);

/* Score a window: feed ids[0..n) as bitnn_lm_forward does (appending to the
 * KV cache at s->pos), then for each row r in [first, n) write
 * logp[r - first] = log softmax(scores_r)[ids[r + 1]], the log-probability of
 * the actual next token (ids holds n + 1 tokens; the last is only a target).
 * The head runs for rows first..n-1 only, batched, in m->precision like the
 * rest; the softmax is taken in double. Fails with EINVAL as bitnn_lm_forward does, or if first >= n or
 * ids[n] is out of range. */
bitnn_status bitnn_lm_logprobs(const bitnn_lm *m, bitnn_lm_state *s, const int32_t *ids, size_t n,
                               size_t first, double *logp, int isa, bitnn_pool *pool);

#endif
