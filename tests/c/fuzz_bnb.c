/*
 * fuzz_bnb.c - fuzz the .bnb loader (csrc/format/bnb.c) and its JSON parser
 * (csrc/format/json.c). Meant to run under AddressSanitizer + UBSan, where any
 * out-of-bounds read, leak, overflow or crash is a failure.
 *
 * Two builds:
 *  - standalone (gcc or clang): a random-mutation loop over seed files,
 *      cc $(python3 csrc/sources.py flags) -g -O1 -fsanitize=address,undefined \
 *         -fno-sanitize-recover=all -Icsrc/include -Icsrc/format \
 *         tests/c/fuzz_bnb.c csrc/format/bnb.c csrc/format/json.c -o /tmp/fuzz_bnb
 *      /tmp/fuzz_bnb SECONDS SEED_FILE...
 *    (tests/c/run_fuzz.sh writes seeds with bitnn.format and runs it);
 *  - libFuzzer (clang): add -DBITNN_LIBFUZZER -fsanitize=fuzzer.
 *
 * Every input goes through bnb_open_buffer; on success every tensor byte is
 * read and every lookup is checked, so a validation gap shows up as an ASan
 * report rather than a silent pass. The mutator knows the layout: half of
 * the time it edits the JSON text and rebuilds a consistent preamble and
 * checksum, so inputs get past the cheap checks into the parser and the
 * tensor validation.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bnb.h"

static unsigned long long n_ok, n_format, n_json_ok;

static void touch_json(const bjson *v, int depth)
{
    if (!v || depth > BJSON_MAX_DEPTH + 1) abort();
    if (v->type == BJSON_STRING && strlen(v->str) != v->len) abort();
    if (v->type == BJSON_ARRAY || v->type == BJSON_OBJECT)
        for (size_t i = 0; i < v->count; i++) {
            if (v->type == BJSON_OBJECT && bjson_get(v, v->keys[i]) != &v->items[i]) abort(); /* keys unique */
            touch_json(&v->items[i], depth + 1);
        }
    long long x;
    bjson_get_int(v, -1000, 1000, &x);
}

/* One input: must never crash, leak or read out of bounds. */
static int one_input(const uint8_t *data, size_t size)
{
    char err[512];
    bnb_file *f = NULL;
    bitnn_status s = bnb_open_buffer(data, size, &f, err, sizeof err);
    if (s == BITNN_OK) {
        n_ok++;
        volatile uint64_t sink = 0;
        for (size_t i = 0; i < bnb_tensor_count(f); i++) {
            const bnb_tensor *t = bnb_tensor_at(f, i);
            if (bnb_tensor_find(f, t->name) != t) abort();
            if ((uintptr_t)t->data % 64) abort();
            const uint8_t *p = t->data;
            for (uint64_t j = 0; j < t->nbytes; j++) sink += p[j];
            if (t->dtype == BNB_DTYPE_BITS) {
                uint64_t wpr = (t->cols + 63) / 64;
                if (t->nbytes != t->rows * wpr * 8) abort();
            }
        }
        (void)sink;
        size_t hl;
        const char *h = bnb_header_text(f, &hl);
        if (!h || hl == 0 || bnb_file_size(f) != size) abort();
        touch_json(bnb_meta(f), 0);
        bnb_close(f);
    } else if (s == BITNN_EFORMAT) {
        n_format++;
        if (!err[0] || !memchr(err, 0, sizeof err)) abort(); /* a message, terminated */
    } else if (s != BITNN_ENOMEM) {
        fprintf(stderr, "unexpected status %d: %s\n", (int)s, err);
        abort();
    }
    /* the same bytes as a bare JSON text */
    bjson *j = NULL;
    if (bjson_parse((const char *)data, size, &j, err, sizeof err) == BITNN_OK) {
        n_json_ok++;
        touch_json(j, 0);
        bjson_free(j);
    }
    return 0;
}

#ifdef BITNN_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return one_input(data, size); }
#else

