# cython: language_level=3, boundscheck=False, wraparound=False
"""Low-level binding of the C core (csrc/include/bitnn.h).

Every function here checks shapes, dtypes and values before it calls C, and
releases the GIL around the computation. The friendlier API lives in
``bitnn/ops.py``; this module is what it calls.
"""
import math
import threading

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint64_t, uint32_t

from bitnn.errors import KernelError

cnp.import_array()

_ACTIVATIONS = {None: BITNN_ACT_LINEAR, "linear": BITNN_ACT_LINEAR, "relu": BITNN_ACT_RELU,
                "gelu": BITNN_ACT_GELU, "softmax": BITNN_ACT_SOFTMAX}


# --------------------------------------------------------------- CPU, kernels
def cpu_features():
    """Names of the CPU features this process can use (cpuid AND OS support)."""
    cdef uint32_t f = bitnn_cpu_features()
    out = []
    for bit in range(32):
        name = bitnn_cpu_feature_name(bit)
        if name != NULL and (f >> bit) & 1:
            out.append(name.decode())
    return out


def kernels_compiled():
    """Kernels built into this copy of bitnn."""
    return [bitnn_isa_name(i).decode() for i in range(BITNN_ISA_COUNT) if bitnn_isa_compiled(i)]


def kernels_supported():
    """Kernels built in that this CPU can run."""
    return [bitnn_isa_name(i).decode() for i in range(BITNN_ISA_COUNT) if bitnn_isa_supported(i)]


def default_kernel():
    """The kernel used when none is named: BITNN_KERNEL if set, else the best one."""
    cdef int isa = 0
    cdef char msg[256]
    msg[0] = 0
    cdef bitnn_status s = bitnn_isa_default(&isa, msg, sizeof(msg))
    if s != BITNN_OK:
        raise KernelError(msg.decode())
    return bitnn_isa_name(isa).decode()


def kernel_calls():
    """{kernel name: times its GEMM was entered in this process} for the compiled kernels.

    Each kernel counts itself, so the difference across a call shows which
    kernel really ran (for tests; one call counts once per thread share)."""
    return {bitnn_isa_name(i).decode(): bitnn_kernel_calls(i)
            for i in range(BITNN_ISA_COUNT) if bitnn_isa_compiled(i)}


def _resolve_kernel_name(kernel):
    """Check a kernel name now (ValueError/KernelError) and return its name."""
    return bitnn_isa_name(_resolve_kernel(kernel)).decode()


cdef int _resolve_kernel(kernel) except -1:
    if kernel is None:
        kernel = default_kernel()
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a name such as 'ref' or 'avx512', not {type(kernel).__name__}")
    cdef int isa = bitnn_isa_from_name(kernel.encode())
    if isa < 0:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of "
                         f"{[bitnn_isa_name(i).decode() for i in range(BITNN_ISA_COUNT)]}")
    if not bitnn_isa_compiled(isa):
        raise KernelError(f"the {kernel} kernel is not compiled into this build of bitnn "
                          f"(compiled: {', '.join(kernels_compiled())})")
    if not bitnn_isa_supported(isa):
        raise KernelError(f"this CPU cannot run the {kernel} kernel "
                          f"(supported here: {', '.join(kernels_supported())})")
    return isa


# ----------------------------------------------------------------- precision
PRECISIONS = ("fp32", "int8")


cdef bitnn_precision _precision(precision) except *:
    """The numeric mode for a name: "fp32" (exact) or "int8" (quantized activations)."""
    if precision == "fp32":
        return BITNN_PRECISION_FP32
    if precision == "int8":
        return BITNN_PRECISION_INT8
    raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, "
                     f"got {precision!r}")


def check_precision(precision):
    """Validate a precision name (ValueError) and return it."""
    _precision(precision)
    return precision


def int8_kernel(kernel=None):
    """Name of the int8 kernel that `kernel` (default: the default kernel) runs:
    "avx512-vnni", or the kernel's own name ("avx2", "neon", "ref"); AVX-512
    without VNNI runs the AVX2 int8 kernel."""
    return bitnn_q8_kernel_name(_resolve_kernel(kernel)).decode()


