/*
 * tokenizer.c - byte-level BPE and WordPiece, id for id what HF `tokenizers` gives.
 *
 * The pipeline is HF's, minus everything that only serves offsets:
 *
 *   text --(repair invalid UTF-8)--> split out added tokens that match the raw text
 *        --(normalize each gap)--> split out added tokens that match normalized text
 *        --(pre-tokenize each gap into words)--> model (BPE / WordPiece) per word
 *        --(optional template prefix/suffix)--> ids
 *
 * Byte-level BPE: no normalizer (optionally lowercase), the GPT-2 regex, BPE merges on
 * the word's bytes (HF maps bytes to its 256-character alphabet first; we keep vocab
 * keys as raw bytes, which is the same thing). WordPiece: the BERT normalizer, the BERT
 * pre-tokenizer (split on whitespace, isolate punctuation), greedy longest-match-first.
 * Character classes come from unicode_tables.c, in the Unicode versions HF uses.
 *
 * Sections: buffers - UTF-8 - hash maps - spec reading - normalizers - pre-tokenizers
 * - models - encode - decode.
 */
#include "tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"

/* ==================================================================== buffers */
/* Growable arrays. Every push can fail (ENOMEM): callers check the int result. */
static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return -1;
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

typedef struct { uint8_t *p; size_t n, cap; } bytes_t;
typedef struct { int32_t *p; size_t n, cap; } ids_t;
typedef struct { uint32_t *p; size_t n, cap; } cps_t;
typedef struct { size_t *p; size_t n, cap; } sizes_t;

static int bytes_put(bytes_t *b, const void *s, size_t n)
{
    if (n > SIZE_MAX - b->n || grow((void **)&b->p, &b->cap, b->n + n, 1))
        return -1;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int ids_put(ids_t *v, const int32_t *s, size_t n)
{
    if (n > SIZE_MAX - v->n || grow((void **)&v->p, &v->cap, v->n + n, sizeof(int32_t)))
        return -1;
    if (n)
        memcpy(v->p + v->n, s, n * sizeof(int32_t));
    v->n += n;
    return 0;
}

static int ids_push(ids_t *v, int32_t id) { return ids_put(v, &id, 1); }

static int cps_push(cps_t *v, uint32_t c)
{
    if (grow((void **)&v->p, &v->cap, v->n + 1, sizeof(uint32_t)))
        return -1;
    v->p[v->n++] = c;
    return 0;
}

static int sizes_push(sizes_t *v, size_t x)
{
    if (grow((void **)&v->p, &v->cap, v->n + 1, sizeof(size_t)))
        return -1;
    v->p[v->n++] = x;
    return 0;
}

/* ======================================================================= UTF-8 */
/* Length of the sequence a lead byte starts (0: not a lead byte), and the range
 * its second byte must be in (the later ones are always 80..BF). */
static int utf8_lead(uint8_t b, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0)
            *lo = 0xA0;
        if (b == 0xED)
            *hi = 0x9F; /* no surrogates */
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0)
            *lo = 0x90;
        if (b == 0xF4)
            *hi = 0x8F; /* nothing above U+10FFFF */
        return 4;
    }
    return 0;
}

/* Bytes of the well-formed sequence at s[i] (1..4), or 0 with *bad set to the length
 * of the maximal ill-formed subpart there (Unicode's "substitution of maximal subparts",
 * which is what Python's decoder replaces with one U+FFFD each). */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t i, size_t *bad)
{
    uint8_t lo, hi;
    int len = utf8_lead(s[i], &lo, &hi);
    if (len == 0) {
        *bad = 1;
        return 0;
    }
    for (int k = 1; k < len; k++) {
        if (i + k >= n || s[i + k] < lo || s[i + k] > hi) {
            *bad = (size_t)k;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return (size_t)len;
}

/* The text as well-formed UTF-8: the input itself when it already is, else a repaired
 * copy in *buf. */
static int utf8_repair(const uint8_t *s, size_t n, bytes_t *buf, const uint8_t **out)
{
    size_t i = 0, bad;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(s, n, i, &bad);
        if (!k)
            break;
        i += k;
    }
    if (i == n) {
        *out = s;
        return 0;
    }
    buf->n = 0;
    if (bytes_put(buf, s, i))
        return -1;
    while (i < n) {
        size_t k = utf8_seq(s, n, i, &bad);
        if (k) {
            if (bytes_put(buf, s + i, k))
                return -1;
            i += k;
        } else {
            if (bytes_put(buf, "\xEF\xBF\xBD", 3))
                return -1;
            i += bad;
        }
    }
    *out = buf->p;
    return 0;
}

size_t bitnn_utf8_incomplete_tail(const char *buf, size_t len)
{
    const uint8_t *s = (const uint8_t *)buf;
    if (!s)
        return 0;
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        uint8_t b = s[len - k];
        if (b >= 0x80 && b <= 0xBF)
            continue; /* continuation byte: look further back for the lead */
        uint8_t lo, hi;
        int need = utf8_lead(b, &lo, &hi);
        if (need <= (int)k)
            return 0; /* ASCII, invalid byte, or a sequence that is already complete */
        for (size_t j = 1; j < k; j++) {
            uint8_t c = s[len - k + j];
            if (c < lo || c > hi)
                return 0; /* ill-formed already: more bytes cannot fix it */
            lo = 0x80;
            hi = 0xBF;
        }
        return k;
    }
    return 0;
}

/* Decode the scalar at s[*i] of well-formed UTF-8 and advance *i. */
static inline uint32_t utf8_next(const uint8_t *s, size_t *i)
{
    uint8_t b = s[*i];
    if (b < 0x80) {
        *i += 1;
        return b;
    }
    if (b < 0xE0) {
        uint32_t c = ((uint32_t)(b & 0x1F) << 6) | (s[*i + 1] & 0x3F);
        *i += 2;
        return c;
    }
    if (b < 0xF0) {
        uint32_t c = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[*i + 1] & 0x3F) << 6) |
                     (s[*i + 2] & 0x3F);
        *i += 3;
        return c;
    }
    uint32_t c = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[*i + 1] & 0x3F) << 12) |
                 ((uint32_t)(s[*i + 2] & 0x3F) << 6) | (s[*i + 3] & 0x3F);
    *i += 4;
    return c;
}