/* The same through a real file, mapped and read (slower: every so often). */
static void via_file(const uint8_t *data, size_t size, const char *path)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    fwrite(data, 1, size, fp);
    fclose(fp);
    char err[512], err2[512];
    bnb_file *a = NULL, *b = NULL, *c = NULL;
    bitnn_status sa = bnb_open(path, 0, &a, err, sizeof err);
    bitnn_status sb = bnb_open(path, BNB_OPEN_NO_MMAP, &b, err2, sizeof err2);
    bitnn_status sc = bnb_open_buffer(data, size, &c, err2, sizeof err2);
    if (sa != sb || sa != sc || (sa != BITNN_OK && strcmp(err, err2) != 0)) {
        fprintf(stderr, "bnb_open(mmap) %d '%s' vs read/buffer %d %d '%s'\n", (int)sa, err, (int)sb, (int)sc, err2);
        abort();
    }
    if (sa == BITNN_OK && (bnb_tensor_count(a) != bnb_tensor_count(b) ||
                           bnb_file_size(a) != size || bnb_file_size(b) != size))
        abort();
    bnb_close(a);
    bnb_close(b);
    bnb_close(c);
}

/* ------------------------------------------------------------ the mutator */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void reserve(buf *b, size_t n)
{
    if (n <= b->cap) return;
    size_t c = b->cap ? b->cap : 256;
    while (c < n) c *= 2;
    b->p = realloc(b->p, c);
    if (!b->p) abort();
    b->cap = c;
}

static void put(buf *b, size_t pos, const void *src, size_t n) /* insert */
{
    reserve(b, b->n + n);
    memmove(b->p + pos + n, b->p + pos, b->n - pos);
    memcpy(b->p + pos, src, n);
    b->n += n;
}

static const char *const TOKENS[] = {
    "0", "64", "128", "192", "4096", "-1", "1e400", "18446744073709551616", "1099511627777", "9223372036854775807", ".5", "e9",
    "[", "]", "{", "}", ",", ":", "\"", "\"x\": 1,", "\\u", "\\ud800", "\\u0000", "\xff", "\xc0\xaf",
    "\xed\xa0\x80", "true", "null", "\"bits\"", "\"f32\"", "\"dtype\"", "\"shape\"", "\"offset\"",
    "\"nbytes\"", "[1,1,1,1,1]", "[1099511627776,1099511627776]", "  ", "\"tensors\"",
};

