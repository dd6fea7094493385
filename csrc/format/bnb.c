/*
 * bnb.c - open and validate a .bnb model file (docs/format.md).
 *
 * bnb_open checks everything before it returns: the preamble, the file size,
 * the checksum, the header padding, the JSON, every tensor entry, the tiling
 * of the data region and the padding bits of every packed tensor. After
 * that, code that uses a bnb_file may trust what it reads: every tensor lies
 * inside the file, has the size its shape says, and has zero padding bits.
 *
 * Arithmetic on values read from the file is done in uint64_t with explicit
 * overflow checks (mul_ok/add_ok); nothing is read before its bounds are
 * known to lie inside the buffer.
 */
#define _POSIX_C_SOURCE 200809L
#include "bnb.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bitnn reads tensors in place and needs a little-endian machine"
#endif

#define PREAMBLE 48
#define MAX_DIM (1ull << 40)
static const char MAGIC[8] = {'B', 'I', 'T', 'N', 'N', 'B', 'N', 'B'};

struct bnb_file {
    unsigned char *base; /* the whole file: mmap'd, or a 64-byte aligned buffer */
    size_t size;
    int mapped;          /* base came from mmap (else posix_memalign) */
    const char *header;  /* base + 48, header_len bytes of JSON */
    size_t header_len;
    const unsigned char *data; /* base + data_offset */
    uint64_t data_len;
    bjson *meta;
    size_t ntensors;
    bnb_tensor *tensors; /* in the order of the header's "tensors" object */
    const bnb_tensor **by_name; /* the same tensors, sorted by name (bnb_tensor_find) */
};

/* ------------------------------------------------------------- helpers */
static bitnn_status fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return BITNN_EFORMAT;
}

static int mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static int add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b > UINT64_MAX - a) return 0;
    *out = a + b;
    return 1;
}

static uint64_t align64(uint64_t x) { return (x + 63) & ~(uint64_t)63; } /* x < 2^64 - 63 */

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A tensor name fit for a message: at most 60 bytes (cut at a UTF-8
 * boundary, "..." appended), control characters shown as '?'. */
typedef struct { char s[72]; } qname;

static qname quote(const char *name)
{
    qname q;
    size_t n = strlen(name), k = n;
    if (k > 60) {
        k = 60;
        while (k && ((unsigned char)name[k] & 0xC0) == 0x80) k--;
    }
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)name[i];
        q.s[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (k < n) { memcpy(q.s + k, "...", 3); k += 3; }
    q.s[k] = 0;
    return q;
}

/* "[3, 5]" */
static void shape_str(const bnb_tensor *t, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    for (int d = 0; d < t->ndim && used < n; d++) {
        int w = snprintf(buf + used, n - used, "%s%llu", d ? ", " : "[", (unsigned long long)t->shape[d]);
        if (w < 0) return;
        used += (size_t)w;
    }
    if (used < n) snprintf(buf + used, n - used, "]");
}

uint64_t bnb_checksum_update(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull; /* FNV-1a 64-bit prime */
    }
    return h;
}

uint64_t bnb_checksum(const void *data, size_t len)
{
    return bnb_checksum_update(BNB_CHECKSUM_INIT, data, len);
}

