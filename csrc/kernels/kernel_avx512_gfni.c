/*
 * kernel_avx512_gfni.c - the int8 kernel for AVX-512 with VNNI, VBMI and
 * GFNI (Ice Lake, Sapphire Rapids, Zen 4 and later): weight bits expanded by
 * gf2p8affineqb, no mask registers. Compiled with -mavx512f -mavx512bw
 * -mavx512vnni -mavx512vbmi -mgfni (setup.py) and only called after
 * bitnn_cpu_features() reported them all with OS support. The body is
 * kernel_q8_avx512.h.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"

/* Row 0 (the top byte of qword j) of matrix j selects bit j of the source
 * byte, so output byte b of qword j is bit j of weight byte b, as 0 or 1. */
#define Q8_CONSTANTS                                                                      \
    const __m512i aff = _mm512_setr_epi64(1ll << 56, 2ll << 56, 4ll << 56, 8ll << 56,    \
                                          16ll << 56, 32ll << 56, 64ll << 56,              \
                                          (long long)(128ull << 56));                      \
    const __m512i perm = _mm512_setr_epi64(0x3830282018100800ll, 0x3931292119110901ll,   \
                                           0x3a322a221a120a02ll, 0x3b332b231b130b03ll,     \
                                           0x3c342c241c140c04ll, 0x3d352d251d150d05ll,     \
                                           0x3e362e261e160e06ll, 0x3f372f271f170f07ll);
#define Q8_EXPAND(word) _mm512_gf2p8affine_epi64_epi8(_mm512_set1_epi64((long long)*(word)), aff, 0)
/* byte 8j + b of the permuted chunk is activation 8b + j */
#define Q8_LOADX(p) _mm512_permutexvar_epi8(perm, _mm512_loadu_si512(p))
#define Q8_NAME(x) gfni_##x
#define Q8_KERNEL bitnn_gemm_q8_avx512gfni
#include "kernel_q8_avx512.h"

/* ------------------------------------------------------- int8 on the tiles */
/* MB input rows x RB blocks of 16 output rows (kernels.h, bitnn_gemm_q8t_fn).
 * A tile word holds the 4-bit indices of groups 0..7 of a chunk, nibble g at
 * bits 4g: masking the low nibble of each byte gives groups 0, 2, 4, 6 (byte
 * j: group 2j), shifting first gives 1, 3, 5, 7; OR-ing j into bits 4-5 makes
 * byte j index section j of a 64-byte table. One vpermb thus looks up 64
 * groups (16 rows x 4 groups, 256 weights) and vpdpbusd against ones sums
 * each row's 4 bytes into its 32-bit lane; low and high bytes of the biased
 * sums are looked up and summed apart, and recombined at the end. */
/* The accumulators lo<i><r> and hi<i><r>: named variables (BITNN_EACH,
 * kernel_common.h). */
