/*
 * model.c - the image classifier graph (docs/maths.md, any widths/depth):
 * conv2d / maxpool2d / global_avg_pool layers per image on NHWC activations,
 * then linear layers batched over the images.
 */
#include <math.h>
#include <stdarg.h>
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

/* ------------------------------------------------- the model description
 * Every check names the key path ("layers[2].kernel_size"), so a message
 * points at the field to fix. docs/format.md section 3.2 lists the rules. */

static const char *type_name(const bjson *v)
{
    static const char *const names[] = {"null", "false", "true", "a number", "a string",
                                        "an array", "an object"};
    return v ? names[v->type] : "missing";
}

bitnn_status bitnn_meta_object(const bjson *obj, const char *path, const char *const *keys,
                               char *err, size_t errlen)
{
    if (!obj) return fail(err, errlen, "%s is missing (an object)", path);
    if (obj->type != BJSON_OBJECT)
        return fail(err, errlen, "%s must be an object, not %s", path, type_name(obj));
    for (size_t i = 0; keys && i < obj->count; i++) {
        int known = 0;
        for (const char *const *k = keys; *k && !known; k++) known = strcmp(*k, obj->keys[i]) == 0;
        if (!known) {
            char allowed[256] = "";
            for (const char *const *k = keys; *k; k++)
                snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s",
                         k == keys ? "" : ", ", *k);
            return fail(err, errlen, "%s has an unknown key \"%.60s\" (allowed: %s)", path,
                        obj->keys[i], allowed);
        }
    }
    return BITNN_OK;
}

bitnn_status bitnn_meta_int(const bjson *obj, const char *path, const char *key, size_t lo,
                            size_t hi, size_t *out, char *err, size_t errlen)
{
    const bjson *v = bjson_get(obj, key);
    if (!v) return fail(err, errlen, "%s.%s is missing (an integer from %zu to %zu)", path, key, lo, hi);
    if (!get_size(obj, key, lo, hi, out))
        return fail(err, errlen, "%s.%s must be an integer from %zu to %zu, not %s%.40s", path, key,
                    lo, hi, v->type == BJSON_NUMBER ? "" : type_name(v),
                    v->type == BJSON_NUMBER ? v->str : "");
    return BITNN_OK;
}

/* A JSON number whose float32 rounding is finite (and > 0 when positive is set). */
static bitnn_status meta_f32(const bjson *v, const char *path, int positive, float *out,
                             char *err, size_t errlen)
{
    if (!v) return fail(err, errlen, "%s is missing (a number)", path);
    if (v->type != BJSON_NUMBER) return fail(err, errlen, "%s must be a number, not %s", path, type_name(v));
    const float x = (float)v->number;
    if (!isfinite(x))
        return fail(err, errlen, "%s = %.40s is out of the float32 range", path, v->str);
    if (positive && !(x > 0.0f))
        return fail(err, errlen, "%s = %.40s must be > 0 (as a float32)", path, v->str);
    *out = x;
    return BITNN_OK;
}

bitnn_status bitnn_model_kind(const bnb_file *f, const char **kind, char *err, size_t errlen)
{
    static const char *const keys[] = {"kind", "name", NULL};
    const bjson *model = bjson_get(bnb_meta(f), "model");
    bitnn_status s = bitnn_meta_object(model, "model", keys, err, errlen);
    if (s != BITNN_OK) return s;
    const bjson *k = bjson_get(model, "kind"), *name = bjson_get(model, "name");
    if (!k || k->type != BJSON_STRING)
        return fail(err, errlen, "model.kind must be a string (\"classifier\" or \"lm\"), not %s",
                    type_name(k));
    if (name && name->type != BJSON_STRING)
        return fail(err, errlen, "model.name must be a string, not %s", type_name(name));
    *kind = k->str;
    return BITNN_OK;
}

