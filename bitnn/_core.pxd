# Declarations of the C core (csrc/bitnn.h) for Cython.
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

    ctypedef struct bitnn_pool:
        pass
    bitnn_status bitnn_pool_create(int n, bitnn_pool **out)
    void bitnn_pool_destroy(bitnn_pool *pool)
    int bitnn_pool_size(const bitnn_pool *pool)
    int bitnn_available_cpus()
    bitnn_status bitnn_default_threads(int *n, char *msg, size_t msg_len)

    ctypedef enum bitnn_act:
        BITNN_ACT_LINEAR
        BITNN_ACT_RELU
        BITNN_ACT_GELU
        BITNN_ACT_SOFTMAX
    size_t bitnn_words_per_row(size_t k)
    bitnn_status bitnn_binary_gemm(const float *x, size_t ldx, size_t M, size_t K,
                                   const uint64_t *w, size_t N, const uint64_t *bias,
                                   float *z, size_t ldz, int isa, bitnn_pool *pool)
    bitnn_status bitnn_normalize_act(float *z, size_t ldz, size_t M, size_t N,
                                     float eps, bitnn_act act, bitnn_pool *pool)
    bitnn_status bitnn_linear(const float *x, size_t ldx, size_t M, size_t K,
                              const uint64_t *w, size_t N, const uint64_t *bias,
                              float eps, bitnn_act act, float *y, size_t ldy,
                              int isa, bitnn_pool *pool)


cdef class ThreadPool:
    cdef bitnn_pool *pool
    cdef readonly int size
