/*
 * sampler.c - temperature, top-k, top-p (nucleus) and repetition penalty.
 *
 * Ties are broken by the smaller token id everywhere, and the random stream is
 * splitmix64, so a seed gives the same text on every machine and thread count
 * (the scores themselves are bit-identical across thread counts).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

void bitnn_rng_seed(bitnn_rng *r, uint64_t seed) { r->state = seed; }

static uint64_t next64(bitnn_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double bitnn_rng_uniform(bitnn_rng *r) { return (double)(next64(r) >> 11) * 0x1.0p-53; }

/* a before b: higher value first, then lower id */
static int better(const float *v, int32_t a, int32_t b)
{
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

static void swap_ids(int32_t *idx, size_t a, size_t b)
{
    int32_t t = idx[a];
    idx[a] = idx[b];
    idx[b] = t;
}

/* Restore the heap (root = the worst kept id) below c, over idx[0..n). */
static void sift_down(const float *v, int32_t *idx, size_t c, size_t n)
{
    for (;;) {
        size_t l = 2 * c + 1, r = l + 1, w = c;
        if (l < n && better(v, idx[w], idx[l])) w = l;
        if (r < n && better(v, idx[w], idx[r])) w = r;
        if (w == c) return;
        swap_ids(idx, c, w);
        c = w;
    }
}

/* The k best ids of v[0..V) into idx[0..k), best first: a heap of the k best
 * seen so far, whose root is the worst of them, then a heap sort. */
static void top_k_ids(const float *v, size_t V, size_t k, int32_t *idx)
{
    size_t n = 0;
    for (size_t i = 0; i < V; i++) {
        const int32_t id = (int32_t)i;
        if (n < k) { /* sift up */
            size_t c = n++;
            idx[c] = id;
            while (c > 0 && better(v, idx[(c - 1) / 2], idx[c])) {
                swap_ids(idx, c, (c - 1) / 2);
                c = (c - 1) / 2;
            }
        } else if (better(v, id, idx[0])) {
            idx[0] = id;
            sift_down(v, idx, 0, n);
        }
    }
    for (size_t end = n; end > 1; end--) { /* move the worst to the end */
        swap_ids(idx, 0, end - 1);
        sift_down(v, idx, 0, end - 1);
    }
}

bitnn_status bitnn_sample(const float *scores, size_t V, const bitnn_sampling *p,
                          const int32_t *recent, size_t n_recent, bitnn_rng *rng, float *work,
                          int32_t *idx, int32_t *out)
{
    if (!scores || !p || !work || !idx || !out || V == 0 || (n_recent && !recent)) return BITNN_EINVAL;
    if (!(p->temperature >= 0) || isinf(p->temperature) || !(p->top_p > 0 && p->top_p <= 1) ||
        !(p->repetition_penalty > 0) || isinf(p->repetition_penalty))
        return BITNN_EINVAL;
    memcpy(work, scores, V * sizeof(float));
    if (p->repetition_penalty != 1.0f)
        for (size_t i = 0; i < n_recent; i++) {
            const int32_t t = recent[i];
            if (t < 0 || (size_t)t >= V) continue;
            /* once per distinct id: mark done by flagging idx */
            idx[t] = -1;
        }
    if (p->repetition_penalty != 1.0f)
        for (size_t i = 0; i < n_recent; i++) {
            const int32_t t = recent[i];
            if (t < 0 || (size_t)t >= V || idx[t] != -1) continue;
            idx[t] = 0;
            work[t] = work[t] > 0 ? work[t] / p->repetition_penalty : work[t] * p->repetition_penalty;
        }
    if (p->temperature == 0.0f) { /* greedy */
        size_t best = 0;
        for (size_t i = 1; i < V; i++)
            if (work[i] > work[best]) best = i;
        *out = (int32_t)best;
        return BITNN_OK;
    }
    /* Candidates: all tokens, or the top k, or enough of the top to cover top_p. */
    size_t k = p->top_k && p->top_k < V ? p->top_k : V;
    const double inv_t = 1.0 / p->temperature;
    float mx = -INFINITY;
    for (size_t i = 0; i < V; i++)
        if (work[i] > mx) mx = work[i];
    double total = 0.0; /* softmax normaliser over ALL tokens, for top_p */
    for (size_t i = 0; i < V; i++) total += exp((work[i] - mx) * inv_t);
    size_t n = k;
    if (p->top_p < 1.0f) {
        size_t want = k < 64 ? k : 64;
        for (;;) {
            top_k_ids(work, V, want, idx);
            double cum = 0.0;
            size_t i = 0;
            while (i < want && cum < p->top_p * total) cum += exp((work[idx[i++]] - mx) * inv_t);
            if (cum >= p->top_p * total || want == k) {
                n = i;
                break;
            }
            want = want * 4 < k ? want * 4 : k;
        }
    } else if (k < V) {
        top_k_ids(work, V, k, idx);
    } else {
        for (size_t i = 0; i < V; i++) idx[i] = (int32_t)i;
    }
    if (n == 0) n = 1;
    double kept = 0.0;
    for (size_t i = 0; i < n; i++) kept += exp((work[idx[i]] - mx) * inv_t);
    double u = bitnn_rng_uniform(rng) * kept, acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        acc += exp((work[idx[i]] - mx) * inv_t);
        if (u < acc) {
            *out = idx[i];
            return BITNN_OK;
        }
    }
    *out = idx[n - 1];
    return BITNN_OK;
}