/* -------------------------------------------------------- the preamble */
static bitnn_status check_preamble(bnb_file *f, char *err, size_t errlen)
{
    const unsigned char *b = f->base;
    const size_t size = f->size;
    size_t m = size < 8 ? size : 8;
    if (memcmp(b, MAGIC, m) != 0) {
        char hex[3 * 8 + 1] = "";
        for (size_t i = 0; i < m; i++) snprintf(hex + 3 * i, 4, "%02x ", b[i]);
        if (m) hex[3 * m - 1] = 0;
        return fail(err, errlen, "not a .bnb file: the first bytes are [%s], expected the magic \"BITNNBNB\"", hex);
    }
    if (size < PREAMBLE)
        return fail(err, errlen, "truncated: file is %zu bytes, shorter than the %d-byte preamble", size, PREAMBLE);
    const uint32_t version = le32(b + 8), flags = le32(b + 12);
    const uint64_t header_len = le64(b + 16), data_offset = le64(b + 24), data_len = le64(b + 32);
    if (version != BNB_VERSION)
        return fail(err, errlen, "unsupported .bnb version %u: this build of bitnn reads version %d only",
                    (unsigned)version, BNB_VERSION);
    if (flags != 0)
        return fail(err, errlen, "unsupported flags 0x%08x in the preamble: version %d defines none (must be 0)",
                    (unsigned)flags, BNB_VERSION);
    if (header_len == 0) return fail(err, errlen, "header_len is 0: the JSON header is missing");
    if (header_len > BNB_MAX_HEADER)
        return fail(err, errlen, "header_len %llu exceeds the limit of %u bytes (64 MiB)",
                    (unsigned long long)header_len, (unsigned)BNB_MAX_HEADER);
    const uint64_t want_offset = align64(PREAMBLE + header_len);
    if (data_offset != want_offset)
        return fail(err, errlen, "data_offset is %llu, expected %llu (48 + header_len %llu rounded up to 64)",
                    (unsigned long long)data_offset, (unsigned long long)want_offset,
                    (unsigned long long)header_len);
    uint64_t end;
    if (!add_ok(data_offset, data_len, &end))
        return fail(err, errlen, "data_len %llu is impossibly large (data_offset + data_len overflows 64 bits)",
                    (unsigned long long)data_len);
    if ((uint64_t)size < end)
        return fail(err, errlen, "truncated: file is %zu bytes, the preamble says %llu (data_offset %llu + data_len %llu)",
                    size, (unsigned long long)end, (unsigned long long)data_offset, (unsigned long long)data_len);
    if ((uint64_t)size > end)
        return fail(err, errlen, "%llu trailing bytes: file is %zu bytes, the preamble says %llu "
                    "(data_offset %llu + data_len %llu)", (unsigned long long)((uint64_t)size - end), size,
                    (unsigned long long)end, (unsigned long long)data_offset, (unsigned long long)data_len);
    const uint64_t stored = le64(b + 40), computed = bnb_checksum(b + PREAMBLE, size - PREAMBLE);
    if (stored != computed)
        return fail(err, errlen, "checksum mismatch: the preamble says 0x%016llx, the file's bytes give 0x%016llx "
                    "(the file is corrupted or was modified)", (unsigned long long)stored,
                    (unsigned long long)computed);
    for (uint64_t i = PREAMBLE + header_len; i < data_offset; i++)
        if (b[i] != 0)
            return fail(err, errlen, "non-zero byte 0x%02x at file offset %llu in the padding after the JSON header",
                        b[i], (unsigned long long)i);
    f->header = (const char *)b + PREAMBLE;
    f->header_len = (size_t)header_len;
    f->data = b + data_offset;
    f->data_len = data_len;
    return BITNN_OK;
}