# ------------------------------------------------------------------- threads
def available_cpus():
    """CPUs this process may use (affinity mask and cgroup quota)."""
    return bitnn_available_cpus()


def default_threads():
    """BITNN_NUM_THREADS if set, else available_cpus()."""
    cdef int n = 0
    cdef char msg[256]
    msg[0] = 0
    if bitnn_default_threads(&n, msg, sizeof(msg)) != BITNN_OK:
        raise ValueError(msg.decode())
    return n


cdef class ThreadPool:
    """A pool of `size` threads in total (the calling thread is one of them)."""

    def __cinit__(self, int size):
        if size < 1 or size > 1024:
            raise ValueError(f"threads must be from 1 to 1024, got {size}")
        cdef bitnn_status s = bitnn_pool_create(size, &self.pool)
        if s != BITNN_OK:
            raise RuntimeError(f"could not start {size} threads: {bitnn_status_str(s).decode()}")
        self.size = size

    def __dealloc__(self):
        if self.pool != NULL:
            bitnn_pool_destroy(self.pool)
            self.pool = NULL

    @property
    def threads_used(self):
        """Distinct threads of this pool that have run part of a job so far."""
        return bitnn_pool_threads_used(self.pool)

    def __repr__(self):
        return f"ThreadPool(size={self.size})"


_pools = {}
_pools_lock = threading.Lock()


def _after_fork_in_child():
    # Another thread of the parent may have held the lock at fork(); it does
    # not exist here. The pools themselves restart their workers on first use
    # (csrc/kernels/threadpool.c).
    global _pools_lock
    _pools_lock = threading.Lock()


import os as _os_fork
_os_fork.register_at_fork(after_in_child=_after_fork_in_child)


def get_pool(threads=None):
    """The shared pool for a thread count (None: default_threads())."""
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an int or None, not {type(threads).__name__}")
    threads = int(threads)
    if threads < 1 or threads > 1024:
        raise ValueError(f"threads must be from 1 to 1024, got {threads}")
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPool(threads)
    return pool


# ------------------------------------------------------------ argument checks
cdef object _as_input(x, name="x"):
    """2-D float32 C-contiguous, finite. Other real dtypes are converted."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


cdef object _as_bits(w, size_t rows, size_t k, name):
    """Packed bits: uint64, C-contiguous, shape (rows, ceil(k/64)), zero padding."""
    if not isinstance(w, np.ndarray) or w.dtype != np.uint64:
        raise TypeError(f"{name} must be a numpy uint64 array of packed bits (see bitnn.pack_bits)")
    cdef size_t wpr = bitnn_words_per_row(k)
    if w.ndim != 2 or w.shape[0] != rows or w.shape[1] != wpr:
        raise ValueError(f"{name} has shape {w.shape}, expected ({rows}, {wpr}) for "
                         f"{rows} rows of {k} bits")
    w = np.ascontiguousarray(w)
    if k % 64 and rows and (w[:, wpr - 1] >> np.uint64(k % 64)).any():
        raise ValueError(f"{name} has non-zero padding bits beyond bit {k} of a row")
    return w


cdef size_t _count(v, name) except? 0:
    """A non-negative integer count (not a float, not a bool)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < 0 or v > 2**40:
        raise ValueError(f"{name} must be from 0 to 2^40, got {v}")
    return <size_t>v


cdef object _as_bias(b, size_t n):
    """Packed bias bits: uint64, shape (ceil(n/64),)."""
    if not isinstance(b, np.ndarray) or b.dtype != np.uint64:
        raise TypeError("bias must be a numpy uint64 array of packed bits (see bitnn.pack_bits)")
    if b.ndim != 1:
        raise ValueError(f"bias must be 1-D packed bits, got shape {b.shape}")
    return _as_bits(b.reshape(1, -1), 1, n, "bias")