#define Q8T_ZERO(i, r) __m512i lo##i##r = _mm512_setzero_si512(), hi##i##r = lo##i##r;
ALWAYS_INLINE void q8t_blocks(const void *const *tp, size_t kc, const uint32_t *tiles,
                              size_t nb, size_t b0, const int RB, const int MB, size_t n0, size_t n1,
                              const float *scale, const uint64_t *bias, float *z, size_t ldz)
{
    const __m512i low4 = _mm512_set1_epi8(0x0f), sel = _mm512_set1_epi32(0x30201000);
    const __m512i ones = _mm512_set1_epi8(1);
    BITNN_EACH(Q8T_ZERO)
    const uint32_t *tb[4] = {NULL, NULL, NULL, NULL};
    for (int r = 0; r < RB; r++) tb[r] = tiles + (b0 + r) * kc * 16;
    for (size_t c = 0; c < kc; c++) {
        const uint8_t *t0 = (const uint8_t *)tp[c];
        const uint8_t *t1 = MB > 1 ? (const uint8_t *)tp[kc + c] : NULL;
        const uint8_t *t2 = MB > 2 ? (const uint8_t *)tp[2 * kc + c] : NULL;
        const uint8_t *t3 = MB > 3 ? (const uint8_t *)tp[3 * kc + c] : NULL;
        /* block r's indices: a<r> (groups 0, 2, 4, 6) and b<r> (1, 3, 5, 7);
         * then per input row its 4 tables (loaded once) looked up by every
         * block: 4 tables + 2 RB indices + 2 MB RB accumulators stay within
         * the 32 registers (GCC shares a table load between blocks, so
         * looping over blocks outside the rows kept 16 tables live and
         * spilled) */
        if (MB == 1) prefetch_next_blocks(tiles, kc, nb, b0, RB, c);
        __m512i a0 = _mm512_setzero_si512(), b0_ = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
#define Q8T_INDEX(r, br)                                                                           \
        if ((r) < RB) {                                                                            \
            const __m512i v = _mm512_loadu_si512(tb[r] + 16 * c);                                  \
            a##r = _mm512_ternarylogic_epi32(v, low4, sel, 0xEA); /* (v & low4) | sel */           \
            br = _mm512_ternarylogic_epi32(_mm512_srli_epi32(v, 4), low4, sel, 0xEA);              \
        }
        Q8T_INDEX(0, b0_) Q8T_INDEX(1, b1) Q8T_INDEX(2, b2) Q8T_INDEX(3, b3)
#undef Q8T_INDEX
#define Q8T_LOOK(i, r, br)                                                                         \
        if (BITNN_LIVE(i, r)) {                                                                      \
            lo##i##r = _mm512_dpbusd_epi32(lo##i##r, _mm512_permutexvar_epi8(a##r, x0), ones);     \
            hi##i##r = _mm512_dpbusd_epi32(hi##i##r, _mm512_permutexvar_epi8(a##r, x1), ones);     \
            lo##i##r = _mm512_dpbusd_epi32(lo##i##r, _mm512_permutexvar_epi8(br, x2), ones);       \
            hi##i##r = _mm512_dpbusd_epi32(hi##i##r, _mm512_permutexvar_epi8(br, x3), ones);       \
        }
#define Q8T_ROW(i)                                                                                 \
        if ((i) < MB) {                                                                            \
            const __m512i x0 = _mm512_loadu_si512(t##i), x1 = _mm512_loadu_si512(t##i + 64);      \
            const __m512i x2 = _mm512_loadu_si512(t##i + 128), x3 = _mm512_loadu_si512(t##i + 192); \
            Q8T_LOOK(i, 0, b0_) Q8T_LOOK(i, 1, b1) Q8T_LOOK(i, 2, b2) Q8T_LOOK(i, 3, b3)          \
        }
        Q8T_ROW(0) Q8T_ROW(1) Q8T_ROW(2) Q8T_ROW(3)
#undef Q8T_ROW
#undef Q8T_LOOK
    }
    /* 8 lookups a chunk, each biased by 512 */
    const __m512i unbias = _mm512_set1_epi32((int)(4096 * kc));
#define Q8T_STORE(i, r)                                                                            \
    if (BITNN_LIVE(i, r)) {                                                                          \
        const size_t blk = b0 + (r);                                                               \
        const __m512 bv = _mm512_maskz_mov_ps(_cvtu32_mask16(bias_bits_block(bias, blk, n1)),      \
                                              _mm512_set1_ps(1.0f));                               \
        const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(lo##i##r, _mm512_slli_epi32(hi##i##r, 8)), unbias); \
        /* bitnn_q8_out: (float)s * scale + bias bit, two roundings */                             \
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(scale[i])), bv); \
        _mm512_mask_storeu_ps(z + (i) * ldz + 16 * blk, _cvtu32_mask16(rows_in_block(blk, n0, n1)), y); \
    }
    BITNN_EACH(Q8T_STORE)
#undef Q8T_STORE
}

/* The tables of bitnn_build_tables_q8, 32 inputs at a time: vpdpbusd of a
 * constant (dword lane s holds bit b of s in byte b) with the group's 4
 * bytes broadcast gives the 16 entries 512 + sum as dwords (4..1020); two
 * vpermt2b then gather the low (byte 0) or high (byte 1) bytes of 2 groups'
 * dwords each, and a blend joins the halves of a 64-byte table. */
void bitnn_build_tables_q8_avx512vbmi(const int8_t *q, size_t K, uint8_t *tab)
{
    const __m512i bits = _mm512_setr_epi32(0x00000000, 0x00000001, 0x00000100, 0x00000101,
                                           0x00010000, 0x00010001, 0x00010100, 0x00010101,
                                           0x01000000, 0x01000001, 0x01000100, 0x01000101,
                                           0x01010000, 0x01010001, 0x01010100, 0x01010101);
    const __m512i base = _mm512_set1_epi32(512);
    /* byte i of a table: section i / 16 (groups a, b, c, d of a table), entry
     * i % 16; sections 0 and 1 from the first vpermt2b's two sources, 2 and 3
     * from the second's: byte 4s (+1 for the high byte) of entry s */
    uint8_t ix[64];
    for (int i = 0; i < 64; i++) ix[i] = (uint8_t)(((i / 16) % 2) * 64 + 4 * (i % 16));
    const __m512i ilo = _mm512_loadu_si512(ix), ihi = _mm512_add_epi8(ilo, _mm512_set1_epi8(1));
    const __mmask64 upper = 0xFFFFFFFF00000000ull;
    for (size_t c = 0; c < bitnn_tile_chunks(K); c++) {
        __m512i e[8];
        for (int g = 0; g < 8; g++) {
            int32_t w;
            memcpy(&w, q + 32 * c + 4 * g, 4);
            e[g] = _mm512_dpbusd_epi32(base, bits, _mm512_set1_epi32(w));
        }
        uint8_t *t = tab + 256 * c;
        for (int h = 0; h < 2; h++) { /* table A: groups 0, 2, 4, 6; B: 1, 3, 5, 7 */
            const __m512i lo = _mm512_mask_blend_epi8(
                upper, _mm512_permutex2var_epi8(e[h], ilo, e[2 + h]),
                _mm512_permutex2var_epi8(e[4 + h], ilo, e[6 + h]));
            const __m512i hi = _mm512_mask_blend_epi8(
                upper, _mm512_permutex2var_epi8(e[h], ihi, e[2 + h]),
                _mm512_permutex2var_epi8(e[4 + h], ihi, e[6 + h]));
            _mm512_storeu_si512(t + 128 * h, lo);
            _mm512_storeu_si512(t + 128 * h + 64, hi);
        }
    }
}

void bitnn_gemm_q8t_avx512vbmi(const void *const *tp, size_t M, size_t kc,
                               const uint32_t *tiles, size_t n0, size_t n1, const float *scale,
                               const uint64_t *bias, float *z, size_t ldz)
{
#define Q8T_BLOCK(m, b, rb, mb) \
    q8t_blocks(tp + (m) * kc, kc, tiles, (n1 + 15) / 16, b, rb, mb, n0, n1, scale + (m), bias,   \
               z + (m) * ldz, ldz)
    BITNN_TILE_DRIVER(M, kc, n0, n1, 2, 4, Q8T_BLOCK);
#undef Q8T_BLOCK
}
#endif