/* ------------------------------------------------------------ tensors */
static bitnn_status parse_tensor(const char *name, const bjson *e, bnb_tensor *t, uint64_t data_len,
                                 char *err, size_t errlen)
{
    const qname q = quote(name);
    if (name[0] == 0) return fail(err, errlen, "\"tensors\": a tensor name must not be empty");
    if (e->type != BJSON_OBJECT)
        return fail(err, errlen, "tensor '%s': entry must be an object with dtype, shape, offset, nbytes", q.s);
    for (size_t i = 0; i < e->count; i++) {
        const char *k = e->keys[i];
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "offset") && strcmp(k, "nbytes"))
            return fail(err, errlen, "tensor '%s': unknown key '%s' (allowed: dtype, shape, offset, nbytes)",
                        q.s, quote(k).s);
    }
    const bjson *dt = bjson_get(e, "dtype"), *sh = bjson_get(e, "shape"), *of = bjson_get(e, "offset"),
                *nb = bjson_get(e, "nbytes");
    if (!dt) return fail(err, errlen, "tensor '%s': missing \"dtype\"", q.s);
    if (!sh) return fail(err, errlen, "tensor '%s': missing \"shape\"", q.s);
    if (!of) return fail(err, errlen, "tensor '%s': missing \"offset\"", q.s);
    if (!nb) return fail(err, errlen, "tensor '%s': missing \"nbytes\"", q.s);
    if (dt->type == BJSON_STRING && strcmp(dt->str, "bits") == 0) t->dtype = BNB_DTYPE_BITS;
    else if (dt->type == BJSON_STRING && strcmp(dt->str, "f32") == 0) t->dtype = BNB_DTYPE_F32;
    else if (dt->type == BJSON_STRING)
        return fail(err, errlen, "tensor '%s': unknown dtype '%s' (expected \"bits\" or \"f32\")", q.s,
                    quote(dt->str).s);
    else return fail(err, errlen, "tensor '%s': dtype must be the string \"bits\" or \"f32\"", q.s);
    if (sh->type != BJSON_ARRAY || sh->count < 1 || sh->count > BNB_MAX_DIMS)
        return fail(err, errlen, "tensor '%s': shape must be an array of 1 to %d integers%s", q.s, BNB_MAX_DIMS,
                    sh->type == BJSON_ARRAY ? " (it has a wrong number of dimensions)" : "");
    t->ndim = (int)sh->count;
    for (int d = 0; d < t->ndim; d++) {
        long long v;
        if (!bjson_get_int(&sh->items[d], 1, (long long)MAX_DIM, &v))
            return fail(err, errlen, "tensor '%s': shape[%d] must be an integer from 1 to 2^40", q.s, d);
        t->shape[d] = (uint64_t)v;
    }
    for (int d = t->ndim; d < BNB_MAX_DIMS; d++) t->shape[d] = 1;
    long long off, nbytes;
    if (!bjson_get_int(of, 0, LLONG_MAX, &off))
        return fail(err, errlen, "tensor '%s': offset must be an integer from 0 to 2^63-1", q.s);
    if (!bjson_get_int(nb, 0, LLONG_MAX, &nbytes))
        return fail(err, errlen, "tensor '%s': nbytes must be an integer from 0 to 2^63-1", q.s);
    t->offset = (uint64_t)off;
    t->nbytes = (uint64_t)nbytes;

    /* rows x cols, then the size the shape implies, all overflow-checked */
    char shp[128];
    shape_str(t, shp, sizeof shp);
    uint64_t cols = 1, expect;
    int ok = 1;
    for (int d = 1; d < t->ndim && ok; d++) ok = mul_ok(cols, t->shape[d], &cols);
    t->rows = t->shape[0];
    t->cols = cols;
    if (t->dtype == BNB_DTYPE_BITS && t->ndim == 1) { /* a 1-D bits tensor is ONE row of shape[0] bits */
        t->rows = 1;
        t->cols = t->shape[0];
    }
    if (ok) {
        if (t->dtype == BNB_DTYPE_BITS)
            ok = mul_ok(t->rows, (t->cols + 63) / 64, &expect) && mul_ok(expect, 8, &expect);
        else ok = mul_ok(t->rows, t->cols, &expect) && mul_ok(expect, 4, &expect);
    }
    if (!ok) return fail(err, errlen, "tensor '%s': shape %s is too large (its size overflows 64 bits)", q.s, shp);
    if (t->nbytes != expect)
        return fail(err, errlen, "tensor '%s': nbytes %llu does not match %s shape %s (expected %llu)", q.s,
                    (unsigned long long)t->nbytes, t->dtype == BNB_DTYPE_BITS ? "bits" : "f32", shp,
                    (unsigned long long)expect);
    if (t->offset % BNB_ALIGN)
        return fail(err, errlen, "tensor '%s': offset %llu is not a multiple of %d", q.s,
                    (unsigned long long)t->offset, BNB_ALIGN);
    if (t->offset > data_len || t->nbytes > data_len - t->offset)
        return fail(err, errlen, "tensor '%s': bytes %llu..%llu lie outside the data region (data_len %llu)", q.s,
                    (unsigned long long)t->offset, (unsigned long long)t->offset + t->nbytes,
                    (unsigned long long)data_len); /* both < 2^63: the sum cannot overflow */
    return BITNN_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const bnb_tensor *x = *(const bnb_tensor *const *)a, *y = *(const bnb_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Tensors sorted by offset must tile [0, data_len): each at align64 of the
 * previous end, the gaps zero, the last ending at data_len. */
static bitnn_status check_tiling(bnb_file *f, char *err, size_t errlen)
{
    if (f->ntensors == 0) {
        if (f->data_len != 0)
            return fail(err, errlen, "the header lists no tensors but data_len is %llu (must be 0)",
                        (unsigned long long)f->data_len);
        return BITNN_OK;
    }
    const bnb_tensor **order = malloc(f->ntensors * sizeof *order);
    if (!order) return BITNN_ENOMEM;
    for (size_t i = 0; i < f->ntensors; i++) order[i] = &f->tensors[i];
    qsort(order, f->ntensors, sizeof *order, cmp_offset);
    bitnn_status s = BITNN_OK;
    uint64_t end = 0; /* end of the previous tensor */
    for (size_t i = 0; i < f->ntensors && s == BITNN_OK; i++) {
        const bnb_tensor *t = order[i];
        const uint64_t want = align64(end); /* end <= data_len: no overflow */
        if (i == 0 && t->offset != 0) {
            s = fail(err, errlen, "hole: the first tensor '%s' starts at data offset %llu, expected 0",
                     quote(t->name).s, (unsigned long long)t->offset);
        } else if (t->offset < end) {
            s = fail(err, errlen, "tensors '%s' (bytes %llu..%llu) and '%s' (bytes %llu..%llu) overlap",
                     quote(order[i - 1]->name).s, (unsigned long long)order[i - 1]->offset,
                     (unsigned long long)end, quote(t->name).s, (unsigned long long)t->offset,
                     (unsigned long long)(t->offset + t->nbytes));
        } else if (t->offset > want) {
            s = fail(err, errlen, "hole: tensor '%s' ends at data offset %llu, so the next one must start at %llu, "
                     "but '%s' starts at %llu", quote(order[i - 1]->name).s, (unsigned long long)end,
                     (unsigned long long)want, quote(t->name).s, (unsigned long long)t->offset);
        } else {
            for (uint64_t j = end; j < t->offset; j++)
                if (f->data[j] != 0) {
                    s = fail(err, errlen, "non-zero byte 0x%02x at data offset %llu in the alignment gap before "
                             "tensor '%s'", f->data[j], (unsigned long long)j, quote(t->name).s);
                    break;
                }
            end = t->offset + t->nbytes;
        }
    }
    if (s == BITNN_OK && end != f->data_len)
        s = fail(err, errlen, "%llu trailing bytes in the data region: the last tensor '%s' ends at %llu, "
                 "data_len is %llu", (unsigned long long)(f->data_len - end),
                 quote(order[f->ntensors - 1]->name).s, (unsigned long long)end,
                 (unsigned long long)f->data_len);
    free(order);
    return s;
}

static bitnn_status check_padding_bits(const bnb_tensor *t, char *err, size_t errlen)
{
    if (t->dtype != BNB_DTYPE_BITS || t->cols % 64 == 0) return BITNN_OK;
    const uint64_t wpr = (t->cols + 63) / 64, used = t->cols % 64;
    const uint64_t *w = t->data; /* 64-byte aligned: base and every offset are */
    for (uint64_t r = 0; r < t->rows; r++) {
        const uint64_t last = w[r * wpr + wpr - 1];
        if (last >> used)
            return fail(err, errlen, "tensor '%s': non-zero padding bits in row %llu (bits %llu..%llu of "
                        "each row must be 0, docs/packing.md)", quote(t->name).s, (unsigned long long)r,
                        (unsigned long long)t->cols, (unsigned long long)(wpr * 64 - 1));
    }
    return BITNN_OK;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const bnb_tensor *const *)a)->name, (*(const bnb_tensor *const *)b)->name);
}

