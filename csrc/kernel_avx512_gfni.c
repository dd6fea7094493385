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
#endif
