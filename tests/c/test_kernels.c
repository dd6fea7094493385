/*
 * test_kernels.c - every kernel compiled into this build against the scalar
 * reference, bit for bit, without Python. Built by tests/c/run.sh natively
 * (ref + AVX2 + AVX-512 on x86) and cross-compiled for aarch64 (ref + NEON)
 * to run under qemu-aarch64, so the NEON kernel is checked on any machine.
 *
 * The contract (docs/packing.md): one summation order for every kernel and
 * every thread count, so results are compared with == (which also lets the
 * sign of a zero differ, as the contract allows).
 *
 *   usage: test_kernels [quick]      (quick: fewer and smaller cases, for qemu)
 *
 * Prints failures as they happen and ends with the line "N passed, M failed";
 * the exit status is 0 only when nothing failed.
 */
#define _POSIX_C_SOURCE 200112L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnn.h"
#include "kernels.h"

static long n_passed, n_failed;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (cond) {                                        \
            n_passed++;                                    \
        } else {                                           \
            n_failed++;                                    \
            if (n_failed <= 50) {                          \
                printf("FAIL %s:%d: ", __FILE__, __LINE__); \
                printf(__VA_ARGS__);                       \
                printf("\n");                              \
            }                                              \
        }                                                  \
    } while (0)

/* ------------------------------------------------------------ random data */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

