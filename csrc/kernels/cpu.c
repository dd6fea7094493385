/*
 * cpu.c - CPU feature detection and the choice of kernel.
 *
 * On x86 a feature is usable only if cpuid reports it AND the OS saves the
 * registers it needs (xgetbv XCR0): YMM state for AVX2, ZMM + opmask state
 * for AVX-512. Which kernels are compiled in is decided by setup.py through
 * the BITNN_HAVE_* macros.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define BITNN_X86 1
#include <cpuid.h>
static uint64_t xgetbv0(void)
{
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

static uint32_t detect(void)
{
    uint32_t f = 0;
#if defined(BITNN_X86)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if ((c >> 20) & 1) f |= BITNN_CPU_SSE42;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    const int ymm_ok = (xcr0 & 0x6) == 0x6;
    const int zmm_ok = (xcr0 & 0xe6) == 0xe6;
    if (avx && ymm_ok) f |= BITNN_CPU_AVX;
    if (fma && ymm_ok) f |= BITNN_CPU_FMA;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        if (((b >> 5) & 1) && ymm_ok) f |= BITNN_CPU_AVX2;
        if (zmm_ok) {
            if ((b >> 16) & 1) f |= BITNN_CPU_AVX512F;
            if ((b >> 17) & 1) f |= BITNN_CPU_AVX512DQ;
            if ((b >> 30) & 1) f |= BITNN_CPU_AVX512BW;
            if ((b >> 31) & 1) f |= BITNN_CPU_AVX512VL;
            if ((c >> 11) & 1) f |= BITNN_CPU_AVX512VNNI;
            if ((c >> 14) & 1) f |= BITNN_CPU_AVX512VPOPCNTDQ;
            if ((c >> 1) & 1) f |= BITNN_CPU_AVX512VBMI;
            if ((c >> 8) & 1) f |= BITNN_CPU_GFNI;
        }
#if defined(BITNN_HAVE_AMX)
        /* AMX-TILE (edx 24) and AMX-INT8 (25), the OS saving the tile
         * configuration and data (XCR0 bits 17, 18), and this process granted
         * the tile data (Linux asks for it; BITNN_AMX=0 declines). */
        const char *amx_env = getenv("BITNN_AMX");
        if (zmm_ok && ((d >> 24) & 1) && ((d >> 25) & 1) && (xcr0 & 0x60000) == 0x60000 &&
            !(amx_env && strcmp(amx_env, "0") == 0) && bitnn_amx_request())
            f |= BITNN_CPU_AMXINT8;
#endif
    }
#elif defined(__aarch64__) || defined(_M_ARM64)
    f |= BITNN_CPU_NEON;
#if defined(__ARM_FEATURE_DOTPROD)
    f |= BITNN_CPU_DOTPROD;
#endif
#endif
    return f;
}

static pthread_once_t features_once = PTHREAD_ONCE_INIT;
static uint32_t features;

static void detect_features(void) { features = detect(); }

uint32_t bitnn_cpu_features(void)
{
    /* pthread_once orders the write before every reader's load (C11 would call
     * a plain flag read by racing threads a data race). */
    pthread_once(&features_once, detect_features);
    return features;
}

static const char *const feature_names[] = {
    "sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
    "avx512dq", "avx512vnni", "avx512vpopcntdq", "neon", "dotprod", "avx512vbmi", "gfni",
    "amx-int8"};

const char *bitnn_cpu_feature_name(int bit)
{
    if (bit < 0 || bit >= (int)(sizeof feature_names / sizeof feature_names[0])) return NULL;
    return feature_names[bit];
}

/* ------------------------------------------------------------ kernel table */
static const char *const isa_names[BITNN_ISA_COUNT] = {"ref", "avx2", "avx512", "neon"};

/* The direct int8 convolution and the int8 attention scores need only VNNI
 * (every AVX-512 int8 set below that has VNNI). */
#if defined(BITNN_HAVE_AVX512VNNI)
#define VNNI_KERNELS bitnn_conv_q8_avx512vnni, bitnn_attn_q8_avx512vnni
#else
#define VNNI_KERNELS NULL, NULL
#endif

