/*
 * model.c - the image classifier graph (docs/maths.md, any widths/depth):
 * conv2d / maxpool2d / global_avg_pool layers per image on NHWC activations,
 * then linear layers batched over the images.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "model.h"

#define MAX_LAYERS 4096
#define MAX_DIM 65536
#define MAX_ACT ((size_t)1 << 30) /* floats per image in any activation */

bitnn_status bitnn_format_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return BITNN_EFORMAT;
}

int bitnn_meta_size(const bjson *obj, const char *key, size_t lo, size_t hi, size_t *out)
{
    long long v;
    if (!bjson_get_int(bjson_get(obj, key), (long long)lo, (long long)hi, &v)) return 0;
    *out = (size_t)v;
    return 1;
}

#define fail bitnn_format_fail
#define get_size bitnn_meta_size

static int parse_act(const bjson *v, bitnn_act *out)
{
    if (!v) { /* absent: linear */
        *out = BITNN_ACT_LINEAR;
        return 1;
    }
    if (v->type != BJSON_STRING) return 0;
    static const char *const names[] = {"linear", "relu", "gelu", "softmax"};
    for (int i = 0; i < 4; i++)
        if (strcmp(v->str, names[i]) == 0) {
            *out = (bitnn_act)i;
            return 1;
        }
    return 0;
}

/* Two activation buffers and the pooling accumulator of one image. A forward
 * pass takes them if no other call holds them (a try-lock), so back-to-back
 * predictions reuse warm memory instead of faulting in fresh pages; a
 * concurrent call allocates its own. */
struct bitnn_scratch {
    atomic_flag busy;
    float *a, *b;
    double *acc;
};

bitnn_status bitnn_model_bits(const bnb_file *f, const char *name, int ndim,
                              const uint64_t *shape, const uint64_t **out, const char *what,
                              char *err, size_t errlen)
{
    const bnb_tensor *t = bnb_tensor_find(f, name);
    if (!t) return fail(err, errlen, "%s: tensor '%s' is not in the file", what, name);
    if (t->dtype != BNB_DTYPE_BITS)
        return fail(err, errlen, "%s: tensor '%s' must be bits", what, name);
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char want[96] = "", got[96] = "";
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%llu", d ? ", " : "",
                     (unsigned long long)shape[d]);
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", d ? ", " : "",
                     (unsigned long long)t->shape[d]);
        return fail(err, errlen, "%s: tensor '%s' has shape [%s], expected [%s]", what, name, got,
                    want);
    }
    *out = t->data;
    return BITNN_OK;
}

/* The bits tensor named by obj[key], which must have exactly the given shape. */
static bitnn_status get_bits(const bnb_file *f, const bjson *obj, const char *key, size_t li,
                             const char *type, int ndim, const uint64_t *shape,
                             const uint64_t **out, char *err, size_t errlen)
{
    const bjson *name = bjson_get(obj, key);
    if (!name || name->type != BJSON_STRING)
        return fail(err, errlen, "layer %zu (%s): \"%s\" must name a tensor", li, type, key);
    char what[64];
    snprintf(what, sizeof what, "layer %zu (%s)", li, type);
    return bitnn_model_bits(f, name->str, ndim, shape, out, what, err, errlen);
}

