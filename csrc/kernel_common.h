/*
 * kernel_common.h - plain-C helpers shared by the per-ISA kernel files
 * (no intrinsics here: each kernel file includes it under its own flags).
 */
#ifndef BITNN_KERNEL_COMMON_H
#define BITNN_KERNEL_COMMON_H

#include <string.h>

#include "kernels.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Output rows are processed in slabs whose bits fit in L2, so that a batch
 * of input rows streams the weights once per slab instead of once per row. */
#define SLAB_BYTES (128u * 1024u)

/* The 16 weight bits of chunk c (elements 16c .. 16c+15) of a packed row. */
ALWAYS_INLINE uint16_t chunk16(const uint64_t *row, size_t c)
{
    uint16_t v;
    memcpy(&v, (const unsigned char *)row + 2 * c, sizeof v);
    return v;
}

#endif
