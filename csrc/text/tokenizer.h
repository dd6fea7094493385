/*
 * tokenizer.h - text <-> token ids, inside the runtime (no HF `tokenizers` needed).
 *
 * Two kinds, both giving the ids HF `tokenizers` gives for the same tokenizer:
 *  - "byte_bpe": byte-level BPE (GPT-2 style pre-tokenizer regex, lossless);
 *  - "wordpiece": BERT normalizer + BERT pre-tokenizer + WordPiece.
 * The spec is a JSON object (the "tokenizer" key of a .bnb header) whose schema is in
 * ../docs/tokenizer.md. A built tokenizer is immutable: any number of threads may
 * encode and decode with it at once.
 *
 * Text in is bytes. Invalid UTF-8 is read the way Python's
 * bytes.decode("utf-8", "replace") reads it: each maximal invalid subpart becomes
 * U+FFFD. Text out (decode) is bytes: a byte-level tokenizer gives back exactly the
 * bytes it encoded, which may split a UTF-8 sequence between tokens; hold back
 * bitnn_utf8_incomplete_tail() bytes when streaming.
 */
#ifndef BITNN_TOKENIZER_H
#define BITNN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "bitnn.h"
#include "json.h"

typedef struct bitnn_tokenizer bitnn_tokenizer;

typedef enum { BITNN_TOKENIZER_BYTE_BPE = 0, BITNN_TOKENIZER_WORDPIECE = 1 } bitnn_tokenizer_kind;

enum {
    BITNN_TOK_ADD_SPECIAL = 1u << 0,  /* encode: wrap in the spec's "template" prefix/suffix */
    BITNN_TOK_SKIP_SPECIAL = 1u << 1, /* decode: leave out tokens marked special */
    BITNN_TOK_CONTINUE = 1u << 2      /* decode: ids continue an earlier decode (WordPiece:
                                         the first id is not the start of the text) */
};

/* Build from a parsed spec. BITNN_EFORMAT with a message in err for a bad spec
 * (unknown key, duplicate token, merge naming an unknown token, ...). */
bitnn_status bitnn_tokenizer_build(const bjson *spec, bitnn_tokenizer **out, char *err,
                                   size_t errlen);
/* The same from the spec's JSON text (parsed with bjson_parse). */
bitnn_status bitnn_tokenizer_build_json(const char *json, size_t len, bitnn_tokenizer **out,
                                        char *err, size_t errlen);
void bitnn_tokenizer_free(bitnn_tokenizer *tok);

bitnn_tokenizer_kind bitnn_tokenizer_type(const bitnn_tokenizer *tok);
size_t bitnn_tokenizer_vocab_size(const bitnn_tokenizer *tok);
/* byte_bpe: the smallest byte value that is no model token (text holding it loses it
 * when encoded), or -1 when all 256 are; WordPiece: -1. */
int bitnn_tokenizer_missing_byte(const bitnn_tokenizer *tok);
/* The vocab string of id as the spec holds it (byte-level: HF's byte alphabet), or NULL
 * for an id out of range. Not NUL-terminated. */
const char *bitnn_tokenizer_token_string(const bitnn_tokenizer *tok, int32_t id, size_t *len);
/* The bytes id stands for in text (byte-level: the raw bytes; WordPiece: the UTF-8 of
 * the vocab string, "##" included), or NULL for an id out of range. */
const uint8_t *bitnn_tokenizer_token_bytes(const bitnn_tokenizer *tok, int32_t id, size_t *len);
/* 1 for an added token marked special, 0 otherwise (and for an id out of range). */
int bitnn_tokenizer_is_special(const bitnn_tokenizer *tok, int32_t id);
/* The id of a vocab string, or -1. */
int32_t bitnn_tokenizer_token_to_id(const bitnn_tokenizer *tok, const char *s, size_t len);

/* Encode text[0..len) (text may be NULL when len is 0; len < 2^31). On success *ids is
 * a malloc'd array of *n ids (free() it; NULL when *n is 0). flags:
 * BITNN_TOK_ADD_SPECIAL. */
bitnn_status bitnn_tokenizer_encode(const bitnn_tokenizer *tok, const char *text, size_t len,
                                    unsigned flags, int32_t **ids, size_t *n);

/* Decode ids[0..n) into a malloc'd buffer *out of *len bytes (free() it; NULL when *len
 * is 0). Byte-level: the concatenated token bytes. WordPiece: HF's WordPiece decoder
 * (tokens joined by spaces, continuation prefix removed, optional cleanup). flags:
 * BITNN_TOK_SKIP_SPECIAL, BITNN_TOK_CONTINUE. BITNN_EINVAL for an id out of range, and
 * *bad_index (when not NULL) says which. */
bitnn_status bitnn_tokenizer_decode(const bitnn_tokenizer *tok, const int32_t *ids, size_t n,
                                    unsigned flags, char **out, size_t *len, size_t *bad_index);

/* For tests and debugging: the pieces the model sees. On success *text holds the pieces
 * back to back (byte-level: raw bytes; WordPiece: normalized words), piece i ends at
 * (*ends)[i], and (*added)[i] is the id of an added token matched there or -1. All
 * three are malloc'd (free() them). */
bitnn_status bitnn_tokenizer_pretokenize(const bitnn_tokenizer *tok, const char *text,
                                         size_t len, char **pieces, size_t **ends,
                                         int32_t **added, size_t *count);

/* How many bytes at the end of buf[0..len) are the start of a UTF-8 sequence that more
 * bytes could still complete (0..3). A stream decoder emits buf[0 .. len - tail) and
 * keeps the tail for later: decoding the emitted pieces one by one with U+FFFD
 * replacement then gives the same text as decoding everything at once. */
size_t bitnn_utf8_incomplete_tail(const char *buf, size_t len);

#endif
