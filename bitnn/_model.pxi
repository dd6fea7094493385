# Model graphs built from an open .bnb file (csrc/graph/model.h). Included by _core.pyx.

cdef extern from "model.h" nogil:
    ctypedef enum bitnn_layer_kind:
        BITNN_LAYER_CONV2D
        BITNN_LAYER_MAXPOOL2D
        BITNN_LAYER_GLOBAL_AVG_POOL
        BITNN_LAYER_FLATTEN
        BITNN_LAYER_LINEAR
    ctypedef struct bitnn_layer:
        bitnn_layer_kind kind
        bitnn_act act
        int norm_per_position
        size_t inp "in"
        size_t out
        size_t size
        size_t H, W
    ctypedef struct bitnn_classifier:
        size_t C, H, W
        size_t classes
        bitnn_precision precision
        float eps
        size_t n_layers
        bitnn_layer *layers
        float pre_scale
        float *pre_mean
        float *pre_std
        const bjson *labels
    bitnn_status bitnn_model_kind(const bnb_file *f, const char **kind, char *err, size_t errlen)
    bitnn_status bitnn_classifier_build(const bnb_file *f, bitnn_classifier **out, char *err,
                                        size_t errlen)
    void bitnn_classifier_free(bitnn_classifier *m)
    ctypedef struct bitnn_classifier_state:
        pass
    bitnn_status bitnn_classifier_state_new(const bitnn_classifier *m,
                                            bitnn_classifier_state **out)
    void bitnn_classifier_state_free(bitnn_classifier_state *s)
    bitnn_status bitnn_classifier_forward(const bitnn_classifier *m, bitnn_classifier_state *s,
                                          const float *x, size_t N, int nchw, float *probs,
                                          int isa, bitnn_pool *pool)


_ACT_NAMES = {BITNN_ACT_LINEAR: "linear", BITNN_ACT_RELU: "relu", BITNN_ACT_GELU: "gelu",
              BITNN_ACT_SOFTMAX: "softmax"}


def model_kind(BnbFile file):
    """model.kind of an open file, after the C check of the "model" object
    (FormatError if it is not an object with a string kind and name)."""
    cdef char err[512]
    err[0] = 0
    cdef const char *kind = NULL
    cdef bitnn_status s = bitnn_model_kind(_bnb_live(file), &kind, err, sizeof(err))
    if s == BITNN_EFORMAT:
        raise FormatError(err.decode("utf-8", "replace"))
    _check(s)
    return kind.decode("utf-8")


cdef class Classifier:
    """The image classifier graph of an open BnbFile (which it keeps alive)."""
    cdef bitnn_classifier *model
    cdef bitnn_classifier_state *state  # the buffers of one call at a time (state_lock)
    cdef object state_lock
    cdef _BnbHandle handle   # keeps the mapping alive while a forward pass runs
    cdef readonly object file
    cdef readonly tuple input_shape   # (H, W, C)
    cdef readonly size_t classes
    cdef readonly float eps
    cdef readonly object labels       # list of str, or None when the file has none
    cdef readonly dict preprocess     # scale, mean, std as float32 values

    def __cinit__(self, BnbFile file):
        self.state_lock = threading.Lock()
        cdef char err[512]
        err[0] = 0
        if file.ptr == NULL:
            raise ValueError("the model file is closed")
        cdef bitnn_status s = bitnn_classifier_build(file.ptr, &self.model, err, sizeof(err))
        if s == BITNN_EFORMAT:
            raise FormatError(err.decode("utf-8", "replace"))
        _check(s)
        self.file = file
        self.handle = file.handle
        self.input_shape = (self.model.H, self.model.W, self.model.C)
        self.classes = self.model.classes
        m = self.model
        cdef size_t i
        self.eps = m.eps
        self.labels = (None if m.labels == NULL else
                       [_bjson_to_py(&m.labels.items[i]) for i in range(m.labels.count)])
        self.preprocess = {"scale": m.pre_scale,
                           "mean": [m.pre_mean[i] for i in range(m.C)],
                           "std": [m.pre_std[i] for i in range(m.C)]}

    @property
    def layers(self):
        """The validated layer list: dicts of type, the input size (h, w, c) and the
        layer's parameters, as the C graph holds them."""
        out = []
        cdef size_t i
        cdef const bitnn_layer *L
        for i in range(self.model.n_layers):
            L = &self.model.layers[i]
            d = {"in_hw": (L.H, L.W), "in": L.inp, "out": L.out}
            if L.kind == BITNN_LAYER_CONV2D:
                d.update(type="conv2d", kernel_size=L.size, activation=_ACT_NAMES[L.act],
                         norm="c" if L.norm_per_position else "chw")
            elif L.kind == BITNN_LAYER_MAXPOOL2D:
                d.update(type="maxpool2d", size=L.size)
            elif L.kind == BITNN_LAYER_GLOBAL_AVG_POOL:
                d.update(type="global_avg_pool")
            elif L.kind == BITNN_LAYER_FLATTEN:
                d.update(type="flatten")
            else:
                d.update(type="linear", activation=_ACT_NAMES[L.act])
            out.append(d)
        return out

    @property
    def precision(self):
        return PRECISIONS[self.model.precision]

    @precision.setter
    def precision(self, value):
        self.model.precision = _precision(value)

    def __dealloc__(self):
        if self.state != NULL:
            bitnn_classifier_state_free(self.state)
            self.state = NULL
        if self.model != NULL:
            bitnn_classifier_free(self.model)
            self.model = NULL

    def forward(self, x, threads=None, kernel=None, layout="NHWC"):
        """Class probabilities (N, classes) for preprocessed float32 images: NHWC
        (N, H, W, C), or with ``layout="NCHW"`` (N, C, H, W) (turned into NHWC in C)."""
        if (<BnbFile>self.file).ptr == NULL:
            raise ValueError("the model is closed")
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
        cdef int nchw = layout == "NCHW"
        arr = np.ascontiguousarray(x, dtype=np.float32)
        H, W, C = self.input_shape
        want = (C, H, W) if nchw else (H, W, C)
        if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
            raise ValueError(f"expected images of shape (N, {', '.join(map(str, want))}), "
                             f"got {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError("empty batch: pass at least one image")
        if not np.isfinite(arr).all():
            raise ValueError("images contain NaN or infinity")
        cdef int isa = _resolve_kernel(kernel)
        cdef ThreadPool pool = get_pool(threads)
        cdef size_t N = arr.shape[0]
        out = np.empty((N, self.classes), dtype=np.float32)
        cdef const float[:, :, :, ::1] xv = arr
        cdef float[:, ::1] ov = out
        cdef bitnn_status s
        cdef bitnn_classifier_state *st = NULL
        # The model's state serves one call at a time; a concurrent call gets
        # buffers of its own (st NULL) instead of waiting.
        cdef bint mine = self.state_lock.acquire(False)
        try:
            if mine:
                if self.state == NULL:
                    _check(bitnn_classifier_state_new(self.model, &self.state))
                st = self.state
            with nogil:
                s = bitnn_classifier_forward(self.model, st, &xv[0, 0, 0, 0], N, nchw, &ov[0, 0],
                                             isa, pool.pool)
        finally:
            if mine:
                self.state_lock.release()
        _check(s)
        return out

