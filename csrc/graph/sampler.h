/* sampler.h - choosing the next token from the decoder's scores. */
#ifndef BITNN_SAMPLER_H
#define BITNN_SAMPLER_H

#include "bitnn.h"

/* splitmix64: small, seedable, the same sequence on every platform. */
typedef struct {
    uint64_t state;
} bitnn_rng;

void bitnn_rng_seed(bitnn_rng *r, uint64_t seed);
double bitnn_rng_uniform(bitnn_rng *r); /* [0, 1) */

typedef struct {
    float temperature;        /* 0: greedy (argmax); > 0: sample softmax(scores / T) */
    size_t top_k;             /* 0: off; else keep the k most likely tokens */
    float top_p;              /* 1: off; else the smallest set with probability >= top_p */
    float repetition_penalty; /* 1: off; > 1 discourages tokens in `recent` (CTRL rule) */
} bitnn_sampling;

/* Pick a token from scores[V] (the final layer's normalized scores, before
 * the softmax). recent[0..n_recent) are the ids the penalty applies to.
 * work: scratch of V floats and V int32 (idx). Invalid parameters: EINVAL. */
bitnn_status bitnn_sample(const float *scores, size_t V, const bitnn_sampling *p,
                          const int32_t *recent, size_t n_recent, bitnn_rng *rng, float *work,
                          int32_t *idx, int32_t *out);

#endif