static bitnn_status check_header(bnb_file *f, char *err, size_t errlen)
{
    char jerr[256];
    bitnn_status s = bjson_parse(f->header, f->header_len, &f->meta, jerr, sizeof jerr);
    if (s == BITNN_ENOMEM) {
        fail(err, errlen, "out of memory while parsing the JSON header");
        return BITNN_ENOMEM;
    }
    if (s != BITNN_OK)
        return fail(err, errlen, "invalid JSON header: %s (bytes counted from the start of the JSON, "
                    "which is at file offset %d)", jerr, PREAMBLE);
    if (f->meta->type != BJSON_OBJECT) return fail(err, errlen, "the JSON header must be an object");
    const bjson *tensors = bjson_get(f->meta, "tensors");
    if (!tensors) return fail(err, errlen, "the JSON header has no \"tensors\" key");
    if (tensors->type != BJSON_OBJECT)
        return fail(err, errlen, "\"tensors\" in the JSON header must be an object (name -> entry)");
    f->ntensors = tensors->count;
    if (f->ntensors) {
        f->tensors = calloc(f->ntensors, sizeof *f->tensors);
        f->by_name = malloc(f->ntensors * sizeof *f->by_name);
        if (!f->tensors || !f->by_name) {
            fail(err, errlen, "out of memory");
            return BITNN_ENOMEM;
        }
    }
    for (size_t i = 0; i < f->ntensors; i++) {
        bnb_tensor *t = &f->tensors[i];
        t->name = tensors->keys[i];
        s = parse_tensor(t->name, &tensors->items[i], t, f->data_len, err, errlen);
        if (s != BITNN_OK) return s;
        t->data = f->data + t->offset;
    }
    s = check_tiling(f, err, errlen);
    if (s == BITNN_ENOMEM) fail(err, errlen, "out of memory");
    if (s != BITNN_OK) return s;
    for (size_t i = 0; i < f->ntensors; i++) {
        s = check_padding_bits(&f->tensors[i], err, errlen);
        if (s != BITNN_OK) return s;
    }
    for (size_t i = 0; i < f->ntensors; i++) f->by_name[i] = &f->tensors[i];
    return BITNN_OK;
}