static int utf8_put(bytes_t *b, uint32_t c)
{
    uint8_t t[4];
    size_t k;
    if (c < 0x80) {
        t[0] = (uint8_t)c;
        k = 1;
    } else if (c < 0x800) {
        t[0] = (uint8_t)(0xC0 | (c >> 6));
        t[1] = (uint8_t)(0x80 | (c & 0x3F));
        k = 2;
    } else if (c < 0x10000) {
        t[0] = (uint8_t)(0xE0 | (c >> 12));
        t[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        t[2] = (uint8_t)(0x80 | (c & 0x3F));
        k = 3;
    } else {
        t[0] = (uint8_t)(0xF0 | (c >> 18));
        t[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        t[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        t[3] = (uint8_t)(0x80 | (c & 0x3F));
        k = 4;
    }
    return bytes_put(b, t, k);
}

/* HF's byte-level alphabet: byte b is written as one character. The printable bytes
 * stand for themselves; the other 68 (00..20, 7F..A0, AD) move to U+0100..U+0143 in
 * byte order, so a space is 'Ġ' (U+0120) and a newline 'Ċ' (U+010A). */
static int alphabet_byte(uint32_t c)
{
    if ((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))
        return (int)c;
    if (c < 0x100 || c > 0x143)
        return -1;
    uint32_t n = c - 0x100;
    if (n < 33)
        return (int)n;               /* 00..20 */
    if (n < 67)
        return (int)(0x7F + n - 33); /* 7F..A0 */
    return 0xAD;
}

/* The bytes a token string stands for at the byte level, as HF's ByteLevel decoder
 * reads it: every character through the alphabet, or, when one is not in it, the
 * string's own UTF-8. out has room for n bytes (never more are needed). Returns 1 when
 * the whole string was in the alphabet. */
static int alphabet_bytes(const uint8_t *s, size_t n, uint8_t *out, size_t *outlen)
{
    size_t j = 0, k = 0;
    while (j < n) {
        int b = alphabet_byte(utf8_next(s, &j));
        if (b < 0) {
            memcpy(out, s, n);
            *outlen = n;
            return 0;
        }
        out[k++] = (uint8_t)b;
    }
    *outlen = k;
    return 1;
}

/* ================================================================== hash maps */
static uint64_t hash_bytes(const uint8_t *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

/* Byte string -> id, open addressing. The keys live elsewhere: key(id) is
 * pool[off[id] .. off[id] + len[id]). */
typedef struct {
    int32_t *slots; /* id, or -1 */
    size_t mask;
    const uint8_t *pool;
    const size_t *off;
    const uint32_t *len;
} idmap;

static int idmap_init(idmap *m, size_t n, const uint8_t *pool, const size_t *off,
                      const uint32_t *len)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    m->slots = malloc(cap * sizeof(int32_t));
    if (!m->slots)
        return -1;
    memset(m->slots, 0xFF, cap * sizeof(int32_t));
    m->mask = cap - 1;
    m->pool = pool;
    m->off = off;
    m->len = len;
    return 0;
}

static int32_t idmap_get(const idmap *m, const uint8_t *s, size_t n)
{
    size_t i = (size_t)hash_bytes(s, n) & m->mask;
    for (;;) {
        int32_t id = m->slots[i];
        if (id < 0)
            return -1;
        if (m->len[id] == n && memcmp(m->pool + m->off[id], s, n) == 0)
            return id;
        i = (i + 1) & m->mask;
    }
}

/* Insert id under its key; returns the id already there with that key, or -1. */
static int32_t idmap_add(idmap *m, int32_t id)
{
    const uint8_t *s = m->pool + m->off[id];
    size_t n = m->len[id];
    size_t i = (size_t)hash_bytes(s, n) & m->mask;
    for (;;) {
        int32_t old = m->slots[i];
        if (old < 0) {
            m->slots[i] = id;
            return -1;
        }
        if (m->len[old] == n && memcmp(m->pool + m->off[old], s, n) == 0)
            return old;
        i = (i + 1) & m->mask;
    }
}

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t *keys; /* (left << 32 | right) + 1; 0 = empty */
    uint32_t *rank;
    int32_t *merged;
    size_t mask;
} mergemap;

static inline uint64_t pair_key(int32_t a, int32_t b)
{
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static inline size_t pair_slot(uint64_t k, size_t mask)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k & mask;
}

/* 1 and the merge when (a, b) merges, else 0. */
static inline int merge_get(const mergemap *m, int32_t a, int32_t b, uint32_t *rank,
                            int32_t *merged)
{
    if (!m->keys)
        return 0;
    uint64_t k = pair_key(a, b);
    for (size_t i = pair_slot(k, m->mask);; i = (i + 1) & m->mask) {
        if (m->keys[i] == 0)
            return 0;
        if (m->keys[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return 1;
        }
    }
}

/* ============================================================ the tokenizer */
/* One string per id, back to back in pool. */
typedef struct {
    uint8_t *pool;
    size_t *off;   /* per id */
    uint32_t *len; /* per id */
    size_t n_bytes; /* of pool */
    int owned;     /* 0: the arrays belong to another table */
} strtab;

static void strtab_free(strtab *s)
{
    if (s->owned) {
        free(s->pool);
        free(s->off);
        free(s->len);
    }
    memset(s, 0, sizeof *s);
}

static int strtab_alloc(strtab *s, size_t n, size_t bytes)
{
    s->pool = malloc(bytes ? bytes : 1);
    s->off = malloc((n ? n : 1) * sizeof(size_t));
    s->len = malloc((n ? n : 1) * sizeof(uint32_t));
    s->owned = 1;
    s->n_bytes = bytes;
    return s->pool && s->off && s->len ? 0 : -1;
}

/* Added tokens, as the byte strings to look for in the text. */
typedef struct {
    size_t n;
    uint8_t **pat;    /* pattern i, sorted longest first */
    size_t *len;
    int32_t *id;
    uint8_t first[256]; /* some pattern starts with this byte */
} patset;

struct bitnn_tokenizer {
    bitnn_tokenizer_kind kind;
    size_t n_vocab;        /* ids are 0 .. n_vocab-1 */
    size_t n_model;        /* ids below this belong to the model; the rest are added only */
    /* Per id. HF shows a "normalized" added token as its normalized content and decodes
     * it so, while its raw content (the vocab string) still names it in token_to_id. */
    strtab str;            /* the vocab strings of the spec */
    strtab show;           /* what id_to_token gives: str, or the normalized content */
    strtab out;            /* the bytes a token adds to decoded text */
    strtab key;            /* byte-level: the bytes a model token matches (WordPiece: str) */
    uint8_t *special;      /* per id: an added token marked special */
    idmap by_string;       /* vocab string -> id, every id */
    idmap model;           /* model key -> id: the bytes of model ids the model can emit */
    patset raw_added;      /* added tokens matched before normalization ("normalized": false) */
    patset norm_added;     /* added tokens matched in normalized text (their content normalized) */
    int32_t *prefix, *suffix; /* template, ids */
    size_t n_prefix, n_suffix;
    /* byte_bpe */
    int32_t byte_id[256];  /* model id of each single byte, -1 if the vocab lacks it */
    mergemap merges;
    int add_prefix_space, use_regex, ignore_merges;
    /* wordpiece */
    int32_t unk_id;
    uint8_t *cont_prefix;
    size_t cont_prefix_len;
    size_t max_chars;      /* longer words become unk */
    size_t max_token_len;  /* longest model key, bytes */
    int clean_text, handle_chinese, strip_accents, cleanup;
    int lowercase;         /* both kinds */
};

/* Per-call scratch of encode: a built tokenizer is never written to. */
typedef struct wcache_entry {
    uint64_t hash;
    size_t key_off, ids_off;
    uint32_t key_len, n_ids;
} wcache_entry;

enum { WCACHE_MAX_SLOTS = 1 << 15, WCACHE_MAX_WORD = 128 };

typedef struct {
    int32_t id;
    int32_t prev, next;
    int alive;
} bpe_sym;

typedef struct {
    uint32_t rank, pos;
    int32_t merged;
} bpe_cand;

typedef struct {
    const bitnn_tokenizer *tok;
    ids_t out;
    bytes_t repaired, norm, prefixed, key;
    cps_t cp, cp2;
    bpe_sym *syms;
    size_t syms_cap;
    bpe_cand *heap;
    size_t heap_cap, heap_n;
    /* word cache: word bytes -> ids */
    wcache_entry *cache;
    size_t cache_n, cache_slots; /* slots: a power of two sized to the text, filled to half */
    bytes_t cache_keys;
    ids_t cache_ids;
    /* bitnn_tokenizer_pretokenize: collect the pieces instead of running the model */
    int collect;
    bytes_t pieces;
    sizes_t ends;
    ids_t added;
} enc_ctx;

static void enc_free(enc_ctx *e)
{
    free(e->out.p);
    free(e->repaired.p);
    free(e->norm.p);
    free(e->prefixed.p);
    free(e->key.p);
    free(e->cp.p);
    free(e->cp2.p);
    free(e->syms);
    free(e->heap);
    free(e->cache);
    free(e->cache_keys.p);
    free(e->cache_ids.p);
    free(e->pieces.p);
    free(e->ends.p);
    free(e->added.p);
}

static int normalize(enc_ctx *e, const uint8_t *s, size_t n, bytes_t *out);

/* ================================================================ spec reading */
static bitnn_status fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        int k = snprintf(err, errlen, "tokenizer: ");
        if (k >= 0 && (size_t)k < errlen)
            vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return BITNN_EFORMAT;
}

static int key_allowed(const char *key, const char *const *allowed)
{
    for (; *allowed; allowed++)
        if (strcmp(key, *allowed) == 0)
            return 1;
    return 0;
}

/* A boolean member; def when absent. -1 when present but not a boolean. */
static int get_bool(const bjson *obj, const char *key, int def)
{
    const bjson *v = bjson_get(obj, key);
    if (!v)
        return def;
    if (v->type == BJSON_TRUE)
        return 1;
    if (v->type == BJSON_FALSE)
        return 0;
    return -1;
}

static void patset_free(patset *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->pat[i]);
    free(p->pat);
    free(p->len);
    free(p->id);
    memset(p, 0, sizeof *p);
}

static int patset_add(patset *p, const uint8_t *s, size_t n, int32_t id)
{
    if (n == 0)
        return 0; /* an empty pattern matches nothing (HF ignores empty contents) */
    uint8_t **pat = realloc(p->pat, (p->n + 1) * sizeof *pat);
    if (!pat)
        return -1;
    p->pat = pat;
    size_t *len = realloc(p->len, (p->n + 1) * sizeof *len);
    if (!len)
        return -1;
    p->len = len;
    int32_t *ids = realloc(p->id, (p->n + 1) * sizeof *ids);
    if (!ids)
        return -1;
    p->id = ids;
    uint8_t *copy = malloc(n);
    if (!copy)
        return -1;
    memcpy(copy, s, n);
    /* insertion keeps the set sorted longest first, earlier entries first among equals */
    size_t at = p->n;
    while (at > 0 && p->len[at - 1] < n) {
        p->pat[at] = p->pat[at - 1];
        p->len[at] = p->len[at - 1];
        p->id[at] = p->id[at - 1];
        at--;
    }
    p->pat[at] = copy;
    p->len[at] = n;
    p->id[at] = id;
    p->n++;
    p->first[s[0]] = 1;
    return 0;
}

/* The leftmost match at or after pos, longest there: 1 and (*start, *len, *id), else 0. */
static int patset_find(const patset *p, const uint8_t *s, size_t n, size_t pos, size_t *start,
                       size_t *len, int32_t *id)
{
    if (p->n == 0)
        return 0;
    for (size_t i = pos; i < n; i++) {
        if (!p->first[s[i]])
            continue;
        for (size_t k = 0; k < p->n; k++) {
            if (p->len[k] <= n - i && memcmp(s + i, p->pat[k], p->len[k]) == 0) {
                *start = i;
                *len = p->len[k];
                *id = p->id[k];
                return 1;
            }
        }
    }
    return 0;
}

void bitnn_tokenizer_free(bitnn_tokenizer *t)
{
    if (!t)
        return;
    strtab_free(&t->out);
    strtab_free(&t->show);
    strtab_free(&t->key);
    strtab_free(&t->str);
    free(t->special);
    free(t->by_string.slots);
    free(t->model.slots);
    patset_free(&t->raw_added);
    patset_free(&t->norm_added);
    free(t->prefix);
    free(t->suffix);
    free(t->merges.keys);
    free(t->merges.rank);
    free(t->merges.merged);
    free(t->cont_prefix);
    free(t);
}

static const char *const BYTE_BPE_KEYS[] = {
    "type", "vocab", "model_vocab_size", "merges", "added_tokens", "template",
    "add_prefix_space", "use_regex", "lowercase", "ignore_merges", NULL};
static const char *const WORDPIECE_KEYS[] = {
    "type", "vocab", "model_vocab_size", "added_tokens", "template", "unk_token",
    "continuing_subword_prefix", "max_input_chars_per_word", "clean_text",
    "handle_chinese_chars", "strip_accents", "lowercase", "cleanup", NULL};

/* Shorten a token for a message. */
static const char *shown(const bitnn_tokenizer *t, int32_t id, char *buf, size_t n)
{
    size_t len = t->str.len[id];
    if (len > n - 1)
        len = n - 1;
    /* cut at a character boundary */
    while (len > 0 && len < t->str.len[id] && (t->str.pool[t->str.off[id] + len] & 0xC0) == 0x80)
        len--;
    memcpy(buf, t->str.pool + t->str.off[id], len);
    buf[len] = 0;
    return buf;
}

static bitnn_status read_vocab(bitnn_tokenizer *t, const bjson *spec, char *err, size_t errlen)
{
    const bjson *vocab = bjson_get(spec, "vocab");
    if (!vocab || vocab->type != BJSON_ARRAY)
        return fail(err, errlen, "\"vocab\" must be an array of strings");
    if (vocab->count == 0)
        return fail(err, errlen, "\"vocab\" is empty");
    if (vocab->count > (size_t)INT32_MAX)
        return fail(err, errlen, "\"vocab\" has more than 2^31-1 tokens");
    t->n_vocab = vocab->count;
    size_t total = 0;
    for (size_t i = 0; i < vocab->count; i++) {
        const bjson *v = &vocab->items[i];
        if (v->type != BJSON_STRING)
            return fail(err, errlen, "vocab[%zu] is not a string", i);
        if (v->len == 0)
            return fail(err, errlen, "vocab[%zu] is an empty string", i);
        if (v->len > UINT32_MAX / 2 || v->len > SIZE_MAX - total)
            return fail(err, errlen, "vocab[%zu] is too long", i);
        total += v->len;
    }
    t->special = calloc(t->n_vocab, 1);
    if (strtab_alloc(&t->str, t->n_vocab, total) || !t->special)
        return BITNN_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < vocab->count; i++) {
        memcpy(t->str.pool + at, vocab->items[i].str, vocab->items[i].len);
        t->str.off[i] = at;
        t->str.len[i] = (uint32_t)vocab->items[i].len;
        at += vocab->items[i].len;
    }
    if (idmap_init(&t->by_string, t->n_vocab, t->str.pool, t->str.off, t->str.len))
        return BITNN_ENOMEM;
    for (size_t i = 0; i < t->n_vocab; i++) {
        int32_t old = idmap_add(&t->by_string, (int32_t)i);
        if (old >= 0) {
            char buf[48];
            return fail(err, errlen, "vocab[%zu] duplicates vocab[%d] (\"%s\")", i, (int)old,
                        shown(t, (int32_t)i, buf, sizeof buf));
        }
    }
    long long m = (long long)t->n_vocab;
    const bjson *mv = bjson_get(spec, "model_vocab_size");
    if (mv && !bjson_get_int(mv, 1, (long long)t->n_vocab, &m))
        return fail(err, errlen, "\"model_vocab_size\" must be an integer from 1 to %zu",
                    t->n_vocab);
    t->n_model = (size_t)m;
    return BITNN_OK;
}

