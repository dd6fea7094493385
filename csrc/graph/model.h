/*
 * model.h - a model graph built from a validated .bnb file, and its forward
 * pass. The builder checks that the layer list in the header is consistent
 * with itself and with the tensors (every failure is BITNN_EFORMAT with a
 * message); forward never re-checks the graph.
 */
#ifndef BITNN_MODEL_H
#define BITNN_MODEL_H

#include "bitnn.h"
#include "bnb.h"
#include "conv.h"

typedef enum {
    BITNN_LAYER_CONV2D = 0,
    BITNN_LAYER_MAXPOOL2D = 1,
    BITNN_LAYER_GLOBAL_AVG_POOL = 2,
    BITNN_LAYER_LINEAR = 3,
    BITNN_LAYER_FLATTEN = 4 /* image (H, W, C) -> vector of H*W*C in that memory order */
} bitnn_layer_kind;

typedef struct {
    bitnn_layer_kind kind;
    bitnn_act act;          /* conv2d, linear */
    int norm_per_position;  /* conv2d: 1 = "c" (over C at each position), 0 = "chw" */
    size_t in, out;         /* channels (conv2d) or features (linear) */
    size_t size;            /* conv2d: kernel f; maxpool2d: window and stride */
    size_t H, W;            /* spatial size of the layer's input (1 x 1 for vectors) */
    bitnn_weights w;        /* [out][size*size*in] or [out][in], packed for the kernels */
    const uint64_t *b;      /* packed [out] bits */
} bitnn_layer;

typedef struct {
    size_t C, H, W;         /* input image, NHWC */
    size_t classes;         /* outputs of the last layer */
    float eps;
    bitnn_precision precision; /* numeric mode of every binary layer (set after build) */
    size_t n_layers;
    bitnn_layer *layers;
    size_t first_linear;    /* index of the first linear layer: layers from here
                               on run batched over images */
    size_t max_act;         /* largest per-image activation, in floats */
    size_t max_channels;    /* widest activation channel count (pooling scratch) */
    float pre_scale;        /* input.preprocess: uint8 x -> (x * scale - mean[c]) / std[c] */
    float *pre_mean, *pre_std; /* [C], float32 as the header's numbers round */
    const bjson *labels;    /* the header's "labels" (classes strings), or NULL if absent */
} bitnn_classifier;

/* Shared by the model builders: write a message and return BITNN_EFORMAT;
 * read obj[key] as an integer in [lo, hi] (1 on success). */
bitnn_status bitnn_format_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int bitnn_meta_size(const bjson *obj, const char *key, size_t lo, size_t hi, size_t *out);
/* The same with a message naming the key path ("lm.emb_dim must be ..."). */
bitnn_status bitnn_meta_int(const bjson *obj, const char *path, const char *key, size_t lo,
                            size_t hi, size_t *out, char *err, size_t errlen);
/* obj must be an object whose keys are all in the NULL-terminated list keys
 * (keys NULL: any key); path names it in the message. */
bitnn_status bitnn_meta_object(const bjson *obj, const char *path, const char *const *keys,
                               char *err, size_t errlen);

/* The header's "model" object checked (an object of "kind" (a string) and an
 * optional "name" (a string)); *kind points into the file's parsed header. */
bitnn_status bitnn_model_kind(const bnb_file *f, const char **kind, char *err, size_t errlen);
/* model.kind == want_kind, and "eps" a number in (0, 1), > 0 as a float32. */
bitnn_status bitnn_model_common(const bnb_file *f, const char *want_kind, float *eps, char *err,
                                size_t errlen);

/* The bits tensor `name` of f, which must have exactly this shape; `what`
 * prefixes the error message. Shared by the model builders. */
bitnn_status bitnn_model_bits(const bnb_file *f, const char *name, int ndim,
                              const uint64_t *shape, const uint64_t **out, const char *what,
                              char *err, size_t errlen);

/* Build from an open file (which must outlive the model: weights point into it). */
bitnn_status bitnn_classifier_build(const bnb_file *f, bitnn_classifier **out, char *err,
                                    size_t errlen);
void bitnn_classifier_free(bitnn_classifier *m);

/* probs (N, classes) for N images x (N, H, W, C) float32 NHWC, already
 * preprocessed. */
/* The buffers of the forward pass, kept between calls (the decoder's
 * bitnn_lm_state pattern). One state serves one call at a time. */
typedef struct {
    float *a, *b;  /* the activation of one image, twice (max_act floats) */
    double *acc;   /* pooling sums (max_channels) */
    bitnn_conv_ws conv; /* a convolution's buffers */
    bitnn_buf q8;       /* int8 scratch of a fused relu + max-pool (bitnn_conv_relu_q8_map) */
    size_t n_wx;
    bitnn_buf *wx;      /* n_wx = the model's layers: a convolution's weights as int8 kernels want them
                           (bitnn_conv2d_raw fills them on first use) */
    bitnn_buf va, vb; /* the batched linear part */
    bitnn_gemm_ws *ws;  /* the linear layers' buffers */
} bitnn_classifier_state;

bitnn_status bitnn_classifier_state_new(const bitnn_classifier *m, bitnn_classifier_state **out);
void bitnn_classifier_state_free(bitnn_classifier_state *s);

/* s: a state of m, or NULL for buffers made for this call. nchw: x is
 * (N, C, H, W) instead, turned into NHWC image by image here (a strided copy
 * that numpy makes several times slower). */
bitnn_status bitnn_classifier_forward(const bitnn_classifier *m, bitnn_classifier_state *s,
                                      const float *x, size_t N, int nchw,
                                      float *probs, int isa, bitnn_pool *pool);

#endif