cdef bitnn_act _act(activation) except *:
    try:
        return _ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {activation!r}; expected one of "
                         "None, 'linear', 'relu', 'gelu', 'softmax'") from None


cdef float _eps(eps) except *:
    e = float(eps)
    # Checked in float32, the precision the core uses: 1e-50 or 1e39 would
    # become 0 or inf there.
    e32 = float(np.float32(e)) if math.isfinite(e) and abs(e) < 3.4e38 else math.inf
    if not (math.isfinite(e32) and e32 > 0):
        raise ValueError(f"eps must be a positive finite float32 number, got {eps!r}")
    return e32


cdef _check(bitnn_status s):
    if s == BITNN_ENOMEM:
        raise MemoryError(f"bitnn core: {bitnn_status_str(s).decode()}")
    if s != BITNN_OK:
        raise RuntimeError(f"bitnn core: {bitnn_status_str(s).decode()}")


# ----------------------------------------------------------------- the ops
def binary_gemm(x, weight, out_features, bias=None, threads=None, kernel=None,
                precision="fp32", repeat=1):
    """Raw z = x @ W_b.T + b_b (no Normalize) for packed W (out_features, ceil(K/64)).
    ``repeat``: run the op that many times in one call from C (for benchmarks:
    the cost of a layer called from C, as a model calls it, without the
    Python call around each one); the result is the same."""
    return _linear_op(x, weight, out_features, bias, False, None, 1e-5, threads, kernel,
                      precision, repeat)


def linear(x, weight, out_features, bias=None, activation=None, eps=1e-5,
           threads=None, kernel=None, precision="fp32", repeat=1):
    """y = act(Normalize(x @ W_b.T + b_b)) (BNFCL, docs/maths.md Layers), x (M, K) float32.
    ``repeat`` as in binary_gemm."""
    return _linear_op(x, weight, out_features, bias, True, activation, eps, threads, kernel,
                      precision, repeat)


cdef class PackedWeights:
    """A binary weight matrix prepared once for the kernels: the packed rows
    (``bits``, uint64 ``(out_features, ceil(in_features / 64))``) and their
    tiles for the fp32 table kernels (docs/packing.md). ``linear`` and
    ``binary_gemm`` take it in place of ``weight`` and then skip the per-call
    preparation, as a loaded model does for its layers."""

    def __cinit__(self, weight, out_features, in_features):
        cdef size_t N = _count(out_features, "out_features"), K = _count(in_features, "in_features")
        if N == 0 or K == 0:
            raise ValueError("out_features and in_features must be at least 1")
        self.bits = _as_bits(weight, N, K, "weight")
        cdef const uint64_t[:, ::1] wv = self.bits
        self.w.bits = &wv[0, 0]
        self.w.N, self.w.K, self.w.tiles = N, K, NULL
        self.out_features, self.in_features = N, K
        if bitnn_weights_pack(&self.w) != BITNN_OK:
            raise MemoryError(f"cannot prepare a {N} x {K} weight matrix")

    def __dealloc__(self):
        bitnn_weights_release(&self.w)

    def __reduce__(self):
        return (PackedWeights, (self.bits, self.out_features, self.in_features))

    def __repr__(self):
        return f"PackedWeights(out_features={self.out_features}, in_features={self.in_features})"


