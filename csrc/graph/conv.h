/* conv.h - convolution and pooling on NHWC activations of one image. */
#ifndef BITNN_CONV_H
#define BITNN_CONV_H

#include "bitnn.h"
#include "kernels.h"

/* A convolution's buffers, kept between calls by the caller (a classifier
 * state): the input's tables, the quantized input map, and one slot of rows
 * per thread. Allocating them per call costs page faults whenever other
 * work in the process has returned the memory to the system. */
typedef struct {
    bitnn_buf map, q, rows;
} bitnn_conv_ws;

/* z (H*W, Cout) = raw binary 'same' convolution of x (H, W, C), stride 1, odd
 * f, weights w of Cout = w->N rows [Cout][f*f*C] ordered (dy, dx, c) (packed
 * with bitnn_weights_pack for the fp32 mode), plus bias bits
 * (may be NULL). No Normalize. With BITNN_PRECISION_INT8 the input map is
 * quantized with one scale for the image (amax / 127) and the sums are exact
 * integers (docs/packing.md). ws holds the buffers between calls (may be
 * NULL: buffers for this call). */
bitnn_status bitnn_conv2d_raw(const float *x, size_t H, size_t W, size_t C,
                              const bitnn_weights *w, size_t f, const uint64_t *bias, float *z,
                              bitnn_precision prec, int isa, bitnn_pool *pool, bitnn_conv_ws *ws);
void bitnn_conv_ws_free(bitnn_conv_ws *ws);

/* k x k max-pool with stride k, floor: y is (H/k, W/k, C). Output rows are
 * shared out over the pool (may be NULL). */
void bitnn_maxpool2d(const float *x, size_t H, size_t W, size_t C, size_t k, float *y,
                     bitnn_pool *pool);

/* y[c] = mean over positions of x (H, W, C); acc is scratch of C doubles. */
void bitnn_global_avgpool(const float *x, size_t H, size_t W, size_t C, float *y, double *acc);

#endif