static bitnn_status read_ids(const bitnn_tokenizer *t, const bjson *arr, const char *what,
                             int32_t **out, size_t *n, char *err, size_t errlen)
{
    if (!arr) {
        *n = 0;
        return BITNN_OK;
    }
    if (arr->type != BJSON_ARRAY)
        return fail(err, errlen, "%s must be an array of ids", what);
    *out = malloc((arr->count ? arr->count : 1) * sizeof(int32_t));
    if (!*out)
        return BITNN_ENOMEM;
    for (size_t i = 0; i < arr->count; i++) {
        long long id;
        if (!bjson_get_int(&arr->items[i], 0, (long long)t->n_vocab - 1, &id))
            return fail(err, errlen, "%s[%zu] is not an id below %zu", what, i, t->n_vocab);
        (*out)[i] = (int32_t)id;
    }
    *n = arr->count;
    return BITNN_OK;
}

/* "added_tokens" (after the normalizer settings are read: normalized contents need it). */
static bitnn_status read_added(bitnn_tokenizer *t, const bjson *spec, char *err, size_t errlen)
{
    static const char *const keys[] = {"id", "special", "normalized", NULL};
    const bjson *arr = bjson_get(spec, "added_tokens");
    if (!arr)
        return BITNN_OK;
    if (arr->type != BJSON_ARRAY)
        return fail(err, errlen, "\"added_tokens\" must be an array of objects");
    uint8_t *seen = calloc(t->n_vocab, 1);
    if (!seen)
        return BITNN_ENOMEM;
    bytes_t shown = {0};    /* normalized contents, back to back */
    sizes_t shown_ids = {0}, shown_ends = {0};
    enc_ctx e;
    memset(&e, 0, sizeof e);
    e.tok = t;
    bitnn_status st = BITNN_OK;
    for (size_t i = 0; i < arr->count && st == BITNN_OK; i++) {
        const bjson *a = &arr->items[i];
        long long id;
        if (a->type != BJSON_OBJECT) {
            st = fail(err, errlen, "added_tokens[%zu] is not an object", i);
            break;
        }
        for (size_t k = 0; k < a->count; k++)
            if (!key_allowed(a->keys[k], keys)) {
                st = fail(err, errlen, "added_tokens[%zu] has an unknown key \"%s\"", i, a->keys[k]);
                break;
            }
        if (st != BITNN_OK)
            break;
        if (!bjson_get_int(bjson_get(a, "id"), 0, (long long)t->n_vocab - 1, &id)) {
            st = fail(err, errlen, "added_tokens[%zu].id is not an id below %zu", i, t->n_vocab);
            break;
        }
        if (seen[id]) {
            st = fail(err, errlen, "added_tokens[%zu]: id %lld is listed twice", i, id);
            break;
        }
        seen[id] = 1;
        int special = get_bool(a, "special", 0);
        int normalized = get_bool(a, "normalized", !special);
        if (special < 0 || normalized < 0) {
            st = fail(err, errlen, "added_tokens[%zu]: \"special\" and \"normalized\" must be "
                      "true or false", i);
            break;
        }
        t->special[id] = (uint8_t)special;
        const uint8_t *content = t->str.pool + t->str.off[id];
        size_t len = t->str.len[id];
        if (!normalized) {
            if (patset_add(&t->raw_added, content, len, (int32_t)id))
                st = BITNN_ENOMEM;
        } else {
            /* HF matches these against normalized text, so it normalizes them too, and
             * shows and decodes them normalized */
            e.norm.n = 0;
            if (normalize(&e, content, len, &e.norm) ||
                patset_add(&t->norm_added, e.norm.p, e.norm.n, (int32_t)id) ||
                bytes_put(&shown, e.norm.p, e.norm.n) || sizes_push(&shown_ids, (size_t)id) ||
                sizes_push(&shown_ends, shown.n))
                st = BITNN_ENOMEM;
        }
    }
    if (st == BITNN_OK && shown_ids.n) {
        size_t base = t->str.n_bytes;
        if (strtab_alloc(&t->show, t->n_vocab, base + shown.n)) {
            st = BITNN_ENOMEM;
        } else {
            memcpy(t->show.pool, t->str.pool, base);
            memcpy(t->show.off, t->str.off, t->n_vocab * sizeof(size_t));
            memcpy(t->show.len, t->str.len, t->n_vocab * sizeof(uint32_t));
            if (shown.n)
                memcpy(t->show.pool + base, shown.p, shown.n);
            for (size_t k = 0; k < shown_ids.n; k++) {
                size_t from = k ? shown_ends.p[k - 1] : 0;
                t->show.off[shown_ids.p[k]] = base + from;
                t->show.len[shown_ids.p[k]] = (uint32_t)(shown_ends.p[k] - from);
            }
            t->show.n_bytes = base + shown.n;
        }
    }
    enc_free(&e);
    free(seen);
    free(shown.p);
    free(shown_ids.p);
    free(shown_ends.p);
    return st;
}

