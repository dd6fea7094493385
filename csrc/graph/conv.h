/* conv.h - convolution and pooling on NHWC activations of one image. */
#ifndef BITNN_CONV_H
#define BITNN_CONV_H

#include "bitnn.h"
#include "kernels.h"

/* The largest kernel size (odd) the convolutions take: the format's limit
 * (docs/format.md, kernel_size 1 .. 31). */
#define BITNN_CONV_MAX_F 31

/* A convolution's buffers, kept between calls by the caller (a classifier
 * state): on the direct int8 path the weights as bytes when the caller gives
 * none (wx), the quantized input map (padded on the direct path), and one
 * slot of scratch per thread (im2col rows, tables, or the ring of table rows).
 * Allocating them per call costs page faults whenever other work in the
 * process has returned the memory to the system. */
typedef struct {
    bitnn_buf wx, q, rows;
} bitnn_conv_ws;

/* z (H*W, Cout) = raw binary 'same' convolution of x (H, W, C), stride 1, odd
 * f <= BITNN_CONV_MAX_F, weights w of Cout = w->N rows [Cout][f*f*C] ordered (dy, dx, c) (packed
 * with bitnn_weights_pack for the fp32 mode), plus bias bits
 * (may be NULL). No Normalize. With BITNN_PRECISION_INT8 the input map is
 * quantized with one scale for the image (amax / 127) and the sums are exact
 * integers (docs/packing.md). ws holds the buffers between calls (may be
 * NULL: buffers for this call). */
bitnn_status bitnn_conv2d_raw(const float *x, size_t H, size_t W, size_t C,
                              const bitnn_weights *w, size_t f, const uint64_t *bias, float *z,
                              bitnn_precision prec, int isa, bitnn_pool *pool, bitnn_conv_ws *ws,
                              bitnn_buf *wx, float *zmax);

/* The weights of a convolution as the direct int8 kernels want them
 * (bitnn_conv_q8_fn, kernels.h): bitnn_conv_q8_bytes(N, f, C) bytes, made
 * from the packed rows by bitnn_conv_expand_q8. wx of bitnn_conv2d_raw: a
 * buffer the caller keeps for this layer (empty at first): the call that
 * takes the direct path fills it and later calls reuse it; NULL: made for
 * each such call. Other paths leave it alone. zmax (may be NULL): the
 * largest value of z (the direct kernel finds it as it stores z; other
 * paths take one more pass). */
size_t bitnn_conv_q8_bytes(size_t N, size_t f, size_t C);

/* 1 where bitnn_conv2d_raw runs the direct int8 kernel (precision int8 and
 * an isa whose kernel set has conv_q8 and no AMX gemm_q8m). Then a caller
 * that already has the input quantized (the previous layer's output, with
 * its amax) can skip the quantization: bitnn_conv_q8_map gives the padded
 * map in ws (borders zeroed; pixel (r, x) of the image at
 * map + ((r + f/2) * (W + f - 1) + x + f/2) * Cp, Cp = C rounded up to a
 * multiple of 4, channels past C the caller's to zero; NULL when out of
 * memory), the caller fills it, and bitnn_conv2d_q8_map runs the
 * convolution on it: z as bitnn_conv2d_raw's for an input whose max |x| is
 * amax. */
int bitnn_conv_direct_q8(bitnn_precision prec, int isa);
/* The next convolution's padded int8 map (kernel f) in ws from a relu layer
 * normalized over its whole map: the map of relu((float)((z - mean) * inv))
 * (H, W, C), after a k x k max-pool when k > 1 (k dividing H and W; scratch
 * then holds the pooled raw sums, H * W * C / k^2 floats), quantized with
 * amax, which must be the largest of those values. The same bytes as
 * bitnn_normalize_act, then bitnn_maxpool2d, then the quantization of
 * bitnn_conv2d_raw: the relu values and the quantization are monotone in z,
 * so the max-pool commutes with them, and it runs first, on the raw sums
 * (relu never gives -0.0, and the raw sums are never -0.0 either). C a
 * multiple of 4. */
bitnn_status bitnn_conv_relu_q8_map(const float *z, size_t H, size_t W, size_t C, double mean,
                                    double inv, float amax, size_t k, size_t f, bitnn_conv_ws *ws,
                                    bitnn_buf *scratch, bitnn_pool *pool);
int8_t *bitnn_conv_q8_map(bitnn_conv_ws *ws, size_t H, size_t W, size_t C, size_t f);
bitnn_status bitnn_conv2d_q8_map(const bitnn_weights *w, size_t H, size_t W, size_t C, size_t f,
                                 const uint64_t *bias, float *z, float amax, int isa,
                                 bitnn_pool *pool, bitnn_conv_ws *ws, bitnn_buf *wx, float *zmax);
void bitnn_conv_expand_q8(const uint64_t *bits, size_t N, size_t f, size_t C, uint8_t *wx);
void bitnn_conv_ws_free(bitnn_conv_ws *ws);

/* k x k max-pool with stride k, floor: y is (H/k, W/k, C). Output rows are
 * shared out over the pool (may be NULL). */
void bitnn_maxpool2d(const float *x, size_t H, size_t W, size_t C, size_t k, float *y,
                     bitnn_pool *pool);

/* y[c] = mean over positions of x (H, W, C); acc is scratch of C doubles. */
void bitnn_global_avgpool(const float *x, size_t H, size_t W, size_t C, float *y, double *acc);

#endif
