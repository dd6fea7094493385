/*
 * kernel_amx.c - the int8 binary GEMM for many input rows on Intel AMX
 * (Sapphire Rapids and later: AMX-TILE + AMX-INT8), compiled with
 * -mamx-tile -mamx-int8 -mavx512f -mavx512bw and called only where cpu.c found
 * the extension and the OS granted this process the tile state.
 *
 * One TDPBSUD multiplies a 16 x 64 tile of int8 activations (A: 16 input
 * rows, 64 inputs) by a 64 x 16 tile of weights as bytes 0 or 1 (B, in the
 * "4 inputs per 32-bit lane" layout: row kk holds inputs 4kk .. 4kk+3 of the
 * 16 output rows) into 16 x 16 int32 sums: 16,384 multiply-adds, against
 * 256 weights per vpermb in the table kernel. The sums are exact integers,
 * so the result is the reference's bit for bit (kernels.h, bitnn_gemm_q8_fn).
 *
 * The weights stay 1 bit each in memory (the 16-row tiles of the fp32 mode):
 * a B tile is expanded on the fly, one vpermd per row of it (a 32-bit word
 * of 16 rows shifted by 4g holds group g's 4 bits in each lane's low bits,
 * and a 16-entry table turns them into 4 bytes 0/1), and reused for every
 * block of 32 input rows.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* The tile configuration: 8 tiles of 16 rows x 64 bytes (palette 1). */
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

int bitnn_amx_request(void)
{
#if defined(__linux__) && defined(SYS_arch_prctl)
    /* Linux hands out the (8 KB) tile state only to processes that ask for it. */
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
#else
    return 0;
#endif
}

/* The B tile of 16 output rows for inputs 64kb .. 64kb+63: chunk words w0
 * (inputs 64kb .. +31) and w1 (the next 32; NULL past the row: zeros). */
static inline void expand_b(const uint32_t *w0, const uint32_t *w1, uint8_t *b)
{
    /* entry v: byte j = bit j of v */
    const __m512i table = _mm512_setr_epi32(0x00000000, 0x00000001, 0x00000100, 0x00000101,
                                            0x00010000, 0x00010001, 0x00010100, 0x00010101,
                                            0x01000000, 0x01000001, 0x01000100, 0x01000101,
                                            0x01010000, 0x01010001, 0x01010100, 0x01010101);
    __m512i w = _mm512_loadu_si512(w0);
    for (int g = 0; g < 8; g++)
        _mm512_store_si512(b + 64 * g, _mm512_permutexvar_epi32(_mm512_srli_epi32(w, 4 * g), table));
    if (!w1) {
        memset(b + 512, 0, 512);
        return;
    }
    w = _mm512_loadu_si512(w1);
    for (int g = 0; g < 8; g++)
        _mm512_store_si512(b + 512 + 64 * g,
                           _mm512_permutexvar_epi32(_mm512_srli_epi32(w, 4 * g), table));
}

/* Sums of tile c (16 input rows from m0, outputs 16 nb ..) through the shared
 * epilogue, (float) S * scale + bias, 16 outputs a vector (a mul then an add:
 * the same roundings as bitnn_q8_out). */
static inline void store_out(const int32_t *c, size_t m0, size_t M, size_t nb, size_t n1,
                             const float *scale, const uint64_t *bias, float *z, size_t ldz)
{
    const size_t n = 16 * nb, nn = n1 - n < 16 ? n1 - n : 16;
    const __mmask16 keep = (__mmask16)((1u << nn) - 1);
    uint32_t bb = 0; /* the 16 bias bits from n (the last block reads only bits < n1) */
    for (size_t i = 0; i < nn; i++) bb |= (uint32_t)(bitnn_bias_value(bias, n + i) != 0.0f) << i;
    const __m512 b = _mm512_maskz_mov_ps((__mmask16)bb, _mm512_set1_ps(1.0f));
    for (size_t r = 0; r < 16 && m0 + r < M; r++) {
        const __m512 s = _mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * r));
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(s, _mm512_set1_ps(scale[m0 + r])), b);
        _mm512_mask_storeu_ps(z + (m0 + r) * ldz + n, keep, y);
    }
}