static bitnn_status read_template(bitnn_tokenizer *t, const bjson *spec, char *err,
                                  size_t errlen)
{
    static const char *const keys[] = {"prefix", "suffix", NULL};
    const bjson *tp = bjson_get(spec, "template");
    if (!tp)
        return BITNN_OK;
    if (tp->type != BJSON_OBJECT)
        return fail(err, errlen, "\"template\" must be an object");
    for (size_t k = 0; k < tp->count; k++)
        if (!key_allowed(tp->keys[k], keys))
            return fail(err, errlen, "\"template\" has an unknown key \"%s\"", tp->keys[k]);
    bitnn_status st = read_ids(t, bjson_get(tp, "prefix"), "template.prefix", &t->prefix,
                               &t->n_prefix, err, errlen);
    if (st != BITNN_OK)
        return st;
    return read_ids(t, bjson_get(tp, "suffix"), "template.suffix", &t->suffix, &t->n_suffix,
                    err, errlen);
}

static bitnn_status build_byte_bpe(bitnn_tokenizer *t, const bjson *spec, char *err,
                                   size_t errlen)
{
    int b;
    if ((b = get_bool(spec, "add_prefix_space", 0)) < 0)
        return fail(err, errlen, "\"add_prefix_space\" must be true or false");
    t->add_prefix_space = b;
    if ((b = get_bool(spec, "use_regex", 1)) < 0)
        return fail(err, errlen, "\"use_regex\" must be true or false");
    t->use_regex = b;
    if ((b = get_bool(spec, "lowercase", 0)) < 0)
        return fail(err, errlen, "\"lowercase\" must be true or false");
    t->lowercase = b;
    if ((b = get_bool(spec, "ignore_merges", 0)) < 0)
        return fail(err, errlen, "\"ignore_merges\" must be true or false");
    t->ignore_merges = b;

    /* The model matches raw bytes: a vocab string in HF's byte alphabet stands for the
     * bytes its characters map to (a bijection, so keys stay distinct). Strings with
     * other characters (special tokens such as "<s> x") are not model keys. */
    uint8_t *in_alphabet = malloc(t->n_vocab);
    if (!in_alphabet || strtab_alloc(&t->key, t->n_vocab, t->str.n_bytes)) {
        free(in_alphabet);
        return BITNN_ENOMEM;
    }
    size_t at = 0;
    for (size_t i = 0; i < t->n_vocab; i++) {
        size_t n;
        t->key.off[i] = at;
        in_alphabet[i] = (uint8_t)alphabet_bytes(t->str.pool + t->str.off[i], t->str.len[i],
                                                 t->key.pool + at, &n);
        t->key.len[i] = (uint32_t)n;
        at += n;
    }
    if (idmap_init(&t->model, t->n_model, t->key.pool, t->key.off, t->key.len)) {
        free(in_alphabet);
        return BITNN_ENOMEM;
    }
    for (size_t i = 0; i < t->n_model; i++)
        if (in_alphabet[i])
            idmap_add(&t->model, (int32_t)i);
    free(in_alphabet);
    for (unsigned x = 0; x < 256; x++) {
        uint8_t c = (uint8_t)x;
        t->byte_id[x] = idmap_get(&t->model, &c, 1);
    }

    const bjson *merges = bjson_get(spec, "merges");
    if (!merges || merges->type != BJSON_ARRAY)
        return fail(err, errlen, "\"merges\" must be an array of [left, right] string pairs");
    if (merges->count > UINT32_MAX / 4)
        return fail(err, errlen, "too many merges");
    size_t cap = 16;
    while (cap < 2 * merges->count)
        cap *= 2;
    t->merges.keys = calloc(cap, sizeof(uint64_t));
    t->merges.rank = malloc(cap * sizeof(uint32_t));
    t->merges.merged = malloc(cap * sizeof(int32_t));
    if (!t->merges.keys || !t->merges.rank || !t->merges.merged)
        return BITNN_ENOMEM;
    t->merges.mask = cap - 1;
    bytes_t cat = {0};
    bitnn_status st = BITNN_OK;
    for (size_t r = 0; r < merges->count && st == BITNN_OK; r++) {
        const bjson *m = &merges->items[r];
        if (m->type != BJSON_ARRAY || m->count != 2 || m->items[0].type != BJSON_STRING ||
            m->items[1].type != BJSON_STRING) {
            st = fail(err, errlen, "merges[%zu] is not a pair of strings", r);
            break;
        }
        const bjson *l = &m->items[0], *rr = &m->items[1];
        int32_t a = idmap_get(&t->by_string, (const uint8_t *)l->str, l->len);
        int32_t c = idmap_get(&t->by_string, (const uint8_t *)rr->str, rr->len);
        cat.n = 0;
        if (bytes_put(&cat, l->str, l->len) || bytes_put(&cat, rr->str, rr->len)) {
            st = BITNN_ENOMEM;
            break;
        }
        int32_t ab = idmap_get(&t->by_string, cat.p, cat.n);
        if (a < 0 || (size_t)a >= t->n_model || c < 0 || (size_t)c >= t->n_model) {
            st = fail(err, errlen, "merges[%zu] names a token that is not in the model vocab "
                      "(\"%.40s\" \"%.40s\")", r, l->str, rr->str);
            break;
        }
        if (ab < 0 || (size_t)ab >= t->n_model) {
            st = fail(err, errlen, "merges[%zu]: the merged token \"%.40s%.40s\" is not in the "
                      "model vocab", r, l->str, rr->str);
            break;
        }
        uint64_t k = pair_key(a, c);
        size_t i = pair_slot(k, t->merges.mask);
        while (t->merges.keys[i] && t->merges.keys[i] != k)
            i = (i + 1) & t->merges.mask;
        if (t->merges.keys[i]) {
            st = fail(err, errlen, "merges[%zu] repeats merges[%u] (\"%.40s\" \"%.40s\")", r,
                      t->merges.rank[i], l->str, rr->str);
            break;
        }
        t->merges.keys[i] = k;
        t->merges.rank[i] = (uint32_t)r;
        t->merges.merged[i] = ab;
    }
    free(cat.p);
    return st;
}