static const bitnn_kernel_set kernel_table[BITNN_ISA_COUNT] = {
    [BITNN_ISA_REF] = {bitnn_gemm_f32_ref, bitnn_gemm_q8_ref},
#if defined(BITNN_HAVE_AVX2)
    [BITNN_ISA_AVX2] = {bitnn_gemm_f32_avx2, bitnn_gemm_q8_avx2},
#endif
#if defined(BITNN_HAVE_AVX512) && defined(BITNN_HAVE_AVX512VNNI)
    [BITNN_ISA_AVX512] = {bitnn_gemm_f32_avx512, bitnn_gemm_q8_avx512vnni, NULL, NULL, NULL,
                          VNNI_KERNELS},
#elif defined(BITNN_HAVE_AVX512) && defined(BITNN_HAVE_AVX2)
    [BITNN_ISA_AVX512] = {bitnn_gemm_f32_avx512, bitnn_gemm_q8_avx2},
#endif
#if defined(BITNN_HAVE_NEON)
    [BITNN_ISA_NEON] = {bitnn_gemm_f32_neon, bitnn_gemm_q8_neon},
#endif
};

/* The int8 entry of the AVX-512 isa depends on extensions beyond F and BW:
 * VNNI + VBMI + GFNI (Ice Lake, Sapphire Rapids, Zen 4+): the gfni kernel,
 * and vpermb tables on the tiles for linear layers;
 * VNNI only (Cascade Lake): the vnni kernel; neither: the AVX2 one.
 * With VNNI, convolutions run the direct kernel (conv_q8), unless AMX
 * takes them (gemm_q8m on im2col rows). */
#if defined(BITNN_HAVE_AVX512) && defined(BITNN_HAVE_AVX2)
static const bitnn_kernel_set avx512_no_vnni = {bitnn_gemm_f32_avx512, bitnn_gemm_q8_avx2};
#endif
#if defined(BITNN_HAVE_AVX512) && defined(BITNN_HAVE_AVX512GFNI)
static const bitnn_kernel_set avx512_gfni = {bitnn_gemm_f32_avx512, bitnn_gemm_q8_avx512gfni,
                                             bitnn_gemm_q8t_avx512vbmi,
                                             bitnn_build_tables_q8_avx512vbmi, NULL,
                                             VNNI_KERNELS};
#if defined(BITNN_HAVE_AMX)
/* ... and with AMX (Sapphire Rapids and later), GEMMs of many rows on tiles. */
static const bitnn_kernel_set avx512_gfni_amx = {bitnn_gemm_f32_avx512, bitnn_gemm_q8_avx512gfni,
                                                 bitnn_gemm_q8t_avx512vbmi,
                                                 bitnn_build_tables_q8_avx512vbmi,
                                                 bitnn_gemm_q8m_amx, VNNI_KERNELS};
#endif
#endif

static int avx512_q8_variant(void) /* 3: gfni + amx, 2: gfni, 1: vnni, 0: neither */
{
#if defined(BITNN_HAVE_AVX512GFNI)
    const uint32_t gfni = BITNN_CPU_AVX512VNNI | BITNN_CPU_AVX512VBMI | BITNN_CPU_GFNI;
    if ((bitnn_cpu_features() & gfni) == gfni)
        return (bitnn_cpu_features() & BITNN_CPU_AMXINT8) ? 3 : 2;
#endif
#if defined(BITNN_HAVE_AVX512VNNI)
    if (bitnn_cpu_features() & BITNN_CPU_AVX512VNNI) return 1;
#endif
    return 0;
}

atomic_ullong bitnn_kernel_call_count[BITNN_ISA_COUNT];

uint64_t bitnn_kernel_calls(int isa)
{
    if (isa < 0 || isa >= BITNN_ISA_COUNT) return 0;
    return atomic_load_explicit(&bitnn_kernel_call_count[isa], memory_order_relaxed);
}

