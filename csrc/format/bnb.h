/*
 * bnb.h - the .bnb model file: open, validate, and look up tensors.
 * The format is specified in docs/format.md. Every check happens in
 * bnb_open; a bnb_file that was returned is safe to use as described.
 */
#ifndef BITNN_BNB_H
#define BITNN_BNB_H

#include <stdint.h>

#include "bitnn.h"
#include "json.h"

#define BNB_VERSION 1
#define BNB_MAX_DIMS 4
#define BNB_MAX_HEADER (64u << 20) /* JSON header cap: 64 MiB */
#define BNB_ALIGN 64

typedef enum {
    BNB_DTYPE_BITS = 0, /* packed {0,1}, docs/packing.md: rows = shape[0],
                           cols = prod(shape[1:]) bits, ceil(cols/64) words a row;
                           a 1-D shape [n] is one row: rows = 1, cols = n */
    BNB_DTYPE_F32 = 1   /* little-endian IEEE binary32, C order */
} bnb_dtype;

typedef struct {
    const char *name;            /* key in the header's "tensors" object */
    bnb_dtype dtype;
    int ndim;                    /* 1..BNB_MAX_DIMS */
    uint64_t shape[BNB_MAX_DIMS]; /* each 1..2^40; entries from ndim on are 1 */
    uint64_t rows, cols;         /* BITS: the 2-D view (above); F32: rows = shape[0],
                                    cols = product of the rest (1 for 1-D) */
    uint64_t offset, nbytes;     /* within the data region */
    const void *data;            /* 64-byte aligned (mmap'd or read into an aligned buffer) */
} bnb_tensor;

typedef struct bnb_file bnb_file;

enum { BNB_OPEN_NO_MMAP = 1 }; /* read the file into memory instead of mmap */

/* Open and fully validate a file. On failure returns BITNN_EFORMAT (the
 * message in err says what is wrong), BITNN_ESYS (open/read/mmap failed;
 * err has strerror, and errno is the OS error on return: ENOENT, EACCES,
 * EISDIR for a directory, EINVAL for another non-regular file) or
 * BITNN_ENOMEM. Versions read: BNB_VERSION (1) only.
 * A memory-mapped file must not be truncated by another process while it
 * is open (SIGBUS); BNB_OPEN_NO_MMAP reads it into memory instead. */
bitnn_status bnb_open(const char *path, int flags, bnb_file **out, char *err, size_t errlen);
/* Same, from a buffer (copied). Used by tests and fuzzing. */
bitnn_status bnb_open_buffer(const void *buf, size_t len, bnb_file **out, char *err, size_t errlen);
void bnb_close(bnb_file *f);

const bjson *bnb_meta(const bnb_file *f);                 /* the parsed header */
const char *bnb_header_text(const bnb_file *f, size_t *len); /* the raw JSON */
size_t bnb_tensor_count(const bnb_file *f);
/* i-th tensor in the order of the header's "tensors" object; NULL if i >= count. */
const bnb_tensor *bnb_tensor_at(const bnb_file *f, size_t i);
const bnb_tensor *bnb_tensor_find(const bnb_file *f, const char *name); /* NULL if absent */
uint64_t bnb_file_size(const bnb_file *f);

/* The checksum of docs/format.md (64-bit FNV-1a), exposed for the writer's tests. */
uint64_t bnb_checksum(const void *data, size_t len);
/* The same in pieces: h = BNB_CHECKSUM_INIT, then h = bnb_checksum_update(h, piece, n)
 * over consecutive pieces gives bnb_checksum of their concatenation. */
#define BNB_CHECKSUM_INIT 0xcbf29ce484222325ull /* FNV-1a 64-bit offset basis */
uint64_t bnb_checksum_update(uint64_t h, const void *data, size_t len);

#endif
