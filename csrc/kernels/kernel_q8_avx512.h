/*
 * kernel_q8_avx512.h - the body of the AVX-512 VNNI int8 kernels, included by
 * kernel_avx512_vnni.c and kernel_avx512_gfni.c, which differ only in how 64
 * weight bits become 64 bytes of 0 or 1 for vpdpbusd (Q8_EXPAND) and in the
 * order of the activation bytes that goes with it (Q8_LOADX):
 *
 *   vnni: the weight word is loaded straight into a mask register and a
 *         zero-masked byte move expands it; activations in their order.
 *   gfni: the word is broadcast to the 8 qwords (a load, no shuffle) and one
 *         gf2p8affineqb with a constant matrix puts bit (8b + j) into byte
 *         8j + b as 0 or 1 (qword j takes bit j of every weight byte); the 64
 *         activation bytes of the chunk are permuted the same way (one vpermb
 *         per chunk and input row). No mask registers: on Intel cores a mask
 *         load or move needs port 5, which the vnni variant then saturates.
 *
 * The includer defines Q8_CONSTANTS, Q8_EXPAND(word_ptr), Q8_LOADX(ptr),
 * Q8_NAME(x) (a unique static name) and Q8_KERNEL (the exported function).
 * For 64 weights of one output row and one input row: one vpdpbusd adds the
 * 64 products into 16 int32 lanes; with several input rows the expanded
 * weights are reused for each. The 16 lanes of 16 accumulators are reduced
 * together (integer sums: any order gives the reference's result).
 */

/* Element e of the result is the sum of the 16 lanes of a[e]. */
ALWAYS_INLINE __m512i Q8_NAME(reduce16x16)(const __m512i a[16])
{
    __m512i b[8], c[4];
    for (int i = 0; i < 8; i++) /* lanes 0-7: a[2i] folded to 8, lanes 8-15: a[2i+1] */
        b[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], 0x44),
                                _mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], 0xEE));
    for (int j = 0; j < 4; j++) /* 128-bit lane l: a[4j + l] folded to 4 */
        c[j] = _mm512_add_epi32(_mm512_shuffle_i32x4(b[2 * j], b[2 * j + 1], 0x88),
                                _mm512_shuffle_i32x4(b[2 * j], b[2 * j + 1], 0xDD));
    const __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(c[0], c[1]),
                                         _mm512_unpackhi_epi32(c[0], c[1]));
    const __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(c[2], c[3]),
                                         _mm512_unpackhi_epi32(c[2], c[3]));
    /* element 4l + e: sum of a[4e + l] */
    const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23),
                                       _mm512_unpackhi_epi64(s01, s23));
    return _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), u);
}

/* 16 output rows [n, n+16) of one input row: z = S * scale + bias. */
static void Q8_NAME(rows16)(const int8_t *q, size_t C, const uint64_t *w, size_t wpr, size_t n,
                   float scale, const uint64_t *bias, float *z)
{
    Q8_CONSTANTS
    __m512i acc[16];
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_si512();
    const uint64_t *row = w + n * wpr;
    for (size_t c = 0; c < C; c++) {
        const __m512i xv = Q8_LOADX(q + 64 * c);
        /* The next 16 rows, a cache line per row every 8 words: the hardware
         * prefetchers do not follow 16 streams far enough ahead (measured:
         * 2048 x 30528 from L3 at 150 G weights/s without, 220 with). */
        if ((c & 7) == 0)
            for (int r = 0; r < 16; r++)
                _mm_prefetch((const char *)(row + (16 + r) * wpr + c), _MM_HINT_T0);
        for (int r = 0; r < 16; r++)
            acc[r] = _mm512_dpbusd_epi32(acc[r], Q8_EXPAND(row + r * wpr + c), xv);
    }
    const __m512 s = _mm512_cvtepi32_ps(Q8_NAME(reduce16x16)(acc));
    const __m512 b = _mm512_maskz_mov_ps((__mmask16)bias_bits16(bias, n), _mm512_set1_ps(1.0f));
    _mm512_storeu_ps(z + n, _mm512_add_ps(_mm512_mul_ps(s, _mm512_set1_ps(scale)), b));
}

