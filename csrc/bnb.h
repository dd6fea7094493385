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
                           cols = prod(shape[1:]) bits, ceil(cols/64) words a row */
    BNB_DTYPE_F32 = 1   /* little-endian IEEE binary32, C order */
} bnb_dtype;

typedef struct {
    const char *name;            /* key in the header's "tensors" object */
    bnb_dtype dtype;
    int ndim;                    /* 1..BNB_MAX_DIMS */
    uint64_t shape[BNB_MAX_DIMS];
    uint64_t rows, cols;         /* BITS: the 2-D view; F32: rows = shape[0], cols = rest */
    uint64_t offset, nbytes;     /* within the data region */
    const void *data;            /* 64-byte aligned when memory-mapped */
} bnb_tensor;

typedef struct bnb_file bnb_file;

enum { BNB_OPEN_NO_MMAP = 1 }; /* read the file into memory instead of mmap */

/* Open and fully validate a file. On failure returns BITNN_EFORMAT (the
 * message in err says what is wrong), BITNN_ESYS (open/read/mmap failed;
 * err has strerror) or BITNN_ENOMEM. */
bitnn_status bnb_open(const char *path, int flags, bnb_file **out, char *err, size_t errlen);
/* Same, from a buffer (copied). Used by tests and fuzzing. */
bitnn_status bnb_open_buffer(const void *buf, size_t len, bnb_file **out, char *err, size_t errlen);
void bnb_close(bnb_file *f);

const bjson *bnb_meta(const bnb_file *f);                 /* the parsed header */
const char *bnb_header_text(const bnb_file *f, size_t *len); /* the raw JSON */
size_t bnb_tensor_count(const bnb_file *f);
const bnb_tensor *bnb_tensor_at(const bnb_file *f, size_t i);
const bnb_tensor *bnb_tensor_find(const bnb_file *f, const char *name); /* NULL if absent */
uint64_t bnb_file_size(const bnb_file *f);

/* The checksum of docs/format.md (64-bit FNV-1a), exposed for the writer's tests. */
uint64_t bnb_checksum(const void *data, size_t len);

#endif