bitnn_status bitnn_classifier_build(const bnb_file *f, bitnn_classifier **out, char *err,
                                    size_t errlen)
{
    *out = NULL;
    const bjson *meta = bnb_meta(f);
    const bjson *model = bjson_get(meta, "model");
    const bjson *kind = bjson_get(model, "kind");
    if (!kind || kind->type != BJSON_STRING || strcmp(kind->str, "classifier") != 0)
        return fail(err, errlen, "model.kind must be \"classifier\" for an image classifier");
    const bjson *eps = bjson_get(meta, "eps");
    if (!eps || eps->type != BJSON_NUMBER || !(eps->number > 0) || !(eps->number < 1.0))
        return fail(err, errlen, "\"eps\" must be a number in (0, 1)");
    const bjson *input = bjson_get(meta, "input");
    size_t C, H, W;
    if (!get_size(input, "channels", 1, MAX_DIM, &C) || !get_size(input, "height", 1, MAX_DIM, &H) ||
        !get_size(input, "width", 1, MAX_DIM, &W))
        return fail(err, errlen, "\"input\" must give channels, height and width (1..%d)", MAX_DIM);
    if (C * H * W > MAX_ACT) return fail(err, errlen, "input of %zu x %zu x %zu is too large", C, H, W);
    const bjson *layers = bjson_get(meta, "layers");
    if (!layers || layers->type != BJSON_ARRAY || layers->count == 0 || layers->count > MAX_LAYERS)
        return fail(err, errlen, "\"layers\" must be a list of 1..%d layers", MAX_LAYERS);

    bitnn_classifier *m = calloc(1, sizeof *m);
    bitnn_layer *L = m ? calloc(layers->count, sizeof *L) : NULL;
    if (!L) {
        free(m);
        return BITNN_ENOMEM;
    }
    m->C = C, m->H = H, m->W = W, m->eps = (float)eps->number, m->layers = L;
    m->n_layers = layers->count;
    m->first_linear = layers->count;
    m->max_act = C * H * W;
    m->max_channels = C;

    /* Walk the shape through the graph: (h, w, c) spatial, or a vector of c. */
    size_t h = H, w = W, c = C;
    int spatial = 1;
    bitnn_status s = BITNN_OK;
    for (size_t i = 0; i < layers->count && s == BITNN_OK; i++) {
        const bjson *ly = &layers->items[i];
        const bjson *type = bjson_get(ly, "type");
        if (!type || type->type != BJSON_STRING) {
            s = fail(err, errlen, "layer %zu: \"type\" must be a string", i);
            break;
        }
        const char *t = type->str;
        L[i].H = spatial ? h : 1, L[i].W = spatial ? w : 1, L[i].in = c;
        if (i > m->first_linear && strcmp(t, "linear") != 0) {
            s = fail(err, errlen, "layer %zu (%s): only linear layers may follow a linear layer", i, t);
        } else if (strcmp(t, "conv2d") == 0) {
            size_t cin, cout, k;
            const bjson *norm = bjson_get(ly, "norm");
            if (!spatial)
                s = fail(err, errlen, "layer %zu (conv2d): input is no longer an image", i);
            else if (!get_size(ly, "in_channels", 1, MAX_DIM, &cin) ||
                     !get_size(ly, "out_channels", 1, MAX_DIM, &cout) ||
                     !get_size(ly, "kernel_size", 1, 31, &k) || k % 2 == 0)
                s = fail(err, errlen, "layer %zu (conv2d): in_channels, out_channels (1..%d) and an "
                         "odd kernel_size (1..31) are required", i, MAX_DIM);
            else if (cin != c)
                s = fail(err, errlen, "layer %zu (conv2d): in_channels %zu does not match the %zu "
                         "channels coming in", i, cin, c);
            else if (!parse_act(bjson_get(ly, "activation"), &L[i].act))
                s = fail(err, errlen, "layer %zu (conv2d): unknown activation", i);
            else if (norm && (norm->type != BJSON_STRING ||
                              (strcmp(norm->str, "chw") != 0 && strcmp(norm->str, "c") != 0)))
                s = fail(err, errlen, "layer %zu (conv2d): norm must be \"chw\" or \"c\"", i);
            else if (h * w * cout > MAX_ACT)
                s = fail(err, errlen, "layer %zu (conv2d): activation too large", i);
            else {
                const uint64_t ws[4] = {cout, k, k, cin}, bs[1] = {cout};
                L[i].kind = BITNN_LAYER_CONV2D, L[i].out = cout, L[i].size = k;
                L[i].norm_per_position = norm && strcmp(norm->str, "c") == 0;
                s = get_bits(f, ly, "weight", i, t, 4, ws, &L[i].w, err, errlen);
                if (s == BITNN_OK) s = get_bits(f, ly, "bias", i, t, 1, bs, &L[i].b, err, errlen);
                c = cout;
            }
        } else if (strcmp(t, "maxpool2d") == 0) {
            size_t k;
            if (!spatial)
                s = fail(err, errlen, "layer %zu (maxpool2d): input is no longer an image", i);
            else if (!get_size(ly, "size", 1, MAX_DIM, &k))
                s = fail(err, errlen, "layer %zu (maxpool2d): \"size\" must be a positive integer", i);
            else if (h < k || w < k)
                s = fail(err, errlen, "layer %zu (maxpool2d): window %zu is larger than the %zu x %zu "
                         "input", i, k, h, w);
            else {
                L[i].kind = BITNN_LAYER_MAXPOOL2D, L[i].size = k, L[i].out = c;
                h /= k, w /= k;
            }
        } else if (strcmp(t, "global_avg_pool") == 0) {
            if (!spatial)
                s = fail(err, errlen, "layer %zu (global_avg_pool): input is no longer an image", i);
            L[i].kind = BITNN_LAYER_GLOBAL_AVG_POOL, L[i].out = c;
            spatial = 0;
        } else if (strcmp(t, "linear") == 0) {
            size_t fin, fout;
            if (spatial)
                s = fail(err, errlen, "layer %zu (linear): needs a vector input (add global_avg_pool "
                         "before it)", i);
            else if (!get_size(ly, "in_features", 1, 1u << 24, &fin) ||
                     !get_size(ly, "out_features", 1, 1u << 24, &fout))
                s = fail(err, errlen, "layer %zu (linear): in_features and out_features are required", i);
            else if (fin != c)
                s = fail(err, errlen, "layer %zu (linear): in_features %zu does not match the %zu "
                         "features coming in", i, fin, c);
            else if (!parse_act(bjson_get(ly, "activation"), &L[i].act))
                s = fail(err, errlen, "layer %zu (linear): unknown activation", i);
            else {
                const uint64_t ws[2] = {fout, fin}, bs[1] = {fout};
                L[i].kind = BITNN_LAYER_LINEAR, L[i].out = fout;
                if (m->first_linear == layers->count) m->first_linear = i;
                s = get_bits(f, ly, "weight", i, t, 2, ws, &L[i].w, err, errlen);
                if (s == BITNN_OK) s = get_bits(f, ly, "bias", i, t, 1, bs, &L[i].b, err, errlen);
                c = fout;
            }
        } else {
            s = fail(err, errlen, "layer %zu: unknown type \"%s\" for a classifier", i, t);
        }
        const size_t act = spatial ? h * w * c : c;
        if (act > m->max_act) m->max_act = act;
        if (c > m->max_channels) m->max_channels = c;
    }
    if (s == BITNN_OK && (spatial || m->first_linear == layers->count))
        s = fail(err, errlen, "the last layer must be a linear layer giving the class scores");
    if (s == BITNN_OK) {
        const bjson *labels = bjson_get(meta, "labels");
        if (labels && (labels->type != BJSON_ARRAY || labels->count != c))
            s = fail(err, errlen, "\"labels\" must list %zu class names, one per output", c);
    }
    if (s != BITNN_OK) {
        bitnn_classifier_free(m);
        return s;
    }
    m->classes = c;
    m->scratch = calloc(1, sizeof *m->scratch);
    if (!m->scratch) {
        bitnn_classifier_free(m);
        return BITNN_ENOMEM;
    }
    atomic_flag_clear(&m->scratch->busy);
    *out = m;
    return BITNN_OK;
}