/* 4 output rows [n, n+4) of 4 input rows (R <= 4 rows, MB <= 4 inputs). */
ALWAYS_INLINE void Q8_NAME(block4)(const int8_t *q, size_t ldq, size_t C, const uint64_t *w, size_t wpr,
                          size_t n, const int R, const int MB, const float *scale,
                          const uint64_t *bias, float *z, size_t ldz)
{
    Q8_CONSTANTS
    __m512i acc[16];
    for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_si512();
    const uint64_t *row = w + n * wpr;
    for (size_t c = 0; c < C; c++) {
        __m512i xv[4];
        for (int i = 0; i < MB; i++) xv[i] = Q8_LOADX(q + i * ldq + 64 * c);
        for (int r = 0; r < R; r++) {
            const __m512i we = Q8_EXPAND(row + r * wpr + c);
            for (int i = 0; i < MB; i++) acc[4 * i + r] = _mm512_dpbusd_epi32(acc[4 * i + r], we, xv[i]);
        }
    }
    const __m512i sums = Q8_NAME(reduce16x16)(acc); /* element 4i + r: input row i, output row n + r */
    if (R == 4 && MB == 4) {               /* the epilogue of bitnn_q8_out, 16 at a time */
        unsigned b4 = 0;
        for (int r = 0; r < 4; r++) b4 |= (unsigned)bitnn_bias_value(bias, n + r) << r;
        const __m512 b = _mm512_maskz_mov_ps((__mmask16)(b4 * 0x1111u), _mm512_set1_ps(1.0f));
        const __m512 sc = _mm512_setr_ps(scale[0], scale[0], scale[0], scale[0], scale[1], scale[1],
                                         scale[1], scale[1], scale[2], scale[2], scale[2], scale[2],
                                         scale[3], scale[3], scale[3], scale[3]);
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sums), sc), b);
        _mm_storeu_ps(z + n, _mm512_castps512_ps128(y));
        _mm_storeu_ps(z + ldz + n, _mm512_extractf32x4_ps(y, 1));
        _mm_storeu_ps(z + 2 * ldz + n, _mm512_extractf32x4_ps(y, 2));
        _mm_storeu_ps(z + 3 * ldz + n, _mm512_extractf32x4_ps(y, 3));
        return;
    }
    int32_t s[16];
    _mm512_storeu_si512(s, sums);
    for (int i = 0; i < MB; i++)
        for (int r = 0; r < R; r++)
            z[i * ldz + n + r] = bitnn_q8_out(s[4 * i + r], scale[i], bias, n + r);
}

void Q8_KERNEL(const int8_t *q, size_t ldq, size_t M, size_t K,
                              const uint64_t *w, size_t wpr, size_t n0, size_t n1,
                              const float *scale, const uint64_t *bias, float *z, size_t ldz)
{
    (void)K;
    size_t slab = SLAB_BYTES / (wpr * 8);
    if (slab < 16) slab = 16;
    for (size_t s0 = n0; s0 < n1; s0 += slab) {
        const size_t s1 = (n1 - s0 > slab) ? s0 + slab : n1;
        size_t m = 0;
        for (; m + 4 <= M; m += 4) {
            size_t n = s0;
            for (; n + 4 <= s1; n += 4)
                Q8_NAME(block4)(q + m * ldq, ldq, wpr, w, wpr, n, 4, 4, scale + m, bias, z + m * ldz, ldz);
            for (; n < s1; n++)
                Q8_NAME(block4)(q + m * ldq, ldq, wpr, w, wpr, n, 1, 4, scale + m, bias, z + m * ldz, ldz);
        }
        for (; m < M; m++) {
            size_t n = s0;
            for (; n + 16 <= s1; n += 16)
                Q8_NAME(rows16)(q + m * ldq, wpr, w, wpr, n, scale[m], bias, z + m * ldz);
            for (; n + 4 <= s1; n += 4)
                Q8_NAME(block4)(q + m * ldq, ldq, wpr, w, wpr, n, 4, 1, scale + m, bias, z + m * ldz, ldz);
            for (; n < s1; n++)
                Q8_NAME(block4)(q + m * ldq, ldq, wpr, w, wpr, n, 1, 1, scale + m, bias, z + m * ldz, ldz);
        }
    }
}