static void mutate_bytes(buf *b)
{
    static const uint64_t SPECIAL[] = {0, 1, 47, 48, 63, 64, 65, 1u << 26, (1u << 26) + 1, 1ull << 63,
                                       UINT64_MAX, UINT64_MAX - 63, UINT64_MAX - 47};
    int edits = 1 + (int)below(8);
    for (int e = 0; e < edits; e++) {
        size_t pos = below(b->n + 1);
        switch (below(7)) {
        case 0: if (b->n) b->p[below(b->n)] ^= (uint8_t)(1u << below(8)); break;
        case 1: if (b->n) b->p[below(b->n)] = (uint8_t)rnd(); break;
        case 2: { uint8_t r[8]; for (int i = 0; i < 8; i++) r[i] = (uint8_t)rnd(); put(b, pos, r, 1 + below(8)); break; }
        case 3: { size_t k = 1 + below(16); if (pos + k > b->n) k = b->n - pos; memmove(b->p + pos, b->p + pos + k, b->n - pos - k); b->n -= k; break; }
        case 4: b->n = pos < b->n ? pos : b->n; break;
        case 5:
            if (b->n >= 48) {
                uint64_t v = below(3) ? SPECIAL[below(sizeof SPECIAL / sizeof *SPECIAL)] : rnd();
                size_t slot = 8 * (1 + below(5));
                for (int i = 0; i < 8; i++) b->p[slot + i] = (uint8_t)(v >> (8 * i));
            }
            break;
        case 6: { const char *t = TOKENS[below(sizeof TOKENS / sizeof *TOKENS)]; put(b, pos, t, strlen(t)); break; }
        }
    }
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void fix_checksum(buf *b)
{
    if (b->n >= 48) wr64(b->p + 40, bnb_checksum(b->p + 48, b->n - 48));
}

/* Edit the JSON text of a valid file and rebuild a consistent preamble. */
static void mutate_header(const buf *seed, buf *out)
{
    uint64_t hl = rd64(seed->p + 16), doff = rd64(seed->p + 24);
    buf text = {0};
    put(&text, 0, seed->p + 48, (size_t)hl);
    int edits = 1 + (int)below(4);
    for (int e = 0; e < edits; e++) {
        size_t pos = below(text.n + 1);
        const char *t = TOKENS[below(sizeof TOKENS / sizeof *TOKENS)];
        switch (below(4)) {
        case 3: { /* replace a whole number with another: offsets, sizes, shapes */
            static const char *const NUMS[] = {"0", "1", "5", "63", "64", "65", "128", "192", "256", "4096",
                                               "1099511627776", "18446744073709551615", "-64", "64.0", "6.4e1"};
            size_t a = pos;
            while (a < text.n && !(text.p[a] >= '0' && text.p[a] <= '9')) a++;
            if (a == text.n) break;
            size_t z = a;
            while (z < text.n && text.p[z] >= '0' && text.p[z] <= '9') z++;
            memmove(text.p + a, text.p + z, text.n - z);
            text.n -= z - a;
            t = NUMS[below(sizeof NUMS / sizeof *NUMS)];
            put(&text, a, t, strlen(t));
            break;
        }
        case 0: put(&text, pos, t, strlen(t)); break;
        case 1: { size_t k = 1 + below(6); if (pos + k > text.n) k = text.n - pos; memmove(text.p + pos, text.p + pos + k, text.n - pos - k); text.n -= k; break; }
        case 2: if (text.n) text.p[below(text.n)] = (uint8_t)t[0]; break;
        }
    }
    size_t nd = (48 + text.n + 63) & ~(size_t)63;
    out->n = 0;
    reserve(out, nd + (seed->n - doff));
    memset(out->p, 0, nd);
    memcpy(out->p, seed->p, 16);
    wr64(out->p + 16, text.n);
    wr64(out->p + 24, nd);
    wr64(out->p + 32, seed->n - doff);
    memcpy(out->p + 48, text.p, text.n);
    memcpy(out->p + nd, seed->p + doff, seed->n - doff);
    out->n = nd + (seed->n - doff);
    fix_checksum(out);
    free(text.p);
}

static int read_file(const char *path, buf *b)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    b->n = 0;
    uint8_t tmp[65536];
    size_t r;
    while ((r = fread(tmp, 1, sizeof tmp, fp)) > 0) put(b, b->n, tmp, r);
    fclose(fp);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SECONDS SEED.bnb...\n", argv[0]);
        return 2;
    }
    const double seconds = atof(argv[1]);
    const int nseeds = argc - 2;
    buf *seeds = calloc((size_t)nseeds, sizeof *seeds);
    for (int i = 0; i < nseeds; i++) {
        if (read_file(argv[2 + i], &seeds[i]) != 0) { perror(argv[2 + i]); return 2; }
        char err[512];
        bnb_file *f;
        if (bnb_open_buffer(seeds[i].p, seeds[i].n, &f, err, sizeof err) != BITNN_OK) {
            fprintf(stderr, "seed %s is not valid: %s\n", argv[2 + i], err);
            return 2;
        }
        bnb_close(f);
        one_input(seeds[i].p, seeds[i].n);
    }
    if (getenv("FUZZ_SEED")) rng_state = strtoull(getenv("FUZZ_SEED"), NULL, 0) | 1;
    /* the bare minimum and nothing at all */
    one_input((const uint8_t *)"", 0);
    one_input((const uint8_t *)"BITNNBNB", 8);

    char tmp_path[64];
    snprintf(tmp_path, sizeof tmp_path, "/tmp/fuzz_bnb.%ld.bnb", (long)getpid());
    buf b = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long long iters = 0;
    for (;;) {
        const buf *seed = &seeds[below((size_t)nseeds)];
        if (below(2)) {
            mutate_header(seed, &b);
            if (below(4) == 0) mutate_bytes(&b);
        } else {
            b.n = 0;
            put(&b, 0, seed->p, seed->n);
            mutate_bytes(&b);
            if (below(2)) fix_checksum(&b);
        }
        one_input(b.p, b.n);
        if (iters % 512 == 0) via_file(b.p, b.n, tmp_path);
        if (++iters % 1024 == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            if (el >= seconds) break;
        }
    }
    printf("fuzz_bnb: %llu inputs: %llu valid files, %llu rejected (EFORMAT), %llu parsed as bare JSON\n",
           iters, n_ok, n_format, n_json_ok);
    remove(tmp_path);
    free(b.p);
    for (int i = 0; i < nseeds; i++) free(seeds[i].p);
    free(seeds);
    return 0;
}
#endif
