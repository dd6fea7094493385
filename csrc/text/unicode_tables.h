/*
 * unicode_tables.h - character data of the tokenizer, generated into unicode_tables.c
 * by tools/gen_unicode_tables.py. The Unicode version of each property is the one HF
 * `tokenizers` uses for it (the generator's docstring says which and why).
 */
#ifndef BITNN_UNICODE_TABLES_H
#define BITNN_UNICODE_TABLES_H

#include <stddef.h>
#include <stdint.h>

enum {
    BITNN_U_BL_LETTER = 1 << 0,    /* byte-level regex \p{L} */
    BITNN_U_BL_NUMBER = 1 << 1,    /* byte-level regex \p{N} */
    BITNN_U_WHITESPACE = 1 << 2,   /* \s == White_Space */
    BITNN_U_BERT_CONTROL = 1 << 3, /* BERT clean_text removes it (Cc, Cf, Co) */
    BITNN_U_BERT_MN = 1 << 4,      /* BERT strip_accents removes it (Mn) */
    BITNN_U_BERT_PUNCT = 1 << 5,   /* BERT pre-tokenizer isolates it */
    BITNN_U_CJK = 1 << 6,          /* BERT handle_chinese_chars pads it with spaces */
    BITNN_U_HAS_LOWER = 1 << 7,    /* in bitnn_unicode_lower */
    BITNN_U_HAS_DECOMP = 1 << 8,   /* in bitnn_unicode_decomp (Hangul is algorithmic) */
    BITNN_U_HAS_CCC = 1 << 9       /* in bitnn_unicode_ccc_table */
};

/* A code point mapped to pool[off .. off+len), sorted by cp. */
typedef struct {
    uint32_t cp;
    uint16_t off;
    uint8_t len;
} bitnn_unicode_mapping;

typedef struct {
    uint32_t cp;
    uint8_t ccc;
} bitnn_unicode_ccc;

uint16_t bitnn_unicode_props(uint32_t cp); /* 0 for cp >= 0x110000 */

extern const uint32_t bitnn_unicode_pool[];
extern const bitnn_unicode_mapping bitnn_unicode_lower[];   /* full lowercase mapping */
extern const size_t bitnn_unicode_lower_count;
extern const bitnn_unicode_mapping bitnn_unicode_decomp[];  /* full canonical decomposition */
extern const size_t bitnn_unicode_decomp_count;
extern const bitnn_unicode_ccc bitnn_unicode_ccc_table[];   /* non-zero combining classes */
extern const size_t bitnn_unicode_ccc_count;

#endif