/* Rows are taken in blocks of 32 (two A tiles) and outputs in pairs of 16-row
 * blocks (two B tiles: four accumulators); the B tiles of up to KSEG input
 * blocks of 64 are expanded once and reused by up to MCHUNK input rows, whose
 * partial sums wait between segments in cs. */
#define KSEG 8
#define MCHUNK 128

/* q: M rows of ldq bytes (a multiple of 64, zero past K), readable up to
 * 32 rows past the last block of 32 started (gemm_operands pads them);
 * outputs [n0, n1) with n0 a multiple of 16. */
void bitnn_gemm_q8m_amx(const int8_t *q, size_t ldq, size_t M, size_t kc, const uint32_t *tiles,
                        size_t n0, size_t n1, const float *scale, const uint64_t *bias, float *z,
                        size_t ldz)
{
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
    const size_t KB = (kc + 1) / 2;
    _Alignas(64) uint8_t bt[2][KSEG][1024];        /* 16 KB */
    _Alignas(64) int32_t cs[MCHUNK / 16][2][256];  /* 16 KB: partial sums between segments */
    for (size_t nb = n0 / 16; 16 * nb < n1; nb += 2) {
        const int two = 16 * (nb + 1) < n1; /* a second block of 16 outputs */
        for (size_t mc = 0; mc < M; mc += MCHUNK) {
            const size_t mend = M - mc < MCHUNK ? M : mc + MCHUNK;
            for (size_t k0 = 0; k0 < KB; k0 += KSEG) {
                const size_t nk = KB - k0 < KSEG ? KB - k0 : KSEG;
                const int first = k0 == 0, last = k0 + nk == KB;
                for (size_t i = 0; i < nk; i++)
                    for (int h = 0; h < 1 + two; h++) {
                        const uint32_t *t0 = tiles + ((nb + h) * kc + 2 * (k0 + i)) * 16;
                        expand_b(t0, 2 * (k0 + i) + 1 < kc ? t0 + 16 : NULL, bt[h][i]);
                    }
                for (size_t m0 = mc; m0 < mend; m0 += 32) {
                    int32_t *c0 = cs[(m0 - mc) / 16][0], *c1 = cs[(m0 - mc) / 16][1];
                    int32_t *c2 = cs[(m0 - mc) / 16 + 1][0], *c3 = cs[(m0 - mc) / 16 + 1][1];
                    if (first) {
                        _tile_zero(0);
                        _tile_zero(1);
                        _tile_zero(2);
                        _tile_zero(3);
                    } else {
                        _tile_loadd(0, c0, 64);
                        _tile_loadd(2, c2, 64);
                        if (two) {
                            _tile_loadd(1, c1, 64);
                            _tile_loadd(3, c3, 64);
                        }
                    }
                    for (size_t i = 0; i < nk; i++) {
                        _tile_loadd(4, q + m0 * ldq + 64 * (k0 + i), (long)ldq);
                        _tile_loadd(5, q + (m0 + 16) * ldq + 64 * (k0 + i), (long)ldq);
                        _tile_loadd(6, bt[0][i], 64);
                        _tile_dpbsud(0, 4, 6);
                        _tile_dpbsud(2, 5, 6);
                        if (two) {
                            _tile_loadd(7, bt[1][i], 64);
                            _tile_dpbsud(1, 4, 7);
                            _tile_dpbsud(3, 5, 7);
                        }
                    }
                    _tile_stored(0, c0, 64);
                    _tile_stored(2, c2, 64);
                    if (two) {
                        _tile_stored(1, c1, 64);
                        _tile_stored(3, c3, 64);
                    }
                    if (!last) continue;
                    store_out(c0, m0, M, nb, n1, scale, bias, z, ldz);
                    store_out(c2, m0 + 16, M, nb, n1, scale, bias, z, ldz);
                    if (two) {
                        store_out(c1, m0, M, nb + 1, n1, scale, bias, z, ldz);
                        store_out(c3, m0 + 16, M, nb + 1, n1, scale, bias, z, ldz);
                    }
                }
            }
        }
    }
    _tile_release();
}
