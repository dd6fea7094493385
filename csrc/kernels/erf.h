/*
 * erf.h - private: gelu(v) = v Phi(v) = 0.5 v (1 + erf(v / sqrt 2)) in single
 * precision, 16 values at a time, written so that it vectorizes on every
 * ISA (GCC vector extensions, no library call, no branch: the sign is a
 * select), with the same IEEE operations in the same order on every CPU (no
 * FMA: the core is compiled with -ffp-contract=off). docs/arithmetic.md
 * states it; the coefficients are csrc/kernels/erf_table.h
 * (tools/gen_erf.py), which tests/numpy_reference.py reads too.
 *
 * erfc(a), a = min(|x|, 9), is t exp(-a^2 + R(t)) with t = 1 / (1 + a / 2)
 * and R the degree-9 polynomial of Numerical Recipes' erfcc (fractional
 * error below 1.2e-7 in exact arithmetic); exp by a reduction to
 * |r| <= ln2 / 2 and its degree-7 Taylor polynomial. Phi(v) is erfc / 2 for
 * v < 0 (no cancellation) and 1 - erfc / 2 otherwise. Measured against
 * 0.5 v erfc(-v / sqrt 2) in double precision: at most 3.9e-7 absolute on
 * [-15, 15] (PyTorch's own CPU gelu: 1.2e-6).
 */
#ifndef BITNN_ERF_H
#define BITNN_ERF_H

#include <stdint.h>
#include <string.h>

#include "erf_table.h"

#define BITNN_ERF_INLINE static inline __attribute__((always_inline))

typedef float bitnn_gelu_v16f __attribute__((vector_size(64)));
typedef int32_t bitnn_gelu_v16i __attribute__((vector_size(64)));
#define BITNN_GELU_SEL(m, a, b) \
    ((bitnn_gelu_v16f)(((bitnn_gelu_v16i)(a) & (m)) | ((bitnn_gelu_v16i)(b) & ~(m))))
/* r = c[0] + x (c[1] + x (... + x c[n-1])), from the highest coefficient down */
#define BITNN_GELU_HORNER(r, c, n, x)                                \
    do {                                                             \
        (r) = (bitnn_gelu_v16f){0} + (c)[(n) - 1];                   \
        _Pragma("GCC unroll 16")                                     \
        for (int i_ = (n) - 2; i_ >= 0; i_--) (r) = (r) * (x) + (c)[i_]; \
    } while (0)

/* r = exp(y) for 16 values -87 <= y <= 88 (the caller keeps y there): k =
 * y / ln 2 rounded to an integer (half to even, by adding and subtracting
 * 1.5 * 2^23), r = (y - k ln2_hi) - k ln2_lo (ln2_hi has 9 significant bits,
 * so k ln2_hi is exact), exp(r) by its degree-7 Taylor polynomial
 * (|r| <= ln2 / 2), times 2^k built from k's bits. A statement macro: a
 * vector-valued function would change the ABI of the clones without AVX. */
#define BITNN_EXP16(res, yin)                                                                 \
    do {                                                                                      \
        const bitnn_gelu_v16f y_ = (yin);                                                     \
        const float inv_ln2_ = 0x1.715476p+0f, ln2_hi_ = 0x1.63p-1f, ln2_lo_ = -0x1.bd0106p-13f, \
                    magic_ = 0x1.8p+23f;                                                      \
        int32_t mb_;                                                                          \
        memcpy(&mb_, &magic_, sizeof mb_);                                                    \
        const bitnn_gelu_v16f tk_ = y_ * inv_ln2_ + magic_;                                   \
        const bitnn_gelu_v16f k_ = tk_ - magic_;                                              \
        const bitnn_gelu_v16f s_ = (bitnn_gelu_v16f)(((bitnn_gelu_v16i)tk_ - mb_ + 127) << 23); \
        const bitnn_gelu_v16f r_ = (y_ - k_ * ln2_hi_) - k_ * ln2_lo_;                        \
        bitnn_gelu_v16f e_;                                                                   \
        BITNN_GELU_HORNER(e_, bitnn_gelu_exp, BITNN_GELU_EXP_N, r_);                          \
        (res) = e_ * s_;                                                                      \
    } while (0)

/* out[i] = exp(max(y[i], -87)) for 16 values y <= 0 (y and out may alias):
 * attention's softmax (exp(-87) = 1.6e-38; below, the result would leave the
 * normal floats). The clamp compares bit patterns: for negative floats a
 * larger magnitude is a larger pattern once the sign bit is cleared. */
BITNN_ERF_INLINE void bitnn_expf16_neg(const float *yp, float *out)
{
    bitnn_gelu_v16i yi;
    memcpy(&yi, yp, sizeof yi);
    const bitnn_gelu_v16i m87 = (bitnn_gelu_v16i){0} + 0x42ae0000; /* 87.0f */
    const bitnn_gelu_v16i low = (yi & 0x7fffffff) > m87;
    yi = (yi & ~low) | ((m87 | (int32_t)0x80000000u) & low);
    bitnn_gelu_v16f r;
    BITNN_EXP16(r, (bitnn_gelu_v16f)yi);
    memcpy(out, &r, sizeof r);
}

/* res = gelu(vin) for 16 values in a vector (a statement macro: a caller
 * that has the values in registers need not store and reload them). The
 * selects are on integer lanes (GCC lowers a float comparison of a 16-lane
 * vector to scalar code on AVX2): neg = sign bit set (for x nonzero and not
 * NaN, x < 0; at +-0 both sides give the same result); |x| clears the sign
 * bit, and for non-negative floats the bit patterns order as the values,
 * NaN's above 9's (so NaN -> 9; v stays NaN). */
#define BITNN_GELU16(res, vin)                                                                      \
    do {                                                                                            \
        const bitnn_gelu_v16f v_ = (vin), x_ = v_ * 0.70710678118654752440f;                        \
        const bitnn_gelu_v16i xi_ = (bitnn_gelu_v16i)x_, nine_ = (bitnn_gelu_v16i){0} + 0x41100000; \
        const bitnn_gelu_v16i neg_ = xi_ >> 31;                                                     \
        bitnn_gelu_v16i ai_ = xi_ & 0x7fffffff;                                                     \
        const bitnn_gelu_v16i big_ = ai_ > nine_;                                                   \
        ai_ = (ai_ & ~big_) | (nine_ & big_);                                                       \
        const bitnn_gelu_v16f a_ = (bitnn_gelu_v16f)ai_; /* min(|x|, 9) */                          \
        const bitnn_gelu_v16f t_ = 1.0f / (1.0f + 0.5f * a_);                                       \
        bitnn_gelu_v16f p_, q_;                                                                     \
        BITNN_GELU_HORNER(p_, bitnn_gelu_erfc, BITNN_GELU_ERFC_N, t_);                              \
        const bitnn_gelu_v16f y_g_ = -(a_ * a_) + p_; /* in [-82.3, 0] */                           \
        BITNN_EXP16(q_, y_g_);                                                                      \
        const bitnn_gelu_v16f h_ = 0.5f * (t_ * q_); /* erfc(|x|) / 2 */                            \
        (res) = v_ * BITNN_GELU_SEL(neg_, h_, 1.0f - h_);                                           \
    } while (0)

/* out[i] = gelu(v[i]) for 16 values (v and out may alias). */
BITNN_ERF_INLINE void bitnn_gelu16(const float *vp, float *out)
{
    bitnn_gelu_v16f v, res;
    memcpy(&v, vp, sizeof v);
    BITNN_GELU16(res, v);
    memcpy(out, &res, sizeof res);
}

#endif