bitnn_status bitnn_model_common(const bnb_file *f, const char *want_kind, float *eps, char *err,
                                size_t errlen)
{
    const char *kind;
    bitnn_status s = bitnn_model_kind(f, &kind, err, errlen);
    if (s != BITNN_OK) return s;
    if (strcmp(kind, want_kind) != 0)
        return fail(err, errlen, "model.kind is \"%.40s\", expected \"%s\"", kind, want_kind);
    const bjson *e = bjson_get(bnb_meta(f), "eps");
    if (!e) return fail(err, errlen, "eps is missing (the epsilon of Normalize, a number in (0, 1))");
    if (e->type != BJSON_NUMBER || !(e->number > 0) || !(e->number < 1.0) || !((float)e->number > 0.0f))
        return fail(err, errlen, "eps must be a number in (0, 1) that is > 0 as a float32, not %s%.40s",
                    e->type == BJSON_NUMBER ? "" : type_name(e), e->type == BJSON_NUMBER ? e->str : "");
    *eps = (float)e->number;
    return BITNN_OK;
}

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
static bitnn_status get_bits(const bnb_file *f, const bjson *obj, const char *key, const char *path,
                             int ndim, const uint64_t *shape, const uint64_t **out, char *err,
                             size_t errlen)
{
    const bjson *name = bjson_get(obj, key);
    if (!name || name->type != BJSON_STRING)
        return fail(err, errlen, "%s.%s must be a string naming a tensor, not %s", path, key,
                    type_name(name));
    char what[96];
    snprintf(what, sizeof what, "%s.%s", path, key);
    return bitnn_model_bits(f, name->str, ndim, shape, out, what, err, errlen);
}

static const char *const INPUT_KEYS[] = {"channels", "height", "width", "preprocess", NULL};
static const char *const PRE_KEYS[] = {"scale", "mean", "std", NULL};
static const char *const CONV_KEYS[] = {"type", "in_channels", "out_channels", "kernel_size",
                                        "activation", "norm", "weight", "bias", NULL};
static const char *const POOL_KEYS[] = {"type", "size", NULL};
static const char *const GAP_KEYS[] = {"type", NULL};
static const char *const LINEAR_KEYS[] = {"type", "in_features", "out_features", "activation",
                                          "weight", "bias", NULL};

/* input.preprocess: absent = scale 1/255, mean 0, std 1; present = all three keys. */
static bitnn_status read_preprocess(const bjson *input, bitnn_classifier *m, char *err,
                                    size_t errlen)
{
    const size_t C = m->C;
    m->pre_mean = malloc(C * sizeof(float));
    m->pre_std = malloc(C * sizeof(float));
    if (!m->pre_mean || !m->pre_std) return BITNN_ENOMEM;
    const bjson *pre = bjson_get(input, "preprocess");
    if (!pre) {
        m->pre_scale = (float)(1.0 / 255.0);
        for (size_t c = 0; c < C; c++) m->pre_mean[c] = 0.0f, m->pre_std[c] = 1.0f;
        return BITNN_OK;
    }
    bitnn_status s = bitnn_meta_object(pre, "input.preprocess", PRE_KEYS, err, errlen);
    if (s == BITNN_OK)
        s = meta_f32(bjson_get(pre, "scale"), "input.preprocess.scale", 0, &m->pre_scale, err, errlen);
    const char *names[2] = {"mean", "std"};
    float *dst[2] = {m->pre_mean, m->pre_std};
    for (int k = 0; k < 2 && s == BITNN_OK; k++) {
        const bjson *a = bjson_get(pre, names[k]);
        if (!a || a->type != BJSON_ARRAY || a->count != C) {
            s = fail(err, errlen, "input.preprocess.%s must be an array of %zu numbers (one per "
                     "input channel), not %s%s", names[k], C, type_name(a),
                     a && a->type == BJSON_ARRAY ? " of another length" : "");
            break;
        }
        for (size_t c = 0; c < C && s == BITNN_OK; c++) {
            char path[64];
            snprintf(path, sizeof path, "input.preprocess.%s[%zu]", names[k], c);
            s = meta_f32(&a->items[c], path, k == 1, &dst[k][c], err, errlen);
        }
    }
    /* Python maps uint8 x to (x * scale - mean) / std in float32: every result must be
     * finite (x = 0 and x = 255 are the extremes) */
    for (size_t c = 0; c < C && s == BITNN_OK; c++) {
        const float lo = (0.0f * m->pre_scale - m->pre_mean[c]) / m->pre_std[c];
        const float hi = (255.0f * m->pre_scale - m->pre_mean[c]) / m->pre_std[c];
        if (!isfinite(lo) || !isfinite(hi))
            s = fail(err, errlen, "input.preprocess: channel %zu maps pixel values outside the "
                     "float32 range ((x * scale - mean) / std for x in 0..255)", c);
    }
    return s;
}

