# The language decoder (csrc/graph/lm.h) and the sampler (csrc/graph/sampler.h). Included by
# _core.pyx.
from libc.stdint cimport int32_t

cdef extern from "lm.h" nogil:
    ctypedef struct bitnn_lm_linear:
        size_t out
    ctypedef struct bitnn_lm:
        size_t vocab, max_len, dim, heads, head_dim, blocks, ff_dim
        bitnn_precision precision
        float eps
        size_t n_head
        bitnn_lm_linear *head
    ctypedef struct bitnn_lm_state:
        size_t ctx
        size_t pos
        bitnn_precision cache_precision
    bitnn_status bitnn_lm_build(const bnb_file *f, bitnn_lm **out, char *err, size_t errlen)
    void bitnn_lm_free(bitnn_lm *m)
    bitnn_tokenizer *bitnn_lm_take_tokenizer(bitnn_lm *m)
    bitnn_status bitnn_lm_state_new(const bitnn_lm *m, size_t ctx, bitnn_lm_state **out)
    void bitnn_lm_state_free(bitnn_lm_state *s)
    void bitnn_lm_state_reset(bitnn_lm_state *s)
    bitnn_status bitnn_lm_forward(const bitnn_lm *m, bitnn_lm_state *s, const int32_t *ids,
                                  size_t n, float *scores, int isa, bitnn_pool *pool)
    bitnn_status bitnn_lm_logprobs(const bitnn_lm *m, bitnn_lm_state *s, const int32_t *ids,
                                   size_t n, size_t first, double *logp, int isa,
                                   bitnn_pool *pool)

cdef extern from "sampler.h" nogil:
    ctypedef struct bitnn_rng:
        uint64_t state
    void bitnn_rng_seed(bitnn_rng *r, uint64_t seed)
    ctypedef struct bitnn_sampling:
        float temperature
        size_t top_k
        float top_p
        float repetition_penalty
    bitnn_status bitnn_sample(const float *scores, size_t V, const bitnn_sampling *p,
                              const int32_t *recent, size_t n_recent, bitnn_rng *rng,
                              float *work, int32_t *idx, int32_t *out)


cdef class LMGraph:
    """The decoder graph of an open BnbFile (which it keeps alive)."""
    cdef bitnn_lm *model
    cdef _BnbHandle handle
    cdef readonly object file

    def __cinit__(self, BnbFile file):
        cdef char err[512]
        err[0] = 0
        if file.ptr == NULL:
            raise ValueError("the model file is closed")
        cdef bitnn_status s = bitnn_lm_build(file.ptr, &self.model, err, sizeof(err))
        if s == BITNN_EFORMAT:
            raise FormatError(err.decode("utf-8", "replace"))
        _check(s)
        self.file = file
        self.handle = file.handle

    @property
    def precision(self):
        return PRECISIONS[self.model.precision]

    @precision.setter
    def precision(self, value):
        self.model.precision = _precision(value)

    def __dealloc__(self):
        if self.model != NULL:
            bitnn_lm_free(self.model)
            self.model = NULL

    @property
    def config(self):
        """The validated sizes of the header's "lm" object (mlp_units: see below)."""
        return {"vocab_size": self.model.vocab, "max_len": self.model.max_len,
                "emb_dim": self.model.dim, "num_heads": self.model.heads,
                "num_blocks": self.model.blocks, "ff_dim": self.model.ff_dim}

    @property
    def mlp_units(self):
        """lm.mlp_units: the widths of the MLP head layers."""
        cdef size_t i
        return [self.model.head[i].out for i in range(self.model.n_head)]

    @property
    def eps(self):
        """eps as the float32 the runtime uses."""
        return self.model.eps

    def take_tokenizer(self):
        """The tokenizer the loader built from the header's "tokenizer" and checked against
        the model (a CTokenizer), or None; the graph keeps no reference to it."""
        cdef bitnn_tokenizer *t = bitnn_lm_take_tokenizer(self.model)
        return None if t == NULL else _ctokenizer_adopt(t)

    def new_state(self, ctx=None):
        """A KV cache for up to ctx positions (default: max_len)."""
        return LMState(self, self.model.max_len if ctx is None else ctx)


