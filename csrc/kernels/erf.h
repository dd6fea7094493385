/*
 * erf.h - private: 1 + erf(x) in double precision for gelu, written so that a
 * loop over it vectorizes (no library call, no branch: both ranges are
 * computed and one is selected), with the same operations on every CPU
 * (IEEE additions and multiplications in a fixed order, no FMA: the core is
 * compiled with -ffp-contract=off). docs/arithmetic.md states it; the
 * coefficients are csrc/kernels/erf_table.h (tools/gen_erf.py), which
 * tests/numpy_reference.py reads too. At most 4.5e-16 from 1 + erf(x).
 */
#ifndef BITNN_ERF_H
#define BITNN_ERF_H

#include <stdint.h>
#include <string.h>

#include "erf_table.h"

#define BITNN_ERF_INLINE static inline __attribute__((always_inline))

/* c[0] + x (c[1] + x (c[2] + ...)), from the highest coefficient down */
BITNN_ERF_INLINE double bitnn_erf_horner(const double *c, int n, double x)
{
    double r = c[n - 1];
    for (int i = n - 2; i >= 0; i--) r = r * x + c[i];
    return r;
}

/* exp(y) for -700 <= y <= 0: k = y / ln 2 rounded to an integer (half to
 * even, by adding and subtracting 1.5 * 2^52), r = (y - k ln2_hi) - k ln2_lo
 * (ln2_hi has zero low bits, so k ln2_hi is exact), exp(r) by its Taylor
 * series, times 2^k built from k's bits. */
BITNN_ERF_INLINE double bitnn_exp_neg(double y)
{
    const double inv_ln2 = 0x1.71547652b82fep+0, ln2_hi = 0x1.62e42feep-1,
                 ln2_lo = 0x1.a39ef35793c76p-33, magic = 0x1.8p+52;
    const double t = y * inv_ln2 + magic;
    const double k = t - magic;
    int64_t tb, mb;
    memcpy(&tb, &t, sizeof tb);
    memcpy(&mb, &magic, sizeof mb);
    const uint64_t sb = (uint64_t)(tb - mb + 1023) << 52; /* 2^k */
    double s;
    memcpy(&s, &sb, sizeof s);
    const double r = (y - k * ln2_hi) - k * ln2_lo;
    return bitnn_erf_horner(bitnn_erf_exp, BITNN_ERF_EXP_N, r) * s;
}

/* 1 + erf(x): for a = |x| < 1, erf(a) = a P(a^2); from 1 on,
 * erfc(a) = exp(-min(a, 26)^2) F((min(a, 6) - 3.5) / 2.5); then 1 + erf(x)
 * is 1 + erf(a) or 1 - erf(a) below 1, and 2 - erfc(a) or erfc(a) from 1 on.
 * Beyond 6, where erfc(a) < 2.2e-17, F(6) overestimates it by at most a / 6. */
BITNN_ERF_INLINE double bitnn_one_plus_erf(double x)
{
    const double a = x < 0.0 ? -x : x;
    const double e = a * bitnn_erf_horner(bitnn_erf_small, BITNN_ERF_SMALL_N, a * a);
    const double am = a < 6.0 ? a : 6.0;
    /* a in [1, 26] for the exponential: below 1 the result is not used, and
     * above 26 erfc(a) < 1e-295 (where F(6) makes it at most 5x too large) */
    const double ae = a < 1.0 ? 1.0 : (a > 26.0 ? 26.0 : a);
    const double c = bitnn_exp_neg(-(ae * ae)) *
                     bitnn_erf_horner(bitnn_erf_large, BITNN_ERF_LARGE_N, (am - 3.5) / 2.5);
    if (a < 1.0) return x < 0.0 ? 1.0 - e : 1.0 + e;
    return x < 0.0 ? c : 2.0 - c;
}

/* The same for 8 values at a time in vector registers (GCC vector
 * extensions; each lane does exactly the operations above, the branches
 * as selects). x and out are arrays of 8. */
typedef double bitnn_erf_v8d __attribute__((vector_size(64)));
typedef int64_t bitnn_erf_v8l __attribute__((vector_size(64)));
#define BITNN_ERF_SEL(m, a, b) \
    ((bitnn_erf_v8d)(((bitnn_erf_v8l)(a) & (m)) | ((bitnn_erf_v8l)(b) & ~(m))))
/* fully unrolled: the three polynomials are independent chains that the
 * core overlaps only when they are straight-line code */
#define BITNN_ERF_HORNER8(r, c, n, x)                                \
    do {                                                             \
        (r) = (bitnn_erf_v8d){0} + (c)[(n) - 1];                     \
        _Pragma("GCC unroll 32")                                     \
        for (int i_ = (n) - 2; i_ >= 0; i_--) (r) = (r) * (x) + (c)[i_]; \
    } while (0)

BITNN_ERF_INLINE void bitnn_one_plus_erf8(const double *xp, double *out)
{
    bitnn_erf_v8d x, e, p, q, t, k, s, r, c;
    memcpy(&x, xp, sizeof x);
    const bitnn_erf_v8l neg = x < 0.0;
    const bitnn_erf_v8d a = BITNN_ERF_SEL(neg, -x, x);
    const bitnn_erf_v8l small = a < 1.0;
    BITNN_ERF_HORNER8(p, bitnn_erf_small, BITNN_ERF_SMALL_N, a * a);
    e = a * p;
    const bitnn_erf_v8d am = BITNN_ERF_SEL(a < 6.0, a, (bitnn_erf_v8d){0} + 6.0);
    bitnn_erf_v8d ae = BITNN_ERF_SEL(a < 1.0, (bitnn_erf_v8d){0} + 1.0, a);
    ae = BITNN_ERF_SEL(ae > 26.0, (bitnn_erf_v8d){0} + 26.0, ae);
    const bitnn_erf_v8d y = -(ae * ae);
    const double inv_ln2 = 0x1.71547652b82fep+0, ln2_hi = 0x1.62e42feep-1,
                 ln2_lo = 0x1.a39ef35793c76p-33, magic = 0x1.8p+52;
    int64_t mb;
    memcpy(&mb, &magic, sizeof mb);
    t = y * inv_ln2 + magic;
    k = t - magic;
    s = (bitnn_erf_v8d)(((bitnn_erf_v8l)t - mb + 1023) << 52);
    r = (y - k * ln2_hi) - k * ln2_lo;
    BITNN_ERF_HORNER8(q, bitnn_erf_exp, BITNN_ERF_EXP_N, r);
    BITNN_ERF_HORNER8(p, bitnn_erf_large, BITNN_ERF_LARGE_N, (am - 3.5) / 2.5);
    c = (q * s) * p;
    const bitnn_erf_v8d lo = BITNN_ERF_SEL(neg, 1.0 - e, 1.0 + e);
    const bitnn_erf_v8d hi = BITNN_ERF_SEL(neg, c, 2.0 - c);
    const bitnn_erf_v8d res = BITNN_ERF_SEL(small, lo, hi);
    memcpy(out, &res, sizeof res);
}

#endif