static float normal(void)
{
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* N rows of K bits with probability `density`, packed, padding bits zero. */
static uint64_t *random_bits(size_t N, size_t K, double density, uint8_t **unpacked)
{
    const size_t wpr = bitnn_words_per_row(K);
    uint64_t *w = xmalloc(N * wpr * sizeof *w);
    uint8_t *u = xmalloc(N * K);
    memset(w, 0, N * wpr * sizeof *w);
    for (size_t n = 0; n < N; n++)
        for (size_t k = 0; k < K; k++) {
            const int bit = density >= 1.0 ? 1 : density <= 0.0 ? 0 : uniform() < density;
            u[n * K + k] = (uint8_t)bit;
            if (bit) w[n * wpr + k / 64] |= 1ull << (k % 64);
        }
    if (unpacked)
        *unpacked = u;
    else
        free(u);
    return w;
}

/* ------------------------------------------------------------- the pools */
#define MAX_THREADS 4
static bitnn_pool *pools[MAX_THREADS + 1]; /* pools[t]: t threads; pools[1] = NULL */

static int isas[BITNN_ISA_COUNT], n_isas;

/* ------------------------------------------------------------------ cases */
#define CANARY 12345.0f

typedef struct {
    size_t M, N, K;
    double density;
    int bias;      /* 0: none, 1: random bits */
    int integers;  /* x holds small integers: sums are exact, checked against int64 */
    int linear;    /* also check the fused op with every activation */
} case_t;

static int same(const float *a, const float *b, size_t M, size_t N, size_t lda, size_t ldb,
                size_t *where)
{
    for (size_t m = 0; m < M; m++)
        for (size_t n = 0; n < N; n++)
            if (!(a[m * lda + n] == b[m * ldb + n])) {
                *where = m * N + n;
                return 0;
            }
    return 1;
}

/* Threads used by run_case: 1 for most sections; the thread section creates
 * pools of 2..4 threads and sets this to 4. (Idle pool workers spin-wait
 * between jobs, which on a busy 2-core machine slows everything else down,
 * so pools only live during that section.) */
static int max_t = 1;

/* The AVX-512 int8 variants (cpu.c picks one per CPU): each is checked
 * directly wherever the CPU can run it. */
static const struct {
    const char *name;
    uint32_t need;
    bitnn_gemm_q8_fn fn;
} q8_variants[] = {
#if defined(BITNN_HAVE_AVX512VNNI)
    {"avx512-vnni", BITNN_CPU_AVX512F | BITNN_CPU_AVX512BW | BITNN_CPU_AVX512VNNI,
     bitnn_gemm_q8_avx512vnni},
#endif
#if defined(BITNN_HAVE_AVX512GFNI)
    {"avx512-gfni", BITNN_CPU_AVX512F | BITNN_CPU_AVX512BW | BITNN_CPU_AVX512VNNI |
                        BITNN_CPU_AVX512VBMI | BITNN_CPU_GFNI, bitnn_gemm_q8_avx512gfni},
#endif
    {"ref", 0, bitnn_gemm_q8_ref},
};
static const int n_q8_variants = (int)(sizeof q8_variants / sizeof q8_variants[0]);

static void run_case(const case_t *c)
{
    const size_t M = c->M, N = c->N, K = c->K;
    /* leading dimensions larger than the rows, to catch a kernel that
     * ignores them; the gaps hold a canary that must survive */
    const size_t ldx = K + (K % 3), ldz = N + 1 + (N % 2);
    float *x = xmalloc((M * ldx + 1) * sizeof *x);
    for (size_t i = 0; i < M * ldx + 1; i++)
        x[i] = c->integers ? (float)((long)(rnd() % 101) - 50) : normal();
    uint8_t *wu = NULL;
    uint64_t *w = random_bits(N, K, c->density, &wu);
    uint8_t *bu = NULL;
    uint64_t *bias = c->bias ? random_bits(1, N, 0.5, &bu) : NULL;

    float *zref = xmalloc((M * ldz + 1) * sizeof *zref);
    float *z = xmalloc((M * ldz + 1) * sizeof *z);
    bitnn_status s;
    static const char *const prec_names[] = {"fp32", "int8"};
    for (int prec = 0; prec < BITNN_PRECISION_COUNT; prec++) {
    s = bitnn_binary_gemm(x, ldx, M, K, w, N, bias, zref, ldz, (bitnn_precision)prec,
                          BITNN_ISA_REF, NULL);
    CHECK(s == BITNN_OK, "ref gemm %s M=%zu N=%zu K=%zu: status %d", prec_names[prec], M, N, K,
          (int)s);

    /* int8 rows of x as every kernel sees them (the shared quantizer) */
    const size_t ldq = 64 * bitnn_words_per_row(K);
    int8_t *q = xmalloc(M * ldq + 1);
    float *scale = xmalloc((M + 1) * sizeof *scale);
    for (size_t m = 0; m < M; m++) scale[m] = bitnn_quantize_row(x + m * ldx, K, q + m * ldq, ldq);

    if (prec == BITNN_PRECISION_FP32 && c->integers) { /* exact: partial sums are small integers */
        int ok = 1;
        for (size_t m = 0; m < M && ok; m++)
            for (size_t n = 0; n < N && ok; n++) {
                long acc = bu ? bu[n] : 0;
                for (size_t k = 0; k < K; k++)
                    if (wu[n * K + k]) acc += (long)x[m * ldx + k];
                ok = zref[m * ldz + n] == (float)acc;
            }
        CHECK(ok, "ref gemm vs exact integer sum M=%zu N=%zu K=%zu", M, N, K);
    }
    if (prec == BITNN_PRECISION_FP32) { /* the summation order, from the unpacked bits */
        int ok = 1;
        for (size_t m = 0; m < M && ok; m++)
            for (size_t n = 0; n < N && ok; n++) {
                float acc = 0.0f;
                for (size_t g = 0; g < 8 * bitnn_tile_chunks(K); g++) {
                    float t = 0.0f; /* group g's subset sum, inputs in increasing order */
                    for (size_t k = 4 * g; k < 4 * g + 4 && k < K; k++)
                        if (wu[n * K + k]) t += x[m * ldx + k];
                    acc += t;
                }
                ok = zref[m * ldz + n] == acc + (float)(bu ? bu[n] : 0);
            }
        CHECK(ok, "ref gemm vs the summation order M=%zu N=%zu K=%zu", M, N, K);
    }
    if (prec == BITNN_PRECISION_INT8) { /* the definition, from the unpacked bits */
        int ok = 1;
        for (size_t m = 0; m < M && ok; m++) {
            float amax = 0.0f;
            for (size_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(x[m * ldx + k]));
            ok = scale[m] == amax / 127.0f;
            for (size_t k = 0; k < K && ok; k++) {
                const float v = amax > 0 ? nearbyintf(x[m * ldx + k] * (127.0f / amax)) : 0.0f;
                ok = q[m * ldq + k] == (int8_t)v;
            }
            for (size_t n = 0; n < N && ok; n++) {
                long acc = 0;
                for (size_t k = 0; k < K; k++)
                    if (wu[n * K + k]) acc += q[m * ldq + k];
                ok = zref[m * ldz + n] == (float)acc * scale[m] + (float)(bu ? bu[n] : 0);
            }
        }
        CHECK(ok, "ref int8 gemm vs its definition M=%zu N=%zu K=%zu", M, N, K);
    }

    for (int ii = 0; ii < n_isas; ii++) {
        const int isa = isas[ii];
        for (int t = 1; t <= max_t; t++) {
            if (isa == BITNN_ISA_REF && t == 1) continue;
            for (size_t i = 0; i < M * ldz + 1; i++) z[i] = CANARY;
            s = bitnn_binary_gemm(x, ldx, M, K, w, N, bias, z, ldz, (bitnn_precision)prec, isa,
                                  pools[t]);
            size_t where = 0;
            int ok = s == BITNN_OK && same(z, zref, M, N, ldz, ldz, &where);
            CHECK(ok, "gemm %s %s threads=%d M=%zu N=%zu K=%zu density=%.2f bias=%d: "
                  "status %d, first difference at %zu (%.9g vs %.9g)", prec_names[prec],
                  bitnn_isa_name(isa), t, M, N, K, c->density, c->bias, (int)s, where,
                  M ? z[(where / N) * ldz + where % N] : 0.0, M ? zref[(where / N) * ldz + where % N] : 0.0);
            int canary_ok = 1;
            for (size_t m = 0; m < M; m++)
                for (size_t n = N; n < ldz; n++) canary_ok &= z[m * ldz + n] == CANARY;
            canary_ok &= z[M * ldz] == CANARY;
            CHECK(canary_ok, "gemm %s %s wrote outside z (M=%zu N=%zu K=%zu)", prec_names[prec],
                  bitnn_isa_name(isa), M, N, K);
        }
        /* the kernel function itself over a sub-range of output rows, as a
         * thread's share of the work */
        if (N >= 3) {
            const size_t n0 = 1 + (size_t)(rnd() % (N / 2)), n1 = N - (size_t)(rnd() % (N - n0));
            for (size_t i = 0; i < M * ldz + 1; i++) z[i] = CANARY;
            const bitnn_kernel_set *ks = bitnn_kernels_for(isa);
            if (prec == BITNN_PRECISION_INT8 && ks->gemm_q8t && (rnd() & 1)) {
                /* the int8 kernel on tiles (linear layers), on its own */
                const size_t kc = bitnn_tile_chunks(K), ldt = 256 * kc;
                uint32_t *tiles = xmalloc(bitnn_tiles_words(N, K) * sizeof *tiles);
                uint8_t *tab = xmalloc((M ? M : 1) * ldt);
                const void **tp = xmalloc((M ? M : 1) * kc * sizeof *tp);
                bitnn_pack_tiles(w, N, K, tiles);
                /* row m's tables stored at row M-1-m: the kernel must follow the pointers */
                for (size_t m = 0; m < M; m++) {
                    bitnn_build_tables_q8(q + m * ldq, K, tab + (M - 1 - m) * ldt);
                    for (size_t c = 0; c < kc; c++) tp[m * kc + c] = tab + (M - 1 - m) * ldt + 256 * c;
                }
                ks->gemm_q8t(tp, M, kc, tiles, n0, n1, scale, bias, z, ldz);
                free(tiles), free(tab), free(tp);
            } else if (prec == BITNN_PRECISION_INT8)
                ks->gemm_q8(q, ldq, M, K, w, bitnn_words_per_row(K), n0, n1, scale, bias, z, ldz);
            else {
                const size_t kc = bitnn_tile_chunks(K), ldt = 128 * kc;
                uint32_t *tiles = xmalloc(bitnn_tiles_words(N, K) * sizeof *tiles);
                float *tab = xmalloc((M ? M : 1) * ldt * sizeof *tab);
                const void **tp = xmalloc((M ? M : 1) * kc * sizeof *tp);
                bitnn_pack_tiles(w, N, K, tiles);
                /* row m's tables stored at row M-1-m: the kernel must follow the pointers */
                for (size_t m = 0; m < M; m++) {
                    bitnn_build_tables(x + m * ldx, K, tab + (M - 1 - m) * ldt);
                    for (size_t c = 0; c < kc; c++) tp[m * kc + c] = tab + (M - 1 - m) * ldt + 128 * c;
                }
                bitnn_kernels_for(isa)->gemm_f32(tp, M, kc, tiles, n0, n1, bias, z, ldz);
                free(tiles), free(tab), free(tp);
            }
            int ok = 1;
            for (size_t m = 0; m < M; m++)
                for (size_t n = 0; n < ldz; n++) {
                    const float got = z[m * ldz + n];
                    ok &= (n >= n0 && n < n1) ? got == zref[m * ldz + n] : got == CANARY;
                }
            CHECK(ok, "kernel %s %s rows [%zu,%zu) of N=%zu M=%zu K=%zu", prec_names[prec],
                  bitnn_isa_name(isa), n0, n1, N, M, K);
        }
    }
    if (prec == BITNN_PRECISION_INT8) /* every int8 variant this CPU runs, not only the chosen one */
        for (int v = 0; v < n_q8_variants; v++) {
            if ((bitnn_cpu_features() & q8_variants[v].need) != q8_variants[v].need) continue;
            for (size_t i = 0; i < M * ldz + 1; i++) z[i] = CANARY;
            q8_variants[v].fn(q, ldq, M, K, w, bitnn_words_per_row(K), 0, N, scale, bias, z, ldz);
            size_t where = 0;
            CHECK(same(z, zref, M, N, ldz, ldz, &where) && z[M * ldz] == CANARY,
                  "int8 kernel %s M=%zu N=%zu K=%zu: first difference at %zu", q8_variants[v].name,
                  M, N, K, where);
        }
    free(q);
    free(scale);
    }

    if (c->linear) {
        static const char *const act_names[] = {"linear", "relu", "gelu", "softmax"};
        float *yref = xmalloc((M * ldz + 1) * sizeof *yref);
        for (int a = 0; a < BITNN_ACT_COUNT; a++) {
            const float eps = a == 1 ? 1e-3f : 1e-5f;
            s = bitnn_linear(x, ldx, M, K, w, N, bias, eps, (bitnn_act)a, yref, ldz,
                             BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL);
            CHECK(s == BITNN_OK, "ref linear status %d", (int)s);
            for (int ii = 0; ii < n_isas; ii++)
                for (int t = 1; t <= max_t; t += 1 + (t == 1)) { /* 1, 2, 4 */
                    const int isa = isas[ii];
                    if (isa == BITNN_ISA_REF && t == 1) continue;
                    s = bitnn_linear(x, ldx, M, K, w, N, bias, eps, (bitnn_act)a, z, ldz,
                                     BITNN_PRECISION_FP32, isa, pools[t]);
                    size_t where = 0;
                    CHECK(s == BITNN_OK && same(z, yref, M, N, ldz, ldz, &where),
                          "linear %s %s threads=%d M=%zu N=%zu K=%zu: status %d, first "
                          "difference at %zu", bitnn_isa_name(isa), act_names[a], t, M, N, K,
                          (int)s, where);
                }
        }
        free(yref);
    }
    free(x);
    free(w);
    free(wu);
    free(bias);
    free(bu);
    free(zref);
    free(z);
}

static case_t mk(size_t M, size_t N, size_t K, int linear)
{
    case_t c = {M, N, K, 0.5, (int)(rnd() % 4 != 0), (int)(rnd() % 5 == 0), linear};
    return c;
}

/* ------------------------------------------------------ other behaviour */
static void check_errors(void)
{
    float x[4] = {1, 2, 3, 4}, z[4];
    uint64_t w[2] = {5, 0};
    CHECK(bitnn_binary_gemm(x, 4, 1, 0, w, 1, NULL, z, 1, BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL) == BITNN_EINVAL,
          "K=0 must be EINVAL");
    CHECK(bitnn_binary_gemm(x, 4, 1, 4, w, 0, NULL, z, 1, BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL) == BITNN_EINVAL,
          "N=0 must be EINVAL");
    CHECK(bitnn_binary_gemm(x, 3, 1, 4, w, 1, NULL, z, 1, BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL) == BITNN_EINVAL,
          "ldx<K must be EINVAL");
    CHECK(bitnn_binary_gemm(x, 4, 1, 4, w, 2, NULL, z, 1, BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL) == BITNN_EINVAL,
          "ldz<N must be EINVAL");
    CHECK(bitnn_binary_gemm(NULL, 4, 1, 4, w, 1, NULL, z, 1, BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL) == BITNN_EINVAL,
          "x=NULL must be EINVAL");
    CHECK(bitnn_binary_gemm(NULL, 4, 0, 4, w, 1, NULL, NULL, 1, BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL) == BITNN_OK,
          "M=0 is a no-op");
    CHECK(bitnn_binary_gemm(x, 4, 1, 4, w, 1, NULL, z, 1, BITNN_PRECISION_FP32, 99, NULL) == BITNN_EUNSUPPORTED,
          "isa 99 must be EUNSUPPORTED");
    CHECK(bitnn_binary_gemm(x, 4, 1, 4, w, 1, NULL, z, 1, BITNN_PRECISION_FP32, -1, NULL) == BITNN_EUNSUPPORTED,
          "isa -1 must be EUNSUPPORTED");
    for (int isa = 0; isa < BITNN_ISA_COUNT; isa++)
        if (!bitnn_isa_supported(isa))
            CHECK(bitnn_binary_gemm(x, 4, 1, 4, w, 1, NULL, z, 1, BITNN_PRECISION_FP32, isa, NULL) == BITNN_EUNSUPPORTED,
                  "unsupported isa %s must be refused", bitnn_isa_name(isa));
    CHECK(bitnn_binary_gemm(x, 4, 1, 4, w, 1, NULL, z, 1, BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL) == BITNN_OK &&
              z[0] == 1.0f + 3.0f, "w=0b101 picks x[0] + x[2]");
    const float bad_eps[] = {0.0f, -1.0f, NAN, INFINITY};
    for (int i = 0; i < 4; i++)
        CHECK(bitnn_linear(x, 4, 1, 4, w, 1, NULL, bad_eps[i], BITNN_ACT_LINEAR, z, 1,
                           BITNN_PRECISION_FP32, BITNN_ISA_REF, NULL) == BITNN_EINVAL, "eps %g must be EINVAL",
              (double)bad_eps[i]);
    CHECK(bitnn_linear(x, 4, 1, 4, w, 1, NULL, 1e-5f, (bitnn_act)7, z, 1, BITNN_PRECISION_FP32,
                       BITNN_ISA_REF, NULL) ==
              BITNN_EINVAL, "activation 7 must be EINVAL");
    bitnn_pool *p = NULL;
    CHECK(bitnn_pool_create(0, &p) == BITNN_EINVAL && p == NULL, "pool of 0 threads");
    CHECK(bitnn_pool_create(1025, &p) == BITNN_EINVAL, "pool of 1025 threads");
    CHECK(bitnn_pool_size(NULL) == 1, "NULL pool has size 1");

    int isa = -1;
    char msg[256];
    setenv("BITNN_KERNEL", "ref", 1);
    CHECK(bitnn_isa_default(&isa, msg, sizeof msg) == BITNN_OK && isa == BITNN_ISA_REF,
          "BITNN_KERNEL=ref");
    setenv("BITNN_KERNEL", "bogus", 1);
    msg[0] = 0;
    CHECK(bitnn_isa_default(&isa, msg, sizeof msg) == BITNN_EENV && strstr(msg, "bogus"),
          "BITNN_KERNEL=bogus: %s", msg);
    for (int i = 0; i < BITNN_ISA_COUNT; i++)
        if (!bitnn_isa_supported(i)) {
            setenv("BITNN_KERNEL", bitnn_isa_name(i), 1);
            msg[0] = 0;
            CHECK(bitnn_isa_default(&isa, msg, sizeof msg) == BITNN_EUNSUPPORTED &&
                      strstr(msg, bitnn_isa_name(i)), "BITNN_KERNEL=%s: %s", bitnn_isa_name(i),
                  msg);
        }
    unsetenv("BITNN_KERNEL");
    CHECK(bitnn_isa_default(&isa, msg, sizeof msg) == BITNN_OK && bitnn_isa_supported(isa),
          "default kernel");
    int n = 0;
    setenv("BITNN_NUM_THREADS", "3", 1);
    CHECK(bitnn_default_threads(&n, msg, sizeof msg) == BITNN_OK && n == 3, "BITNN_NUM_THREADS=3");
    setenv("BITNN_NUM_THREADS", "abc", 1);
    CHECK(bitnn_default_threads(&n, msg, sizeof msg) == BITNN_EENV, "BITNN_NUM_THREADS=abc");
    unsetenv("BITNN_NUM_THREADS");
}

/* A job published right after the pool is created must still run on every
 * thread (a worker that starts late must not miss it), many times over. */
static void count_items(void *ctx, size_t b, size_t e)
{
    __atomic_fetch_add((long *)ctx, (long)(e - b), __ATOMIC_RELAXED);
}

static void check_pool_start(int rounds)
{
    int ok = 1;
    for (int r = 0; r < rounds && ok; r++) {
        bitnn_pool *p = NULL;
        if (bitnn_pool_create(2 + r % 3, &p) != BITNN_OK) {
            ok = 0;
            break;
        }
        long total = 0;
        bitnn_parallel_for(p, 1000, 1, count_items, &total);
        bitnn_parallel_for(p, 7, 1, count_items, &total);
        bitnn_pool_destroy(p);
        ok = total == 1007;
    }
    CHECK(ok, "thread pool: create, run at once, destroy");
}

/* The int8 attention scores (bitnn_attn_q8_fn) of every kernel set that has
 * them, against the exact int64 sums, on every head size up to 140 (in
 * multiples of 4, as the cache pads them) and 1 to 9 blocks of 16 keys,
 * with int8 values over the whole range (-128 included). */
static void check_attn_q8(int quick)
{
    for (int i = 0; i < n_isas; i++) {
        const bitnn_attn_q8_fn fn = bitnn_kernels_for(isas[i])->attn_q8;
        if (!fn) continue;
        for (size_t hdp = 4; hdp <= 140; hdp += quick ? 12 : 4)
            for (size_t nb = 1; nb <= 9; nb += quick ? 4 : 1) {
                int8_t *q = xmalloc(hdp), *kt = xmalloc(16 * hdp * nb);
                int32_t *S = xmalloc(16 * nb * sizeof *S);
                for (size_t e = 0; e < hdp; e++) q[e] = (int8_t)(rnd() & 255);
                for (size_t b = 0; b < 16 * hdp * nb; b++) kt[b] = (int8_t)(rnd() & 255);
                fn(q, hdp, kt, nb, S);
                int ok = 1;
                for (size_t b = 0; b < nb && ok; b++)
                    for (size_t l = 0; l < 16; l++) {
                        int64_t want = 0; /* dimension e of key l: lane l of group e / 4 */
                        for (size_t e = 0; e < hdp; e++)
                            want += (int64_t)q[e] * kt[16 * hdp * b + 64 * (e / 4) + 4 * l + e % 4];
                        if (S[16 * b + l] != want) ok = 0;
                    }
                CHECK(ok, "attn_q8 %s hdp %zu blocks %zu", bitnn_isa_name(isas[i]), hdp, nb);
                free(q), free(kt), free(S);
            }
    }
}

int main(int argc, char **argv)
{
    const int quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    for (int i = 0; i < BITNN_ISA_COUNT; i++)
        if (bitnn_isa_supported(i)) isas[n_isas++] = i;
    printf("kernels:");
    for (int i = 0; i < n_isas; i++) printf(" %s", bitnn_isa_name(isas[i]));
    printf("%s\n", quick ? " (quick)" : "");
    for (int i = 0; i < BITNN_ISA_COUNT; i++)
        if (bitnn_isa_compiled(i) && !bitnn_isa_supported(i))
            printf("compiled but not runnable here: %s\n", bitnn_isa_name(i));

    check_errors();
    check_pool_start(quick ? 20 : 200);
    check_attn_q8(quick);

    static const size_t Ms[] = {1, 2, 3, 7, 8, 9, 17, 33};
    /* every K from 1 to 300 for a few (M, N) */
    static const size_t MN[][2] = {{1, 1}, {3, 7}, {9, 17}, {4, 8}, {2, 5}};
    for (size_t i = 0; i < sizeof MN / sizeof MN[0]; i++)
        for (size_t K = 1; K <= 300; K += quick ? 7 : 1)
            run_case(&(case_t){MN[i][0], MN[i][1], K, 0.5, (int)(K % 3 != 0), (int)(K % 5 == 0),
                               i == 4});
    /* every N from 1 to 130 */
    for (size_t N = 1; N <= 130; N += quick ? 5 : 1) {
        case_t c = mk(Ms[N % 8], N, 33 + N % 70, N % 4 == 0);
        run_case(&c);
    }
    /* the large K around word, chunk and page boundaries, every M */
    static const size_t bigK[] = {511, 512, 513, 4095, 4096, 4097};
    for (size_t i = 0; i < sizeof bigK / sizeof bigK[0]; i++)
        for (size_t j = 0; j < 8; j += quick ? 3 : 1) {
            case_t c = mk(Ms[j], 1 + (size_t)(rnd() % 40), bigK[i], j % 3 == 0);
            run_case(&c);
        }
    {
        case_t c = mk(3, 5, 65537, 1);
        run_case(&c);
        c = mk(quick ? 1 : 17, 2, 65537, 0);
        run_case(&c);
    }
    /* a large N */
    {
        case_t c = mk(quick ? 1 : 9, 2049, 65, 1);
        run_case(&c);
        c = mk(2, 2049, 513, 0);
        run_case(&c);
    }
    /* all-zero and all-one rows, sparse and dense */
    static const double densities[] = {0.0, 1.0, 0.02, 0.98};
    for (size_t d = 0; d < 4; d++)
        for (size_t j = 0; j < 8; j += quick ? 4 : 1) {
            case_t c = {Ms[j], 1 + (size_t)(rnd() % 70), 1 + (size_t)(rnd() % 700), densities[d],
                        (int)(j % 2), (int)(j % 3 == 0), 1};
            run_case(&c);
        }
    /* random shapes */
    for (int r = 0; r < (quick ? 40 : 300); r++) {
        case_t c = {(size_t)(rnd() % 41), 1 + (size_t)(rnd() % 150), 1 + (size_t)(rnd() % 1100),
                    uniform(), (int)(rnd() % 2), (int)(rnd() % 4 == 0), (int)(rnd() % 3 == 0)};
        run_case(&c);
    }

    /* threads: 1, 2, 3 and 4 give the same bits, whichever axis is split
     * (ops.c splits over M when M >= 4 threads and N < 64 threads, else N) */
    pools[1] = NULL;
    for (int t = 2; t <= MAX_THREADS; t++)
        if (bitnn_pool_create(t, &pools[t]) != BITNN_OK) {
            printf("cannot create a pool of %d threads\n", t);
            return 2;
        }
    max_t = MAX_THREADS;
    static const size_t threaded[][3] = {
        {33, 17, 300}, {33, 2049, 65}, {2, 130, 513}, {1, 1000, 97}, {17, 64, 4097}, {9, 3, 31},
        {16, 7, 1}, {40, 255, 129}, {8, 129, 16}, {33, 5, 65537}};
    for (size_t i = 0; i < sizeof threaded / sizeof threaded[0]; i++) {
        if (quick && threaded[i][2] > 5000) continue;
        case_t c = mk(threaded[i][0], threaded[i][1], threaded[i][2], 1);
        run_case(&c);
    }
    for (int r = 0; r < (quick ? 10 : 40); r++) {
        case_t c = {(size_t)(rnd() % 70), 1 + (size_t)(rnd() % 300), 1 + (size_t)(rnd() % 600),
                    uniform(), (int)(rnd() % 2), (int)(rnd() % 4 == 0), (int)(rnd() % 2)};
        run_case(&c);
    }
    for (int t = 2; t <= MAX_THREADS; t++) bitnn_pool_destroy(pools[t]);
    max_t = 1;

    printf("%ld passed, %ld failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