cdef class LMState:
    """One sequence being decoded: its KV cache and position."""
    cdef bitnn_lm_state *state
    cdef readonly LMGraph graph

    def __cinit__(self, LMGraph graph, ctx):
        if isinstance(ctx, bool) or not isinstance(ctx, (int, np.integer)):
            raise TypeError("ctx must be an int")
        if not 1 <= ctx <= graph.model.max_len:
            raise ValueError(f"context size must be from 1 to the model's max_len "
                             f"{graph.model.max_len}, got {ctx}")
        _check(bitnn_lm_state_new(graph.model, ctx, &self.state))
        self.graph = graph

    def __dealloc__(self):
        if self.state != NULL:
            bitnn_lm_state_free(self.state)
            self.state = NULL

    @property
    def pos(self):
        return self.state.pos

    @property
    def ctx(self):
        return self.state.ctx

    def reset(self):
        bitnn_lm_state_reset(self.state)

    def _check_cache_precision(self):
        # The KV cache holds fp32 or int8 values (docs/packing.md): positions cached in
        # one mode cannot be attended to in the other.
        if self.state.pos and self.state.cache_precision != self.graph.model.precision:
            raise ValueError(f"this state's {self.state.pos} cached positions were computed "
                             f"in precision {PRECISIONS[self.state.cache_precision]!r}, the "
                             f"model now runs in {PRECISIONS[self.graph.model.precision]!r}: "
                             f"reset() the state first")

    def forward(self, ids, bint scores=True, threads=None, kernel=None):
        """Feed token ids; return the last position's scores (vocab,) or None."""
        if (<BnbFile>self.graph.file).ptr == NULL:
            raise ValueError("the model is closed")
        arr = np.asarray(ids)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
            raise ValueError("ids must be a non-empty 1-D sequence of integers")
        cdef size_t V = self.graph.model.vocab
        if arr.min() < 0 or arr.max() >= <long long>V:
            bad = int(arr[(arr < 0) | (arr >= V)][0])
            raise ValueError(f"token id {bad} is out of the vocabulary (0..{V - 1})")
        if arr.size > self.state.ctx - self.state.pos:
            raise ValueError(f"{arr.size} tokens do not fit: {self.state.pos} of "
                             f"{self.state.ctx} positions are used")
        self._check_cache_precision()
        cdef int32_t[::1] iv = np.ascontiguousarray(arr, dtype=np.int32)
        cdef int isa = _resolve_kernel(kernel)
        cdef ThreadPool pool = get_pool(threads)
        out = np.empty(V, dtype=np.float32) if scores else None
        cdef float[::1] ov
        cdef float *op = NULL
        if scores:
            ov = out
            op = &ov[0]
        cdef bitnn_status s
        with nogil:
            s = bitnn_lm_forward(self.graph.model, self.state, &iv[0], iv.shape[0], op, isa,
                                 pool.pool)
        _check(s)
        return out

    def logprobs(self, ids, size_t first=0, threads=None, kernel=None):
        """Feed ids[:-1] (n tokens, appended like forward) and return, float64, the
        log-probability of each actual next token ids[r + 1] for rows r = first .. n-1."""
        if (<BnbFile>self.graph.file).ptr == NULL:
            raise ValueError("the model is closed")
        arr = np.asarray(ids)
        if arr.ndim != 1 or arr.size < 2 or arr.dtype.kind not in "iu":
            raise ValueError("ids must be a 1-D sequence of at least 2 integers")
        cdef size_t V = self.graph.model.vocab
        if arr.min() < 0 or arr.max() >= <long long>V:
            bad = int(arr[(arr < 0) | (arr >= V)][0])
            raise ValueError(f"token id {bad} is out of the vocabulary (0..{V - 1})")
        cdef size_t n = arr.size - 1
        if n > self.state.ctx - self.state.pos:
            raise ValueError(f"{n} tokens do not fit: {self.state.pos} of "
                             f"{self.state.ctx} positions are used")
        self._check_cache_precision()
        if first >= n:
            raise ValueError(f"first ({first}) must be below the {n} rows fed")
        cdef int32_t[::1] iv = np.ascontiguousarray(arr, dtype=np.int32)
        cdef int isa = _resolve_kernel(kernel)
        cdef ThreadPool pool = get_pool(threads)
        out = np.empty(n - first, dtype=np.float64)
        cdef double[::1] ov = out
        cdef bitnn_status s
        with nogil:
            s = bitnn_lm_logprobs(self.graph.model, self.state, &iv[0], n, first, &ov[0], isa,
                                  pool.pool)
        _check(s)
        return out


cdef class Sampler:
    """Seeded token sampler: temperature (0 = greedy), top_k, top_p, repetition penalty."""
    cdef bitnn_rng rng
    cdef bitnn_sampling params
    cdef object work, idx

    def __cinit__(self, size_t vocab, float temperature=1.0, size_t top_k=0, float top_p=1.0,
                  float repetition_penalty=1.0, uint64_t seed=0):
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        if not (0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not (repetition_penalty > 0 and math.isfinite(repetition_penalty)):
            raise ValueError(f"repetition_penalty must be a positive finite number, got "
                             f"{repetition_penalty}")
        self.params.temperature = temperature
        self.params.top_k = top_k
        self.params.top_p = top_p
        self.params.repetition_penalty = repetition_penalty
        bitnn_rng_seed(&self.rng, seed)
        self.work = np.empty(vocab, dtype=np.float32)
        self.idx = np.empty(vocab, dtype=np.int32)

    def sample(self, scores, recent=()):
        cdef float[::1] sv = np.ascontiguousarray(scores, dtype=np.float32)
        cdef float[::1] wv = self.work
        cdef int32_t[::1] xv = self.idx
        if sv.shape[0] != wv.shape[0]:
            raise ValueError(f"expected {wv.shape[0]} scores, got {sv.shape[0]}")
        rec = np.ascontiguousarray(np.asarray(recent, dtype=np.int32).reshape(-1))
        cdef int32_t[::1] rv = rec
        cdef const int32_t *rp = &rv[0] if rv.shape[0] else NULL
        cdef int32_t out = 0
        cdef bitnn_status s
        with nogil:
            s = bitnn_sample(&sv[0], sv.shape[0], &self.params, rp, rv.shape[0], &self.rng,
                             &wv[0], &xv[0], &out)
        _check(s)
        return out
