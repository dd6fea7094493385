/*
 * kernel_avx512_vnni.c - the int8 kernel for AVX-512 with VNNI (no GFNI or
 * VBMI needed: Cascade Lake and later). Compiled with -mavx512f -mavx512bw
 * -mavx512vnni (setup.py) and only called after bitnn_cpu_features()
 * reported all three with OS support. The body is kernel_q8_avx512.h.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "kernel_common.h"

#define Q8_CONSTANTS const __m512i ones = _mm512_set1_epi8(1);
#define Q8_EXPAND(word) _mm512_maskz_mov_epi8(_load_mask64((__mmask64 *)(word)), ones)
#define Q8_LOADX(p) _mm512_loadu_si512(p)
#define Q8_NAME(x) vnni_##x
#define Q8_KERNEL bitnn_gemm_q8_avx512vnni
#include "kernel_q8_avx512.h"
#endif