const bitnn_kernel_set *bitnn_kernels_for(int isa)
{
    if (isa < 0 || isa >= BITNN_ISA_COUNT) return NULL;
#if defined(BITNN_HAVE_AVX512)
    if (isa == BITNN_ISA_AVX512) {
        const int v = avx512_q8_variant();
#if defined(BITNN_HAVE_AVX512GFNI)
        if (v == 2) return &avx512_gfni;
#if defined(BITNN_HAVE_AMX)
        if (v == 3) return &avx512_gfni_amx;
#endif
#endif
#if defined(BITNN_HAVE_AVX2)
        if (v == 0) return &avx512_no_vnni;
#endif
    }
#endif
    return &kernel_table[isa];
}

const char *bitnn_q8_kernel_name(int isa)
{
    if (isa == BITNN_ISA_AVX512) {
        static const char *const names[] = {"avx2", "avx512-vnni", "avx512-gfni",
                                            "avx512-gfni+amx"};
        return names[avx512_q8_variant()];
    }
    return bitnn_isa_name(isa);
}

const char *bitnn_isa_name(int isa)
{
    return (isa >= 0 && isa < BITNN_ISA_COUNT) ? isa_names[isa] : "?";
}

int bitnn_isa_from_name(const char *name)
{
    for (int i = 0; i < BITNN_ISA_COUNT; i++)
        if (name && strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}

int bitnn_isa_compiled(int isa)
{
    return isa >= 0 && isa < BITNN_ISA_COUNT && kernel_table[isa].gemm_f32 != NULL;
}

int bitnn_isa_supported(int isa)
{
    if (!bitnn_isa_compiled(isa)) return 0;
    const uint32_t f = bitnn_cpu_features();
    switch (isa) {
    case BITNN_ISA_REF: return 1;
    case BITNN_ISA_AVX2: return (f & BITNN_CPU_AVX2) != 0;
    case BITNN_ISA_AVX512: /* F for the fp32 table kernel, BW for the int8 kernels' byte ops */
        return (f & BITNN_CPU_AVX512F) && (f & BITNN_CPU_AVX512BW);
    case BITNN_ISA_NEON: return (f & BITNN_CPU_NEON) != 0;
    default: return 0;
    }
}

bitnn_status bitnn_isa_default(int *isa, char *msg, size_t msg_len)
{
    const char *env = getenv("BITNN_KERNEL");
    if (env && *env && strcmp(env, "auto") != 0) {
        int want = bitnn_isa_from_name(env);
        if (want < 0) {
            snprintf(msg, msg_len, "BITNN_KERNEL=%s is not a kernel name "
                     "(expected one of ref, avx2, avx512, neon, auto)", env);
            return BITNN_EENV;
        }
        if (!bitnn_isa_compiled(want)) {
            snprintf(msg, msg_len, "BITNN_KERNEL=%s: this build of bitnn has no %s kernel", env, env);
            return BITNN_EUNSUPPORTED;
        }
        if (!bitnn_isa_supported(want)) {
            snprintf(msg, msg_len, "BITNN_KERNEL=%s: this CPU (or OS) cannot run the %s kernel",
                     env, env);
            return BITNN_EUNSUPPORTED;
        }
        *isa = want;
        return BITNN_OK;
    }
    static const int preference[] = {BITNN_ISA_AVX512, BITNN_ISA_AVX2, BITNN_ISA_NEON};
    for (size_t i = 0; i < sizeof preference / sizeof preference[0]; i++)
        if (bitnn_isa_supported(preference[i])) {
            *isa = preference[i];
            return BITNN_OK;
        }
    *isa = BITNN_ISA_REF;
    return BITNN_OK;
}

const char *bitnn_status_str(bitnn_status s)
{
    switch (s) {
    case BITNN_OK: return "ok";
    case BITNN_EINVAL: return "invalid argument";
    case BITNN_ENOMEM: return "out of memory";
    case BITNN_EUNSUPPORTED: return "kernel not available on this CPU or build";
    case BITNN_EENV: return "bad environment variable";
    case BITNN_ESYS: return "system call failed";
    case BITNN_EFORMAT: return "malformed model file";
    }
    return "unknown status";
}