static bitnn_status build_wordpiece(bitnn_tokenizer *t, const bjson *spec, char *err,
                                    size_t errlen)
{
    t->key = t->str; /* the model matches vocab strings as they are */
    t->key.owned = 0;
    int b;
    if ((b = get_bool(spec, "lowercase", 1)) < 0)
        return fail(err, errlen, "\"lowercase\" must be true or false");
    t->lowercase = b;
    if ((b = get_bool(spec, "strip_accents", t->lowercase)) < 0)
        return fail(err, errlen, "\"strip_accents\" must be true or false");
    t->strip_accents = b;
    if ((b = get_bool(spec, "clean_text", 1)) < 0)
        return fail(err, errlen, "\"clean_text\" must be true or false");
    t->clean_text = b;
    if ((b = get_bool(spec, "handle_chinese_chars", 1)) < 0)
        return fail(err, errlen, "\"handle_chinese_chars\" must be true or false");
    t->handle_chinese = b;
    if ((b = get_bool(spec, "cleanup", 1)) < 0)
        return fail(err, errlen, "\"cleanup\" must be true or false");
    t->cleanup = b;
    long long mc = 100;
    const bjson *v = bjson_get(spec, "max_input_chars_per_word");
    if (v && !bjson_get_int(v, 0, INT32_MAX, &mc))
        return fail(err, errlen, "\"max_input_chars_per_word\" must be a non-negative integer");
    t->max_chars = (size_t)mc;

    const char *prefix = "##";
    size_t plen = 2;
    v = bjson_get(spec, "continuing_subword_prefix");
    if (v) {
        if (v->type != BJSON_STRING)
            return fail(err, errlen, "\"continuing_subword_prefix\" must be a string");
        prefix = v->str;
        plen = v->len;
    }
    t->cont_prefix = malloc(plen + 1);
    if (!t->cont_prefix)
        return BITNN_ENOMEM;
    memcpy(t->cont_prefix, prefix, plen);
    t->cont_prefix_len = plen;

    if (idmap_init(&t->model, t->n_model, t->str.pool, t->str.off, t->str.len))
        return BITNN_ENOMEM;
    for (size_t i = 0; i < t->n_model; i++) {
        idmap_add(&t->model, (int32_t)i);
        if (t->str.len[i] > t->max_token_len)
            t->max_token_len = t->str.len[i];
    }
    const char *unk = "[UNK]";
    size_t ulen = 5;
    v = bjson_get(spec, "unk_token");
    if (v) {
        if (v->type != BJSON_STRING)
            return fail(err, errlen, "\"unk_token\" must be a string");
        unk = v->str;
        ulen = v->len;
    }
    t->unk_id = idmap_get(&t->model, (const uint8_t *)unk, ulen);
    if (t->unk_id < 0)
        return fail(err, errlen, "the unk_token \"%.40s\" is not in the model vocab", unk);
    return BITNN_OK;
}

/* show (when read_added made none) and out. */
static bitnn_status finish_tables(bitnn_tokenizer *t)
{
    if (!t->show.pool) {
        t->show = t->str;
        t->show.owned = 0;
    }
    if (t->kind == BITNN_TOKENIZER_WORDPIECE) {
        t->out = t->show; /* a WordPiece token stands for its own UTF-8 */
        t->out.owned = 0;
        return BITNN_OK;
    }
    if (strtab_alloc(&t->out, t->n_vocab, t->show.n_bytes))
        return BITNN_ENOMEM;
    size_t at = 0, n;
    for (size_t i = 0; i < t->n_vocab; i++) {
        t->out.off[i] = at;
        alphabet_bytes(t->show.pool + t->show.off[i], t->show.len[i], t->out.pool + at, &n);
        t->out.len[i] = (uint32_t)n;
        at += n;
    }
    return BITNN_OK;
}

bitnn_status bitnn_tokenizer_build(const bjson *spec, bitnn_tokenizer **out, char *err,
                                   size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (!out)
        return BITNN_EINVAL;
    *out = NULL;
    if (!spec || spec->type != BJSON_OBJECT)
        return fail(err, errlen, "the spec must be a JSON object");
    const bjson *type = bjson_get(spec, "type");
    if (!type || type->type != BJSON_STRING)
        return fail(err, errlen, "\"type\" must be \"byte_bpe\" or \"wordpiece\"");
    bitnn_tokenizer_kind kind;
    const char *const *keys;
    if (strcmp(type->str, "byte_bpe") == 0) {
        kind = BITNN_TOKENIZER_BYTE_BPE;
        keys = BYTE_BPE_KEYS;
    } else if (strcmp(type->str, "wordpiece") == 0) {
        kind = BITNN_TOKENIZER_WORDPIECE;
        keys = WORDPIECE_KEYS;
    } else {
        return fail(err, errlen, "unknown type \"%.40s\" (expected \"byte_bpe\" or \"wordpiece\")",
                    type->str);
    }
    for (size_t k = 0; k < spec->count; k++)
        if (!key_allowed(spec->keys[k], keys))
            return fail(err, errlen, "unknown key \"%.60s\" for type \"%s\"", spec->keys[k],
                        type->str);
    bitnn_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return BITNN_ENOMEM;
    t->kind = kind;
    t->unk_id = -1;
    bitnn_status st = read_vocab(t, spec, err, errlen);
    if (st == BITNN_OK)
        st = kind == BITNN_TOKENIZER_BYTE_BPE ? build_byte_bpe(t, spec, err, errlen)
                                              : build_wordpiece(t, spec, err, errlen);
    if (st == BITNN_OK)
        st = read_added(t, spec, err, errlen);
    if (st == BITNN_OK)
        st = read_template(t, spec, err, errlen);
    if (st == BITNN_OK)
        st = finish_tables(t);
    if (st != BITNN_OK) {
        if (st == BITNN_ENOMEM && err && errlen)
            snprintf(err, errlen, "tokenizer: out of memory");
        bitnn_tokenizer_free(t);
        return st;
    }
    *out = t;
    return BITNN_OK;
}

bitnn_status bitnn_tokenizer_build_json(const char *json, size_t len, bitnn_tokenizer **out,
                                        char *err, size_t errlen)
{
    if (!out || (!json && len))
        return BITNN_EINVAL;
    *out = NULL;
    bjson *spec = NULL;
    bitnn_status st = bjson_parse(json, len, &spec, err, errlen);
    if (st != BITNN_OK)
        return st;
    st = bitnn_tokenizer_build(spec, out, err, errlen);
    bjson_free(spec);
    return st;
}

bitnn_tokenizer_kind bitnn_tokenizer_type(const bitnn_tokenizer *t) { return t->kind; }

int bitnn_tokenizer_missing_byte(const bitnn_tokenizer *t)
{
    if (t->kind != BITNN_TOKENIZER_BYTE_BPE)
        return -1;
    for (int x = 0; x < 256; x++)
        if (t->byte_id[x] < 0)
            return x;
    return -1;
}
size_t bitnn_tokenizer_vocab_size(const bitnn_tokenizer *t) { return t ? t->n_vocab : 0; }

const char *bitnn_tokenizer_token_string(const bitnn_tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || (size_t)id >= t->n_vocab)
        return NULL;
    if (len)
        *len = t->show.len[id];
    return (const char *)t->show.pool + t->show.off[id];
}

const uint8_t *bitnn_tokenizer_token_bytes(const bitnn_tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || (size_t)id >= t->n_vocab)
        return NULL;
    if (len)
        *len = t->out.len[id];
    return t->out.pool + t->out.off[id];
}

int bitnn_tokenizer_is_special(const bitnn_tokenizer *t, int32_t id)
{
    return t && id >= 0 && (size_t)id < t->n_vocab && t->special[id];
}

int32_t bitnn_tokenizer_token_to_id(const bitnn_tokenizer *t, const char *s, size_t len)
{
    if (!t || (!s && len))
        return -1;
    return idmap_get(&t->by_string, (const uint8_t *)s, len);
}