/* Validate f->base[0..size) and fill in f. */
static bitnn_status validate(bnb_file *f, char *err, size_t errlen)
{
    bitnn_status s = check_preamble(f, err, errlen);
    if (s == BITNN_OK) s = check_header(f, err, errlen);
    if (s == BITNN_OK && f->ntensors > 1) /* names are unique: the parser rejects duplicate keys */
        qsort(f->by_name, f->ntensors, sizeof *f->by_name, cmp_name);
    return s;
}

/* ------------------------------------------------------------- public */
void bnb_close(bnb_file *f)
{
    if (!f) return;
    if (f->base) {
        if (f->mapped) munmap(f->base, f->size);
        else free(f->base);
    }
    bjson_free(f->meta);
    free(f->tensors);
    free(f->by_name);
    free(f);
}

static bitnn_status finish(bnb_file *f, bnb_file **out, char *err, size_t errlen)
{
    bitnn_status s = validate(f, err, errlen);
    if (s != BITNN_OK) {
        bnb_close(f);
        return s;
    }
    *out = f;
    return BITNN_OK;
}

static void *alloc_aligned(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, BNB_ALIGN, n ? n : 1) != 0) return NULL;
    return p;
}

bitnn_status bnb_open_buffer(const void *buf, size_t len, bnb_file **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!out || (!buf && len)) return BITNN_EINVAL;
    *out = NULL;
    bnb_file *f = calloc(1, sizeof *f);
    if (!f) return BITNN_ENOMEM;
    f->base = alloc_aligned(len);
    if (!f->base) {
        free(f);
        fail(err, errlen, "out of memory (%zu bytes)", len);
        return BITNN_ENOMEM;
    }
    if (len) memcpy(f->base, buf, len);
    f->size = len;
    return finish(f, out, err, errlen);
}

static bitnn_status sys_fail(int e, char *err, size_t errlen, const char *what, const char *path)
{
    if (err && errlen) snprintf(err, errlen, "%s '%s': %s", what, path, strerror(e));
    errno = e;
    return BITNN_ESYS;
}

bitnn_status bnb_open(const char *path, int flags, bnb_file **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!out || !path) return BITNN_EINVAL;
    *out = NULL;
    int fd;
    do fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return sys_fail(errno, err, errlen, "cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return sys_fail(e, err, errlen, "cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sys_fail(S_ISDIR(st.st_mode) ? EISDIR : EINVAL, err, errlen, "not a regular file:", path);
    }
    if ((uintmax_t)st.st_size > SIZE_MAX) {
        close(fd);
        return sys_fail(EFBIG, err, errlen, "cannot map", path);
    }
    const size_t size = (size_t)st.st_size;
    bnb_file *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        errno = ENOMEM;
        return BITNN_ENOMEM;
    }
    f->size = size;
    if (size < PREAMBLE) flags |= BNB_OPEN_NO_MMAP; /* too short anyway: read it for the message */
    if (!(flags & BNB_OPEN_NO_MMAP)) {
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(f);
            return sys_fail(e, err, errlen, "cannot mmap", path);
        }
        f->base = p;
        f->mapped = 1;
    } else {
        f->base = alloc_aligned(size);
        if (!f->base) {
            close(fd);
            free(f);
            fail(err, errlen, "out of memory reading '%s' (%zu bytes)", path, size);
            errno = ENOMEM;
            return BITNN_ENOMEM;
        }
        size_t got = 0;
        while (got < size) {
            ssize_t r = read(fd, f->base + got, size - got > (1u << 30) ? (1u << 30) : size - got);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                int e = errno;
                close(fd);
                bnb_close(f);
                return sys_fail(e, err, errlen, "cannot read", path);
            }
            if (r == 0) break;
            got += (size_t)r;
        }
        if (got < size) { /* the file shrank while we read it */
            close(fd);
            bnb_close(f);
            return fail(err, errlen, "truncated: '%s' shrank to %zu bytes while it was read (it was %zu)", path,
                        got, size);
        }
    }
    close(fd);
    return finish(f, out, err, errlen);
}

const bjson *bnb_meta(const bnb_file *f) { return f ? f->meta : NULL; }

const char *bnb_header_text(const bnb_file *f, size_t *len)
{
    if (!f) return NULL;
    if (len) *len = f->header_len;
    return f->header;
}

size_t bnb_tensor_count(const bnb_file *f) { return f ? f->ntensors : 0; }

const bnb_tensor *bnb_tensor_at(const bnb_file *f, size_t i)
{
    return f && i < f->ntensors ? &f->tensors[i] : NULL;
}

const bnb_tensor *bnb_tensor_find(const bnb_file *f, const char *name)
{
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const bnb_tensor *t = f->by_name[mid];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

uint64_t bnb_file_size(const bnb_file *f) { return f ? (uint64_t)f->size : 0; }