/* "labels": absent, or one string per class. */
static bitnn_status read_labels(const bjson *meta, bitnn_classifier *m, char *err, size_t errlen)
{
    const bjson *labels = bjson_get(meta, "labels");
    if (!labels) return BITNN_OK;
    if (labels->type != BJSON_ARRAY || labels->count != m->classes)
        return fail(err, errlen, "labels must be an array of %zu strings (one per class), not %s%s",
                    m->classes, type_name(labels),
                    labels->type == BJSON_ARRAY ? " of another length" : "");
    for (size_t i = 0; i < labels->count; i++)
        if (labels->items[i].type != BJSON_STRING)
            return fail(err, errlen, "labels[%zu] must be a string, not %s", i,
                        type_name(&labels->items[i]));
    m->labels = labels;
    return BITNN_OK;
}

bitnn_status bitnn_classifier_build(const bnb_file *f, bitnn_classifier **out, char *err,
                                    size_t errlen)
{
    *out = NULL;
    const bjson *meta = bnb_meta(f);
    float eps;
    bitnn_status s = bitnn_model_common(f, "classifier", &eps, err, errlen);
    if (s != BITNN_OK) return s;
    const bjson *input = bjson_get(meta, "input");
    size_t C, H, W;
    if ((s = bitnn_meta_object(input, "input", INPUT_KEYS, err, errlen)) ||
        (s = bitnn_meta_int(input, "input", "channels", 1, MAX_DIM, &C, err, errlen)) ||
        (s = bitnn_meta_int(input, "input", "height", 1, MAX_DIM, &H, err, errlen)) ||
        (s = bitnn_meta_int(input, "input", "width", 1, MAX_DIM, &W, err, errlen)))
        return s;
    if (C * H * W > MAX_ACT)
        return fail(err, errlen, "input: %zu x %zu x %zu values is too large (at most 2^30)", C, H, W);
    const bjson *layers = bjson_get(meta, "layers");
    if (!layers || layers->type != BJSON_ARRAY || layers->count == 0 || layers->count > MAX_LAYERS)
        return fail(err, errlen, "layers must be an array of 1 to %d layer objects, not %s%s",
                    MAX_LAYERS, type_name(layers),
                    layers && layers->type == BJSON_ARRAY ? " of that length" : "");

    bitnn_classifier *m = calloc(1, sizeof *m);
    bitnn_layer *L = m ? calloc(layers->count, sizeof *L) : NULL;
    if (!L) {
        free(m);
        return BITNN_ENOMEM;
    }
    m->C = C, m->H = H, m->W = W, m->eps = eps, m->layers = L;
    m->n_layers = layers->count;
    m->first_linear = layers->count;
    m->max_act = C * H * W;
    m->max_channels = C;
    s = read_preprocess(input, m, err, errlen);

    /* Walk the shape through the graph: (h, w, c) spatial, or a vector of c. */
    size_t h = H, w = W, c = C;
    int spatial = 1;
    for (size_t i = 0; i < layers->count && s == BITNN_OK; i++) {
        const bjson *ly = &layers->items[i];
        char path[48];
        snprintf(path, sizeof path, "layers[%zu]", i);
        if (ly->type != BJSON_OBJECT) {
            s = fail(err, errlen, "%s must be an object, not %s", path, type_name(ly));
            break;
        }
        const bjson *type = bjson_get(ly, "type");
        if (!type || type->type != BJSON_STRING) {
            s = fail(err, errlen, "%s.type must be a string, not %s", path, type_name(type));
            break;
        }
        const char *t = type->str;
        L[i].H = spatial ? h : 1, L[i].W = spatial ? w : 1, L[i].in = c;
        if (i > m->first_linear && strcmp(t, "linear") != 0) {
            s = fail(err, errlen, "%s (%.40s): only linear layers may follow a linear layer", path, t);
        } else if (strcmp(t, "conv2d") == 0) {
            size_t cin, cout, k;
            const bjson *norm = bjson_get(ly, "norm");
            if ((s = bitnn_meta_object(ly, path, CONV_KEYS, err, errlen))) break;
            if (!spatial)
                s = fail(err, errlen, "%s (conv2d): the input is no longer an image", path);
            else if ((s = bitnn_meta_int(ly, path, "in_channels", 1, MAX_DIM, &cin, err, errlen)) ||
                     (s = bitnn_meta_int(ly, path, "out_channels", 1, MAX_DIM, &cout, err, errlen)) ||
                     (s = bitnn_meta_int(ly, path, "kernel_size", 1, 31, &k, err, errlen)))
                break;
            else if (k % 2 == 0)
                s = fail(err, errlen, "%s.kernel_size must be odd, not %zu", path, k);
            else if (cin != c)
                s = fail(err, errlen, "%s.in_channels %zu does not match the %zu channels coming in",
                         path, cin, c);
            else if (!parse_act(bjson_get(ly, "activation"), &L[i].act))
                s = fail(err, errlen, "%s.activation must be \"linear\", \"relu\", \"gelu\" or "
                         "\"softmax\"", path);
            else if (norm && (norm->type != BJSON_STRING ||
                              (strcmp(norm->str, "chw") != 0 && strcmp(norm->str, "c") != 0)))
                s = fail(err, errlen, "%s.norm must be \"chw\" or \"c\"", path);
            else if (h * w * cout > MAX_ACT)
                s = fail(err, errlen, "%s (conv2d): its output of %zu x %zu x %zu values is too large",
                         path, h, w, cout);
            else {
                const uint64_t ws[4] = {cout, k, k, cin}, bs[1] = {cout};
                L[i].kind = BITNN_LAYER_CONV2D, L[i].out = cout, L[i].size = k;
                L[i].norm_per_position = norm && strcmp(norm->str, "c") == 0;
                L[i].w = (bitnn_weights){NULL, cout, k * k * cin, NULL};
                s = get_bits(f, ly, "weight", path, 4, ws, &L[i].w.bits, err, errlen);
                if (s == BITNN_OK) s = get_bits(f, ly, "bias", path, 1, bs, &L[i].b, err, errlen);
                c = cout;
            }
        } else if (strcmp(t, "maxpool2d") == 0) {
            size_t k;
            if ((s = bitnn_meta_object(ly, path, POOL_KEYS, err, errlen))) break;
            if (!spatial)
                s = fail(err, errlen, "%s (maxpool2d): the input is no longer an image", path);
            else if ((s = bitnn_meta_int(ly, path, "size", 1, MAX_DIM, &k, err, errlen)))
                break;
            else if (h < k || w < k)
                s = fail(err, errlen, "%s.size %zu is larger than the %zu x %zu input", path, k, h, w);
            else {
                L[i].kind = BITNN_LAYER_MAXPOOL2D, L[i].size = k, L[i].out = c;
                h /= k, w /= k;
            }
        } else if (strcmp(t, "global_avg_pool") == 0) {
            if ((s = bitnn_meta_object(ly, path, GAP_KEYS, err, errlen))) break;
            if (!spatial)
                s = fail(err, errlen, "%s (global_avg_pool): the input is no longer an image", path);
            L[i].kind = BITNN_LAYER_GLOBAL_AVG_POOL, L[i].out = c;
            spatial = 0;
        } else if (strcmp(t, "flatten") == 0) {
            if ((s = bitnn_meta_object(ly, path, GAP_KEYS, err, errlen))) break;
            if (!spatial)
                s = fail(err, errlen, "%s (flatten): the input is already a vector", path);
            L[i].kind = BITNN_LAYER_FLATTEN, L[i].out = h * w * c;
            c = h * w * c;
            spatial = 0;
        } else if (strcmp(t, "linear") == 0) {
            size_t fin, fout;
            if ((s = bitnn_meta_object(ly, path, LINEAR_KEYS, err, errlen))) break;
            if (spatial)
                s = fail(err, errlen, "%s (linear): needs a vector input (add global_avg_pool "
                         "or flatten before it)", path);
            else if ((s = bitnn_meta_int(ly, path, "in_features", 1, 1u << 24, &fin, err, errlen)) ||
                     (s = bitnn_meta_int(ly, path, "out_features", 1, 1u << 24, &fout, err, errlen)))
                break;
            else if (fin != c)
                s = fail(err, errlen, "%s.in_features %zu does not match the %zu features coming in",
                         path, fin, c);
            else if (!parse_act(bjson_get(ly, "activation"), &L[i].act))
                s = fail(err, errlen, "%s.activation must be \"linear\", \"relu\", \"gelu\" or "
                         "\"softmax\"", path);
            else {
                const uint64_t ws[2] = {fout, fin}, bs[1] = {fout};
                L[i].kind = BITNN_LAYER_LINEAR, L[i].out = fout;
                if (m->first_linear == layers->count) m->first_linear = i;
                L[i].w = (bitnn_weights){NULL, fout, fin, NULL};
                s = get_bits(f, ly, "weight", path, 2, ws, &L[i].w.bits, err, errlen);
                if (s == BITNN_OK) s = get_bits(f, ly, "bias", path, 1, bs, &L[i].b, err, errlen);
                c = fout;
            }
        } else {
            s = fail(err, errlen, "%s.type: unknown layer type \"%.40s\" for a classifier (known: "
                     "conv2d, maxpool2d, global_avg_pool, linear)", path, t);
        }
        const size_t act = spatial ? h * w * c : c;
        if (act > m->max_act) m->max_act = act;
        if (c > m->max_channels) m->max_channels = c;
    }
    if (s == BITNN_OK && (spatial || m->first_linear == layers->count))
        s = fail(err, errlen, "layers: the last layer must be a linear layer giving the class scores");
    if (s == BITNN_OK) {
        m->classes = c;
        s = read_labels(meta, m, err, errlen);
    }
    for (size_t i = 0; i < layers->count && s == BITNN_OK; i++)
        if (L[i].w.bits) s = bitnn_weights_pack(&L[i].w);
    const bjson *cal = bjson_get(meta, "calibration");
    if (s == BITNN_OK && cal) {
        const bjson *temp = bjson_get(cal, "temperature");
        if (cal->type != BJSON_OBJECT || !temp || temp->type != BJSON_NUMBER ||
            !(temp->number > 0) || !(temp->number <= 1e6))
            s = fail(err, errlen, "calibration.temperature must be a number in (0, 1e6]");
        else if (L[layers->count - 1].act != BITNN_ACT_SOFTMAX)
            s = fail(err, errlen, "calibration: needs a last layer with softmax activation");
    }
    if (s != BITNN_OK) {
        bitnn_classifier_free(m);
        return s;
    }
    *out = m;
    return BITNN_OK;
}