/* ================================================================= normalizers */
static uint16_t props(uint32_t c) { return bitnn_unicode_props(c); }

static const bitnn_unicode_mapping *find_mapping(const bitnn_unicode_mapping *m, size_t n,
                                                 uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m[mid].cp < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && m[lo].cp == c ? &m[lo] : NULL;
}

static uint8_t ccc_of(uint32_t c)
{
    if (!(props(c) & BITNN_U_HAS_CCC))
        return 0;
    size_t lo = 0, hi = bitnn_unicode_ccc_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bitnn_unicode_ccc_table[mid].cp < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return bitnn_unicode_ccc_table[lo].ccc;
}

/* Rust's char::to_lowercase (full mapping: U+0130 becomes two characters). */
static int lower_put(cps_t *out, uint32_t c)
{
    if (c < 0x80) {
        if (c >= 'A' && c <= 'Z')
            c += 32;
        return cps_push(out, c);
    }
    if (props(c) & BITNN_U_HAS_LOWER) {
        const bitnn_unicode_mapping *m =
            find_mapping(bitnn_unicode_lower, bitnn_unicode_lower_count, c);
        if (m) {
            for (unsigned k = 0; k < m->len; k++)
                if (cps_push(out, bitnn_unicode_pool[m->off + k]))
                    return -1;
            return 0;
        }
    }
    return cps_push(out, c);
}

/* NFD: full canonical decomposition, then the canonical ordering of combining marks. */
static int nfd(const cps_t *in, cps_t *out)
{
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->p[i];
        if (c >= 0xAC00 && c <= 0xD7A3) { /* Hangul syllables: algorithmic */
            uint32_t s = c - 0xAC00;
            if (cps_push(out, 0x1100 + s / 588) || cps_push(out, 0x1161 + (s % 588) / 28))
                return -1;
            if (s % 28 && cps_push(out, 0x11A7 + s % 28))
                return -1;
            continue;
        }
        const bitnn_unicode_mapping *m = NULL;
        if (c >= 0xC0 && (props(c) & BITNN_U_HAS_DECOMP))
            m = find_mapping(bitnn_unicode_decomp, bitnn_unicode_decomp_count, c);
        if (m) {
            for (unsigned k = 0; k < m->len; k++)
                if (cps_push(out, bitnn_unicode_pool[m->off + k]))
                    return -1;
        } else if (cps_push(out, c)) {
            return -1;
        }
    }
    /* Stable sort of each run of non-starters by combining class. Runs are short in
     * text; insertion sort is quadratic only in pathological input, so long runs use a
     * stable merge through a scratch copy. */
    size_t i = 0;
    while (i < out->n) {
        if (ccc_of(out->p[i]) == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < out->n && ccc_of(out->p[j]) != 0)
            j++;
        size_t len = j - i;
        if (len <= 64) {
            for (size_t a = i + 1; a < j; a++) {
                uint32_t x = out->p[a];
                uint8_t cx = ccc_of(x);
                size_t b = a;
                while (b > i && ccc_of(out->p[b - 1]) > cx) {
                    out->p[b] = out->p[b - 1];
                    b--;
                }
                out->p[b] = x;
            }
        } else {
            /* counting sort by class: stable, linear */
            size_t count[257] = {0};
            uint32_t *tmp = malloc(len * sizeof(uint32_t));
            if (!tmp)
                return -1;
            for (size_t a = i; a < j; a++)
                count[ccc_of(out->p[a]) + 1]++;
            for (int k = 1; k < 257; k++)
                count[k] += count[k - 1];
            for (size_t a = i; a < j; a++)
                tmp[count[ccc_of(out->p[a])]++] = out->p[a];
            memcpy(out->p + i, tmp, len * sizeof(uint32_t));
            free(tmp);
        }
        i = j;
    }
    return 0;
}

/* HF's BertNormalizer: clean_text, handle_chinese_chars, strip_accents, lowercase. */
static int bert_normalize(enc_ctx *e, const uint8_t *s, size_t n, bytes_t *out)
{
    const bitnn_tokenizer *t = e->tok;
    cps_t *a = &e->cp, *b = &e->cp2;
    a->n = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t c = utf8_next(s, &i);
        if (t->clean_text) {
            if (c == 0 || c == 0xFFFD ||
                (c != '\t' && c != '\n' && c != '\r' && (props(c) & BITNN_U_BERT_CONTROL)))
                continue;
            if (props(c) & BITNN_U_WHITESPACE)
                c = ' ';
        }
        if (t->handle_chinese && (props(c) & BITNN_U_CJK)) {
            if (cps_push(a, ' ') || cps_push(a, c) || cps_push(a, ' '))
                return -1;
        } else if (cps_push(a, c)) {
            return -1;
        }
    }
    if (t->strip_accents) {
        if (nfd(a, b))
            return -1;
        a->n = 0;
        for (size_t k = 0; k < b->n; k++)
            if (!(props(b->p[k]) & BITNN_U_BERT_MN) && cps_push(a, b->p[k]))
                return -1;
    }
    if (t->lowercase) {
        b->n = 0;
        for (size_t k = 0; k < a->n; k++)
            if (lower_put(b, a->p[k]))
                return -1;
        cps_t tmp = *a;
        *a = *b;
        *b = tmp;
    }
    for (size_t k = 0; k < a->n; k++)
        if (utf8_put(out, a->p[k]))
            return -1;
    return 0;
}

/* The normalizer of the tokenizer into out (appended). */
static int normalize(enc_ctx *e, const uint8_t *s, size_t n, bytes_t *out)
{
    const bitnn_tokenizer *t = e->tok;
    if (t->kind == BITNN_TOKENIZER_WORDPIECE)
        return bert_normalize(e, s, n, out);
    if (!t->lowercase)
        return bytes_put(out, s, n);
    e->cp.n = 0;
    size_t i = 0;
    while (i < n)
        if (lower_put(&e->cp, utf8_next(s, &i)))
            return -1;
    for (size_t k = 0; k < e->cp.n; k++)
        if (utf8_put(out, e->cp.p[k]))
            return -1;
    return 0;
}

/* ============================================================== pre-tokenizers */
static int emit_word(enc_ctx *e, const uint8_t *w, size_t n);

enum { CL_LETTER, CL_NUMBER, CL_SPACE, CL_OTHER };

static inline int bl_class(uint32_t c)
{
    uint16_t p = props(c);
    if (p & BITNN_U_BL_LETTER)
        return CL_LETTER;
    if (p & BITNN_U_BL_NUMBER)
        return CL_NUMBER;
    if (p & BITNN_U_WHITESPACE)
        return CL_SPACE;
    return CL_OTHER;
}

/* End of the run of characters of class cls that starts at i. */
static size_t bl_run(const uint8_t *s, size_t n, size_t i, int cls)
{
    while (i < n) {
        size_t j = i;
        if (bl_class(utf8_next(s, &j)) != cls)
            break;
        i = j;
    }
    return i;
}

/* End of the match of the GPT-2 pattern at i, Oniguruma semantics (first alternative
 * that matches, greedy with backtracking):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Every character is in exactly one of L, N, \s, other, so something always matches. */
static size_t bl_match(const uint8_t *s, size_t n, size_t i)
{
    size_t j = i;
    uint32_t c = utf8_next(s, &j);
    if (c == '\'' && j < n) {
        uint8_t a = s[j];
        if (a == 's' || a == 't' || a == 'm' || a == 'd')
            return j + 1;
        if (j + 1 < n && ((a == 'r' && s[j + 1] == 'e') || (a == 'v' && s[j + 1] == 'e') ||
                          (a == 'l' && s[j + 1] == 'l')))
            return j + 2;
    }
    int cls = bl_class(c);
    if (c == ' ' && j < n) {
        size_t k = j;
        int next = bl_class(utf8_next(s, &k));
        if (next != CL_SPACE)
            return bl_run(s, n, j, next); /* " ?" took the space */
    }
    if (cls != CL_SPACE)
        return bl_run(s, n, i, cls);
    /* \s+(?!\S): the whole run when it ends the text, else all of it but its last
     * character (which then starts the next match, e.g. " word"); \s+ when that
     * leaves nothing. */
    size_t k = i, last = i;
    while (k < n) {
        size_t m = k;
        if (bl_class(utf8_next(s, &m)) != CL_SPACE)
            break;
        last = k;
        k = m;
    }
    if (k == n || last == i)
        return k;
    return last;
}

