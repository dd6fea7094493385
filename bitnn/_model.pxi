# Model graphs built from an open .bnb file (csrc/model.h). Included by _core.pyx.

cdef extern from "model.h" nogil:
    ctypedef struct bitnn_classifier:
        size_t C, H, W
        size_t classes
        bitnn_precision precision
        size_t n_layers
    bitnn_status bitnn_classifier_build(const bnb_file *f, bitnn_classifier **out, char *err,
                                        size_t errlen)
    void bitnn_classifier_free(bitnn_classifier *m)
    bitnn_status bitnn_classifier_forward(const bitnn_classifier *m, const float *x, size_t N,
                                          float *probs, int isa, bitnn_pool *pool)


cdef class Classifier:
    """The image classifier graph of an open BnbFile (which it keeps alive)."""
    cdef bitnn_classifier *model
    cdef _BnbHandle handle   # keeps the mapping alive while a forward pass runs
    cdef readonly object file
    cdef readonly tuple input_shape   # (H, W, C)
    cdef readonly size_t classes

    def __cinit__(self, BnbFile file):
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

    @property
    def precision(self):
        return PRECISIONS[self.model.precision]

    @precision.setter
    def precision(self, value):
        self.model.precision = _precision(value)

    def __dealloc__(self):
        if self.model != NULL:
            bitnn_classifier_free(self.model)
            self.model = NULL

    def forward(self, x, threads=None, kernel=None):
        """Class probabilities (N, classes) for preprocessed float32 NHWC images (N, H, W, C)."""
        if (<BnbFile>self.file).ptr == NULL:
            raise ValueError("the model is closed")
        arr = np.ascontiguousarray(x, dtype=np.float32)
        if arr.ndim != 4 or tuple(arr.shape[1:]) != self.input_shape:
            raise ValueError(f"expected images of shape (N, {', '.join(map(str, self.input_shape))}), "
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
        with nogil:
            s = bitnn_classifier_forward(self.model, &xv[0, 0, 0, 0], N, &ov[0, 0], isa, pool.pool)
        _check(s)
        return out