void bitnn_classifier_free(bitnn_classifier *m)
{
    if (!m) return;
    for (size_t i = 0; m->layers && i < m->n_layers; i++) bitnn_weights_release(&m->layers[i].w);
    free(m->layers);
    free(m->pre_mean);
    free(m->pre_std);
    free(m);
}

bitnn_status bitnn_classifier_state_new(const bitnn_classifier *m, bitnn_classifier_state **out)
{
    if (!m || !out) return BITNN_EINVAL;
    bitnn_classifier_state *st = calloc(1, sizeof *st);
    if (st) {
        st->a = malloc(m->max_act * sizeof(float));
        st->b = malloc(m->max_act * sizeof(float));
        st->acc = malloc((m->max_channels ? m->max_channels : 1) * sizeof(double));
        st->ws = bitnn_gemm_ws_new();
        st->n_wx = m->n_layers;
        st->wx = calloc(m->n_layers ? m->n_layers : 1, sizeof *st->wx);
    }
    if (!st || !st->a || !st->b || !st->acc || !st->ws || !st->wx) {
        bitnn_classifier_state_free(st);
        return BITNN_ENOMEM;
    }
    *out = st;
    return BITNN_OK;
}

void bitnn_classifier_state_free(bitnn_classifier_state *s)
{
    if (!s) return;
    free(s->a), free(s->b), free(s->acc);
    bitnn_conv_ws_free(&s->conv), bitnn_buf_free(&s->va), bitnn_buf_free(&s->vb);
    bitnn_gemm_ws_free(s->ws);
    bitnn_buf_free(&s->q8);
    for (size_t i = 0; s->wx && i < s->n_wx; i++) bitnn_buf_free(&s->wx[i]);
    free(s->wx);
    free(s);
}