static int byte_level_words(enc_ctx *e, const uint8_t *s, size_t n)
{
    const bitnn_tokenizer *t = e->tok;
    if (n == 0)
        return 0;
    if (t->add_prefix_space && s[0] != ' ') {
        e->prefixed.n = 0;
        if (bytes_put(&e->prefixed, " ", 1) || bytes_put(&e->prefixed, s, n))
            return -1;
        s = e->prefixed.p;
        n = e->prefixed.n;
    }
    if (!t->use_regex)
        return emit_word(e, s, n);
    size_t i = 0;
    while (i < n) {
        size_t j = bl_match(s, n, i);
        if (emit_word(e, s + i, j - i))
            return -1;
        i = j;
    }
    return 0;
}

/* HF's BertPreTokenizer: split on whitespace (dropped), isolate each punctuation mark. */
static int bert_words(enc_ctx *e, const uint8_t *s, size_t n)
{
    size_t i = 0, start = 0;
    while (i < n) {
        size_t j = i;
        uint16_t p = props(utf8_next(s, &j));
        if (p & (BITNN_U_WHITESPACE | BITNN_U_BERT_PUNCT)) {
            if (i > start && emit_word(e, s + start, i - start))
                return -1;
            if ((p & BITNN_U_BERT_PUNCT) && !(p & BITNN_U_WHITESPACE) &&
                emit_word(e, s + i, j - i))
                return -1;
            start = j;
        }
        i = j;
    }
    if (n > start && emit_word(e, s + start, n - start))
        return -1;
    return 0;
}

/* ====================================================================== models */
static void heap_push(enc_ctx *e, bpe_cand c)
{
    /* capacity is reserved by the caller */
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        bpe_cand p = e->heap[parent];
        if (p.rank < c.rank || (p.rank == c.rank && p.pos <= c.pos))
            break;
        e->heap[i] = p;
        i = parent;
    }
    e->heap[i] = c;
}

static bpe_cand heap_pop(enc_ctx *e)
{
    bpe_cand top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        bpe_cand b = last;
        if (l < n && (e->heap[l].rank < b.rank || (e->heap[l].rank == b.rank && e->heap[l].pos < b.pos))) {
            best = l;
            b = e->heap[l];
        }
        if (l + 1 < n && (e->heap[l + 1].rank < b.rank ||
                          (e->heap[l + 1].rank == b.rank && e->heap[l + 1].pos < b.pos))) {
            best = l + 1;
            b = e->heap[l + 1];
        }
        if (best == i)
            break;
        e->heap[i] = b;
        i = best;
    }
    if (n)
        e->heap[i] = last;
    return top;
}

/* BPE on one word's bytes, HF's Word::merge_all: repeatedly apply the merge of lowest
 * rank, leftmost first. A queue entry is stale when its pair has changed since; strings
 * only grow, so checking the merged id is enough (as HF does). */
static int bpe_word(enc_ctx *e, const uint8_t *w, size_t n)
{
    const bitnn_tokenizer *t = e->tok;
    if (t->ignore_merges) {
        int32_t id = idmap_get(&t->model, w, n);
        if (id >= 0)
            return ids_push(&e->out, id);
    }
    if (grow((void **)&e->syms, &e->syms_cap, n, sizeof(bpe_sym)))
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0)
            continue; /* a byte the vocab lacks is dropped, as HF does without an unk token */
        e->syms[m].id = id;
        e->syms[m].prev = (int32_t)m - 1;
        e->syms[m].next = (int32_t)m + 1;
        e->syms[m].alive = 1;
        m++;
    }
    if (m == 0)
        return 0;
    e->syms[m - 1].next = -1;
    /* each merge pushes at most two entries: 3m bounds the queue */
    if (grow((void **)&e->heap, &e->heap_cap, 3 * m, sizeof(bpe_cand)))
        return -1;
    e->heap_n = 0;
    uint32_t rank;
    int32_t merged;
    for (size_t i = 0; i + 1 < m; i++)
        if (merge_get(&t->merges, e->syms[i].id, e->syms[i + 1].id, &rank, &merged))
            heap_push(e, (bpe_cand){rank, (uint32_t)i, merged});
    while (e->heap_n) {
        bpe_cand top = heap_pop(e);
        bpe_sym *cur = &e->syms[top.pos];
        if (!cur->alive || cur->next < 0)
            continue;
        bpe_sym *right = &e->syms[cur->next];
        if (!merge_get(&t->merges, cur->id, right->id, &rank, &merged) || merged != top.merged)
            continue;
        cur->id = merged;
        right->alive = 0;
        cur->next = right->next;
        if (cur->next >= 0)
            e->syms[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0 &&
            merge_get(&t->merges, e->syms[cur->prev].id, cur->id, &rank, &merged))
            heap_push(e, (bpe_cand){rank, (uint32_t)cur->prev, merged});
        if (cur->next >= 0 && merge_get(&t->merges, cur->id, e->syms[cur->next].id, &rank, &merged))
            heap_push(e, (bpe_cand){rank, top.pos, merged});
    }
    for (int32_t i = 0; i >= 0; i = e->syms[i].next)
        if (ids_push(&e->out, e->syms[i].id))
            return -1;
    return 0;
}

/* WordPiece, greedy longest-match-first; the whole word becomes unk when a piece is
 * missing or it has more than max_input_chars_per_word characters. */
static int wordpiece_word(enc_ctx *e, const uint8_t *w, size_t n)
{
    const bitnn_tokenizer *t = e->tok;
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        chars += (w[i] & 0xC0) != 0x80;
    if (chars > t->max_chars)
        return ids_push(&e->out, t->unk_id);
    size_t mark = e->out.n, start = 0;
    while (start < n) {
        size_t plen = start ? t->cont_prefix_len : 0;
        size_t end = n;
        /* nothing longer than the longest token can match */
        if (t->max_token_len < plen)
            end = start;
        else if (end - start > t->max_token_len - plen)
            end = start + (t->max_token_len - plen);
        while (end > start && end < n && (w[end] & 0xC0) == 0x80)
            end--;
        int32_t found = -1;
        while (end > start) {
            if (plen) {
                e->key.n = 0;
                if (bytes_put(&e->key, t->cont_prefix, plen) ||
                    bytes_put(&e->key, w + start, end - start))
                    return -1;
                found = idmap_get(&t->model, e->key.p, e->key.n);
            } else {
                found = idmap_get(&t->model, w + start, end - start);
            }
            if (found >= 0)
                break;
            do
                end--;
            while (end > start && (w[end] & 0xC0) == 0x80);
        }
        if (found < 0) {
            e->out.n = mark;
            return ids_push(&e->out, t->unk_id);
        }
        if (ids_push(&e->out, found))
            return -1;
        start = end;
    }
    return 0;
}

/* ====================================================================== encode */
/* One word through the model, with a per-call cache (words repeat a lot in text). */
static int emit_word(enc_ctx *e, const uint8_t *w, size_t n)
{
    if (n == 0)
        return 0;
    if (e->collect) {
        return bytes_put(&e->pieces, w, n) || sizes_push(&e->ends, e->pieces.n) ||
               ids_push(&e->added, -1);
    }
    uint64_t h = 0;
    wcache_entry *slot = NULL;
    if (n <= WCACHE_MAX_WORD) {
        if (!e->cache) {
            e->cache = calloc(e->cache_slots, sizeof(wcache_entry));
            if (!e->cache)
                return -1;
        }
        h = hash_bytes(w, n) | 1; /* 0 marks an empty slot */
        size_t mask = e->cache_slots - 1;
        for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
            wcache_entry *c = &e->cache[i];
            if (c->hash == 0) {
                slot = e->cache_n < e->cache_slots / 2 ? c : NULL;
                break;
            }
            if (c->hash == h && c->key_len == n &&
                memcmp(e->cache_keys.p + c->key_off, w, n) == 0)
                return ids_put(&e->out, e->cache_ids.p + c->ids_off, c->n_ids);
        }
    }
    size_t before = e->out.n;
    int r = e->tok->kind == BITNN_TOKENIZER_BYTE_BPE ? bpe_word(e, w, n) : wordpiece_word(e, w, n);
    if (r)
        return -1;
    if (slot) {
        slot->hash = h;
        slot->key_off = e->cache_keys.n;
        slot->key_len = (uint32_t)n;
        slot->ids_off = e->cache_ids.n;
        slot->n_ids = (uint32_t)(e->out.n - before);
        if (bytes_put(&e->cache_keys, w, n) ||
            ids_put(&e->cache_ids, e->out.p + before, e->out.n - before))
            return -1;
        e->cache_n++;
    }
    return 0;
}

