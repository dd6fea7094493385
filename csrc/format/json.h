/*
 * json.h - a small strict JSON parser for .bnb headers (RFC 8259).
 *
 * Strict: rejects duplicate object keys, nesting deeper than BJSON_MAX_DEPTH,
 * invalid UTF-8 and unpaired surrogates in strings, control characters in
 * strings, leading zeros, trailing bytes after the value, and any NUL byte.
 * Numbers are parsed to double (strtod-compatible, locale independent).
 */
#ifndef BITNN_JSON_H
#define BITNN_JSON_H

#include <stddef.h>

#include "bitnn.h"

#define BJSON_MAX_DEPTH 64       /* nested arrays/objects */
#define BJSON_MAX_NODES (1 << 22) /* values in one text (bounds the tree's memory) */

typedef enum {
    BJSON_NULL, BJSON_FALSE, BJSON_TRUE, BJSON_NUMBER, BJSON_STRING, BJSON_ARRAY, BJSON_OBJECT
} bjson_type;

typedef struct bjson bjson;
struct bjson {
    bjson_type type;
    double number;      /* BJSON_NUMBER */
    char *str;          /* BJSON_STRING: decoded UTF-8, NUL-terminated;
                           BJSON_NUMBER: the literal as written (for bjson_get_int) */
    size_t len;         /* BJSON_STRING / BJSON_NUMBER: bytes of str, without the NUL */
    size_t count;       /* BJSON_ARRAY / BJSON_OBJECT: number of items */
    bjson *items;       /* BJSON_ARRAY / BJSON_OBJECT: the values, in file order */
    char **keys;        /* BJSON_OBJECT: key of items[i], NUL-terminated */
};

/* Parse text[0..len) (need not be NUL-terminated). On failure returns
 * BITNN_EFORMAT with a message that names the byte offset and the problem
 * ("byte 17: duplicate key \"a\" (first at byte 2)"), or BITNN_ENOMEM.
 * \u0000 escapes are rejected too, so every string is a C string.
 * *out is freed with bjson_free (the root only). */
bitnn_status bjson_parse(const char *text, size_t len, bjson **out, char *err, size_t errlen);
void bjson_free(bjson *v);

/* Member of an object by key, or NULL (also when v is not an object). */
const bjson *bjson_get(const bjson *v, const char *key);
/* A number that is an exact integer in [lo, hi] -> 1 and *out, else 0.
 * Decided on the literal, not the double: 9007199254740993 is exact, 15 and
 * 1.5e1 are 15, 1.5 and 1e-1 are not integers. */
int bjson_get_int(const bjson *v, long long lo, long long hi, long long *out);

#endif