/* int8 on the direct kernels: a relu convolution normalized over its whole
 * map whose output goes, directly or through a max-pool covering every
 * pixel, into another convolution writes that convolution's int8 input map
 * instead of float activations (bitnn_conv_relu_q8_map: the same bits).
 * Returns the index of that convolution, or 0. */
static size_t fused_successor(const bitnn_classifier *m, size_t i)
{
    const bitnn_layer *L = &m->layers[i];
    if (L->act != BITNN_ACT_RELU || L->norm_per_position || L->out % 4) return 0;
    size_t nx = i + 1;
    const bitnn_layer *P = nx < m->first_linear ? &m->layers[nx] : NULL;
    if (P && P->kind == BITNN_LAYER_MAXPOOL2D) {
        if (L->H % P->size || L->W % P->size) return 0;
        nx++;
    }
    return nx < m->first_linear && m->layers[nx].kind == BITNN_LAYER_CONV2D ? nx : 0;
}

/* Layer i's statistics and amax (the largest relu value: relu and the
 * normalization are monotone, so it is that of zmax, the largest raw sum),
 * then layer nx's input map from z. */
static bitnn_status relu_into_next(const bitnn_classifier *m, bitnn_classifier_state *st,
                                   size_t i, size_t nx, const float *z, float zmax,
                                   bitnn_pool *pool, float *amax)
{
    const bitnn_layer *L = &m->layers[i], *Nx = &m->layers[nx];
    const size_t n = L->H * L->W * L->out, k = nx == i + 1 ? 1 : m->layers[i + 1].size;
    double mean, inv;
    bitnn_status s = bitnn_normalize_stats(z, n, m->eps, pool, &mean, &inv);
    if (s != BITNN_OK) return s;
    const float top = (float)((zmax - mean) * inv);
    *amax = top > 0.0f ? top : 0.0f;
    return bitnn_conv_relu_q8_map(z, L->H, L->W, L->out, mean, inv, *amax, k, Nx->size,
                                  &st->conv, &st->q8, pool);
}