void bitnn_classifier_free(bitnn_classifier *m)
{
    if (!m) return;
    if (m->scratch) free(m->scratch->a), free(m->scratch->b), free(m->scratch->acc);
    free(m->scratch);
    free(m->layers);
    free(m);
}

bitnn_status bitnn_classifier_forward(const bitnn_classifier *m, const float *x, size_t N,
                                      float *probs, int isa, bitnn_pool *pool)
{
    if (!m || (!x && N) || (!probs && N)) return BITNN_EINVAL;
    if (N == 0) return BITNN_OK;
    const size_t feat = m->layers[m->first_linear].in;
    const size_t image = m->C * m->H * m->W;
    struct bitnn_scratch *sc = m->scratch;
    const int own = !atomic_flag_test_and_set(&sc->busy);
    float *a, *b;
    double *acc;
    if (own) {
        if (!sc->a) sc->a = malloc(m->max_act * sizeof(float));
        if (!sc->b) sc->b = malloc(m->max_act * sizeof(float));
        if (!sc->acc) sc->acc = malloc(m->max_channels * sizeof(double));
        a = sc->a, b = sc->b, acc = sc->acc;
    } else {
        a = malloc(m->max_act * sizeof(float));
        b = malloc(m->max_act * sizeof(float));
        acc = malloc(m->max_channels * sizeof(double));
    }
    float *const a0 = a, *const b0 = b;
    /* Batched part: two (N, max features) buffers. */
    size_t widest = feat;
    for (size_t i = m->first_linear; i < m->n_layers; i++)
        if (m->layers[i].out > widest) widest = m->layers[i].out;
    float *va = malloc(N * widest * sizeof(float));
    float *vb = malloc(N * widest * sizeof(float));
    bitnn_status s = (a && b && acc && va && vb) ? BITNN_OK : BITNN_ENOMEM;

    for (size_t n = 0; n < N && s == BITNN_OK; n++) {
        memcpy(a, x + n * image, image * sizeof(float));
        for (size_t i = 0; i < m->first_linear && s == BITNN_OK; i++) {
            const bitnn_layer *L = &m->layers[i];
            float *tmp;
            switch (L->kind) {
            case BITNN_LAYER_CONV2D:
                s = bitnn_conv2d_raw(a, L->H, L->W, L->in, L->w, L->out, L->size, L->b, b,
                                     m->precision, isa, pool);
                if (s == BITNN_OK) {
                    if (L->norm_per_position)
                        s = bitnn_normalize_act(b, L->out, L->H * L->W, L->out, m->eps, L->act, pool);
                    else
                        s = bitnn_normalize_act(b, L->H * L->W * L->out, 1, L->H * L->W * L->out,
                                                m->eps, L->act, pool);
                }
                tmp = a, a = b, b = tmp;
                break;
            case BITNN_LAYER_MAXPOOL2D:
                bitnn_maxpool2d(a, L->H, L->W, L->in, L->size, b, pool);
                tmp = a, a = b, b = tmp;
                break;
            case BITNN_LAYER_GLOBAL_AVG_POOL:
                bitnn_global_avgpool(a, L->H, L->W, L->in, b, acc);
                tmp = a, a = b, b = tmp;
                break;
            default: s = BITNN_EINVAL; break;
            }
        }
        if (s == BITNN_OK) memcpy(va + n * feat, a, feat * sizeof(float));
    }
    for (size_t i = m->first_linear; i < m->n_layers && s == BITNN_OK; i++) {
        const bitnn_layer *L = &m->layers[i];
        float *dst = (i + 1 == m->n_layers) ? probs : vb;
        s = bitnn_linear(va, L->in, N, L->in, L->w, L->out, L->b, m->eps, L->act, dst, L->out,
                         m->precision, isa, pool);
        float *tmp = va;
        va = vb, vb = tmp;
    }
    if (own)
        atomic_flag_clear(&sc->busy);
    else
        free(a0), free(b0), free(acc);
    free(va), free(vb);
    return s;
}