static int emit_added(enc_ctx *e, int32_t id, const uint8_t *s, size_t n)
{
    if (e->collect)
        return bytes_put(&e->pieces, s, n) || sizes_push(&e->ends, e->pieces.n) ||
               ids_push(&e->added, id);
    return ids_push(&e->out, id);
}

/* A gap between raw-matched added tokens: normalize, split out the normalized added
 * tokens, pre-tokenize and run the model on what is left. */
static int encode_gap(enc_ctx *e, const uint8_t *s, size_t n)
{
    const bitnn_tokenizer *t = e->tok;
    if (n == 0)
        return 0;
    e->norm.n = 0;
    if (normalize(e, s, n, &e->norm))
        return -1;
    const uint8_t *ns = e->norm.p;
    size_t nn = e->norm.n, pos = 0, start, len;
    int32_t id;
    for (;;) {
        int found = patset_find(&t->norm_added, ns, nn, pos, &start, &len, &id);
        size_t end = found ? start : nn;
        if (end > pos) {
            int r = t->kind == BITNN_TOKENIZER_BYTE_BPE ? byte_level_words(e, ns + pos, end - pos)
                                                        : bert_words(e, ns + pos, end - pos);
            if (r)
                return -1;
        }
        if (!found)
            return 0;
        if (emit_added(e, id, ns + start, len))
            return -1;
        pos = start + len;
    }
}

static int encode_text(enc_ctx *e, const uint8_t *text, size_t len, unsigned flags)
{
    const bitnn_tokenizer *t = e->tok;
    /* about one distinct word per 16 bytes of text is plenty */
    e->cache_slots = 64;
    while (e->cache_slots < WCACHE_MAX_SLOTS && e->cache_slots < len / 8)
        e->cache_slots *= 2;
    const uint8_t *s;
    if (utf8_repair(text, len, &e->repaired, &s))
        return -1;
    size_t n = s == text ? len : e->repaired.n;
    if ((flags & BITNN_TOK_ADD_SPECIAL) && !e->collect && ids_put(&e->out, t->prefix, t->n_prefix))
        return -1;
    size_t pos = 0, start, mlen;
    int32_t id;
    for (;;) {
        int found = patset_find(&t->raw_added, s, n, pos, &start, &mlen, &id);
        size_t end = found ? start : n;
        if (end > pos && encode_gap(e, s + pos, end - pos))
            return -1;
        if (!found)
            break;
        if (emit_added(e, id, s + start, mlen))
            return -1;
        pos = start + mlen;
    }
    if ((flags & BITNN_TOK_ADD_SPECIAL) && !e->collect && ids_put(&e->out, t->suffix, t->n_suffix))
        return -1;
    return 0;
}

bitnn_status bitnn_tokenizer_encode(const bitnn_tokenizer *tok, const char *text, size_t len,
                                    unsigned flags, int32_t **ids, size_t *n)
{
    if (!tok || !ids || !n || (!text && len) || len > (size_t)INT32_MAX)
        return BITNN_EINVAL;
    *ids = NULL;
    *n = 0;
    enc_ctx e;
    memset(&e, 0, sizeof e);
    e.tok = tok;
    if (encode_text(&e, (const uint8_t *)text, len, flags)) {
        enc_free(&e);
        return BITNN_ENOMEM;
    }
    if (e.out.n) {
        *ids = e.out.p;
        *n = e.out.n;
        e.out.p = NULL;
    }
    enc_free(&e);
    return BITNN_OK;
}

bitnn_status bitnn_tokenizer_pretokenize(const bitnn_tokenizer *tok, const char *text,
                                         size_t len, char **pieces, size_t **ends,
                                         int32_t **added, size_t *count)
{
    if (!tok || !pieces || !ends || !added || !count || (!text && len) ||
        len > (size_t)INT32_MAX)
        return BITNN_EINVAL;
    enc_ctx e;
    memset(&e, 0, sizeof e);
    e.tok = tok;
    e.collect = 1;
    /* non-NULL results even when empty, so that callers can always free() them */
    if (encode_text(&e, (const uint8_t *)text, len, 0) || bytes_put(&e.pieces, "", 0) ||
        grow((void **)&e.pieces.p, &e.pieces.cap, 1, 1) ||
        grow((void **)&e.ends.p, &e.ends.cap, 1, sizeof(size_t)) ||
        grow((void **)&e.added.p, &e.added.cap, 1, sizeof(int32_t))) {
        enc_free(&e);
        return BITNN_ENOMEM;
    }
    *pieces = (char *)e.pieces.p;
    *ends = e.ends.p;
    *added = e.added.p;
    *count = e.ends.n;
    e.pieces.p = NULL;
    e.ends.p = NULL;
    e.added.p = NULL;
    enc_free(&e);
    return BITNN_OK;
}

/* ====================================================================== decode */
/* HF's WordPiece decoder cleanup, applied to each token's piece in this order. */
static const char *const CLEANUP[][2] = {
    {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
    {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};

static int replace_all(bytes_t *s, bytes_t *tmp, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    if (s->n < fl)
        return 0;
    tmp->n = 0;
    size_t i = 0;
    int any = 0;
    while (i < s->n) {
        if (i + fl <= s->n && memcmp(s->p + i, from, fl) == 0) {
            if (bytes_put(tmp, to, tl))
                return -1;
            i += fl;
            any = 1;
        } else {
            if (bytes_put(tmp, s->p + i, 1))
                return -1;
            i++;
        }
    }
    if (any) {
        bytes_t x = *s;
        *s = *tmp;
        *tmp = x;
    }
    return 0;
}

bitnn_status bitnn_tokenizer_decode(const bitnn_tokenizer *tok, const int32_t *ids, size_t n,
                                    unsigned flags, char **out, size_t *len, size_t *bad_index)
{
    if (!tok || !out || !len || (!ids && n))
        return BITNN_EINVAL;
    *out = NULL;
    *len = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= tok->n_vocab) {
            if (bad_index)
                *bad_index = i;
            return BITNN_EINVAL;
        }
    bytes_t b = {0}, piece = {0}, tmp = {0};
    int first = !(flags & BITNN_TOK_CONTINUE), fail_ = 0;
    for (size_t i = 0; i < n && !fail_; i++) {
        int32_t id = ids[i];
        if ((flags & BITNN_TOK_SKIP_SPECIAL) && tok->special[id])
            continue;
        const uint8_t *s = tok->out.pool + tok->out.off[id];
        size_t sl = tok->out.len[id];
        if (tok->kind == BITNN_TOKENIZER_BYTE_BPE) {
            fail_ = bytes_put(&b, s, sl);
            continue;
        }
        piece.n = 0;
        if (!first) {
            if (sl >= tok->cont_prefix_len && memcmp(s, tok->cont_prefix, tok->cont_prefix_len) == 0) {
                s += tok->cont_prefix_len;
                sl -= tok->cont_prefix_len;
            } else {
                fail_ = bytes_put(&piece, " ", 1);
            }
        }
        first = 0;
        fail_ = fail_ || bytes_put(&piece, s, sl);
        if (tok->cleanup)
            for (size_t k = 0; k < sizeof CLEANUP / sizeof CLEANUP[0] && !fail_; k++)
                fail_ = replace_all(&piece, &tmp, CLEANUP[k][0], CLEANUP[k][1]);
        fail_ = fail_ || bytes_put(&b, piece.p, piece.n);
    }
    free(piece.p);
    free(tmp.p);
    if (fail_) {
        free(b.p);
        return BITNN_ENOMEM;
    }
    if (b.n) {
        *out = (char *)b.p;
        *len = b.n;
    } else {
        free(b.p);
    }
    return BITNN_OK;
}