cdef object _linear_op(x, weight, out_features, bias, bint fused, activation, eps, threads,
                       kernel, precision, repeat):
    """Checks every argument, then runs the raw GEMM or the fused layer without the GIL."""
    xa = _as_input(x)
    cdef size_t M = xa.shape[0], K = xa.shape[1], N = _count(out_features, "out_features")
    if K == 0:
        raise ValueError("x must have at least one feature")
    if N == 0:
        raise ValueError("out_features must be at least 1")
    cdef size_t reps = _count(repeat, "repeat")
    if reps == 0:
        raise ValueError("repeat must be at least 1")
    cdef bitnn_weights wt
    cdef PackedWeights pw
    cdef const uint64_t[:, ::1] wv
    if isinstance(weight, PackedWeights):
        pw = weight
        if pw.out_features != N or pw.in_features != K:
            raise ValueError(f"the PackedWeights are {pw.out_features} x {pw.in_features} "
                             f"(out x in), but the call needs {N} x {K}")
        wt = pw.w
    else:
        wv = _as_bits(weight, N, K, "weight")
        wt.bits, wt.N, wt.K, wt.tiles = &wv[0, 0], N, K, NULL
    ba = None if bias is None else _as_bias(bias, N)
    cdef bitnn_act act = _act(activation)
    cdef float e = _eps(eps)
    cdef bitnn_precision prec = _precision(precision)
    cdef int isa = _resolve_kernel(kernel)
    cdef ThreadPool pool = get_pool(threads)
    out = np.empty((M, N), dtype=np.float32)
    if M == 0:
        return out
    cdef const float[:, ::1] xv = xa
    cdef const uint64_t[:, ::1] bv
    cdef float[:, ::1] ov = out
    cdef const uint64_t *bp = NULL
    if ba is not None:
        bv = ba
        bp = &bv[0, 0]
    cdef bitnn_status s = BITNN_OK
    cdef size_t r
    with nogil:
        for r in range(reps):
            if fused:
                s = bitnn_linear_w(&xv[0, 0], K, M, &wt, bp, e, act, &ov[0, 0], N, prec, isa,
                                   pool.pool, NULL)
            else:
                s = bitnn_binary_gemm_w(&xv[0, 0], K, M, &wt, bp, &ov[0, 0], N, prec, isa,
                                        pool.pool, NULL)
            if s != BITNN_OK:
                break
    _check(s)
    return out


def _conv2d_raw(x, weight, bias, int f, precision="fp32", threads=None, kernel=None):
    """For tests: the raw 'same' convolution of one NHWC image x (H, W, C) float32 by
    packed weights (Cout, ceil(f*f*C / 64)) and packed bias bits, as a classifier runs
    it: (z (H, W, Cout), the largest z as the convolution reports it)."""
    xa = np.ascontiguousarray(x, dtype=np.float32)
    if xa.ndim != 3 or f < 1 or f % 2 == 0:
        raise ValueError("x must be (H, W, C) and f odd")
    cdef size_t H = xa.shape[0], W = xa.shape[1], C = xa.shape[2]
    cdef const uint64_t[:, ::1] wv = np.ascontiguousarray(weight, dtype=np.uint64)
    cdef size_t N = wv.shape[0]
    if wv.shape[1] != (f * f * C + 63) // 64:
        raise ValueError("weight must be packed rows of f*f*C bits")
    cdef const uint64_t[::1] bv = np.ascontiguousarray(bias, dtype=np.uint64)
    cdef bitnn_weights wt
    wt.bits, wt.N, wt.K, wt.tiles = &wv[0, 0], N, f * f * C, NULL
    cdef bitnn_precision prec = _precision(precision)
    cdef int isa = _resolve_kernel(kernel)
    cdef ThreadPool pool = get_pool(threads)
    _check(bitnn_weights_pack(&wt))
    z = np.empty((H, W, N), dtype=np.float32)
    cdef float[:, :, ::1] zv = z
    cdef const float[:, :, ::1] xv = xa
    cdef bitnn_conv_ws ws
    cdef bitnn_buf wx
    ws.wx.p = ws.q.p = ws.rows.p = wx.p = NULL
    ws.wx.size = ws.q.size = ws.rows.size = wx.size = 0
    cdef float zmax = 0
    cdef bitnn_status s
    with nogil:
        s = bitnn_conv2d_raw(&xv[0, 0, 0], H, W, C, &wt, f, &bv[0], &zv[0, 0, 0], prec, isa,
                             pool.pool, &ws, &wx, &zmax)
    bitnn_conv_ws_free(&ws)
    bitnn_buf_free(&wx)
    bitnn_weights_release(&wt)
    _check(s)
    return z, zmax


include "_bnb.pxi"
include "_model.pxi"
include "_tokenizer.pxi"
include "_lm.pxi"
