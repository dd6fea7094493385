# Declarations of the C core (csrc/include/bitnn.h) for Cython.
from libc.stdint cimport uint64_t, uint32_t

cdef extern from "bitnn.h" nogil:
    ctypedef enum bitnn_status:
        BITNN_OK
        BITNN_EINVAL
        BITNN_ENOMEM
        BITNN_EUNSUPPORTED
        BITNN_EENV
        BITNN_ESYS
        BITNN_EFORMAT
    const char *bitnn_status_str(bitnn_status s)

    uint32_t bitnn_cpu_features()
    const char *bitnn_cpu_feature_name(int bit)

    int BITNN_ISA_COUNT
    const char *bitnn_isa_name(int isa)
    int bitnn_isa_from_name(const char *name)
    int bitnn_isa_compiled(int isa)
    int bitnn_isa_supported(int isa)
    bitnn_status bitnn_isa_default(int *isa, char *msg, size_t msg_len)
    uint64_t bitnn_kernel_calls(int isa)

    ctypedef struct bitnn_pool:
        pass
    bitnn_status bitnn_pool_create(int n, bitnn_pool **out)
    void bitnn_pool_destroy(bitnn_pool *pool)
    int bitnn_pool_size(const bitnn_pool *pool)
    int bitnn_pool_threads_used(const bitnn_pool *pool)
    int bitnn_available_cpus()
    bitnn_status bitnn_default_threads(int *n, char *msg, size_t msg_len)

    ctypedef enum bitnn_act:
        BITNN_ACT_LINEAR
        BITNN_ACT_RELU
        BITNN_ACT_GELU
        BITNN_ACT_SOFTMAX
    size_t bitnn_words_per_row(size_t k)
    ctypedef enum bitnn_precision:
        BITNN_PRECISION_FP32
        BITNN_PRECISION_INT8
        BITNN_PRECISION_COUNT
    bitnn_status bitnn_binary_gemm(const float *x, size_t ldx, size_t M, size_t K,
                                   const uint64_t *w, size_t N, const uint64_t *bias,
                                   float *z, size_t ldz, bitnn_precision prec, int isa,
                                   bitnn_pool *pool)
    ctypedef struct bitnn_weights:
        const uint64_t *bits
        size_t N, K
        uint32_t *tiles
    bitnn_status bitnn_weights_pack(bitnn_weights *wt)
    void bitnn_weights_release(bitnn_weights *wt)
    bitnn_status bitnn_binary_gemm_w(const float *x, size_t ldx, size_t M,
                                     const bitnn_weights *wt, const uint64_t *bias, float *z,
                                     size_t ldz, bitnn_precision prec, int isa, bitnn_pool *pool,
                                     void *ws)
    bitnn_status bitnn_linear_w(const float *x, size_t ldx, size_t M, const bitnn_weights *wt,
                                const uint64_t *bias, float eps, bitnn_act act, float *y,
                                size_t ldy, bitnn_precision prec, int isa, bitnn_pool *pool,
                                void *ws)
    bitnn_status bitnn_normalize_act(float *z, size_t ldz, size_t M, size_t N,
                                     float eps, bitnn_act act, bitnn_pool *pool)
    bitnn_status bitnn_linear(const float *x, size_t ldx, size_t M, size_t K,
                              const uint64_t *w, size_t N, const uint64_t *bias,
                              float eps, bitnn_act act, float *y, size_t ldy,
                              bitnn_precision prec, int isa, bitnn_pool *pool)


cdef extern from "kernels.h" nogil:
    const char *bitnn_q8_kernel_name(int isa)
    ctypedef struct bitnn_buf:
        void *p
        size_t size
    void bitnn_buf_free(bitnn_buf *b)


cdef extern from "conv.h" nogil:
    ctypedef struct bitnn_conv_ws:
        bitnn_buf wx, q, rows
    void bitnn_conv_ws_free(bitnn_conv_ws *ws)
    bitnn_status bitnn_conv2d_raw(const float *x, size_t H, size_t W, size_t C,
                                  const bitnn_weights *w, size_t f, const uint64_t *bias,
                                  float *z, bitnn_precision prec, int isa, bitnn_pool *pool,
                                  bitnn_conv_ws *ws, bitnn_buf *wx, float *zmax)


cdef class PackedWeights:
    cdef bitnn_weights w
    cdef readonly object bits
    cdef readonly size_t out_features, in_features


cdef class ThreadPool:
    cdef bitnn_pool *pool
    cdef readonly int size


# ------------------------------------- .bnb files (csrc/format/json.h, csrc/format/bnb.h)
cdef extern from "json.h" nogil:
    int BJSON_MAX_DEPTH
    int BJSON_MAX_NODES
    ctypedef enum bjson_type:
        BJSON_NULL
        BJSON_FALSE
        BJSON_TRUE
        BJSON_NUMBER
        BJSON_STRING
        BJSON_ARRAY
        BJSON_OBJECT
    ctypedef struct bjson:
        bjson_type type
        double number
        char *str
        size_t len
        size_t count
        bjson *items
        char **keys
    bitnn_status bjson_parse(const char *text, size_t len, bjson **out, char *err, size_t errlen)
    void bjson_free(bjson *v)
    const bjson *bjson_get(const bjson *v, const char *key)
    int bjson_get_int(const bjson *v, long long lo, long long hi, long long *out)

cdef extern from "bnb.h" nogil:
    int BNB_VERSION
    int BNB_MAX_DIMS
    int BNB_OPEN_NO_MMAP
    ctypedef enum bnb_dtype:
        BNB_DTYPE_BITS
        BNB_DTYPE_F32
    ctypedef struct bnb_tensor:
        const char *name
        bnb_dtype dtype
        int ndim
        uint64_t shape[4]
        uint64_t rows, cols
        uint64_t offset, nbytes
        const void *data
    ctypedef struct bnb_file:
        pass
    bitnn_status bnb_open(const char *path, int flags, bnb_file **out, char *err, size_t errlen)
    bitnn_status bnb_open_buffer(const void *buf, size_t len, bnb_file **out, char *err, size_t errlen)
    void bnb_close(bnb_file *f)
    const bjson *bnb_meta(const bnb_file *f)
    const char *bnb_header_text(const bnb_file *f, size_t *len)
    size_t bnb_tensor_count(const bnb_file *f)
    const bnb_tensor *bnb_tensor_at(const bnb_file *f, size_t i)
    const bnb_tensor *bnb_tensor_find(const bnb_file *f, const char *name)
    uint64_t bnb_file_size(const bnb_file *f)
    uint64_t BNB_CHECKSUM_INIT
    uint64_t bnb_checksum(const void *data, size_t len)
    uint64_t bnb_checksum_update(uint64_t h, const void *data, size_t len)


# Owns an open bnb_file; bnb_close runs when the last reference goes. Tensor
# views returned by BnbFile.tensor() hold one, so they stay valid after
# BnbFile.close(); C-level users that keep pointers into the file (a model
# graph) should hold one too (BnbFile.handle).
cdef class _BnbHandle:
    cdef bnb_file *ptr


cdef class BnbFile:
    cdef bnb_file *ptr          # NULL once closed; valid while `handle` is alive
    cdef _BnbHandle handle      # None once closed
    cdef readonly object path   # str, or None for BnbFile.from_bytes
    cdef readonly bint mmapped
    cdef object _header
    cdef object _meta