/* A relu convolution normalized over its whole map and followed by a
 * max-pool: the relu value (float)((z - mean) * inv), then max(0, .), is
 * monotone in z, so the max-pool of the values is the value of the max-pool
 * of the raw sums (relu never gives -0.0, so even the zeros' bits agree).
 * relu_pool takes the map's statistics, pools the raw sums and applies the
 * normalization to the pooled map only: a quarter of the values for a 2x2
 * pool, and no pass that writes the whole map back. */
static int pools_first(const bitnn_classifier *m, size_t i)
{
    const bitnn_layer *L = &m->layers[i];
    return L->act == BITNN_ACT_RELU && !L->norm_per_position && i + 1 < m->first_linear &&
           m->layers[i + 1].kind == BITNN_LAYER_MAXPOOL2D;
}

/* Layer i's raw sums z (its whole map) -> the pooled relu values of layer
 * i + 1 in y. */
static bitnn_status relu_pool(const bitnn_classifier *m, size_t i, const float *z, float *y,
                              bitnn_pool *pool)
{
    const bitnn_layer *L = &m->layers[i], *P = &m->layers[i + 1];
    double mean, inv;
    bitnn_status s = bitnn_normalize_stats(z, L->H * L->W * L->out, m->eps, pool, &mean, &inv);
    if (s != BITNN_OK) return s;
    bitnn_maxpool2d(z, P->H, P->W, P->in, P->size, y, pool);
    return bitnn_normalize_apply(y, (P->H / P->size) * (P->W / P->size) * P->in, mean, inv,
                                 BITNN_ACT_RELU, pool);
}

/* One image (C, HW) into (HW, C): 64 pixels at a time, so that the rows
 * written stay in L1 while each channel is read in order. */
static void nchw_to_nhwc(const float *x, size_t C, size_t HW, float *a)
{
    for (size_t p0 = 0; p0 < HW; p0 += 64) {
        const size_t p1 = p0 + 64 < HW ? p0 + 64 : HW;
        for (size_t c = 0; c < C; c++) {
            const float *xc = x + c * HW;
            for (size_t p = p0; p < p1; p++) a[p * C + c] = xc[p];
        }
    }
}

