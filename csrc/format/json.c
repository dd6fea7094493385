/*
 * json.c - the strict JSON parser of json.h (RFC 8259), for .bnb headers.
 *
 * Recursive descent, with the recursion capped at BJSON_MAX_DEPTH nested
 * arrays/objects and the tree capped at BJSON_MAX_NODES values, so a hostile
 * header can neither overflow the C stack nor make the tree more than a
 * bounded multiple of the text. Every read is checked against the end of the
 * text (the text need not be NUL-terminated), every allocation is checked,
 * and a failure frees whatever was built so far.
 *
 * Numbers: the literal is kept as written (bjson.str) so that
 * bjson_get_int can decide exactly whether it is an integer, even beyond
 * 2^53 where a double cannot tell; bjson.number is the nearest double,
 * converted with strtod in a way that does not depend on LC_NUMERIC.
 */
#define _POSIX_C_SOURCE 200809L
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *s; /* the text, len bytes, not NUL-terminated */
    size_t len;
    size_t pos;             /* next byte to read */
    size_t nodes;           /* values created so far (BJSON_MAX_NODES) */
    char *err;
    size_t errlen;
    bitnn_status status;    /* the failure, once one happened */
} parser;

/* ------------------------------------------------------------- errors */
static int fail(parser *ps, size_t at, const char *fmt, ...)
{
    if (ps->status != BITNN_OK) return -1; /* keep the first message */
    ps->status = BITNN_EFORMAT;
    if (ps->err && ps->errlen) {
        int n = snprintf(ps->err, ps->errlen, "byte %zu: ", at);
        if (n >= 0 && (size_t)n < ps->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

static int oom(parser *ps)
{
    if (ps->status != BITNN_OK) return -1;
    ps->status = BITNN_ENOMEM;
    if (ps->err && ps->errlen) snprintf(ps->err, ps->errlen, "out of memory while parsing JSON");
    return -1;
}

/* A short description of the byte at pos, for "expected X, found Y". */
static const char *found(const parser *ps, size_t pos, char *buf, size_t n)
{
    if (pos >= ps->len) return "end of text";
    unsigned c = ps->s[pos];
    if (c >= 0x21 && c < 0x7f) snprintf(buf, n, "'%c'", (int)c);
    else snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

/* ------------------------------------------------------------ helpers */
static void skip_ws(parser *ps)
{
    while (ps->pos < ps->len) {
        unsigned char c = ps->s[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        ps->pos++;
    }
}

static int count_node(parser *ps)
{
    if (++ps->nodes > BJSON_MAX_NODES)
        return fail(ps, ps->pos, "more than %d values in the JSON text", BJSON_MAX_NODES);
    return 0;
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (n >= 1), or 0.
 * Rejects overlong forms, surrogates (U+D800..DFFF) and code points above
 * U+10FFFF (Unicode 15, table 3-7). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) k = 2;
    else if (c == 0xE0) { k = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) k = 3;
    else if (c == 0xED) { k = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) k = 3;
    else if (c == 0xF0) { k = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) k = 4;
    else if (c == 0xF4) { k = 4; hi = 0x8F; }
    else return 0;
    if (n < k) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return k;
}

static int hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(unsigned cp, char *dst)
{
    if (cp < 0x80) { if (dst) dst[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        if (dst) { dst[0] = (char)(0xC0 | (cp >> 6)); dst[1] = (char)(0x80 | (cp & 0x3F)); }
        return 2;
    }
    if (cp < 0x10000) {
        if (dst) {
            dst[0] = (char)(0xE0 | (cp >> 12));
            dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
            dst[2] = (char)(0x80 | (cp & 0x3F));
        }
        return 3;
    }
    if (dst) {
        dst[0] = (char)(0xF0 | (cp >> 18));
        dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[3] = (char)(0x80 | (cp & 0x3F));
    }
    return 4;
}

/* ------------------------------------------------------------ strings */
/* Scan the string whose opening quote is at ps->pos. With dst == NULL only
 * validate and return the decoded length in *dlen; with dst, also write the
 * decoded bytes (the text was validated by the first pass). On success
 * ps->pos is just past the closing quote. */
static int scan_string(parser *ps, char *dst, size_t *dlen)
{
    const size_t start = ps->pos;
    size_t i = start + 1, n = 0;
    for (;;) {
        if (i >= ps->len) return fail(ps, start, "unterminated string");
        unsigned c = ps->s[i];
        if (c == '"') break;
        if (c < 0x20)
            return fail(ps, i, "control character 0x%02x in a string (write it as an escape)", c);
        if (c == '\\') {
            if (i + 1 >= ps->len) return fail(ps, start, "unterminated string");
            unsigned e = ps->s[i + 1];
            const char *simple = NULL;
            switch (e) {
            case '"': simple = "\""; break;
            case '\\': simple = "\\"; break;
            case '/': simple = "/"; break;
            case 'b': simple = "\b"; break;
            case 'f': simple = "\f"; break;
            case 'n': simple = "\n"; break;
            case 'r': simple = "\r"; break;
            case 't': simple = "\t"; break;
            case 'u': break;
            default:
                return fail(ps, i, "invalid escape '\\%c' in a string", e >= 0x21 && e < 0x7f ? (int)e : '?');
            }
            if (simple) {
                if (dst) dst[n] = simple[0];
                n++;
                i += 2;
                continue;
            }
            unsigned cp;
            if (ps->len - i < 6 || hex4(ps->s + i + 2, &cp) != 0)
                return fail(ps, i, "'\\u' must be followed by four hex digits");
            size_t esc = 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(ps, i, "unpaired low surrogate \\u%04X in a string", cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (ps->len - i < 12 || ps->s[i + 6] != '\\' || ps->s[i + 7] != 'u' ||
                    hex4(ps->s + i + 8, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                    return fail(ps, i, "high surrogate \\u%04X is not followed by a low surrogate", cp);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                esc = 12;
            }
            if (cp == 0) return fail(ps, i, "\\u0000 (NUL) is not allowed in a string");
            n += put_utf8(cp, dst ? dst + n : NULL);
            i += esc;
            continue;
        }
        size_t k = utf8_seq(ps->s + i, ps->len - i);
        if (k == 0) return fail(ps, i, "invalid UTF-8 in a string");
        if (dst) memcpy(dst + n, ps->s + i, k);
        n += k;
        i += k;
    }
    ps->pos = i + 1;
    *dlen = n;
    return 0;
}

/* Decode the string at ps->pos into a new NUL-terminated buffer. */
static int parse_string(parser *ps, char **out, size_t *outlen)
{
    const size_t start = ps->pos;
    size_t n;
    if (scan_string(ps, NULL, &n) != 0) return -1;
    char *buf = malloc(n + 1); /* n < len <= SIZE_MAX: cannot overflow */
    if (!buf) return oom(ps);
    ps->pos = start;
    scan_string(ps, buf, &n); /* validated above: cannot fail */
    buf[n] = 0;
    *out = buf;
    *outlen = n;
    return 0;
}

/* ------------------------------------------------------------ numbers */
static int is_digit(unsigned c) { return c >= '0' && c <= '9'; }

/* strtod on a validated literal, independent of the C locale's decimal
 * point: the '.' is replaced with whatever the current locale uses. */
static double literal_to_double(const char *lit, size_t n, int *range_error)
{
    const char *dp = localeconv()->decimal_point;
    size_t dpl = (dp && dp[0]) ? strlen(dp) : 1;
    char small[128];
    size_t need = n + dpl + 1;
    char *buf = need <= sizeof small ? small : malloc(need);
    if (!buf) { *range_error = 2; return 0.0; }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (lit[i] == '.' && dp && dp[0]) { memcpy(buf + j, dp, dpl); j += dpl; }
        else buf[j++] = lit[i];
    }
    buf[j] = 0;
    errno = 0;
    char *end = NULL;
    double v = strtod(buf, &end);
    *range_error = (errno == ERANGE && isinf(v)) || end != buf + j;
    if (buf != small) free(buf);
    return v;
}

static int parse_number(parser *ps, bjson *v)
{
    const size_t start = ps->pos;
    size_t i = start;
    if (i < ps->len && ps->s[i] == '-') i++;
    if (i >= ps->len || !is_digit(ps->s[i])) return fail(ps, i, "expected a digit");
    if (ps->s[i] == '0') {
        i++;
        if (i < ps->len && is_digit(ps->s[i])) return fail(ps, start, "leading zeros are not allowed in numbers");
    } else {
        while (i < ps->len && is_digit(ps->s[i])) i++;
    }
    if (i < ps->len && ps->s[i] == '.') {
        i++;
        if (i >= ps->len || !is_digit(ps->s[i])) return fail(ps, i, "expected a digit after '.'");
        while (i < ps->len && is_digit(ps->s[i])) i++;
    }
    if (i < ps->len && (ps->s[i] == 'e' || ps->s[i] == 'E')) {
        i++;
        if (i < ps->len && (ps->s[i] == '+' || ps->s[i] == '-')) i++;
        if (i >= ps->len || !is_digit(ps->s[i])) return fail(ps, i, "expected a digit in the exponent");
        while (i < ps->len && is_digit(ps->s[i])) i++;
    }
    const size_t n = i - start;
    char *lit = malloc(n + 1);
    if (!lit) return oom(ps);
    memcpy(lit, ps->s + start, n);
    lit[n] = 0;
    int bad = 0;
    double d = literal_to_double(lit, n, &bad);
    if (bad == 2) { free(lit); return oom(ps); }
    if (bad) { free(lit); return fail(ps, start, "number out of the range of a double"); }
    v->type = BJSON_NUMBER;
    v->number = d;
    v->str = lit;
    v->len = n;
    ps->pos = i;
    return 0;
}

/* ---------------------------------------------------------- containers */
static int parse_value(parser *ps, bjson *v, int depth);

static void free_contents(bjson *v)
{
    if (v->items) {
        for (size_t i = 0; i < v->count; i++) free_contents(&v->items[i]);
        free(v->items);
    }
    if (v->keys) {
        for (size_t i = 0; i < v->count; i++) free(v->keys[i]);
        free(v->keys);
    }
    free(v->str);
    memset(v, 0, sizeof *v);
}

/* Make room for one more item in items (and keys when non-NULL). */
static int grow(parser *ps, bjson **items, char ***keys, size_t **kpos, size_t n, size_t *cap)
{
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 8;
    if (nc > SIZE_MAX / sizeof(bjson)) return oom(ps);
    bjson *ni = realloc(*items, nc * sizeof(bjson));
    if (!ni) return oom(ps);
    *items = ni;
    if (keys) {
        char **nk = realloc(*keys, nc * sizeof(char *));
        if (!nk) return oom(ps);
        *keys = nk;
        size_t *np = realloc(*kpos, nc * sizeof(size_t));
        if (!np) return oom(ps);
        *kpos = np;
    }
    *cap = nc;
    return 0;
}

static int parse_array(parser *ps, bjson *v, int depth)
{
    const size_t start = ps->pos;
    if (depth >= BJSON_MAX_DEPTH)
        return fail(ps, start, "arrays and objects nested deeper than %d levels", BJSON_MAX_DEPTH);
    ps->pos++; /* '[' */
    bjson *items = NULL;
    size_t n = 0, cap = 0;
    char fb[16];
    skip_ws(ps);
    if (ps->pos < ps->len && ps->s[ps->pos] == ']') {
        ps->pos++;
    } else {
        for (;;) {
            if (grow(ps, &items, NULL, NULL, n, &cap) != 0) goto fail;
            memset(&items[n], 0, sizeof(bjson));
            if (parse_value(ps, &items[n], depth + 1) != 0) goto fail;
            n++;
            skip_ws(ps);
            if (ps->pos < ps->len && ps->s[ps->pos] == ',') { ps->pos++; continue; }
            if (ps->pos < ps->len && ps->s[ps->pos] == ']') { ps->pos++; break; }
            fail(ps, ps->pos, "expected ',' or ']' in the array that starts at byte %zu, found %s",
                 start, found(ps, ps->pos, fb, sizeof fb));
            goto fail;
        }
    }
    v->type = BJSON_ARRAY;
    v->items = items;
    v->count = n;
    return 0;
fail:
    for (size_t i = 0; i < n; i++) free_contents(&items[i]);
    free(items);
    return -1;
}

typedef struct {
    const char *key;
    size_t pos;
} key_at;

static int cmp_key_at(const void *a, const void *b)
{
    const key_at *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c) return c;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Duplicate keys: sort (key, position) pairs, compare neighbours. */
static int check_duplicates(parser *ps, char **keys, const size_t *kpos, size_t n)
{
    if (n < 2) return 0;
    key_at *ka = malloc(n * sizeof *ka); /* n <= BJSON_MAX_NODES */
    if (!ka) return oom(ps);
    for (size_t i = 0; i < n; i++) { ka[i].key = keys[i]; ka[i].pos = kpos[i]; }
    qsort(ka, n, sizeof *ka, cmp_key_at);
    int rc = 0;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(ka[i - 1].key, ka[i].key) == 0) {
            /* quote at most 60 bytes of the key, cut at a UTF-8 boundary */
            size_t kl = strlen(ka[i].key), ql = kl;
            if (ql > 60) { ql = 60; while (ql && ((unsigned char)ka[i].key[ql] & 0xC0) == 0x80) ql--; }
            rc = fail(ps, ka[i].pos, "duplicate key \"%.*s\"%s (first at byte %zu)", (int)ql, ka[i].key,
                      ql < kl ? "..." : "", ka[i - 1].pos);
            break;
        }
    }
    free(ka);
    return rc;
}

static int parse_object(parser *ps, bjson *v, int depth)
{
    const size_t start = ps->pos;
    if (depth >= BJSON_MAX_DEPTH)
        return fail(ps, start, "arrays and objects nested deeper than %d levels", BJSON_MAX_DEPTH);
    ps->pos++; /* '{' */
    bjson *items = NULL;
    char **keys = NULL;
    size_t *kpos = NULL;
    size_t n = 0, cap = 0;
    char fb[16];
    skip_ws(ps);
    if (ps->pos < ps->len && ps->s[ps->pos] == '}') {
        ps->pos++;
    } else {
        for (;;) {
            if (grow(ps, &items, &keys, &kpos, n, &cap) != 0) goto fail;
            skip_ws(ps);
            if (ps->pos >= ps->len || ps->s[ps->pos] != '"') {
                fail(ps, ps->pos, "expected a string key in the object that starts at byte %zu, found %s",
                     start, found(ps, ps->pos, fb, sizeof fb));
                goto fail;
            }
            size_t klen;
            kpos[n] = ps->pos;
            if (parse_string(ps, &keys[n], &klen) != 0) goto fail;
            memset(&items[n], 0, sizeof(bjson));
            n++; /* the key is owned from here on; items[n-1] is an empty value */
            skip_ws(ps);
            if (ps->pos >= ps->len || ps->s[ps->pos] != ':') {
                fail(ps, ps->pos, "expected ':' after an object key, found %s", found(ps, ps->pos, fb, sizeof fb));
                goto fail;
            }
            ps->pos++;
            if (parse_value(ps, &items[n - 1], depth + 1) != 0) goto fail;
            skip_ws(ps);
            if (ps->pos < ps->len && ps->s[ps->pos] == ',') { ps->pos++; continue; }
            if (ps->pos < ps->len && ps->s[ps->pos] == '}') { ps->pos++; break; }
            fail(ps, ps->pos, "expected ',' or '}' in the object that starts at byte %zu, found %s",
                 start, found(ps, ps->pos, fb, sizeof fb));
            goto fail;
        }
    }
    if (check_duplicates(ps, keys, kpos, n) != 0) goto fail;
    free(kpos);
    v->type = BJSON_OBJECT;
    v->items = items;
    v->keys = keys;
    v->count = n;
    return 0;
fail:
    for (size_t i = 0; i < n; i++) {
        free_contents(&items[i]);
        free(keys[i]);
    }
    free(items);
    free(keys);
    free(kpos);
    return -1;
}

/* Parse one value at ps->pos (after whitespace) into *v, which is zeroed.
 * On failure *v is left zeroed (nothing to free). depth = enclosing
 * containers. */
static int parse_value(parser *ps, bjson *v, int depth)
{
    char fb[16];
    skip_ws(ps);
    if (count_node(ps) != 0) return -1;
    if (ps->pos >= ps->len) return fail(ps, ps->pos, "expected a value, found end of text");
    const unsigned char c = ps->s[ps->pos];
    const size_t rest = ps->len - ps->pos;
    switch (c) {
    case '{': return parse_object(ps, v, depth);
    case '[': return parse_array(ps, v, depth);
    case '"':
        if (parse_string(ps, &v->str, &v->len) != 0) return -1;
        v->type = BJSON_STRING;
        return 0;
    case 't':
        if (rest >= 4 && memcmp(ps->s + ps->pos, "true", 4) == 0) {
            v->type = BJSON_TRUE;
            ps->pos += 4;
            return 0;
        }
        break;
    case 'f':
        if (rest >= 5 && memcmp(ps->s + ps->pos, "false", 5) == 0) {
            v->type = BJSON_FALSE;
            ps->pos += 5;
            return 0;
        }
        break;
    case 'n':
        if (rest >= 4 && memcmp(ps->s + ps->pos, "null", 4) == 0) {
            v->type = BJSON_NULL;
            ps->pos += 4;
            return 0;
        }
        break;
    default:
        if (c == '-' || is_digit(c)) return parse_number(ps, v);
    }
    return fail(ps, ps->pos, "expected a value, found %s", found(ps, ps->pos, fb, sizeof fb));
}

/* -------------------------------------------------------------- public */
bitnn_status bjson_parse(const char *text, size_t len, bjson **out, char *err, size_t errlen)
{
    parser ps = {(const unsigned char *)text, len, 0, 0, err, errlen, BITNN_OK};
    if (err && errlen) err[0] = 0;
    if (!out) return BITNN_EINVAL;
    *out = NULL;
    if (!text && len) return BITNN_EINVAL;
    const unsigned char *nul = len ? memchr(text, 0, len) : NULL;
    if (nul) {
        fail(&ps, (size_t)(nul - ps.s), "NUL byte in the JSON text");
        return ps.status;
    }
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        fail(&ps, 0, "byte order mark (U+FEFF) before the JSON text is not allowed");
        return ps.status;
    }
    bjson *root = calloc(1, sizeof *root);
    if (!root) {
        oom(&ps);
        return ps.status;
    }
    if (parse_value(&ps, root, 0) != 0) {
        free(root);
        return ps.status;
    }
    skip_ws(&ps);
    if (ps.pos != len) {
        char fb[16];
        fail(&ps, ps.pos, "unexpected %s after the JSON value", found(&ps, ps.pos, fb, sizeof fb));
        bjson_free(root);
        return ps.status;
    }
    *out = root;
    return BITNN_OK;
}

void bjson_free(bjson *v)
{
    if (!v) return;
    free_contents(v);
    free(v);
}

const bjson *bjson_get(const bjson *v, const char *key)
{
    if (!v || v->type != BJSON_OBJECT || !key) return NULL;
    for (size_t i = 0; i < v->count; i++)
        if (strcmp(v->keys[i], key) == 0) return &v->items[i];
    return NULL;
}

/* Exact: the literal's digits and exponent are examined, not the double, so
 * 9007199254740993 is 9007199254740993 and 1.5e1 is 15 (an integer), while
 * 0.5e1 is 5 and 1e-1 is not an integer. */
int bjson_get_int(const bjson *v, long long lo, long long hi, long long *out)
{
    if (!v || v->type != BJSON_NUMBER || !v->str) return 0;
    const char *s = v->str;
    int neg = 0;
    if (*s == '-') { neg = 1; s++; }
    /* significant digits: integer part then fraction, as one digit string */
    const char *int_b = s;
    while (is_digit((unsigned char)*s)) s++;
    const char *int_e = s, *frac_b = s, *frac_e = s;
    if (*s == '.') {
        frac_b = ++s;
        while (is_digit((unsigned char)*s)) s++;
        frac_e = s;
    }
    long long exp10 = 0; /* clamped: beyond +-10^6 the answer is the same */
    if (*s == 'e' || *s == 'E') {
        s++;
        int eneg = 0;
        if (*s == '+' || *s == '-') eneg = *s++ == '-';
        while (is_digit((unsigned char)*s)) {
            if (exp10 < 1000000) exp10 = exp10 * 10 + (*s - '0');
            s++;
        }
        if (eneg) exp10 = -exp10;
    }
    /* digits d[0..nd) = int part ++ fraction; value = d * 10^(exp10 - fraction length) */
    char d[64];
    size_t nd = 0;
    int lead = 1;
    for (int part = 0; part < 2; part++) {
        const char *b = part ? frac_b : int_b, *e = part ? frac_e : int_e;
        for (const char *p = b; p < e; p++) {
            if (part) exp10--;
            if (lead && *p == '0') continue; /* leading zeros carry no value */
            lead = 0;
            if (nd == sizeof d) {
                /* more than 64 significant digits: only fine if all the rest are zeros
                 * that an exponent would move past; treat as too large or inexact */
                if (*p != '0') return 0;
                exp10++; /* a trailing zero: fold it into the exponent */
                continue;
            }
            d[nd++] = *p;
        }
    }
    while (nd > 0 && d[nd - 1] == '0') { nd--; exp10++; }
    unsigned long long mag = 0;
    if (nd > 0) {
        if (exp10 < 0) return 0;                     /* has a fraction */
        if ((long long)nd + exp10 > 20) return 0;    /* >= 10^20 > any long long */
        for (size_t i = 0; i < nd; i++) {
            unsigned dig = (unsigned)(d[i] - '0');
            if (mag > (ULLONG_MAX - dig) / 10) return 0;
            mag = mag * 10 + dig;
        }
        for (long long i = 0; i < exp10; i++) {
            if (mag > ULLONG_MAX / 10) return 0;
            mag *= 10;
        }
    }
    long long val;
    if (neg) {
        if (mag > (unsigned long long)LLONG_MAX + 1ull) return 0;
        val = mag == (unsigned long long)LLONG_MAX + 1ull ? LLONG_MIN : -(long long)mag;
    } else {
        if (mag > (unsigned long long)LLONG_MAX) return 0;
        val = (long long)mag;
    }
    if (val < lo || val > hi) return 0;
    if (out) *out = val;
    return 1;
}