bitnn_status bitnn_classifier_forward(const bitnn_classifier *m, bitnn_classifier_state *st,
                                      const float *x, size_t N, int nchw, float *probs, int isa,
                                      bitnn_pool *pool)
{
    if (!m || (!x && N) || (!probs && N)) return BITNN_EINVAL;
    if (N == 0) return BITNN_OK;
    bitnn_classifier_state *own = NULL;
    if (!st) {
        bitnn_status s = bitnn_classifier_state_new(m, &own);
        if (s != BITNN_OK) return s;
        st = own;
    }
    const size_t feat = m->layers[m->first_linear].in;
    const size_t image = m->C * m->H * m->W;
    float *a = st->a, *b = st->b;
    double *acc = st->acc;
    /* Batched part: two (N, max features) buffers. */
    size_t widest = feat;
    for (size_t i = m->first_linear; i < m->n_layers; i++)
        if (m->layers[i].out > widest) widest = m->layers[i].out;
    bitnn_status s = bitnn_buf_reserve(&st->va, N * widest * sizeof(float));
    if (s == BITNN_OK) s = bitnn_buf_reserve(&st->vb, N * widest * sizeof(float));
    float *va = st->va.p, *vb = st->vb.p;

    const int direct = bitnn_conv_direct_q8(m->precision, isa);
    for (size_t n = 0; n < N && s == BITNN_OK; n++) {
        if (nchw) nchw_to_nhwc(x + n * image, m->C, m->H * m->W, a);
        else memcpy(a, x + n * image, image * sizeof(float));
        float amax = -1.0f; /* >= 0: this convolution's input is already in st->conv's map */
        for (size_t i = 0; i < m->first_linear && s == BITNN_OK; i++) {
            const bitnn_layer *L = &m->layers[i];
            float *tmp;
            switch (L->kind) {
            case BITNN_LAYER_CONV2D: {
                const size_t nx = direct ? fused_successor(m, i) : 0;
                float zmax;
                if (amax >= 0.0f)
                    s = bitnn_conv2d_q8_map(&L->w, L->H, L->W, L->in, L->size, L->b, b, amax, isa,
                                            pool, &st->conv, &st->wx[i], nx ? &zmax : NULL);
                else
                    s = bitnn_conv2d_raw(a, L->H, L->W, L->in, &L->w, L->size, L->b, b,
                                         m->precision, isa, pool, &st->conv, &st->wx[i],
                                         nx ? &zmax : NULL);
                amax = -1.0f;
                if (s == BITNN_OK && nx) {
                    s = relu_into_next(m, st, i, nx, b, zmax, pool, &amax);
                    i = nx - 1; /* the layers in between are done */
                    break;
                }
                if (s == BITNN_OK && pools_first(m, i)) {
                    s = relu_pool(m, i, b, a, pool);
                    i++; /* the max-pool is done; its output is in a */
                    break;
                }
                if (s == BITNN_OK) {
                    if (L->norm_per_position)
                        s = bitnn_normalize_act(b, L->out, L->H * L->W, L->out, m->eps, L->act, pool);
                    else
                        s = bitnn_normalize_act(b, L->H * L->W * L->out, 1, L->H * L->W * L->out,
                                                m->eps, L->act, pool);
                }
                tmp = a, a = b, b = tmp;
                break;
            }
            case BITNN_LAYER_MAXPOOL2D:
                bitnn_maxpool2d(a, L->H, L->W, L->in, L->size, b, pool);
                tmp = a, a = b, b = tmp;
                break;
            case BITNN_LAYER_GLOBAL_AVG_POOL:
                bitnn_global_avgpool(a, L->H, L->W, L->in, b, acc);
                tmp = a, a = b, b = tmp;
                break;
            case BITNN_LAYER_FLATTEN: /* the (H, W, C) activation is already contiguous */
                break;
            default: s = BITNN_EINVAL; break;
            }
        }
        if (s == BITNN_OK) memcpy(va + n * feat, a, feat * sizeof(float));
    }
    for (size_t i = m->first_linear; i < m->n_layers && s == BITNN_OK; i++) {
        const bitnn_layer *L = &m->layers[i];
        float *dst = (i + 1 == m->n_layers) ? probs : vb;
        s = bitnn_linear_w(va, L->in, N, &L->w, L->b, m->eps, L->act, dst, L->out, m->precision,
                           isa, pool, st->ws);
        float *tmp = va;
        va = vb, vb = tmp;
    }
    bitnn_classifier_state_free(own);
    return s;
}
